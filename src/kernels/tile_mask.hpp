// Internal: the masks of Partial tiles, for the flash forward and backward alike. A query
// tile reads its positions' allowed key intervals from the pattern once (start()); each of
// its Partial KV tiles then gets, as TileMask levels on the packed rows, the intervals that
// overlap it (tile()). Asking the pattern per tile instead (per row, with a fresh list per
// row) cost the backward a third of its time on Longformer, whose band edges make about
// one step in three Partial.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include <hwy/aligned_allocator.h>

#include "attnkit/pattern.hpp"
#include "kernels/flash.hpp"

namespace attnkit::flash {

class TileMaskBuilder {
 public:
  // Packed row r = head_in_tile * bm + position_in_tile, for `heads` heads; rp rows padded.
  TileMaskBuilder(int64_t bm, int64_t heads, int64_t rp);

  // The allowed keys of query positions [q0, q0 + bm) (none past q_len); the packed rows
  // are all bm positions of each head, as constructed.
  void start(const BoundPattern& pattern, int64_t q0, int64_t q_len);

  // The positions [first, end) of the started tile, relative to q0, that span every one
  // with an allowed key in [k_begin, k_end); first == end when none has.
  std::pair<int64_t, int64_t> positions_seeing(int64_t k_begin, int64_t k_end) const;

  // From now on the packed rows are positions [first, first + bm) of the started tile for
  // each head (row r = head_in_tile * bm + position - first), rp of them with padding:
  // a tile whose other rows see none of the keys it is paired with is packed without them.
  void narrow(int64_t first, int64_t bm, int64_t rp);

  // The mask of KV tile [k0, k0 + width), narrowed to the span of its visible keys (see
  // TileMask); padding rows and positions past q_len see nothing. Since start(), calls
  // come in increasing k0.
  TileMask tile(int64_t k0, int64_t width);

 private:
  int64_t bm_, heads_, rp_;
  int64_t first_ = 0, active_bm_, active_rp_;  // the packed positions (narrow())
  std::vector<std::vector<KeyInterval>> keys_;  // per position of the tile
  std::vector<size_t> cursor_;                  // first interval that may still overlap
  std::vector<std::pair<size_t, size_t>> spans_;
  hwy::AlignedFreeUniquePtr<float[]> lo_, hi_;
  int64_t capacity_ = 0;  // floats in lo_ and hi_
};

}  // namespace attnkit::flash
