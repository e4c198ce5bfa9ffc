// attnkit bench --method (bench_method.hpp).
#include "bench_method.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include <fmt/format.h>
#include <omp.h>

#include "attnkit/attention.hpp"
#include "attnkit/backward.hpp"
#include "attnkit/error.hpp"
#include "attnkit/flops.hpp"
#include "attnkit/hwinfo.hpp"
#include "attnkit/method.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

std::vector<int64_t> lengths(const MethodBenchArgs& a) {
  if (a.n > 0) return {a.n};
  std::vector<int64_t> ns;
  for (int64_t n = a.min_n; n <= a.max_n; n *= 2) ns.push_back(n);
  return ns;
}

std::vector<Method> methods_of(const MethodBenchArgs& a) {
  std::vector<Method> ms;
  for (const std::string& spec : a.methods) {
    Method m = parse_option("--method", spec, [](const std::string& t) { return parse_method(t); });
    m.linear.causal = a.causal, m.linformer.causal = a.causal;
    ms.push_back(m);
  }
  return ms;
}

void fill(Tensor& t, uint64_t seed) {
  const MutTensorView m = t.mut();
  uint64_t s = seed ^ 0x2545F4914F6CDD1Dull;
  for (int64_t i = 0, n = t.numel(); i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    m.store(i, double(s >> 40) / double(1 << 24) - 0.5);
  }
}

// Median milliseconds of `f` over reps runs after one warm-up run; fewer runs for long ones
// (one run when the warm-up took over 2 s), so a 64K sweep stays in minutes.
template <class F>
double time_ms(F&& f, int reps) {
  const auto once = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  const double warm = once();
  if (warm > 2000) return warm;
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) ms.push_back(once());
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Inputs {
  Tensor q, k, v, d_o, o, dq, dk, dv, lse;
  LinformerProjections proj;
  Tensor de, df;
};

// The shared inputs of one length (Linformer's projections are added per method).
Inputs make_inputs(const MethodBenchArgs& a, int64_t n) {
  Inputs in;
  const int64_t b = a.batch, hq = a.q_heads, hkv = a.kv_heads, d = a.d;
  in.q = Tensor(DType::f32, {b, hq, n, d}), in.k = Tensor(DType::f32, {b, hkv, n, d}), in.v = Tensor(DType::f32, {b, hkv, n, d});
  fill(in.q, 1), fill(in.k, 2), fill(in.v, 3);
  in.o = Tensor(DType::f32, {b, hq, n, d}), in.lse = Tensor(DType::f32, {b, hq, n});
  if (a.backward) {
    in.d_o = Tensor(DType::f32, {b, hq, n, d});
    fill(in.d_o, 4);
    in.dq = Tensor(DType::f32, in.q.shape()), in.dk = Tensor(DType::f32, in.k.shape()), in.dv = Tensor(DType::f32, in.v.shape());
  }
  return in;
}

void add_projections(const MethodBenchArgs& a, const Method& m, int64_t n, Inputs& in) {
  if (m.family != MethodFamily::linformer) return;
  in.proj = make_linformer_projections(m.linformer, a.kv_heads, n);
  if (!a.backward) return;
  in.de = Tensor(DType::f32, in.proj.e.shape());
  in.df = m.linformer.shares_ef() ? Tensor() : Tensor(DType::f32, in.proj.f.shape());  // F is E: dF is in dE
}

// One forward (and with --backward, one backward) of the method.
void run_method(const Method& m, Inputs& in, bool backward) {
  if (m.family == MethodFamily::linformer) {
    linformer_attend_into(in.q.view(), in.k.view(), in.v.view(), in.proj.e.view(), linformer_f(m.linformer, in.proj), m.linformer, in.o.mut());
    if (backward)
      linformer_attend_backward_into(in.q.view(), in.k.view(), in.v.view(), in.proj.e.view(), linformer_f(m.linformer, in.proj),
                                     in.d_o.view(), m.linformer, in.dq.mut(), in.dk.mut(), in.dv.mut(), in.de.mut(),
                                     m.linformer.shares_ef() ? MutTensorView() : in.df.mut());
  } else {
    linear_attend_into(in.q.view(), in.k.view(), in.v.view(), m.linear, in.o.mut());
    if (backward)
      linear_attend_backward_into(in.q.view(), in.k.view(), in.v.view(), in.d_o.view(), m.linear, in.dq.mut(),
                                  in.dk.mut(), in.dv.mut());
  }
}

