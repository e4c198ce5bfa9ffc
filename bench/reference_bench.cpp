// Google Benchmark suite for the reference attention and the pattern machinery.
// Run: build/attnkit_bench --benchmark_format=json. Counters: GFLOP/s on visited pairs.
#include <benchmark/benchmark.h>

#include "attnkit/flops.hpp"
#include "attnkit/reference.hpp"

namespace attnkit {
namespace {

Tensor filled(std::vector<int64_t> shape, float value) {
  Tensor t(DType::f32, std::move(shape));
  float* p = static_cast<float*>(t.data());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = value * float((i * 7919) % 1000) / 1000.0f;
  return t;
}

void BM_Reference(benchmark::State& state, const char* pattern) {
  const int64_t n = state.range(0), d = 64, h = 4;
  const Tensor q = filled({1, h, n, d}, 1.0f), k = filled({1, h, n, d}, -1.0f), v = filled({1, h, n, d}, 0.5f);
  Tensor o(DType::f32, {1, h, n, d}), lse(DType::f32, {1, h, n});
  AttendOptions opts;
  opts.pattern = Pattern::parse(pattern);
  for (auto _ : state) attention_reference(q.view(), k.view(), v.view(), opts, o.mut(), lse.mut());
  AttnShape s;
  s.q_heads = s.kv_heads = h, s.q_len = s.kv_len = n, s.d_qk = s.d_v = d;
  const AttnWork w = count_work(s, opts.pattern.bind(n, n));
  state.counters["GFLOP/s"] = benchmark::Counter(w.flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_Reference, none, "none")->Arg(256)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Reference, causal, "causal")->Arg(256)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Reference, window64, "window:64,0")->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_TileList(benchmark::State& state, const char* pattern) {
  const int64_t n = state.range(0);
  const BoundPattern b = Pattern::parse(pattern).bind(n, n);
  for (auto _ : state) benchmark::DoNotOptimize(b.tiles(64, 64));
}
BENCHMARK_CAPTURE(BM_TileList, causal, "causal")->Arg(16384)->Arg(65536);
BENCHMARK_CAPTURE(BM_TileList, window512, "window:512,0")->Arg(16384)->Arg(65536);
BENCHMARK_CAPTURE(BM_TileList, longformer, "longformer:w=256,global=0+1")->Arg(16384);
BENCHMARK_CAPTURE(BM_TileList, bigbird, "bigbird:block=64,window=3,global=2,random=3")->Arg(16384);

}  // namespace
}  // namespace attnkit
