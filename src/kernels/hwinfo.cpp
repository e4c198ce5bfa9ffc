// measure_hwinfo(): this machine's fp32 FMA, bf16 dot and DRAM-read peaks, measured with
// Highway's runtime dispatch on all OpenMP threads (see attnkit/hwinfo.hpp for the
// conventions). The loops here are throughput probes that do no useful work.
// Not for: kernels, nor choosing SIMD targets (this file only reports what dispatch picks).
#include "attnkit/hwinfo.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "kernels/avx512_peak.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/hwinfo.cpp"
#include <hwy/foreach_target.h>  // re-includes this file once per SIMD target

#include <hwy/aligned_allocator.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace attnkit {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Reports which target this copy was compiled for: the one dispatch chose, when called
// through HWY_DYNAMIC_DISPATCH.
int64_t DispatchedTarget(int* f32_lanes) {
  *f32_lanes = static_cast<int>(hn::Lanes(hn::ScalableTag<float>()));
  return HWY_TARGET;
}

// Independent FMA chains per loop iteration. An FMA has 4 cycles of latency and Zen 4/5
// (like Intel's big cores) have 2 FMA pipes, so at least 4 x 2 = 8 chains must be in flight
// to keep both busy; fewer would measure latency, not throughput. Measured on this Zen 4
// (whose 2 pipes are 256 bits wide, so a zmm FMA takes both): with zmm, 1 chain gives 1/4
// of the peak, 4 chains 91%, 8 chains 100%; with ymm, 8 chains are needed for 100%.
// 12 leaves margin for 5-cycle FMAs and, with the 2 operands, still fits in the 16
// registers of AVX2, so no target spills (spills would put loads and stores in the loop).
constexpr int kFmaChains = 12;

// Runs `iters` iterations of kFmaChains vector FMAs c = c * a + b. With 0 < a < 1 every
// chain converges to b / (1 - a), so the values stay normal (no denormal or inf slow
// paths) however long it runs. Returns the sum of all chains, so nothing can be elided.
float FmaChains(int64_t iters, float a, float b) {
  const hn::ScalableTag<float> d;
  const auto va = hn::Set(d, a), vb = hn::Set(d, b);
  // Distinct starting values keep the compiler from merging chains.
  auto c0 = hn::Set(d, 0.0f), c1 = hn::Set(d, 0.1f), c2 = hn::Set(d, 0.2f), c3 = hn::Set(d, 0.3f);
  auto c4 = hn::Set(d, 0.4f), c5 = hn::Set(d, 0.5f), c6 = hn::Set(d, 0.6f), c7 = hn::Set(d, 0.7f);
  auto c8 = hn::Set(d, 0.8f), c9 = hn::Set(d, 0.9f), c10 = hn::Set(d, 1.0f), c11 = hn::Set(d, 1.1f);
  static_assert(kFmaChains == 12, "the loop body below has 12 chains");
  for (int64_t i = 0; i < iters; ++i) {
    c0 = hn::MulAdd(c0, va, vb), c1 = hn::MulAdd(c1, va, vb), c2 = hn::MulAdd(c2, va, vb);
    c3 = hn::MulAdd(c3, va, vb), c4 = hn::MulAdd(c4, va, vb), c5 = hn::MulAdd(c5, va, vb);
    c6 = hn::MulAdd(c6, va, vb), c7 = hn::MulAdd(c7, va, vb), c8 = hn::MulAdd(c8, va, vb);
    c9 = hn::MulAdd(c9, va, vb), c10 = hn::MulAdd(c10, va, vb), c11 = hn::MulAdd(c11, va, vb);
  }
  const auto s = hn::Add(hn::Add(hn::Add(hn::Add(c0, c1), hn::Add(c2, c3)), hn::Add(hn::Add(c4, c5), hn::Add(c6, c7))),
                         hn::Add(hn::Add(c8, c9), hn::Add(c10, c11)));
  return hn::GetLane(hn::SumOfLanes(d, s));
}

