// Decode's mask semantics against an independent reference: a plain loop, here, that
// computes the expected output straight from decode.hpp's definition over gather()'s K / V
// (query t of Nq at logical index qi = n - Nq + t sees key i when i <= qi and (window == 0
// or qi - i < window or i < sinks); a rolling cache defaults window and sinks to its own).
// It shares nothing with the kernel or with decode_reference() (no Plan, no
// decode_plan.hpp). Edge cases: window 1, sinks >= window, sinks past the held keys, Nq >
// window, sinks = 0, window = held and beyond, sinks without a window, every token a query,
// on contiguous, paged and rolling caches.
//
// Checks: (a) zero queries make every visible score 0, so LSE = log(number of visible keys)
// and O = the mean of the visible values, whatever the kernel's roundings; (b) random
// queries, under the 2x rule: the kernels' error against the loop in double must be at
// most twice that of the same loop in float (+1e-7 on O, 1e-6 on LSE). Both the portable
// path and the automatic kernel (f16 tiles: computed from the stored halves, nothing
// rounded) are held to it.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "attnkit/decode.hpp"
#include "attnkit/kv_cache.hpp"
#include "attnkit/pattern.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;

struct Mask {
  int64_t window, sinks, nq;
};

std::string describe(const KvCacheConfig& cfg, const Mask& m) {
  return std::string(kv_layout_name(cfg.layout)) + " " + std::string(kv_storage_name(cfg.storage)) +
         " window=" + std::to_string(m.window) + " sinks=" + std::to_string(m.sinks) + " nq=" + std::to_string(m.nq);
}

// decode.hpp's visibility, written out from its definition.
bool sees(int64_t qi, int64_t i, int64_t window, int64_t sinks) {
  return i <= qi && (window == 0 || qi - i < window || i < sinks);
}

struct Expected {
  Tensor o, lse;    // f64 [B, Hq, Nq, dv], [B, Hq, Nq]
  Tensor visible;   // f64 [B, 1, Nq]: keys each query sees
};

// The plain loop, accumulating in Acc: double is the oracle, float the baseline of the rule.
template <class Acc>
Expected plain_decode(const KvCache& cache, const std::vector<int64_t>& seqs, const Tensor& q, Mask m) {
  const KvCacheConfig& cfg = cache.config();
  if (cfg.layout == KvLayout::rolling && m.window == 0) m.window = cfg.window, m.sinks = cfg.sinks;
  const int64_t B = static_cast<int64_t>(seqs.size()), hq = q.shape()[1], nq = q.shape()[2];
  const int64_t dk = cfg.head_dim, dv = cfg.v_width(), g = hq / cfg.kv_heads;
  const Acc scale = static_cast<Acc>(1.0 / std::sqrt(static_cast<double>(dk)));
  Expected e{Tensor(DType::f64, {B, hq, nq, dv}), Tensor(DType::f64, {B, hq, nq}), Tensor(DType::f64, {B, 1, nq})};
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = cache.sequence(seqs[static_cast<size_t>(b)]).held;
    Tensor kt(DType::f64, {cfg.kv_heads, n, dk}), vt(DType::f64, {cfg.kv_heads, n, dv});
    cache.gather(seqs[static_cast<size_t>(b)], 1, kt.mut(), vt.mut());
    const auto* k = static_cast<const double*>(kt.data());
    const auto* v = static_cast<const double*>(vt.data());
    for (int64_t h = 0; h < hq; ++h)
      for (int64_t t = 0; t < nq; ++t) {
        const int64_t qi = n - nq + t;
        const double* kh = k + h / g * n * dk;
        const double* vh = v + h / g * n * dv;
        std::vector<Acc> qrow(static_cast<size_t>(dk));
        for (int64_t x = 0; x < dk; ++x) qrow[static_cast<size_t>(x)] = static_cast<Acc>(q.view().get(b, h, t, x));
        std::vector<Acc> s(static_cast<size_t>(n));
        Acc mx = -INFINITY;
        int64_t count = 0;
        for (int64_t i = 0; i < n; ++i) {
          if (!sees(qi, i, m.window, m.sinks)) continue;
          Acc dot = 0;
          for (int64_t x = 0; x < dk; ++x) dot += qrow[static_cast<size_t>(x)] * static_cast<Acc>(kh[i * dk + x]);
          s[static_cast<size_t>(i)] = dot * scale;
          mx = std::max(mx, s[static_cast<size_t>(i)]);
          ++count;
        }
        Acc sum = 0;
        std::vector<Acc> o(static_cast<size_t>(dv), Acc(0));
        for (int64_t i = 0; i < n; ++i) {
          if (!sees(qi, i, m.window, m.sinks)) continue;
          const Acc p = std::exp(s[static_cast<size_t>(i)] - mx);
          sum += p;
          for (int64_t x = 0; x < dv; ++x) o[static_cast<size_t>(x)] += p * static_cast<Acc>(vh[i * dv + x]);
        }
        for (int64_t x = 0; x < dv; ++x) e.o.mut().set(static_cast<double>(o[static_cast<size_t>(x)] / sum), b, h, t, x);
        e.lse.mut().set(static_cast<double>(mx) + std::log(static_cast<double>(sum)), b, h, t);
        e.visible.mut().set(static_cast<double>(count), b, 0, t);
      }
  }
  return e;
}

