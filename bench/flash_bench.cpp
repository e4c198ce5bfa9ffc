// Google Benchmark suite for the flash forward and backward kernels. Counters: GFLOP/s on
// the pairs each pattern allows (flops.hpp; the backward at 2.5 x the forward's, the
// FlashAttention convention), wall-clock (the kernels run on all OpenMP threads).
// Run: build/attnkit_bench --benchmark_filter=Flash
// The cost of the backward's determinism: --benchmark_filter=FlashBwd/causal (det = 1 / 0).
#include <benchmark/benchmark.h>

#include "attnkit/flops.hpp"
#include "kernels/flash.hpp"
#include "kernels/flash_bwd.hpp"

namespace attnkit {
namespace {

Tensor filled(std::vector<int64_t> shape, DType dtype, float amplitude) {
  Tensor t(dtype, std::move(shape));
  const MutTensorView m = t.mut();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) m.store(i, amplitude * (float((i * 7919) % 1000) / 500.0f - 1.0f));
  return t;
}

void BM_Flash(benchmark::State& state, const char* pattern, DType dtype) {
  const int64_t n = state.range(0), hq = state.range(1), hkv = state.range(2), d = state.range(3);
  const Tensor q = filled({1, hq, n, d}, dtype, 1.0f), k = filled({1, hkv, n, d}, dtype, 1.0f);
  const Tensor v = filled({1, hkv, n, d}, dtype, 0.5f);
  Tensor o(DType::f32, {1, hq, n, d}), lse(DType::f32, {1, hq, n});
  AttendOptions opts;
  opts.pattern = Pattern::parse(pattern);
  for (auto _ : state) flash::flash_forward(q.view(), k.view(), v.view(), opts, o.mut(), lse.mut());
  AttnShape s;
  s.q_heads = hq, s.kv_heads = hkv, s.q_len = s.kv_len = n, s.d_qk = s.d_v = d;
  const AttnWork w = count_work(s, opts.pattern.bind(n, n));
  state.counters["GFLOP/s"] = benchmark::Counter(w.flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// range(4): 1 deterministic dQ order (the library's), 0 any order (a lock per query tile),
// the fastest schedule without a fixed order, kept to measure what determinism costs.
void BM_FlashBwd(benchmark::State& state, const char* pattern, DType dtype) {
  const int64_t n = state.range(0), hq = state.range(1), hkv = state.range(2), d = state.range(3);
  const Tensor q = filled({1, hq, n, d}, dtype, 1.0f), k = filled({1, hkv, n, d}, dtype, 1.0f);
  const Tensor v = filled({1, hkv, n, d}, dtype, 0.5f), d_o = filled({1, hq, n, d}, dtype, 0.25f);
  Tensor o(DType::f32, {1, hq, n, d}), lse(DType::f32, {1, hq, n});
  Tensor dq(DType::f32, {1, hq, n, d}), dk(DType::f32, {1, hkv, n, d}), dv(DType::f32, {1, hkv, n, d});
  AttendOptions opts;
  opts.pattern = Pattern::parse(pattern);
  flash::flash_forward(q.view(), k.view(), v.view(), opts, o.mut(), lse.mut());
  flash::FlashBwdConfig config;
  config.deterministic = state.range(4) != 0;
  for (auto _ : state)
    flash::flash_backward(q.view(), k.view(), v.view(), o.view(), lse.view(), d_o.view(), opts, dq.mut(), dk.mut(),
                          dv.mut(), MutTensorView{}, config);
  AttnShape s;
  s.q_heads = hq, s.kv_heads = hkv, s.q_len = s.kv_len = n, s.d_qk = s.d_v = d;
  const AttnWork w = count_work(s, opts.pattern.bind(n, n));
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.5 * w.flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

#define FLASH_CASE(name, pattern, dtype) \
  BENCHMARK_CAPTURE(BM_Flash, name, pattern, dtype)->Unit(benchmark::kMillisecond)->UseRealTime()
FLASH_CASE(causal_f32, "causal", DType::f32)->Args({4096, 32, 32, 128})->Args({4096, 32, 8, 128})->Args({2048, 16, 16, 64});
FLASH_CASE(full_f32, "none", DType::f32)->Args({2048, 16, 16, 128});
FLASH_CASE(causal_bf16, "causal", DType::bf16)->Args({4096, 32, 8, 128});
FLASH_CASE(window512_f32, "window:512,0", DType::f32)->Args({16384, 8, 8, 128});
FLASH_CASE(longformer_f32, "longformer:w=256,global=0+1", DType::f32)->Args({16384, 8, 8, 128});
BENCHMARK_CAPTURE(BM_FlashBwd, causal_f32, "causal", DType::f32)
    ->ArgNames({"n", "hq", "hkv", "d", "det"})
    ->Args({4096, 32, 8, 128, 1})
    ->Args({4096, 32, 8, 128, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace attnkit
