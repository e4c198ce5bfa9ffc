// attnkit bench: times attention kernels on a standard sweep and reports milliseconds,
// GFLOP/s on the pairs each pattern visits, and the KV-cache memory comparison.
// Not for: micro-benchmarks of single loops (bench/ holds the Google Benchmark suites).
#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>

#include <fmt/format.h>
#include <omp.h>

#include <nlohmann/json.hpp>

#include "attnkit/attention.hpp"
#include "attnkit/flops.hpp"
#include "attnkit/hwinfo.hpp"
#include "attnkit/kv_size.hpp"
#include "command.hpp"
#include "kv_report.hpp"

namespace attnkit::cli {
namespace {

// One benchmark case: the shape, pattern and input type of one attention call.
struct BenchCase {
  std::string pattern;
  AttnShape shape;
  DType dtype = DType::f32;
};

std::vector<BenchCase> sweep(bool quick) {
  const int64_t n = quick ? 512 : 1024;
  auto make = [&](const std::string& p, int64_t hq, int64_t hkv, int64_t d) {
    AttnShape s;
    s.batch = 1, s.q_heads = hq, s.kv_heads = hkv, s.q_len = n, s.kv_len = n, s.d_qk = d, s.d_v = d;
    return BenchCase{p, s};
  };
  return {make("none", 8, 8, 64),
          make("causal", 8, 8, 64),
          make("causal", 8, 2, 64),
          make(fmt::format("window:{},0", n / 8), 8, 8, 64),
          make(fmt::format("longformer:w={},global=0", n / 16), 8, 8, 64),
          make(fmt::format("bigbird:block={},window=3,global=1,random=2", n / 16), 8, 8, 64),
          make(fmt::format("strided:stride={}", n / 16), 8, 8, 64)};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

struct BenchArgs {
  bool quick = false;
  std::string json, kernel = "auto", preset = "llama3-8b";
  int reps = 0;
  // One custom case instead of the sweep, when --pattern is given.
  std::string pattern, dtype = "f32";
  int64_t batch = 1, q_heads = 32, kv_heads = 32, n = 4096, kv_n = 0, d = 128;
  bool no_peak = false;
};

std::vector<BenchCase> cases_for(const BenchArgs& a) {
  if (a.pattern.empty()) return sweep(a.quick);
  BenchCase c{a.pattern, {}, parse_dtype(a.dtype)};
  c.shape.batch = a.batch, c.shape.q_heads = a.q_heads, c.shape.kv_heads = a.kv_heads;
  c.shape.q_len = a.n, c.shape.kv_len = a.kv_n > 0 ? a.kv_n : a.n, c.shape.d_qk = c.shape.d_v = a.d;
  c.shape.validate();
  return {c};
}

// The peak a case's GFLOP/s is a fraction of (attnkit hwinfo, measured once per run): the
// fp32 FMA peak, or for bf16 inputs the bf16 dot peak where the CPU has vdpbf16ps (elsewhere
// bf16 is computed in fp32). nullopt with --no-peak.
std::optional<double> peak_gflops(const std::optional<HwInfo>& hw, DType dtype) {
  if (!hw) return std::nullopt;
  return dtype == DType::bf16 && hw->has_avx512bf16 ? hw->bf16_dot_gflops : hw->fp32_fma_gflops;
}

void add_peak(nlohmann::json& r, std::optional<double> peak) {
  const bool known = peak && *peak > 0;
  r["peak_gflops"] = known ? nlohmann::json(*peak) : nlohmann::json(nullptr);
  r["frac_peak"] = known ? nlohmann::json(r["gflops"].get<double>() / *peak) : nlohmann::json(nullptr);
}

std::string percent_of_peak(const nlohmann::json& r) {
  return r["frac_peak"].is_null() ? "-" : fmt::format("{:.2f}%", 100 * r["frac_peak"].get<double>());
}

nlohmann::json time_case(const BenchCase& c, Kernel kernel, int reps) {
  Tensor q(c.dtype, {c.shape.batch, c.shape.q_heads, c.shape.q_len, c.shape.d_qk});
  Tensor k(c.dtype, {c.shape.batch, c.shape.kv_heads, c.shape.kv_len, c.shape.d_qk});
  Tensor v(c.dtype, {c.shape.batch, c.shape.kv_heads, c.shape.kv_len, c.shape.d_v});
  for (Tensor* t : {&q, &k, &v}) {
    uint64_t state = 0x2545F4914F6CDD1Dull ^ t->nbytes();
    const MutTensorView m = t->mut();
    for (int64_t i = 0, n = t->numel(); i < n; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      m.store(i, double(state >> 40) / double(1 << 24) - 0.5);
    }
  }
  AttendOptions opts;
  opts.pattern = Pattern::parse(c.pattern);
  opts.kernel = kernel;
  Tensor o(DType::f32, {c.shape.batch, c.shape.q_heads, c.shape.q_len, c.shape.d_v});
  Tensor lse(DType::f32, {c.shape.batch, c.shape.q_heads, c.shape.q_len});
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {  // the first run warms caches and is not counted
    const auto t0 = std::chrono::steady_clock::now();
    attend_into(q.view(), k.view(), v.view(), opts, o.mut(), lse.mut());
    const auto t1 = std::chrono::steady_clock::now();
    if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  const AttnWork work = count_work(c.shape, opts.pattern.bind(c.shape.q_len, c.shape.kv_len));
  const double med = median(ms);
  return {{"op", "attention_fwd"},    {"kernel", kernel_name(kernel)},  {"pattern", opts.pattern.to_string()},
          {"dtype", dtype_name(c.dtype)}, {"B", c.shape.batch},         {"Hq", c.shape.q_heads},
          {"Hkv", c.shape.kv_heads},  {"Nq", c.shape.q_len},            {"Nkv", c.shape.kv_len},
          {"Dqk", c.shape.d_qk},      {"Dv", c.shape.d_v},              {"threads", omp_get_max_threads()},
          {"reps", reps},             {"median_ms", med},               {"min_ms", *std::min_element(ms.begin(), ms.end())},
          {"visited_fraction", work.visited_fraction()}, {"gflop", work.flops * 1e-9},
          {"gflops", work.flops * 1e-9 / (med * 1e-3)}};
}

int run(const BenchArgs& a) {
  const Kernel kernel = parse_kernel(a.kernel);
  const int reps = a.reps > 0 ? a.reps : (a.quick ? 3 : 5);
  check(reps <= 1000, [&] { return fmt::format("--reps ({}) must be in [1, 1000]", reps); });
  nlohmann::json records = nlohmann::json::array();
  std::optional<HwInfo> hw;
  if (!a.no_peak) hw = measure_hwinfo();
  fmt::print("attention forward, kernel={}, {} threads, median of {} runs\n", kernel_name(kernel), omp_get_max_threads(), reps);
  if (hw)
    fmt::print("peaks (attnkit hwinfo, {} threads): fp32 FMA {:.1f} GFLOP/s, bf16 dot {}, DRAM read {:.1f} GB/s\n",
               hw->threads, hw->fp32_fma_gflops,
               hw->has_avx512bf16 ? fmt::format("{:.1f} GFLOP/s", hw->bf16_dot_gflops) : std::string("unsupported"),
               hw->dram_read_gbps);
  fmt::print("{:<52} {:>6} {:>9} {:>9} {:>10} {:>8} {:>8}\n", "pattern", "Hq/Hkv", "N", "visited", "median ms", "GFLOP/s",
             "% peak");
  for (const BenchCase& c : cases_for(a)) {
    nlohmann::json r = time_case(c, kernel, reps);
    add_peak(r, peak_gflops(hw, c.dtype));
    fmt::print("{:<52} {:>6} {:>9} {:>8.1f}% {:>10.2f} {:>8.2f} {:>8}\n", r["pattern"].get<std::string>(),
               fmt::format("{}/{}", c.shape.q_heads, c.shape.kv_heads), c.shape.q_len,
               100 * r["visited_fraction"].get<double>(), r["median_ms"].get<double>(), r["gflops"].get<double>(),
               percent_of_peak(r));
    std::fflush(stdout);
    records.push_back(std::move(r));
  }
  if (a.pattern.empty()) {
    fmt::print("\nKV-cache memory of {} at its full context, by head layout:\n", a.preset);
    print_kv_comparison(kv_preset(a.preset));
  }
  if (!a.json.empty()) {
    std::ofstream f(a.json);
    check(static_cast<bool>(f), [&] { return fmt::format("--json: cannot open '{}' for writing", a.json); });
    f << records.dump(2) << "\n";
    check(static_cast<bool>(f), [&] { return fmt::format("--json: writing '{}' failed", a.json); });
  }
  return 0;
}

ATTNKIT_COMMAND("bench", "Time attention kernels on the standard sweep; print GFLOP/s and the KV-memory comparison",
                [](CLI::App& sub) -> std::function<int()> {
                  auto a = std::make_shared<BenchArgs>();
                  sub.add_flag("--quick", a->quick, "a short sweep (a few seconds)");
                  sub.add_option("--json", a->json, "write one JSON record per case to this file");
                  sub.add_option("--kernel", a->kernel, "auto | flash | ref")->capture_default_str();
                  sub.add_option("--pattern", a->pattern, "time one case with this pattern instead of the sweep");
                  sub.add_option("--dtype", a->dtype, "input type of the custom case: f32 | bf16 | f16")->capture_default_str();
                  sub.add_option("--batch", a->batch, "custom case: batch")->capture_default_str();
                  sub.add_option("--q-heads", a->q_heads, "custom case: query heads")->capture_default_str();
                  sub.add_option("--kv-heads", a->kv_heads, "custom case: KV heads")->capture_default_str();
                  sub.add_option("--n", a->n, "custom case: query length")->capture_default_str();
                  sub.add_option("--kv-n", a->kv_n, "custom case: key length (default: --n)");
                  sub.add_option("--d", a->d, "custom case: head dim (d_qk = d_v)")->capture_default_str();
                  sub.add_option("--reps", a->reps, "timed runs per case (default 3 with --quick, else 5)");
                  sub.add_flag("--no-peak", a->no_peak, "skip measuring the machine's peaks (peak fields are null)");
                  sub.add_option("--preset", a->preset, "model preset of the KV-memory comparison")->capture_default_str();
                  return [a] { return run(*a); };
                });

}  // namespace
}  // namespace attnkit::cli