struct Got {
  Tensor o, lse;
};

Got run_decode(const KvCache& cache, const std::vector<int64_t>& seqs, const Tensor& q, const Mask& m,
               DecodeKernel kernel) {
  const int64_t B = static_cast<int64_t>(seqs.size()), hq = q.shape()[1];
  Got r{Tensor(DType::f32, {B, hq, m.nq, cache.config().v_width()}), Tensor(DType::f32, {B, hq, m.nq})};
  DecodeOptions d;
  d.window = m.window;
  d.sinks = m.sinks;
  d.kernel = kernel;
  decode_attention(cache, 1, seqs, q.view(), r.o.mut(), d, r.lse.mut());
  return r;
}

// A cache with sequences of the given lengths (appends of up to max_append tokens, layer 0
// with other data than layer 1, which is read).
struct Filled {
  KvCache cache;
  std::vector<int64_t> seqs;
  Filled(const KvCacheConfig& cfg, const std::vector<int64_t>& lengths) : cache(cfg) {
    const int64_t H = cfg.kv_heads, dk = cfg.head_dim, dv = cfg.v_width();
    for (size_t b = 0; b < lengths.size(); ++b) {
      const int64_t id = cache.add_sequence();
      seqs.push_back(id);
      for (int64_t t = 0, step = 0; t < lengths[b]; ++step) {
        const int64_t T = std::min({lengths[b] - t, 1 + step % 3, cfg.max_append > 1 ? cfg.max_append : int64_t{3}});
        cache.append(id, T);
        for (int64_t layer = 0; layer < 2; ++layer) {
          const uint64_t seed = 1000 * b + 10 * static_cast<uint64_t>(t) + static_cast<uint64_t>(layer);
          cache.store(id, layer, random_tensor({H, T, dk}, seed).view(), random_tensor({H, T, dv}, seed + 5).view());
        }
        t += T;
      }
    }
  }
};

void check_masks(const KvCacheConfig& cfg, const std::vector<int64_t>& lengths, const std::vector<Mask>& masks) {
  const Filled f(cfg, lengths);
  const int64_t B = static_cast<int64_t>(lengths.size()), hq = 2 * cfg.kv_heads;
  for (const Mask& m : masks) {
    const std::string what = describe(cfg, m);
    const Tensor zero(DType::f32, {B, hq, m.nq, cfg.head_dim});
    const Tensor q = random_tensor({B, hq, m.nq, cfg.head_dim}, 7 + static_cast<uint64_t>(m.nq), DType::f32, 3.0);
    const Expected exact0 = plain_decode<double>(f.cache, f.seqs, zero, m);
    const Expected exact = plain_decode<double>(f.cache, f.seqs, q, m);
    const Expected base = plain_decode<float>(f.cache, f.seqs, q, m);
    const double bound = testing::two_x_bound(base.o.view(), exact.o.view(), 1e-7);
    const double lse_bound = testing::two_x_bound(base.lse.view(), exact.lse.view(), 1e-6);
    for (DecodeKernel kernel : {DecodeKernel::generic, DecodeKernel::automatic}) {
      // Only f32 and f16 tiles round nothing on the automatic path.
      if (kernel == DecodeKernel::automatic && cfg.storage != KvStorage::f32 && cfg.storage != KvStorage::f16) continue;
      const std::string at = what + " " + std::string(decode_kernel_name(kernel));
      const Got got0 = run_decode(f.cache, f.seqs, zero, m, kernel);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < hq; ++h)
          for (int64_t t = 0; t < m.nq; ++t)
            ASSERT_NEAR(got0.lse.view().get(b, h, t), std::log(exact0.visible.view().get(b, 0, t)), 1e-6)
                << at << ": keys seen by seq " << b << " head " << h << " query " << t;
      EXPECT_LE(max_abs_diff(got0.o.view(), exact0.o.view()), 1e-6) << at << ": mean of the visible values";
      const Got got = run_decode(f.cache, f.seqs, q, m, kernel);
      EXPECT_LE(max_abs_diff(got.o.view(), exact.o.view()), bound) << at;
      EXPECT_LE(max_abs_diff(got.lse.view(), exact.lse.view()), lse_bound) << at;
    }
  }
}

