// Google Benchmark suite for Linformer (linformer.hpp): forward and backward time against n
// at k = 256, d = 64, headwise sharing, B = 1, 4 heads. Counter: GFLOP/s on
// linformer_flops (the backward at 2.5 x the forward's, the FlashAttention convention);
// wall-clock, the kernels run on all OpenMP threads. Linear cost shows as t(2n) / t(n) ~ 2.
// Run: build/attnkit_bench --benchmark_filter=Linformer
#include <benchmark/benchmark.h>

#include "attnkit/linformer.hpp"

namespace attnkit {
namespace {

constexpr int64_t kHeads = 4, kDim = 64;

Tensor filled(std::vector<int64_t> shape, DType dtype, float amplitude) {
  Tensor t(dtype, std::move(shape));
  const MutTensorView m = t.mut();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) m.store(i, amplitude * (float((i * 7919) % 1000) / 500.0f - 1.0f));
  return t;
}

struct Problem {
  LinformerMethod m;
  Tensor q, k, v, d_o;
  LinformerProjections p;
};

Problem make(int64_t n, DType dtype) {
  Problem pr;
  pr.m.k = 256;
  pr.q = filled({1, kHeads, n, kDim}, dtype, 1.0f);
  pr.k = filled({1, kHeads, n, kDim}, dtype, 1.0f);
  pr.v = filled({1, kHeads, n, kDim}, dtype, 0.5f);
  pr.d_o = filled({1, kHeads, n, kDim}, dtype, 0.25f);
  pr.p = make_linformer_projections(pr.m, kHeads, n);
  return pr;
}

void BM_Linformer(benchmark::State& state, DType dtype) {
  const int64_t n = state.range(0);
  const Problem pr = make(n, dtype);
  Tensor o(DType::f32, {1, kHeads, n, kDim});
  for (auto _ : state)
    linformer_attend_into(pr.q.view(), pr.k.view(), pr.v.view(), pr.p.e.view(), pr.p.f.view(), pr.m, o.mut());
  const double flops = linformer_flops(pr.m, 1, kHeads, kHeads, n, kDim, kDim);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_LinformerBwd(benchmark::State& state, DType dtype) {
  const int64_t n = state.range(0);
  const Problem pr = make(n, dtype);
  Tensor dq(DType::f32, {1, kHeads, n, kDim}), dk(DType::f32, {1, kHeads, n, kDim}),
      dv(DType::f32, {1, kHeads, n, kDim});
  Tensor de(DType::f32, pr.p.e.shape()), df(DType::f32, pr.p.f.shape());
  for (auto _ : state)
    linformer_attend_backward_into(pr.q.view(), pr.k.view(), pr.v.view(), pr.p.e.view(), pr.p.f.view(),
                                   pr.d_o.view(), pr.m, dq.mut(), dk.mut(), dv.mut(), de.mut(), df.mut());
  const double flops = 2.5 * linformer_flops(pr.m, 1, kHeads, kHeads, n, kDim, kDim);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK_CAPTURE(BM_Linformer, f32, DType::f32)
    ->ArgName("n")
    ->RangeMultiplier(2)
    ->Range(1024, 65536)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_Linformer, bf16, DType::bf16)
    ->ArgName("n")
    ->Arg(4096)
    ->Arg(65536)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_LinformerBwd, f32, DType::f32)
    ->ArgName("n")
    ->RangeMultiplier(2)
    ->Range(1024, 65536)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace attnkit
