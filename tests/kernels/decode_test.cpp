// Tests for the decode kernel (decode.hpp): every layout and storage format against the
// double-precision reference on the same cache, packed GQA and Nq > 1 (bottom-right causal),
// windows and sinks, RoPE in both position modes, paged = contiguous = ring on the same
// history, split-KV results independent of the thread count, the stored-byte kernels
// against the generic path, attention error of quantized caches against an f32 cache
// (reported), and clear errors.
#include "attnkit/decode.hpp"

#include <omp.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/error.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;

struct Case {
  KvLayout layout = KvLayout::contiguous;
  KvStorage storage = KvStorage::f32;
  int64_t hq = 8, hkv = 2, d = 64, dv = 64, tokens = 300, nq = 1;
  int64_t window = 0, sinks = 0, max_append = 1, page = 16;
  bool rope = false;
  KvPositions positions = KvPositions::absolute;
};

KvCacheConfig config_of(const Case& k) {
  KvCacheConfig c;
  c.layout = k.layout;
  c.storage = k.storage;
  c.layers = 2;
  c.kv_heads = k.hkv;
  c.head_dim = k.d;
  c.v_head_dim = k.dv;
  c.window = k.window;
  c.sinks = k.sinks;
  c.max_append = k.max_append;
  c.page_size = k.page;
  c.group = 16;  // divides the page sizes used here
  c.residual = 40;
  c.positions = k.positions;
  if (k.rope) c.rope = RopeConfig{};
  return c;
}

// A cache of B = 2 sequences (lengths tokens and tokens - 37) filled from seeded data, in
// appends of up to max_append tokens.
struct Filled {
  KvCache cache;
  std::vector<int64_t> seqs;
  explicit Filled(const Case& k, uint64_t seed = 1) : cache(config_of(k)) {
    for (int64_t b = 0; b < 2; ++b) {
      const int64_t s = cache.add_sequence(), n = k.tokens - 37 * b;
      seqs.push_back(s);
      const Tensor kk = random_tensor({k.hkv, n, k.d}, seed + 10 * b);
      const Tensor vv = random_tensor({k.hkv, n, k.dv}, seed + 10 * b + 1);
      for (int64_t t = 0; t < n;) {
        const int64_t T = std::min(k.max_append, n - t);
        cache.append(s, T);
        const TensorView ks(static_cast<const float*>(kk.data()) + t * k.d, DType::f32, {k.hkv, T, k.d},
                            {n * k.d, k.d, 1});
        const TensorView vs(static_cast<const float*>(vv.data()) + t * k.dv, DType::f32, {k.hkv, T, k.dv},
                            {n * k.dv, k.dv, 1});
        for (int64_t l = 0; l < 2; ++l) cache.store(s, l, ks, vs);
        t += T;
      }
    }
  }
};

struct Result {
  Tensor out, lse;
};

Result run(const Filled& f, const Case& k, const Tensor& q, bool reference, DecodeKernel kernel = DecodeKernel::automatic,
           int64_t window = 0, int64_t sinks = 0) {
  Result r{Tensor(DType::f32, {2, k.hq, k.nq, k.dv}), Tensor(DType::f32, {2, k.hq, k.nq})};
  DecodeOptions o;
  o.kernel = kernel;
  o.window = window;
  o.sinks = sinks;
  MutTensorView lse = r.lse.mut();
  if (reference)
    decode_reference(f.cache, 1, f.seqs, q.view(), r.out.mut(), o, lse);
  else
    decode_attention(f.cache, 1, f.seqs, q.view(), r.out.mut(), o, lse);
  return r;
}

// Tolerance of the kernel against the reference on the same (dequantised) cache: f32
// summation order, plus the documented operand roundings of the stored-byte kernels
// (bf16 queries and probabilities; int16 queries and weights; none for f16).
double tolerance(KvStorage s) {
  switch (s) {
    case KvStorage::f32:
    case KvStorage::f16: return 2e-5;
    case KvStorage::bf16: return 2e-2;
    default: return 5e-3;
  }
}