// Sum of p[0, n): the read-bandwidth probe. 8 independent accumulators so the adds never
// limit the rate and the core keeps many cache-line loads in flight.
float SumF32(const float* HWY_RESTRICT p, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  auto s4 = hn::Zero(d), s5 = hn::Zero(d), s6 = hn::Zero(d), s7 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 8 * N <= n; i += 8 * N) {
    s0 = hn::Add(s0, hn::LoadU(d, p + i + 0 * N)), s1 = hn::Add(s1, hn::LoadU(d, p + i + 1 * N));
    s2 = hn::Add(s2, hn::LoadU(d, p + i + 2 * N)), s3 = hn::Add(s3, hn::LoadU(d, p + i + 3 * N));
    s4 = hn::Add(s4, hn::LoadU(d, p + i + 4 * N)), s5 = hn::Add(s5, hn::LoadU(d, p + i + 5 * N));
    s6 = hn::Add(s6, hn::LoadU(d, p + i + 6 * N)), s7 = hn::Add(s7, hn::LoadU(d, p + i + 7 * N));
  }
  const auto s = hn::Add(hn::Add(hn::Add(s0, s1), hn::Add(s2, s3)), hn::Add(hn::Add(s4, s5), hn::Add(s6, s7)));
  float total = hn::GetLane(hn::SumOfLanes(d, s));
  for (; i < n; ++i) total += p[i];
  return total;
}

int64_t FmaChainCount() { return kFmaChains; }

}  // namespace HWY_NAMESPACE
}  // namespace attnkit
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit {

HWY_EXPORT(DispatchedTarget);
HWY_EXPORT(FmaChains);
HWY_EXPORT(SumF32);
HWY_EXPORT(FmaChainCount);

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Results of the probes land here, so the compiler must compute them.
volatile float g_sink = 0;

// Seconds for `body(thread)` run on `threads` threads at once, from a barrier to a barrier
// (so the slowest thread's time); each thread's float result is consumed.
double timed_parallel(int threads, const std::function<float(int)>& body) {
  double elapsed = 0;
  std::vector<float> sums(static_cast<size_t>(threads));
#pragma omp parallel num_threads(threads)
  {
    Clock::time_point t0;
#pragma omp barrier
#pragma omp master
    t0 = Clock::now();
    sums[static_cast<size_t>(omp_get_thread_num())] = body(omp_get_thread_num());
#pragma omp barrier
#pragma omp master
    elapsed = seconds_since(t0);
  }
  for (float x : sums) g_sink = g_sink + x;
  return elapsed;
}

// Best rate (units of `work_per_iter` per second, summed over threads) of `probe(iters)`
// run on `threads` threads at once. The iteration count is calibrated on the calling
// thread so one trial takes about budget / 10; trials repeat until the budget is spent
// (at least 3), and the best counts, since interference only ever slows a trial down. Many
// short trials rather than a few long ones give a better chance that one of them falls in
// a quiet moment of a shared machine.
// Each trial is timed from a barrier to a barrier, so it is the slowest thread's time.
double best_rate(int threads, double budget_s, double work_per_iter, const std::function<float(int64_t)>& probe) {
  int64_t iters = 1 << 10;
  for (;;) {  // calibration, which also warms the core's clocks up
    const auto t0 = Clock::now();
    g_sink = g_sink + probe(iters);
    const double s = seconds_since(t0);
    if (s >= budget_s / 40 || iters > (int64_t(1) << 40)) {
      const double scale = (budget_s / 10) / std::max(s, 1e-9);
      iters = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iters) * scale));
      break;
    }
    iters *= 2;
  }
  double best = 0;
  const auto start = Clock::now();
  for (int trial = 0; trial < 3 || (seconds_since(start) < budget_s && trial < 50); ++trial) {
    const double elapsed = timed_parallel(threads, [&](int) { return probe(iters); });
    best = std::max(best, static_cast<double>(threads) * static_cast<double>(iters) * work_per_iter / elapsed);
  }
  return best;
}

// MemAvailable from /proc/meminfo in bytes, or -1 when it cannot be read.
int64_t available_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (f >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return -1;
}

// DRAM read bandwidth: each thread sums its own contiguous slice, after first-touching it
// in the same layout so its pages sit on the thread's NUMA node. Best of several passes.
// Returns 0 and sets *bytes to 0 when memory is too short for a buffer of a meaningful size.
double dram_read_gbps(int threads, double budget_s, int64_t* bytes) {
  // Use at most a quarter of the available memory: the measurement must not push the
  // machine (shared with other work) into reclaim. Refuse rather than measure a buffer so
  // small that the caches would serve it.
  const int64_t requested = *bytes;
  const int64_t avail = available_memory();
  int64_t use = avail > 0 ? std::min(requested, avail / 4) : requested;
  const int64_t line_floats = 16 * static_cast<int64_t>(threads);  // whole cache lines per thread
  int64_t n = use / static_cast<int64_t>(sizeof(float)) / line_floats * line_floats;
  if (n == 0 || use < std::min<int64_t>(requested, int64_t(64) << 20)) {
    *bytes = 0;
    return 0;
  }
  hwy::AlignedFreeUniquePtr<float[]> buf = hwy::AllocateAligned<float>(static_cast<size_t>(n));
  if (!buf) {
    *bytes = 0;
    return 0;
  }
  *bytes = n * static_cast<int64_t>(sizeof(float));
  const int64_t per_thread = n / threads;
  float* p = buf.get();
#pragma omp parallel num_threads(threads)
  std::fill_n(p + per_thread * omp_get_thread_num(), per_thread, 1.0f);

  double best = 0;
  const auto start = Clock::now();
  for (int pass = 0; pass < 3 || (seconds_since(start) < budget_s && pass < 100); ++pass) {
    const double elapsed =
        timed_parallel(threads, [&](int t) { return HWY_DYNAMIC_DISPATCH(SumF32)(p + per_thread * t, per_thread); });
    best = std::max(best, static_cast<double>(*bytes) / elapsed * 1e-9);
  }
  return best;
}

