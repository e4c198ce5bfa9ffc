// The pattern kinds. Each kind is one section: its builder (argument checks), and its
// PatternImpl, which gives the per-element test allow(q, k) and a row's allowed keys as
// intervals, checks the bound sizes in its constructor, and overrides the derived queries
// (classification, tile rows and columns) where it knows an O(1) answer. Everything else
// comes from the generic defaults in pattern.cpp. make_impl, at the end, is the one list of
// kinds. Not here: the string syntax (pattern_parse.cpp).
#include <algorithm>
#include <cassert>
#include <numeric>
#include <unordered_set>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/shape.hpp"
#include "pattern/pattern_impl.hpp"

namespace attnkit {

namespace {

// Floor and ceiling of a / b for b > 0 and any sign of a.
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

}  // namespace

// ---- none, causal, window, sinks: one analytic window family ----

Pattern::Pattern() = default;
Pattern Pattern::none() { return Pattern(); }
Pattern Pattern::causal() { return window(-1, 0); }

Pattern Pattern::window(int64_t left, int64_t right, int64_t sinks) {
  for (const auto& side : {std::pair{left, "window left"}, std::pair{right, "window right"}}) {
    const int64_t v = side.first;
    const char* name = side.second;
    check(v >= -1, [&] { return fmt::format("pattern: {} ({}) must be >= 0, or -1 for unbounded", name, v); });
    if (v >= 0) check_length(v, name);
  }
  check_length(sinks, "window sinks");
  Pattern p;
  p.left_ = left;
  p.right_ = right;
  p.causal_ = right == 0;
  if (left >= 0 && sinks > 0) {
    p.kind_ = Kind::sinks;
    p.sinks_ = sinks;
  } else {  // unbounded on the left: every sink is in the window already
    p.kind_ = left < 0 && right < 0 ? Kind::none : (left < 0 && right == 0 ? Kind::causal : Kind::window);
  }
  return p;
}

namespace {

// Row p sees its window [lo(p), hi(p)) and the sinks [0, sink_end(p)), sink_end(p) =
// min(sinks, hi(p)). Two facts make every derived query exact in O(1) per tile:
//  - every end is non-decreasing in p;
//  - the unclipped window [p - left, p + right] is at least one key wide and moves one key
//    per row, so consecutive rows' windows touch: the union of the windows of rows
//    [p0, p1] is [lo(p0), hi(p1)), skipping no key.
// With sinks = 0 this is the plain window (none and causal are windows unbounded on a side).
class WindowImpl final : public PatternImpl {
 public:
  WindowImpl(int64_t q_len, int64_t kv_len, int64_t left, int64_t right, int64_t sinks)
      : PatternImpl(q_len, kv_len), left_(left), right_(right), sinks_(sinks) {}

  bool allow(int64_t q, int64_t k) const override {
    const int64_t p = position(q);
    return k < hi(p) && (k >= lo(p) || k < sinks_);
  }
  void append_keys(int64_t q, std::vector<KeyInterval>& out) const override {
    const int64_t p = position(q);
    if (sink_end(p) > 0) out.push_back({0, sink_end(p)});
    if (lo(p) < hi(p)) out.push_back({lo(p), hi(p)});
  }
  // The window, plus the sinks left of it (sink_end <= hi, so none lie right of it).
  int64_t count_keys(int64_t q) const override {
    const int64_t p = position(q);
    return std::max<int64_t>(0, hi(p) - lo(p)) + std::max<int64_t>(0, std::min(sink_end(p), lo(p)));
  }

  // Empty: no row's window reaches the tile (the first row's starts after it, or the last
  // row's ends before it; by the touching windows nothing in between can), and the last
  // row's sinks end before it. Full: a row covers [k0, k1) when its sinks do
  // (sink_end >= k1) or when its window reaches k1 and starts no later than
  // max(k0, sink_end). hi(p) >= k1 holds from some row on, so it must hold at the first row.
  // lo(p) <= max(k0, sink_end(p)) holds for every row whose sink_end is hi (the window
  // starts before it ends), then, where sink_end = sinks, up to some row: so it holds for
  // all rows when it holds at the last. Where it fails, only sinks >= k1 covers the row.
  TileClass classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const override {
    const int64_t first = position(q0), last = position(q1 - 1);
    const bool window_misses = hi(last) <= k0 || lo(first) >= k1;
    if (window_misses && sink_end(last) <= k0) return TileClass::Empty;
    const bool full = hi(first) >= k1 && (sinks_ >= k1 || lo(last) <= std::max(k0, sink_end(last)));
    return full ? TileClass::Full : TileClass::Partial;
  }