// The flash kernel on the same inputs: causal or full, like the method.
void run_flash(bool causal, Inputs& in, bool backward) {
  AttendOptions opts;
  opts.pattern = Pattern::parse(causal ? "causal" : "none");
  attend_into(in.q.view(), in.k.view(), in.v.view(), opts, in.o.mut(), in.lse.mut());
  if (backward)
    attend_backward_into(in.q.view(), in.k.view(), in.v.view(), in.o.view(), in.lse.view(), in.d_o.view(), opts,
                         in.dq.mut(), in.dk.mut(), in.dv.mut(), MutTensorView());
}

// Forward FLOPs, times 3.5 for forward + backward (FlashAttention's 2.5 for the backward;
// the linear methods' backward does about twice the forward's products too).
double method_gflop(const MethodBenchArgs& a, const Method& m, int64_t n) {
  const double fwd = m.family == MethodFamily::linformer
                         ? linformer_flops(m.linformer, a.batch, a.q_heads, a.kv_heads, n, a.d, a.d)
                         : linear_flops(m.linear, a.batch, a.q_heads, a.kv_heads, n, a.d, a.d);
  return fwd * (a.backward ? 3.5 : 1.0) * 1e-9;
}

double flash_gflop(const MethodBenchArgs& a, bool causal, int64_t n) {
  AttnShape s;
  s.batch = a.batch, s.q_heads = a.q_heads, s.kv_heads = a.kv_heads, s.q_len = s.kv_len = n, s.d_qk = s.d_v = a.d;
  return count_work(s, Pattern::parse(causal ? "causal" : "none").bind(n, n)).flops * (a.backward ? 3.5 : 1.0) * 1e-9;
}

}  // namespace

void check_method_bench(const MethodBenchArgs& a) {
  for (const Method& m : methods_of(a)) {
    check(m.family != MethodFamily::softmax,
          [] { return std::string("--method softmax: bench times softmax attention without --method"); });
    check(m.family != MethodFamily::mla, [] {
      return std::string("--method mla: MLA is a layer with its own projections; `attnkit mla --decode` and "
                         "bench/mla_bench time it");
    });
    check(!(a.causal && m.family == MethodFamily::linformer),
          [] { return std::string("--method linformer is non-causal: give --pattern none"); });
  }
  check(a.q_heads % a.kv_heads == 0,
        [&] { return fmt::format("--q-heads ({}) must be a multiple of --kv-heads ({})", a.q_heads, a.kv_heads); });
  check(a.n > 0 || a.min_n <= a.max_n,
        [&] { return fmt::format("--min-n ({}) must be at most --max-n ({})", a.min_n, a.max_n); });
  // Inputs, outputs and gradients of the longest length, in f32.
  const double n = double(a.n > 0 ? a.n : a.max_n);
  const double bytes = 4.0 * double(a.batch) * n * double(a.d) * double(3 * a.q_heads + 4 * a.kv_heads) * (a.backward ? 2 : 1);
  check(bytes < 8e9, [&] { return fmt::format("the longest case needs {:.1f} GB of tensors; at most 8 GB", bytes * 1e-9); });
}