// "model name" from /proc/cpuinfo plus family/model numbers, or "" when unreadable.
std::string read_cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, name, family, model;
  auto value = [](const std::string& l) {
    const size_t v = l.find_first_not_of(" \t", l.find(':') + 1);
    return v == std::string::npos ? std::string() : l.substr(v);
  };
  auto key_is = [](const std::string& l, const char* key) {
    const size_t colon = l.find(':');
    return colon != std::string::npos && l.rfind(key, 0) == 0 &&
           l.find_first_not_of(" \t", std::char_traits<char>::length(key)) == colon;
  };
  while (std::getline(f, line) && !line.empty()) {  // the first processor's block is enough
    if (key_is(line, "model name")) name = value(line);
    else if (key_is(line, "cpu family")) family = value(line);
    else if (key_is(line, "model")) model = value(line);
  }
  if (name.empty()) return "";
  if (family.empty() || model.empty()) return name;
  return fmt::format("{} (family {}, model {})", name, family, model);
}

}  // namespace

std::string dispatched_simd_target(int* f32_lanes) {
  int lanes = 0;
  const int64_t target = HWY_DYNAMIC_DISPATCH(DispatchedTarget)(&lanes);
  if (f32_lanes) *f32_lanes = lanes;
  return hwy::TargetName(target);
}

std::string cpu_model_name() { return read_cpu_model(); }

HwInfo measure_hwinfo(const HwOptions& o) {
  check(o.threads >= 0 && o.threads <= 1024,
        [&] { return fmt::format("threads ({}) must be in [1, 1024], or 0 for all", o.threads); });
  check(std::isfinite(o.seconds_per_measurement) && o.seconds_per_measurement > 0 && o.seconds_per_measurement <= 60,
        [&] { return fmt::format("seconds_per_measurement ({}) must be in (0, 60]", o.seconds_per_measurement); });
  check(o.dram_bytes >= 0, [&] { return fmt::format("dram_bytes ({}) must not be negative", o.dram_bytes); });
  const auto start = Clock::now();
  HwInfo h;
  h.threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  h.cpu_model = read_cpu_model();
  h.simd_target = dispatched_simd_target(&h.f32_lanes);
  const double budget = o.seconds_per_measurement;

  // a and b come through a volatile so the compiler cannot see the chains' fixed point.
  static volatile float a = 0.999f, b = 1e-3f;
  const float fa = a, fb = b;
  const double fma_flops_per_iter = 2.0 * h.f32_lanes * static_cast<double>(HWY_DYNAMIC_DISPATCH(FmaChainCount)());
  auto fma_probe = [&](int64_t iters) { return HWY_DYNAMIC_DISPATCH(FmaChains)(iters, fa, fb); };
  h.fp32_fma_gflops_1t = best_rate(1, budget, fma_flops_per_iter, fma_probe) * 1e-9;
  h.fp32_fma_gflops =
      h.threads == 1 ? h.fp32_fma_gflops_1t : best_rate(h.threads, budget, fma_flops_per_iter, fma_probe) * 1e-9;

  h.has_avx512bf16 = cpu_has_avx512bf16();
  if (h.has_avx512bf16) {
    const float da = 1e-3f * fa, db = 1e-3f * fb;  // products of 1e-9: far from overflow
    auto bf16_probe = [&](int64_t iters) { return detail::bf16_dot_chains(iters, da, db); };
    h.bf16_dot_gflops = best_rate(h.threads, budget, detail::kBf16FlopsPerIter, bf16_probe) * 1e-9;
  }

  h.dram_bytes = o.dram_bytes;
  h.dram_read_gbps = dram_read_gbps(h.threads, budget, &h.dram_bytes);
  h.seconds = seconds_since(start);
  return h;
}

}  // namespace attnkit
#endif  // HWY_ONCE
