// The pattern kinds: for each, the per-element test allow(q, k) and the allowed keys of a
// row as intervals. Everything else (classification, tile lists, pair counts) is derived
// from these two in pattern.cpp, so a new kind is one class here plus its parse/print.
#include <algorithm>
#include <cassert>
#include <numeric>
#include <unordered_set>

#include "pattern/pattern_impl.hpp"

namespace attnkit {

void normalize_intervals(std::vector<KeyInterval>& v) {
  std::sort(v.begin(), v.end(), [](const KeyInterval& a, const KeyInterval& b) { return a.begin < b.begin; });
  size_t n = 0;
  for (const KeyInterval& iv : v) {
    if (iv.begin >= iv.end) continue;
    if (n > 0 && iv.begin <= v[n - 1].end) {
      v[n - 1].end = std::max(v[n - 1].end, iv.end);
    } else {
      v[n++] = iv;
    }
  }
  v.resize(n);
}

int64_t WindowImpl::lo(int64_t p) const { return left_ < 0 ? 0 : std::clamp<int64_t>(p - left_, 0, kv_len_); }
int64_t WindowImpl::hi(int64_t p) const {
  return right_ < 0 ? kv_len_ : std::clamp<int64_t>(p + right_ + 1, 0, kv_len_);
}

// Row intervals are contiguous, at least one key wide before clipping, and both ends are
// non-decreasing in the row, so checking the first and last row of the rectangle decides
// Full, and an interval cannot jump over a tile between two rows, which decides Empty.
TileClass WindowImpl::classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
  const int64_t p_first = position(q0), p_last = position(q1 - 1);
  const bool right_of_every_row = right_ >= 0 && k0 > p_last + right_;
  const bool left_of_every_row = left_ >= 0 && k1 - 1 < p_first - left_;
  if (right_of_every_row || left_of_every_row) return TileClass::Empty;
  const bool inside_first = right_ < 0 || k1 - 1 <= p_first + right_;
  const bool inside_last = left_ < 0 || k0 >= p_last - left_;
  return inside_first && inside_last ? TileClass::Full : TileClass::Partial;
}

namespace {

// Floor and ceiling of a / b for b > 0 and any sign of a.
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

class LongformerImpl final : public PatternImpl {
 public:
  LongformerImpl(int64_t q_len, int64_t kv_len, const LongformerSpec& s) : PatternImpl(q_len, kv_len), s_(s) {}

  bool allow(int64_t q, int64_t k) const override {
    const int64_t p = position(q);
    if (s_.causal && k > p) return false;
    if (global(p) || global(k)) return true;
    const int64_t d = p - k;
    return std::abs(d) <= s_.window * s_.dilation && d % s_.dilation == 0;
  }

  void append_keys(int64_t q, std::vector<KeyInterval>& out) const override {
    const int64_t p = position(q);
    const int64_t end = s_.causal ? std::min(kv_len_, p + 1) : kv_len_;
    if (global(p)) {
      out.push_back({0, end});
      return;
    }
    const int64_t t_max = s_.causal ? 0 : s_.window;
    if (s_.dilation == 1) {
      out.push_back({std::max<int64_t>(0, p - s_.window), std::min(end, p + t_max + 1)});
    } else {
      // Only the offsets t that land in [0, end): a huge window must not cost per offset.
      const int64_t d = s_.dilation;
      const int64_t t_lo = std::max(-s_.window, ceil_div(-p, d)), t_hi = std::min(t_max, floor_div(end - 1 - p, d));
      for (int64_t t = t_lo; t <= t_hi; ++t) out.push_back({p + t * d, p + t * d + 1});
    }
    for (int64_t g : s_.global)
      if (g < end) out.push_back({g, g + 1});
  }