  bool analytic() const override { return true; }

  // The rows' keys are the sink hull [0, sink_end(last)) and the window hull
  // [lo(first), hi(last)); every tile in either is visited, so the cost is the tiles listed.
  void tile_row(int64_t q0, int64_t q1, int64_t block_k, std::vector<TileRef>& out) const override {
    const int64_t first = position(q0), last = position(q1 - 1);
    const int64_t sink_tiles = ceil_div(sink_end(last), block_k);
    const int64_t w0 = lo(first) < hi(last) ? lo(first) / block_k : 0;
    const int64_t w1 = lo(first) < hi(last) ? ceil_div(hi(last), block_k) : 0;
    auto add = [&](int64_t kt) {
      const TileClass c = classify(q0, q1, kt * block_k, std::min(kv_len_, (kt + 1) * block_k));
      assert(c != TileClass::Empty);
      out.push_back({kt, c});
    };
    for (int64_t kt = 0; kt < sink_tiles; ++kt) add(kt);
    for (int64_t kt = std::max(w0, sink_tiles); kt < w1; ++kt) add(kt);
  }

  // Rows whose window meets [k0, k1): hi(p) > k0 and lo(p) < k1, i.e. p in
  // [k0 - right, k1 + left) (a bound dropped where the window is unbounded). Where the keys
  // hold a sink, every row from k0 - right on sees it. Every query tile of that row range is
  // visited.
  void tile_column(int64_t k0, int64_t k1, int64_t block_q, std::vector<QTileRef>& out) const override {
    const int64_t q_lo = right_ < 0 ? 0 : std::max<int64_t>(0, row_of(k0 - right_));
    const int64_t q_hi = left_ < 0 || k0 < sinks_ ? q_len_ : std::min(q_len_, row_of(k1 + left_));
    if (q_lo >= q_hi) return;
    for (int64_t qt = q_lo / block_q; qt * block_q < q_hi; ++qt) {
      const TileClass c = classify(qt * block_q, std::min(q_len_, (qt + 1) * block_q), k0, k1);
      assert(c != TileClass::Empty);
      out.push_back({qt, c});
    }
  }

 private:
  int64_t lo(int64_t p) const { return left_ < 0 ? 0 : std::clamp<int64_t>(p - left_, 0, kv_len_); }
  int64_t hi(int64_t p) const { return right_ < 0 ? kv_len_ : std::clamp<int64_t>(p + right_ + 1, 0, kv_len_); }
  int64_t sink_end(int64_t p) const { return std::min(sinks_, hi(p)); }