nlohmann::json run_method_bench(const MethodBenchArgs& a) {
  const std::vector<Method> ms = methods_of(a);
  const int reps = a.reps > 0 ? a.reps : (a.quick ? 1 : 3);
  std::optional<HwInfo> hw;
  if (!a.no_peak) hw = measure_hwinfo();
  const double peak = hw ? hw->fp32_fma_gflops : 0;
  fmt::print("linear-cost methods against flash ({}), {}, {} threads, B={} Hq={} Hkv={} d={}, median of {} runs\n",
             a.causal ? "causal" : "full", a.backward ? "forward + backward" : "forward", omp_get_max_threads(), a.batch,
             a.q_heads, a.kv_heads, a.d, reps);
  if (hw) fmt::print("fp32 FMA peak (attnkit hwinfo, same run): {:.1f} GFLOP/s\n", peak);
  fmt::print("{:<34} {:>7} {:>11} {:>9} {:>9} {:>8} {:>11} {:>8} {:>11}\n", "method", "n", "ms", "t(2n)/t", "GFLOP/s",
             "% peak", "flash ms", "% peak", "flash/meth");
  const auto pct = [&](double g) { return peak > 0 ? fmt::format("{:.1f}%", 100 * g / peak) : std::string("-"); };
  const auto or_null = [](std::optional<double> x) { return x ? nlohmann::json(*x) : nlohmann::json(nullptr); };
  nlohmann::json records = nlohmann::json::array();
  std::vector<double> prev(ms.size(), 0.0);
  std::vector<std::optional<int64_t>> crossover(ms.size());
  int64_t flash_longest = 0;  // the longest length flash was timed at
  for (const int64_t n : lengths(a)) {
    Inputs in = make_inputs(a, n);
    std::optional<double> fms;
    if (n <= a.flash_max_n) fms = time_ms([&] { run_flash(a.causal, in, a.backward); }, reps), flash_longest = n;
    const double fgflops = fms ? flash_gflop(a, a.causal, n) / (*fms * 1e-3) : 0;
    for (size_t i = 0; i < ms.size(); ++i) {
      const Method& m = ms[i];
      add_projections(a, m, n, in);
      const double t = time_ms([&] { run_method(m, in, a.backward); }, reps);
      const double gflops = method_gflop(a, m, n) / (t * 1e-3);
      const std::optional<double> growth = prev[i] > 0 ? std::optional<double>(t / prev[i]) : std::nullopt;
      const std::optional<double> ratio = fms ? std::optional<double>(*fms / t) : std::nullopt;
      fmt::print("{:<34} {:>7} {:>11.3f} {:>9} {:>9.1f} {:>8} {:>11} {:>8} {:>11}\n", m.to_string(), n, t,
                 growth ? fmt::format("{:.2f}", *growth) : "-", gflops, pct(gflops),
                 fms ? fmt::format("{:.3f}", *fms) : "-", fms ? pct(fgflops) : "-",
                 ratio ? fmt::format("{:.2f}x", *ratio) : "-");
      std::fflush(stdout);
      // The crossover: the first length from which the method stays ahead of flash.
      if (ratio && *ratio > 1 && !crossover[i]) crossover[i] = n;
      if (ratio && *ratio <= 1) crossover[i].reset();
      records.push_back({{"op", a.backward ? "method_fwd_bwd" : "method_fwd"}, {"method", m.to_string()},
                         {"causal", a.causal}, {"B", a.batch}, {"Hq", a.q_heads}, {"Hkv", a.kv_heads}, {"n", n},
                         {"d", a.d}, {"threads", omp_get_max_threads()}, {"reps", reps}, {"median_ms", t},
                         {"growth", or_null(growth)}, {"gflops", gflops},
                         {"peak_gflops", peak > 0 ? nlohmann::json(peak) : nlohmann::json(nullptr)},
                         {"frac_peak", peak > 0 ? nlohmann::json(gflops / peak) : nlohmann::json(nullptr)},
                         {"flash_median_ms", or_null(fms)}, {"flash_gflops", fms ? nlohmann::json(fgflops) : nlohmann::json(nullptr)},
                         {"flash_over_method", or_null(ratio)}});
      prev[i] = t;
    }
  }
  for (size_t i = 0; i < ms.size(); ++i) {
    if (crossover[i])
      fmt::print("crossover: {} is faster than flash from n = {} on\n", ms[i].to_string(), *crossover[i]);
    else
      fmt::print("crossover: {} does not stay faster than flash at the lengths timed (flash up to n = {})\n",
                 ms[i].to_string(), flash_longest);
    for (auto& r : records)
      if (r["method"] == ms[i].to_string()) r["crossover_n"] = crossover[i] ? nlohmann::json(*crossover[i]) : nlohmann::json(nullptr);
  }
  return records;
}

}  // namespace attnkit::cli
