// The per-kind implementation interface behind BoundPattern. A kind describes itself: its
// per-element test and row keys (required), and, where it knows better than the generic
// derivation from those keys, its O(1) classification and its tile rows and columns.
// Internal: the public surface is include/attnkit/pattern.hpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "attnkit/pattern.hpp"

namespace attnkit {

class PatternImpl {
 public:
  PatternImpl(int64_t q_len, int64_t kv_len) : q_len_(q_len), kv_len_(kv_len), offset_(kv_len - q_len) {}
  virtual ~PatternImpl() = default;

  virtual bool allow(int64_t q, int64_t k) const = 0;
  // Appends the allowed keys of row q (any order, may overlap); the caller normalises.
  virtual void append_keys(int64_t q, std::vector<KeyInterval>& out) const = 0;

  // The number of allowed keys of row q when the kind knows it in O(1), else -1 (then it is
  // counted from append_keys, which for strided kinds lists O(p / stride) intervals).
  virtual int64_t count_keys(int64_t q) const { return -1; }

  // Exact class of rows [q0, q1) x keys [k0, k1), both non-empty and inside the bound
  // sizes. Default: the allowed pairs counted from append_keys, O(rows x intervals).
  virtual TileClass classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const;

  // True when tile_row and tile_column cost O(the tiles they list), so a kernel can build
  // them on the fly instead of compiling a list.
  virtual bool analytic() const { return false; }
  // The non-empty kv tiles (of block_k keys) of rows [q0, q1), increasing, with their class.
  // Default: each row's intervals added into per-tile counts, O(rows x (intervals + tiles)).
  virtual void tile_row(int64_t q0, int64_t q1, int64_t block_k, std::vector<TileRef>& out) const;
  // The non-empty query tiles (of block_q rows) that see keys [k0, k1), increasing.
  // Default: every row's intervals clipped to [k0, k1), O(q_len x intervals).
  virtual void tile_column(int64_t k0, int64_t k1, int64_t block_q, std::vector<QTileRef>& out) const;

  int64_t q_len() const { return q_len_; }
  int64_t kv_len() const { return kv_len_; }
  int64_t position(int64_t q) const { return q + offset_; }
  int64_t row_of(int64_t p) const { return p - offset_; }
  // Allowed keys of row q, normalised (sorted, merged); `out` is cleared first.
  void row_keys(int64_t q, std::vector<KeyInterval>& out) const;

 protected:
  int64_t q_len_, kv_len_, offset_;
};

// Throws Error naming `what` unless 0 <= v <= kMaxSeqLen.
void check_length(int64_t v, const char* what);

// Sorts intervals, drops empty ones and merges overlapping or adjacent ones.
void normalize_intervals(std::vector<KeyInterval>& v);

// The kind's implementation bound to the sizes; throws Error when the sizes do not suit
// the kind (e.g. a Longformer global position >= kv_len). Defined beside the kinds.
std::shared_ptr<const PatternImpl> make_impl(const Pattern& p, int64_t q_len, int64_t kv_len,
                                             const std::function<bool(int64_t, int64_t)>* predicate);

}  // namespace attnkit