  int64_t left_, right_, sinks_;
};

}  // namespace

// ---- Longformer ----

Pattern Pattern::longformer(LongformerSpec s) {
  check(s.window >= 0, [&] { return fmt::format("pattern: longformer window w ({}) must be >= 0", s.window); });
  check(s.dilation >= 1, [&] { return fmt::format("pattern: longformer dilation d ({}) must be >= 1", s.dilation); });
  check(s.window <= kMaxSeqLen / s.dilation, [&] {
    return fmt::format("pattern: longformer reach w*d ({}*{}) exceeds {}", s.window, s.dilation, kMaxSeqLen);
  });
  for (int64_t g : s.global) check_length(g, "longformer global position");
  std::sort(s.global.begin(), s.global.end());
  s.global.erase(std::unique(s.global.begin(), s.global.end()), s.global.end());
  Pattern p;
  p.kind_ = Kind::longformer;
  p.causal_ = s.causal;
  p.longformer_ = std::move(s);
  return p;
}

namespace {

class LongformerImpl final : public PatternImpl {
 public:
  LongformerImpl(int64_t q_len, int64_t kv_len, const LongformerSpec& s) : PatternImpl(q_len, kv_len), s_(s) {
    if (s.global.empty()) return;
    check(s.global.back() < kv_len, [&] {
      return fmt::format("pattern: longformer global position {} must be < kv_len ({})", s.global.back(), kv_len);
    });
  }

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

}  // namespace

// ---- BigBird ----

Pattern Pattern::bigbird(BigBirdSpec s) {
  check(s.block >= 1 && s.block <= kMaxSeqLen,
        [&] { return fmt::format("pattern: bigbird block ({}) must be in [1, {}]", s.block, kMaxSeqLen); });
  check(s.window >= 1 && s.window <= kMaxSeqLen,
        [&] { return fmt::format("pattern: bigbird window ({}) must be >= 1 block", s.window); });
  check_length(s.global, "bigbird global blocks");
  check(s.random >= 0 && s.random <= 1 << 20,
        [&] { return fmt::format("pattern: bigbird random ({}) must be in [0, {}]", s.random, 1 << 20); });
  Pattern p;
  p.kind_ = Kind::bigbird;
  p.bigbird_ = s;
  return p;
}

namespace {

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
    check(q_len <= kv_len, [&] {
      return fmt::format("pattern: bigbird needs q_len ({}) <= kv_len ({}): query blocks are key blocks", q_len, kv_len);
    });
    check(blocks_ * std::min(s.random, blocks_) <= int64_t{1} << 27, [&] {
      return fmt::format("pattern: bigbird random={} over {} blocks stores too many random blocks (limit 2^27); use "
                         "fewer random blocks or a larger block",
                         s.random, blocks_);
    });
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

}  // namespace

// ---- Sparse Transformer: strided and fixed ----

Pattern Pattern::strided(int64_t stride) {
  check(stride >= 1 && stride <= kMaxSeqLen,
        [&] { return fmt::format("pattern: strided stride ({}) must be in [1, {}]", stride, kMaxSeqLen); });
  Pattern p;
  p.kind_ = Kind::strided;
  p.causal_ = true;
  p.stride_ = stride;
  return p;
}

Pattern Pattern::fixed(int64_t stride, int64_t c) {
  check(stride >= 1 && stride <= kMaxSeqLen,
        [&] { return fmt::format("pattern: fixed stride ({}) must be in [1, {}]", stride, kMaxSeqLen); });
  check(c >= 1 && c <= stride, [&] { return fmt::format("pattern: fixed c ({}) must be in [1, stride={}]", c, stride); });
  Pattern p;
  p.kind_ = Kind::fixed;
  p.causal_ = true;
  p.stride_ = stride;
  p.summary_ = c;
  return p;
}

namespace {

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

}  // namespace

// ---- block masks ----

Pattern Pattern::block_mask(BlockMaskSpec s) {
  check(s.block_q >= 1 && s.block_k >= 1 && s.block_q <= kMaxSeqLen && s.block_k <= kMaxSeqLen, [&] {
    return fmt::format("pattern: block mask block sizes ({}, {}) must be in [1, {}]", s.block_q, s.block_k, kMaxSeqLen);
  });
  check(s.rows >= 0 && s.cols >= 0 && s.rows <= kMaxSeqLen && s.cols <= kMaxSeqLen &&
            static_cast<int64_t>(s.mask.size()) == s.rows * s.cols,
        [&] {
          return fmt::format("pattern: block mask has {} entries for a {}x{} grid", s.mask.size(), s.rows, s.cols);
        });
  Pattern p;
  p.kind_ = Kind::block_mask;
  p.blocks_ = std::move(s);
  return p;
}

namespace {

class BlockMaskImpl final : public PatternImpl {
 public:
  BlockMaskImpl(int64_t q_len, int64_t kv_len, const BlockMaskSpec& s) : PatternImpl(q_len, kv_len), s_(s) {
    const int64_t rows = (q_len + s.block_q - 1) / s.block_q, cols = (kv_len + s.block_k - 1) / s.block_k;
    check(rows == s.rows && cols == s.cols, [&] {
      return fmt::format("pattern: block mask grid {}x{} does not cover q_len={} x kv_len={} with blocks {}x{} "
                         "(needs {}x{})", s.rows, s.cols, q_len, kv_len, s.block_q, s.block_k, rows, cols);
    });
  }
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

}  // namespace

// ---- predicates ----

Pattern Pattern::predicate(std::function<bool(int64_t, int64_t)> allow, std::string name) {
  check(static_cast<bool>(allow), [] { return std::string("pattern: predicate is empty"); });
  Pattern p;
  p.kind_ = Kind::predicate;
  p.predicate_ = std::make_shared<const std::function<bool(int64_t, int64_t)>>(std::move(allow));
  p.predicate_name_ = std::move(name);
  return p;
}

namespace {

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

// The one list of kinds.
std::shared_ptr<const PatternImpl> make_impl(const Pattern& p, int64_t q_len, int64_t kv_len,
                                             const std::function<bool(int64_t, int64_t)>* predicate) {
  using K = Pattern::Kind;
  switch (p.kind()) {
    case K::none:
    case K::causal:
    case K::window:
    case K::sinks:
      return std::make_shared<WindowImpl>(q_len, kv_len, p.window_left(), p.window_right(), p.sinks());
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