 private:
  bool global(int64_t pos) const { return std::binary_search(s_.global.begin(), s_.global.end(), pos); }
  LongformerSpec s_;  // global is sorted and unique
};

// splitmix64: a tiny, well-mixed generator so random blocks depend only on (seed, row).
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class BigBirdImpl final : public PatternImpl {
 public:
  // Window and global blocks are analytic; only the random blocks are stored, so memory is
  // O(blocks x random) whatever the window.
  BigBirdImpl(int64_t q_len, int64_t kv_len, const BigBirdSpec& s)
      : PatternImpl(q_len, kv_len), s_(s), blocks_((kv_len + s.block - 1) / s.block) {
    random_.resize(static_cast<size_t>(blocks_));
    for (int64_t r = s.global; r < blocks_; ++r) {
      const int64_t fixed_count = std::min(s.global, blocks_) + std::max<int64_t>(0, window_hi(r) - window_lo(r) + 1);
      const int64_t free_blocks = blocks_ - fixed_count;
      const int64_t take = std::min(s.random, free_blocks);
      uint64_t state = s.seed * 0x100000001B3ull ^ static_cast<uint64_t>(r);
      std::vector<int64_t>& picked = random_[static_cast<size_t>(r)];
      if (take * 2 >= free_blocks) {
        // Few candidates: a partial Fisher-Yates shuffle over all of them.
        std::vector<int64_t> candidates;
        for (int64_t c = 0; c < blocks_; ++c)
          if (!fixed(r, c)) candidates.push_back(c);
        for (int64_t i = 0; i < take; ++i) {
          const uint64_t span = candidates.size() - static_cast<uint64_t>(i);
          std::swap(candidates[i], candidates[i + static_cast<int64_t>(splitmix64(state) % span)]);
          picked.push_back(candidates[i]);
        }
      } else {
        // Many candidates: rejection sampling keeps the cost O(random), not O(blocks).
        std::unordered_set<int64_t> seen;
        while (static_cast<int64_t>(picked.size()) < take) {
          const int64_t c = static_cast<int64_t>(splitmix64(state) % static_cast<uint64_t>(blocks_));
          if (!fixed(r, c) && seen.insert(c).second) picked.push_back(c);
        }
      }
      std::sort(picked.begin(), picked.end());
    }
  }

  bool allow(int64_t q, int64_t k) const override {
    const int64_t r = position(q) / s_.block, c = k / s_.block;
    if (r < s_.global || fixed(r, c)) return true;
    const std::vector<int64_t>& row = random_[static_cast<size_t>(r)];
    return std::binary_search(row.begin(), row.end(), c);
  }

  void append_keys(int64_t q, std::vector<KeyInterval>& out) const override {
    const int64_t r = position(q) / s_.block;
    auto blocks = [&](int64_t c0, int64_t c1) {  // key blocks [c0, c1]
      if (c0 <= c1) out.push_back({c0 * s_.block, std::min(kv_len_, (c1 + 1) * s_.block)});
    };
    if (r < s_.global) {
      blocks(0, blocks_ - 1);
      return;
    }
    blocks(0, std::min(s_.global, blocks_) - 1);
    blocks(window_lo(r), window_hi(r));
    for (int64_t c : random_[static_cast<size_t>(r)]) blocks(c, c);
  }

 private:
  // Window blocks of block-row r beyond the global ones: [window_lo, window_hi].
  int64_t window_lo(int64_t r) const { return std::max(s_.global, r - (s_.window - 1) / 2); }
  int64_t window_hi(int64_t r) const { return std::min(blocks_ - 1, r + s_.window / 2); }
  bool fixed(int64_t r, int64_t c) const { return c < s_.global || (c >= window_lo(r) && c <= window_hi(r)); }

  BigBirdSpec s_;
  int64_t blocks_;
  std::vector<std::vector<int64_t>> random_;  // random key blocks per block-row, sorted
};

class StridedImpl final : public PatternImpl {
 public:
  StridedImpl(int64_t q_len, int64_t kv_len, int64_t stride) : PatternImpl(q_len, kv_len), stride_(stride) {}
  bool allow(int64_t q, int64_t k) const override {
    const int64_t d = position(q) - k;
    return d >= 0 && (d < stride_ || d % stride_ == 0);
  }
  // Band min(stride, p + 1) keys, plus p - m stride for m = 1 .. p / stride (all before it).
  int64_t count_keys(int64_t q) const override {
    const int64_t p = position(q);
    return p < 0 ? 0 : std::min(stride_, p + 1) + p / stride_;
  }
  void append_keys(int64_t q, std::vector<KeyInterval>& out) const override {
    const int64_t p = position(q);
    if (p < 0) return;
    out.push_back({std::max<int64_t>(0, p - stride_ + 1), p + 1});
    for (int64_t k = p - stride_; k >= 0; k -= stride_) out.push_back({k, k + 1});
  }

