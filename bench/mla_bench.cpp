// Google Benchmark suite for MLA (mla.hpp): the absorbed decode step over a latent cache at
// DeepSeek-V2's shape (512 + 64 latent, n_kv = 65536) for H = 1 ... 128 query heads, in bf16
// and f32 storage, and the two forms of the full-sequence forward at a small prefill.
// Counters: GFLOP/s (mla_decode_flops) and GB/s of latent read (mla_decode_bytes_read); the
// fractions of the machine's peaks are `attnkit mla --decode`'s (it measures them in the
// same run). Wall time: the kernel uses every OpenMP thread.
// Run: build/attnkit_bench --benchmark_filter=Mla
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>

#include "attnkit/mla.hpp"

namespace attnkit {
namespace {

Tensor uniform(std::vector<int64_t> shape, uint64_t seed, float scale) {
  Tensor t(DType::f32, std::move(shape));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  auto* p = static_cast<float*>(t.data());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = u(rng);
  return t;
}

void BM_MlaDecode(benchmark::State& state, KvStorage storage) {
  const int64_t heads = state.range(0), n = state.range(1);
  MlaCacheConfig cc;  // DeepSeek-V2: d_c = 512, d_r = 64
  cc.storage = storage;
  cc.max_tokens = n;
  MlaCache cache(cc);
  cache.append(0, n);
  cache.store(0, 0, uniform({n, cc.width()}, 1, 1.0f).view());
  const Tensor q = uniform({1, heads, cc.width()}, 2, 1.0f);
  Tensor o(DType::f32, {1, heads, cc.d_c});
  const double scale = 1 / std::sqrt(192.0);  // 1/sqrt(d_nope + d_r)
  for (auto _ : state) mla_decode_attention(cache, 0, 0, q.view(), scale, o.mut());
  state.counters["GFLOP/s"] = benchmark::Counter(mla_decode_flops(1, heads, n, cc.d_c, cc.d_r) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] = benchmark::Counter(double(mla_decode_bytes_read(cache, 0)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_MlaDecode, bf16, KvStorage::bf16)
    ->ArgsProduct({{1, 4, 16, 128}, {65536}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_MlaDecode, f32, KvStorage::f32)
    ->Args({128, 65536})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Prefill of N tokens through both forms (H = 16, d_model = 512, DeepSeek-V2's widths):
// the naive form does H (d_nope + d_r + d_v) work per token pair, the absorbed H (2 d_c + d_r).
void BM_MlaForward(benchmark::State& state, MlaForm form) {
  MlaConfig c;
  c.heads = 16;
  c.d_model = 512;
  const int64_t n = state.range(0);
  const Tensor w_q = uniform({c.d_model, c.heads, c.d_qk()}, 3, 0.08f), w_dkv = uniform({c.d_model, c.d_c}, 4, 0.04f);
  const Tensor w_kr = uniform({c.d_model, c.d_r}, 5, 0.08f), w_uk = uniform({c.heads, c.d_nope, c.d_c}, 6, 0.08f);
  const Tensor w_uv = uniform({c.heads, c.d_v, c.d_c}, 7, 0.04f), x = uniform({1, n, c.d_model}, 8, 1.0f);
  const MlaWeights w{w_q.view(), w_dkv.view(), w_kr.view(), w_uk.view(), w_uv.view()};
  Tensor out(DType::f32, {1, n, c.heads, c.d_v});
  for (auto _ : state) mla_forward(c, w, x.view(), nullptr, MlaOptions{form, Pattern::causal()}, out.mut());
}
BENCHMARK_CAPTURE(BM_MlaForward, naive, MlaForm::naive)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_MlaForward, absorbed, MlaForm::absorbed)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace attnkit