void expect_matches_reference(const Case& k, int64_t window = 0, int64_t sinks = 0) {
  const Filled f(k);
  const Tensor q = random_tensor({2, k.hq, k.nq, k.d}, 99, DType::f32, 2.0);
  const Result want = run(f, k, q, true, DecodeKernel::automatic, window, sinks);
  for (DecodeKernel kernel : {DecodeKernel::automatic, DecodeKernel::generic}) {
    const Result got = run(f, k, q, false, kernel, window, sinks);
    const double tol = kernel == DecodeKernel::generic ? 2e-5 : tolerance(k.storage);
    EXPECT_LE(max_abs_diff(got.out.view(), want.out.view()), tol)
        << kv_layout_name(k.layout) << " " << kv_storage_name(k.storage) << " " << decode_kernel_name(kernel);
    EXPECT_LE(max_abs_diff(got.lse.view(), want.lse.view()), 10 * tol) << kv_storage_name(k.storage);
  }
}

TEST(Decode, EveryLayoutAndStorageMatchesTheReference) {
  for (KvLayout layout : {KvLayout::contiguous, KvLayout::paged, KvLayout::rolling})
    for (KvStorage st : {KvStorage::f32, KvStorage::bf16, KvStorage::f16, KvStorage::int8, KvStorage::int4}) {
      if (layout == KvLayout::rolling && st == KvStorage::int4) continue;
      Case k;
      k.layout = layout;
      k.storage = st;
      if (layout == KvLayout::rolling) {
        k.window = 100;
        k.sinks = 4;
      }
      expect_matches_reference(k);
    }
}

TEST(Decode, MultiTokenQueriesAreBottomRightCausal) {
  for (KvStorage st : {KvStorage::f32, KvStorage::bf16, KvStorage::f16, KvStorage::int8, KvStorage::int4}) {
    Case k;
    k.storage = st;
    k.nq = 5;
    k.layout = KvLayout::paged;
    k.page = 32;
    expect_matches_reference(k);
  }
  Case ring;
  ring.layout = KvLayout::rolling;
  ring.window = 70;
  ring.sinks = 3;
  ring.max_append = 4;
  ring.nq = 4;
  expect_matches_reference(ring);
}

TEST(Decode, WindowsSinksGqaMqaOddWidths) {
  Case k;
  expect_matches_reference(k, 50, 0);
  expect_matches_reference(k, 50, 7);
  k.hq = 4;
  k.hkv = 4;  // MHA
  k.storage = KvStorage::bf16;
  expect_matches_reference(k, 129, 2);
  k.hq = 6;
  k.hkv = 1;  // MQA, widths the stored-byte kernels do not take
  k.d = 40;
  k.dv = 24;
  k.storage = KvStorage::int8;
  expect_matches_reference(k);
}

TEST(Decode, RopeInBothPositionModes) {
  for (KvPositions pos : {KvPositions::absolute, KvPositions::in_cache})
    for (KvLayout layout : {KvLayout::rolling, KvLayout::paged}) {
      Case k;
      k.layout = layout;
      k.rope = true;
      k.positions = pos;
      k.window = 64;
      k.sinks = 4;
      k.storage = KvStorage::bf16;
      expect_matches_reference(k);
    }
}

// The same history in three layouts: paged and contiguous give bitwise-equal outputs (the
// same tiles), the ring equals the contiguous cache with the ring's window.
TEST(Decode, PagedEqualsContiguousEqualsRing) {
  for (KvStorage st : {KvStorage::f32, KvStorage::bf16, KvStorage::f16, KvStorage::int8}) {
    Case k;
    k.storage = st;
    const Filled contiguous(k);
    Case pk = k;
    pk.layout = KvLayout::paged;
    const Tensor q = random_tensor({2, k.hq, k.nq, k.d}, 5);
    for (int64_t page : {1, 7, 16}) {
      pk.page = page;
      const Filled paged(pk);
      const Result a = run(contiguous, k, q, false), b = run(paged, pk, q, false);
      EXPECT_EQ(max_abs_diff(a.out.view(), b.out.view()), 0.0) << kv_storage_name(st) << " page " << page;
    }
    Case rk = k;
    rk.layout = KvLayout::rolling;
    rk.window = 90;
    rk.sinks = 5;
    const Filled ring(rk);
    const Result a = run(contiguous, k, q, false, DecodeKernel::automatic, 90, 5), b = run(ring, rk, q, false);
    // Different tile boundaries: f32 summation order, and for bf16 the rounding of P, taken
    // relative to a running max that depends on where tiles start.
    EXPECT_LE(max_abs_diff(a.out.view(), b.out.view()), st == KvStorage::bf16 ? 2e-3 : 1e-5) << kv_storage_name(st);
  }
}