 private:
  int64_t stride_;
};

class FixedImpl final : public PatternImpl {
 public:
  FixedImpl(int64_t q_len, int64_t kv_len, int64_t stride, int64_t c)
      : PatternImpl(q_len, kv_len), stride_(stride), c_(c) {}
  bool allow(int64_t q, int64_t k) const override {
    const int64_t p = position(q);
    return k <= p && (k / stride_ == p / stride_ || k % stride_ >= stride_ - c_);
  }
  // The own block up to p, plus c summary keys of every earlier block.
  int64_t count_keys(int64_t q) const override {
    const int64_t p = position(q);
    return p < 0 ? 0 : p % stride_ + 1 + (p / stride_) * c_;
  }
  void append_keys(int64_t q, std::vector<KeyInterval>& out) const override {
    const int64_t p = position(q);
    if (p < 0) return;
    const int64_t own = p / stride_;
    for (int64_t b = 0; b < own; ++b) out.push_back({(b + 1) * stride_ - c_, (b + 1) * stride_});
    out.push_back({own * stride_, p + 1});
  }

 private:
  int64_t stride_, c_;
};

class BlockMaskImpl final : public PatternImpl {
 public:
  BlockMaskImpl(int64_t q_len, int64_t kv_len, const BlockMaskSpec& s) : PatternImpl(q_len, kv_len), s_(s) {}
  bool allow(int64_t q, int64_t k) const override {
    return s_.mask[static_cast<size_t>((q / s_.block_q) * s_.cols + k / s_.block_k)] != 0;
  }
  void append_keys(int64_t q, std::vector<KeyInterval>& out) const override {
    const int64_t r = q / s_.block_q;
    for (int64_t c = 0; c < s_.cols; ++c)
      if (s_.mask[static_cast<size_t>(r * s_.cols + c)])
        out.push_back({c * s_.block_k, std::min(kv_len_, (c + 1) * s_.block_k)});
  }

 private:
  BlockMaskSpec s_;
};

class PredicateImpl final : public PatternImpl {
 public:
  PredicateImpl(int64_t q_len, int64_t kv_len, std::function<bool(int64_t, int64_t)> f)
      : PatternImpl(q_len, kv_len), f_(std::move(f)) {}
  bool allow(int64_t q, int64_t k) const override { return f_(q, k); }
  void append_keys(int64_t q, std::vector<KeyInterval>& out) const override {
    for (int64_t k = 0; k < kv_len_; ++k)
      if (f_(q, k)) out.push_back({k, k + 1});
  }

 private:
  std::function<bool(int64_t, int64_t)> f_;
};

}  // namespace

std::shared_ptr<const PatternImpl> make_impl(const Pattern& p, int64_t q_len, int64_t kv_len,
                                             const std::function<bool(int64_t, int64_t)>* predicate) {
  using K = Pattern::Kind;
  switch (p.kind()) {
    case K::none:
    case K::causal:
    case K::window:
      return std::make_shared<WindowImpl>(q_len, kv_len, p.window_left(), p.window_right());
    case K::longformer: return std::make_shared<LongformerImpl>(q_len, kv_len, p.longformer_spec());
    case K::bigbird: return std::make_shared<BigBirdImpl>(q_len, kv_len, p.bigbird_spec());
    case K::strided: return std::make_shared<StridedImpl>(q_len, kv_len, p.stride());
    case K::fixed: return std::make_shared<FixedImpl>(q_len, kv_len, p.stride(), p.summary());
    case K::block_mask: return std::make_shared<BlockMaskImpl>(q_len, kv_len, p.block_mask_spec());
    case K::predicate:
      assert(predicate != nullptr);
      return std::make_shared<PredicateImpl>(q_len, kv_len, *predicate);
  }
  return nullptr;
}

}  // namespace attnkit