KvCacheConfig config(KvLayout layout, KvStorage storage) {
  KvCacheConfig c;
  c.layout = layout;
  c.storage = storage;
  c.layers = 2;
  c.kv_heads = 2;
  c.head_dim = 32;
  c.v_head_dim = 16;
  c.page_size = 3;
  return c;
}

TEST(DecodeMask, EdgeCasesOnContiguousAndPagedCaches) {
  // Held keys: 40 and 23.
  const std::vector<Mask> masks = {
      {0, 0, 1},  {1, 0, 1},  {1, 0, 4},  {1, 3, 2},   // window 1: the query itself (and sinks)
      {5, 5, 3},  {3, 10, 4}, {2, 30, 2},              // sinks >= window; sinks past the window's reach
      {3, 50, 2},                                      // sinks past every held key
      {2, 1, 6},  {3, 0, 9},                           // Nq > window
      {7, 0, 3},                                       // sinks = 0
      {23, 0, 2}, {40, 0, 2}, {45, 4, 1},              // window = held (of each sequence), beyond
      {0, 4, 2},                                       // sinks without a window: ignored
      {4, 2, 23},                                      // every token of the second sequence a query
  };
  for (KvLayout layout : {KvLayout::contiguous, KvLayout::paged})
    for (KvStorage st : {KvStorage::f32, KvStorage::f16, KvStorage::int8}) check_masks(config(layout, st), {40, 23}, masks);
}

TEST(DecodeMask, EdgeCasesOnRollingCaches) {
  for (KvStorage st : {KvStorage::f32, KvStorage::f16}) {
    // Window 8 with 2 sinks: 50 tokens wrap the ring; 7 and 12 fill it partly / just past it.
    KvCacheConfig c = config(KvLayout::rolling, st);
    c.window = 8;
    c.sinks = 2;
    c.max_append = 6;
    check_masks(c, {50, 7, 12},
                {{0, 0, 1}, {0, 0, 6}, {1, 0, 3}, {1, 2, 1}, {3, 2, 6}, {2, 2, 4}, {8, 0, 2}, {8, 2, 5}, {5, 1, 1}});
    // No sinks in the cache: the window alone.
    c.sinks = 0;
    c.window = 5;
    c.max_append = 3;
    check_masks(c, {31, 4}, {{0, 0, 1}, {0, 0, 3}, {1, 0, 2}, {5, 0, 3}});
  }
}

// Window 1: each query sees only its own key, so O is its value row (to the rounding of
// exp(0) / 1 in the online softmax).
TEST(DecodeMask, WindowOneReturnsTheQuerysOwnValue) {
  const Filled f(config(KvLayout::contiguous, KvStorage::f32), {9});
  const Tensor q = random_tensor({1, 4, 3, 32}, 3);
  Tensor k(DType::f32, {2, 9, 32}), v(DType::f32, {2, 9, 16});
  f.cache.gather(f.seqs[0], 1, k.mut(), v.mut());
  for (DecodeKernel kernel : {DecodeKernel::generic, DecodeKernel::automatic}) {
    const Got got = run_decode(f.cache, f.seqs, q, {1, 0, 3}, kernel);
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t t = 0; t < 3; ++t)
        for (int64_t x = 0; x < 16; ++x) EXPECT_NEAR(got.o.view().get(0, h, t, x), v.view().get(h / 2, 6 + t, x), 1e-7);
  }
}

// attend()'s pattern window(W - 1, 0, S) (decode.hpp's statement of the same mask in
// attend()'s terms, bottom-right aligned) allows exactly the pairs of the definition.
TEST(DecodeMask, SinksPatternAllowsExactlyTheDefinitionsPairs) {
  for (int64_t n : {1, 7, 40})
    for (int64_t nq : {1, 3, 7})
      for (int64_t W : {1, 2, 5, 40, 41})
        for (int64_t S : {0, 1, 4, 6, 50}) {
          if (nq > n) continue;
          const BoundPattern bp = Pattern::window(W - 1, 0, S).bind(nq, n);
          for (int64_t t = 0; t < nq; ++t)
            for (int64_t i = 0; i < n; ++i)
              ASSERT_EQ(bp.allow(t, i), sees(n - nq + t, i, W, S))
                  << "n " << n << " nq " << nq << " window " << W << " sinks " << S << " query " << t << " key " << i;
        }
}

}  // namespace
}  // namespace attnkit