TEST(Decode, SplitKvIsIndependentOfThreads) {
  Case k;
  k.tokens = 2000;  // few items: split into chunks merged by LSE
  k.storage = KvStorage::bf16;
  const Filled f(k);
  const Tensor q = random_tensor({2, k.hq, k.nq, k.d}, 6);
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  const Result one = run(f, k, q, false);
  omp_set_num_threads(3);
  const Result three = run(f, k, q, false);
  omp_set_num_threads(before);
  EXPECT_EQ(max_abs_diff(one.out.view(), three.out.view()), 0.0);
  EXPECT_EQ(max_abs_diff(one.lse.view(), three.lse.view()), 0.0);
  expect_matches_reference(k);
}

// Quantized caches against an f32 cache of the same history: the attention output error
// the storage costs (printed; the docs quote it), bounded loosely.
TEST(Decode, QuantizedOutputErrorAgainstF32Cache) {
  Case k;
  k.tokens = 1000;
  k.layout = KvLayout::paged;
  const Tensor q = random_tensor({2, k.hq, k.nq, k.d}, 7, DType::f32, 3.0);
  const Filled exact(k);
  const Result want = run(exact, k, q, true);
  for (KvStorage st : {KvStorage::bf16, KvStorage::f16, KvStorage::int8, KvStorage::int4}) {
    Case qk = k;
    qk.storage = st;
    const Filled f(qk);
    const double err = max_abs_diff(run(f, qk, q, false).out.view(), want.out.view());
    std::printf("[ decode ] max |out - out_f32 cache| %s: %.3g\n", std::string(kv_storage_name(st)).c_str(), err);
    EXPECT_LE(err, st == KvStorage::int4 ? 0.1 : 0.02) << kv_storage_name(st);
  }
}

TEST(Decode, ClearErrors) {
  Case k;
  k.layout = KvLayout::rolling;
  k.window = 20;
  k.tokens = 60;
  const Filled f(k);
  const auto msg = [&](const Tensor& q, DecodeOptions o, std::vector<int64_t> seqs) {
    Tensor out(DType::f32, {static_cast<int64_t>(seqs.size()), q.shape()[1], q.shape()[2], k.dv});
    try {
      decode_attention(f.cache, 1, seqs, q.view(), out.mut(), o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const Tensor q = random_tensor({2, 8, 1, 64}, 1);
  DecodeOptions o;
  EXPECT_NE(msg(random_tensor({2, 7, 1, 64}, 1), o, f.seqs).find("multiple of the cache's kv_heads"),
            std::string::npos);
  EXPECT_NE(msg(random_tensor({2, 8, 1, 32}, 1), o, f.seqs).find("head dim (32)"), std::string::npos);
  EXPECT_NE(msg(random_tensor({2, 8, 2, 64}, 1), o, f.seqs).find("max_append (1)"), std::string::npos);
  o.window = 30;
  EXPECT_NE(msg(q, o, f.seqs).find("window (30) and sinks (0) must be <="), std::string::npos);
  o.window = 0;
  EXPECT_NE(msg(q, o, {0, 9}).find("sequence (9) is not a live sequence"), std::string::npos);
  EXPECT_NE(msg(q, o, {0}).find("q has batch 2"), std::string::npos);
}

}  // namespace
}  // namespace attnkit
