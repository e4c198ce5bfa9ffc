// Google Benchmark suite for linear-cost attention (linear.hpp): the causal chunkwise
// forward of linear attention, retention and the Performer over n = 1K ... 64K at d = 64 and
// 128 (B = 1, H = 8, f32), the recurrent decode step, and the chunkwise backward.
// Counters: GFLOP/s as linear_flops() counts the form (the backward: the products it runs,
// about 3x the forward's), wall-clock (the kernels run on all OpenMP threads). Divide by
// `attnkit hwinfo`'s fp32 FMA peak for the fraction.
// The crossover against exact attention: BM_LinearCrossover runs flash's causal forward and
// the three chunkwise methods over n = 64 ... 4096 (repeat with --benchmark_repetitions and
// read the min aggregate on a shared machine).
// Run: build/attnkit_bench --benchmark_filter=Linear
#include <benchmark/benchmark.h>

#include <algorithm>

#include "attnkit/attention.hpp"
#include "attnkit/linear.hpp"

namespace attnkit {
namespace {

Tensor filled(std::vector<int64_t> shape, float amplitude) {
  Tensor t(DType::f32, std::move(shape));
  const MutTensorView m = t.mut();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) m.store(i, amplitude * (float((i * 7919) % 1000) / 500.0f - 1.0f));
  return t;
}

LinearMethod method(LinearKind kind) {
  LinearMethod m;
  m.kind = kind;
  if (kind == LinearKind::performer) m.features = 256;
  return m;
}

// range: n, d, heads, chunk.
void BM_LinearForward(benchmark::State& state, LinearKind kind) {
  const int64_t n = state.range(0), d = state.range(1), h = state.range(2);
  LinearMethod m = method(kind);
  m.chunk = state.range(3);
  const Tensor q = filled({1, h, n, d}, 0.5f), k = filled({1, h, n, d}, 0.5f), v = filled({1, h, n, d}, 1.0f);
  Tensor o(DType::f32, {1, h, n, d});
  for (auto _ : state) linear_attend_into(q.view(), k.view(), v.view(), m, o.mut());
  state.counters["GFLOP/s"] = benchmark::Counter(linear_flops(m, 1, h, h, n, d, d) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// range: n, d, heads; kind -1 is flash's causal softmax attention.
void BM_LinearCrossover(benchmark::State& state, int kind) {
  const int64_t n = state.range(0), d = state.range(1), h = state.range(2);
  const Tensor q = filled({1, h, n, d}, 0.5f), k = filled({1, h, n, d}, 0.5f), v = filled({1, h, n, d}, 1.0f);
  Tensor o(DType::f32, {1, h, n, d}), lse(DType::f32, {1, h, n});
  AttendOptions opts;
  opts.pattern = Pattern::parse("causal");
  const LinearMethod m = method(static_cast<LinearKind>(std::max(kind, 0)));
  for (auto _ : state) {
    if (kind < 0) {
      attend_into(q.view(), k.view(), v.view(), opts, o.mut(), lse.mut());
    } else {
      linear_attend_into(q.view(), k.view(), v.view(), m, o.mut());
    }
  }
}

void crossover(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "d", "h"});
  for (int64_t d : {64, 128})
    for (int64_t n = 64; n <= 4096; n *= 2) b->Args({n, d, 8});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
  b->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
}

void BM_LinearBackward(benchmark::State& state, LinearKind kind) {
  const int64_t n = state.range(0), d = state.range(1), h = state.range(2);
  const LinearMethod m = method(kind);
  const Tensor q = filled({1, h, n, d}, 0.5f), k = filled({1, h, n, d}, 0.5f), v = filled({1, h, n, d}, 1.0f);
  const Tensor dout = filled({1, h, n, d}, 0.25f);
  Tensor dq(DType::f32, {1, h, n, d}), dk(DType::f32, {1, h, n, d}), dv(DType::f32, {1, h, n, d});
  for (auto _ : state) linear_attend_backward_into(q.view(), k.view(), v.view(), dout.view(), m, dq.mut(), dk.mut(), dv.mut());
  // The reverse pass runs 11 chunk products and the first pass 1, against the forward's 4
  // (of three sizes): counted as 3x the forward.
  state.counters["GFLOP/s"] = benchmark::Counter(3 * linear_flops(m, 1, h, h, n, d, d) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

// One decode step (T = 1) of a batch of 8 sequences: the recurrent state update and read.
void BM_LinearDecodeStep(benchmark::State& state, LinearKind kind) {
  const int64_t d = state.range(0), h = state.range(1), b = 8;
  const LinearMethod m = method(kind);
  LinearState s(m, b, h, h, d, d);
  const Tensor q = filled({b, h, 1, d}, 0.5f), k = filled({b, h, 1, d}, 0.5f), v = filled({b, h, 1, d}, 1.0f);
  Tensor o(DType::f32, {b, h, 1, d});
  for (auto _ : state) s.step(q.view(), k.view(), v.view(), o.mut());
  LinearMethod r = m;
  r.form = LinearForm::recurrent;
  state.counters["GFLOP/s"] =
      benchmark::Counter(linear_flops(r, b, h, h, 1, d, d) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["state_MiB"] = static_cast<double>(s.bytes()) / (1 << 20);
}

void lengths(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "d", "h", "C"});
  for (int64_t d : {64, 128})
    for (int64_t n = 1024; n <= 65536; n *= 2) b->Args({n, d, 8, 64});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

// The chunk size at n = 8192: larger chunks do more (quadratic) work inside a chunk but in
// larger, more efficient products.
void chunks(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "d", "h", "C"});
  for (int64_t d : {64, 128})
    for (int64_t c : {32, 64, 128, 256}) b->Args({8192, d, 8, c});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_LinearForward, linear, LinearKind::linear)->Apply(lengths);
BENCHMARK_CAPTURE(BM_LinearForward, retention, LinearKind::retention)->Apply(lengths);
BENCHMARK_CAPTURE(BM_LinearForward, performer, LinearKind::performer)->Apply(lengths);
BENCHMARK_CAPTURE(BM_LinearForward, linear_chunk, LinearKind::linear)->Apply(chunks);
BENCHMARK_CAPTURE(BM_LinearCrossover, flash_causal, -1)->Apply(crossover);
BENCHMARK_CAPTURE(BM_LinearCrossover, linear, static_cast<int>(LinearKind::linear))->Apply(crossover);
BENCHMARK_CAPTURE(BM_LinearCrossover, retention, static_cast<int>(LinearKind::retention))->Apply(crossover);
BENCHMARK_CAPTURE(BM_LinearCrossover, performer, static_cast<int>(LinearKind::performer))->Apply(crossover);
BENCHMARK_CAPTURE(BM_LinearBackward, linear, LinearKind::linear)
    ->ArgNames({"n", "d", "h"})
    ->Args({8192, 64, 8})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_LinearBackward, retention, LinearKind::retention)
    ->ArgNames({"n", "d", "h"})
    ->Args({8192, 64, 8})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_LinearDecodeStep, linear, LinearKind::linear)->ArgNames({"d", "h"})->Args({64, 8})->Args({128, 8});
BENCHMARK_CAPTURE(BM_LinearDecodeStep, retention, LinearKind::retention)->ArgNames({"d", "h"})->Args({128, 8});

}  // namespace
}  // namespace attnkit
