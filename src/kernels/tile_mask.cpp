// The mask levels of Partial tiles (tile_mask.hpp).
#include "kernels/tile_mask.hpp"

#include <algorithm>
#include <new>

namespace attnkit::flash {

TileMaskBuilder::TileMaskBuilder(int64_t bm, int64_t heads, int64_t rp)
    : bm_(bm),
      heads_(heads),
      rp_(rp),
      active_bm_(bm),
      active_rp_(rp),
      keys_(static_cast<size_t>(bm)),
      cursor_(static_cast<size_t>(bm)),
      spans_(static_cast<size_t>(bm)) {}

void TileMaskBuilder::start(const BoundPattern& pattern, int64_t q0, int64_t q_len) {
  first_ = 0;
  active_bm_ = bm_;
  active_rp_ = rp_;
  for (int64_t il = 0; il < bm_; ++il) {
    cursor_[static_cast<size_t>(il)] = 0;
    auto& keys = keys_[static_cast<size_t>(il)];
    keys.clear();
    if (q0 + il < q_len) pattern.keys(q0 + il, keys);
  }
}

std::pair<int64_t, int64_t> TileMaskBuilder::positions_seeing(int64_t k_begin, int64_t k_end) const {
  int64_t first = bm_, end = 0;
  for (int64_t il = 0; il < bm_; ++il)
    for (const KeyInterval& k : keys_[static_cast<size_t>(il)])
      if (k.begin < k_end && k.end > k_begin) {
        first = std::min(first, il);
        end = il + 1;
        break;
      }
  return end > first ? std::pair<int64_t, int64_t>{first, end} : std::pair<int64_t, int64_t>{0, 0};
}

void TileMaskBuilder::narrow(int64_t first, int64_t bm, int64_t rp) {
  first_ = first;
  active_bm_ = bm;
  active_rp_ = rp;
}

TileMask TileMaskBuilder::tile(int64_t k0, int64_t width) {
  int64_t levels = 0, first = width, end = 0;
  const int64_t rp = active_rp_, bm = active_bm_;
  for (int64_t il = first_; il < first_ + bm; ++il) {
    const auto& keys = keys_[static_cast<size_t>(il)];
    size_t& c = cursor_[static_cast<size_t>(il)];
    while (c < keys.size() && keys[c].end <= k0) ++c;
    size_t e = c;
    while (e < keys.size() && keys[e].begin < k0 + width) ++e;
    spans_[static_cast<size_t>(il)] = {c, e};
    levels = std::max<int64_t>(levels, static_cast<int64_t>(e - c));
    if (e > c) {
      first = std::min<int64_t>(first, std::max<int64_t>(keys[c].begin - k0, 0));
      end = std::max<int64_t>(end, std::min<int64_t>(keys[e - 1].end - k0, width));
    }
  }
  if (end <= first) return {nullptr, nullptr, 0, 0, 0};
  first = first / 4 * 4;  // whole groups of four keys, as the score kernels write them
  const int64_t floats = levels * rp;
  if (floats > capacity_) {
    capacity_ = std::max(floats, 2 * capacity_);
    lo_ = hwy::AllocateAligned<float>(static_cast<size_t>(capacity_));
    hi_ = hwy::AllocateAligned<float>(static_cast<size_t>(capacity_));
    if (!lo_ || !hi_) throw std::bad_alloc();
  }
  float* lo = lo_.get();
  float* hi = hi_.get();
  std::fill(lo, lo + levels * rp, 0.0f);
  std::fill(hi, hi + levels * rp, 0.0f);
  for (int64_t il = first_; il < first_ + bm; ++il) {
    const auto& keys = keys_[static_cast<size_t>(il)];
    const auto [c, e] = spans_[static_cast<size_t>(il)];
    for (size_t t = 0; t < e - c; ++t) {
      const float a = static_cast<float>(std::max<int64_t>(keys[c + t].begin - k0, 0) - first);
      const float z = static_cast<float>(std::min<int64_t>(keys[c + t].end - k0, width) - first);
      for (int64_t hg = 0; hg < heads_; ++hg) {
        lo[static_cast<int64_t>(t) * rp + hg * bm + il - first_] = a;
        hi[static_cast<int64_t>(t) * rp + hg * bm + il - first_] = z;
      }
    }
  }
  return {lo, hi, levels, first, end - first};
}

}  // namespace attnkit::flash
