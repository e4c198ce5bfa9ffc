// attnkit bench: times attention kernels on a standard sweep and reports milliseconds,
// GFLOP/s on the pairs each pattern visits, and the KV-cache memory comparison. Every
// option (and the --json path) is checked before the peaks are measured; JSON records
// carry the run's metadata (options.hpp: run_metadata). Not for: micro-benchmarks of single
// loops (bench/ holds the Google Benchmark suites), nor correctness (the tests compare
// kernels with the reference).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>

#include <sys/resource.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>
#include <omp.h>

#include <nlohmann/json.hpp>

#include "attnkit/atomic_file.hpp"
#include "attnkit/attention.hpp"
#include "attnkit/backward.hpp"
#include "attnkit/flops.hpp"
#include "attnkit/hwinfo.hpp"
#include "attnkit/kv_size.hpp"
#include "bench_decode.hpp"
#include "bench_method.hpp"
#include "command.hpp"
#include "kv_report.hpp"
#include "options.hpp"
#include "rss.hpp"

namespace attnkit::cli {
namespace {

// One benchmark case: the shape, pattern and input type of one attention call.
struct BenchCase {
  std::string pattern;
  AttnShape shape;
  DType dtype = DType::f32;
};

BenchCase make_case(const std::string& pattern, DType dtype, int64_t hq, int64_t hkv, int64_t nq, int64_t nkv, int64_t d) {
  AttnShape s;
  s.batch = 1, s.q_heads = hq, s.kv_heads = hkv, s.q_len = nq, s.kv_len = nkv, s.d_qk = d, s.d_v = d;
  return BenchCase{pattern, s, dtype};
}

// The standard sweep: the shapes docs/BENCHMARKS.md reports (prefill with every pattern
// family, head layouts, dtypes, head dims, and a split-KV decode step). --quick keeps one
// of each family at sizes that run in seconds.
std::vector<BenchCase> sweep(bool quick) {
  const DType f32 = DType::f32, bf16 = DType::bf16, f16 = DType::f16;
  const std::string lf = "longformer:w=256,global=0+1", bb = "bigbird:block=64,window=3,global=2,random=3";
  if (quick)
    return {make_case("none", f32, 8, 8, 2048, 2048, 128),       make_case("causal", f32, 32, 8, 2048, 2048, 128),
            make_case("causal", bf16, 32, 8, 2048, 2048, 128),   make_case("window:512,0", f32, 8, 8, 8192, 8192, 128),
            make_case(lf, f32, 8, 8, 8192, 8192, 128),           make_case(bb, f32, 8, 8, 8192, 8192, 128),
            make_case("causal", f32, 32, 8, 1, 32768, 128)};
  return {make_case("causal", f32, 32, 32, 4096, 4096, 128),    make_case("causal", f32, 32, 8, 4096, 4096, 128),
          make_case("none", f32, 32, 32, 4096, 4096, 128),      make_case("causal", bf16, 32, 8, 4096, 4096, 128),
          make_case("causal", f16, 32, 8, 4096, 4096, 128),     make_case("causal", f32, 32, 32, 4096, 4096, 64),
          make_case("causal", f32, 16, 16, 4096, 4096, 256),    make_case("window:512,0", f32, 8, 8, 16384, 16384, 128),
          make_case("window:512,0", f32, 8, 8, 32768, 32768, 128), make_case(lf, f32, 8, 8, 16384, 16384, 128),
          make_case(bb, f32, 8, 8, 16384, 16384, 128),          make_case("strided:stride=128", f32, 8, 8, 16384, 16384, 128),
          make_case("causal", f32, 32, 8, 1, 65536, 128)};
}

// The backward's sweep (bench --backward): the shapes of its targets in docs/BENCHMARKS.md.
std::vector<BenchCase> backward_sweep(bool quick) {
  const DType f32 = DType::f32, bf16 = DType::bf16;
  const std::string lf = "longformer:w=256,global=0+1", bb = "bigbird:block=64,window=3,global=2,random=3";
  if (quick)
    return {make_case("causal", f32, 32, 8, 2048, 2048, 128), make_case("causal", bf16, 32, 8, 2048, 2048, 128),
            make_case("window:512,0", f32, 8, 8, 8192, 8192, 128), make_case(lf, f32, 8, 8, 8192, 8192, 128)};
  return {make_case("causal", f32, 32, 8, 4096, 4096, 128),       make_case("causal", bf16, 32, 8, 4096, 4096, 128),
          make_case("window:512,0", f32, 8, 8, 16384, 16384, 128), make_case("window:512,0", f32, 8, 8, 32768, 32768, 128),
          make_case(lf, f32, 8, 8, 16384, 16384, 128),            make_case(bb, f32, 8, 8, 16384, 16384, 128),
          make_case("causal", f32, 8, 8, 16384, 16384, 128)};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

struct BenchArgs {
  bool quick = false;
  JsonOutput json;
  std::string kernel = "auto", preset = "llama3-8b";
  int reps = 0, threads = 0;
  // One custom case instead of the sweep, when --pattern is given.
  std::string pattern, dtype = "f32";
  int64_t batch = 1, q_heads = 32, kv_heads = 32, n = 4096, kv_n = 0, d = 128;
  bool no_peak = false;
  bool decode = false;
  bool backward = false;
  DecodeBenchArgs dec;
  MethodBenchArgs method;  // --method: a linear-cost method against flash over n
  std::function<bool(const char*)> given;  // whether an option was on the command line
};

// Bytes of Q, K, V, O (f32) and LSE: what the extra memory is compared with.
int64_t io_bytes(const BenchCase& c) {
  const AttnShape& s = c.shape;
  const int64_t e = static_cast<int64_t>(dtype_size(c.dtype));
  // In double: a custom case may be absurd, and is refused on this figure.
  return static_cast<int64_t>(std::min(
      9e18, double(s.batch) * (double(s.q_heads * s.q_len) * double(s.d_qk * e) +
                               double(s.kv_heads * s.kv_len) * double((s.d_qk + s.d_v) * e) +
                               double(s.q_heads * s.q_len) * double((s.d_v + 1) * 4))));
}

// The backward's inputs and outputs add dO and dQ, dK, dV (f32) to the forward's.
int64_t backward_io_bytes(const BenchCase& c) {
  const AttnShape& s = c.shape;
  return io_bytes(c) + static_cast<int64_t>(std::min(
                           9e18, double(s.batch) * (double(s.q_heads * s.q_len) * double(s.d_v * dtype_size(c.dtype) +
                                                                                           s.d_qk * 4) +
                                                    double(s.kv_heads * s.kv_len) * double((s.d_qk + s.d_v) * 4))));
}

std::vector<BenchCase> cases_for(const BenchArgs& a) {
  if (a.pattern.empty()) return a.backward ? backward_sweep(a.quick) : sweep(a.quick);
  check_choice("--dtype", a.dtype, {"f32", "bf16", "f16"});
  BenchCase c{a.pattern, {}, parse_dtype(a.dtype)};
  c.shape.batch = a.batch, c.shape.q_heads = a.q_heads, c.shape.kv_heads = a.kv_heads;
  c.shape.q_len = a.n, c.shape.kv_len = a.kv_n > 0 ? a.kv_n : a.n, c.shape.d_qk = c.shape.d_v = a.d;
  c.shape.validate();
  const Pattern pattern = parse_option("--pattern", a.pattern, [](const std::string& t) { return Pattern::parse(t); });
  const double bytes = double(a.backward ? backward_io_bytes(c) : io_bytes(c));
  const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
  check(bytes <= ram / 2, [&] {
    return fmt::format("the case needs {:.1f} GiB of inputs and outputs; this machine has {:.1f} GiB of memory",
                       bytes / double(1 << 30), ram / double(1 << 30));
  });
  // Bound here, once the lengths are known to fit, so that a pattern that does not fit them
  // is refused before the peaks are measured.
  pattern.bind(c.shape.q_len, c.shape.kv_len);
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

// Inputs of a case, filled with a fixed pseudo-random sequence in [-0.5, 0.5).
struct CaseInputs {
  Tensor q, k, v;
  explicit CaseInputs(const BenchCase& c)
      : q(c.dtype, {c.shape.batch, c.shape.q_heads, c.shape.q_len, c.shape.d_qk}),
        k(c.dtype, {c.shape.batch, c.shape.kv_heads, c.shape.kv_len, c.shape.d_qk}),
        v(c.dtype, {c.shape.batch, c.shape.kv_heads, c.shape.kv_len, c.shape.d_v}) {
    for (Tensor* t : {&q, &k, &v}) {
      uint64_t state = 0x2545F4914F6CDD1Dull ^ t->nbytes();
      const MutTensorView m = t->mut();
      for (int64_t i = 0, n = t->numel(); i < n; ++i) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        m.store(i, double(state >> 40) / double(1 << 24) - 0.5);
      }
    }
  }
};

// Resets the high-water mark of resident memory (Linux: writing 5 to clear_refs), so the
// peak measured next belongs to the kernel runs, not to earlier work such as hwinfo's
// bandwidth buffer. Returns false where the kernel does not allow it.
bool reset_peak_resident() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

// High-water mark of resident bytes since the last reset (VmHWM), or since start.
int64_t peak_resident_bytes() {
  std::ifstream f("/proc/self/status");
  std::string key;
  while (f >> key) {
    if (key == "VmHWM:") {
      int64_t kib = 0;
      f >> kib;
      return kib * 1024;
    }
    f.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

struct Timing {
  std::vector<double> ms;
  int64_t extra_bytes;  // peak resident growth during the runs, beyond inputs and outputs
};

// Milliseconds of `reps` runs after one uncounted warm-up run.
Timing time_runs(const BenchCase& c, Kernel kernel, int reps) {
  const CaseInputs in(c);
  AttendOptions opts;
  opts.pattern = Pattern::parse(c.pattern);
  opts.kernel = kernel;
  Tensor o(DType::f32, {c.shape.batch, c.shape.q_heads, c.shape.q_len, c.shape.d_v});
  Tensor lse(DType::f32, {c.shape.batch, c.shape.q_heads, c.shape.q_len});
  std::memset(o.data(), 0, o.nbytes());  // resident before the baseline is taken
  std::memset(lse.data(), 0, lse.nbytes());
  const bool reset = reset_peak_resident();
  const int64_t before = resident_bytes();
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    attend_into(in.q.view(), in.k.view(), in.v.view(), opts, o.mut(), lse.mut());
    const auto t1 = std::chrono::steady_clock::now();
    if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return {ms, reset ? std::max<int64_t>(0, peak_resident_bytes() - before) : -1};
}

// The backward timed against the forward in the same run: each rep runs the forward, then
// the backward from its O and LSE (dO fixed), after one uncounted warm-up of both.
struct BackwardTiming {
  std::vector<double> fwd_ms, bwd_ms;
  int64_t extra_bytes;  // peak resident growth during the backward runs
};

BackwardTiming time_backward(const BenchCase& c, Kernel kernel, int reps) {
  const CaseInputs in(c);
  const AttnShape& s = c.shape;
  AttendOptions opts;
  opts.pattern = Pattern::parse(c.pattern);
  opts.kernel = kernel;
  Tensor o(DType::f32, {s.batch, s.q_heads, s.q_len, s.d_v}), lse(DType::f32, {s.batch, s.q_heads, s.q_len});
  Tensor d_o(c.dtype, {s.batch, s.q_heads, s.q_len, s.d_v});
  for (int64_t i = 0, n = d_o.numel(); i < n; ++i) d_o.mut().store(i, double((static_cast<uint64_t>(i) * 2654435761u) % 1000) / 1000.0 - 0.5);
  Tensor dq(DType::f32, {s.batch, s.q_heads, s.q_len, s.d_qk}), dk(DType::f32, {s.batch, s.kv_heads, s.kv_len, s.d_qk});
  Tensor dv(DType::f32, {s.batch, s.kv_heads, s.kv_len, s.d_v});
  for (Tensor* t : {&o, &lse, &dq, &dk, &dv}) std::memset(t->data(), 0, t->nbytes());  // resident before the baseline
  BackwardTiming t;
  bool reset = false;
  int64_t before = 0;
  for (int r = 0; r <= reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    attend_into(in.q.view(), in.k.view(), in.v.view(), opts, o.mut(), lse.mut());
    const auto t1 = std::chrono::steady_clock::now();
    if (r == 0) reset = reset_peak_resident(), before = resident_bytes();
    attend_backward_into(in.q.view(), in.k.view(), in.v.view(), o.view(), lse.view(), d_o.view(), opts, dq.mut(),
                         dk.mut(), dv.mut(), MutTensorView());
    const auto t2 = std::chrono::steady_clock::now();
    if (r == 0) continue;
    t.fwd_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    t.bwd_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  t.extra_bytes = reset ? std::max<int64_t>(0, peak_resident_bytes() - before) : -1;
  return t;
}

double case_gflop(const BenchCase& c) {
  return count_work(c.shape, Pattern::parse(c.pattern).bind(c.shape.q_len, c.shape.kv_len)).flops * 1e-9;
}

// The reference's throughput on the same per-pair work: the last (at most 16) query rows
// of one KV head's group against all keys, so the pattern sees the same rows it would at
// full size (bottom-right alignment). Timing the full case would take minutes.
double reference_gflops(const BenchCase& c) {
  BenchCase sub = c;
  sub.shape.batch = 1;
  sub.shape.q_heads = c.shape.group();
  sub.shape.kv_heads = 1;
  sub.shape.q_len = std::min<int64_t>(c.shape.q_len, 16);
  return case_gflop(sub) / (median(time_runs(sub, Kernel::ref, 1).ms) * 1e-3);
}

// Which AVX-512 micro-kernels the flash kernel runs for this case, by its rule (flash.hpp:
// bf16 inputs, a CPU with AVX-512 BF16, and an AVX-512 target, i.e. 16 f32 lanes).
std::string flash_micro_kernels(const BenchCase& c, Kernel kernel) {
  int lanes = 0;
  dispatched_simd_target(&lanes);
  const bool bf16 = kernel != Kernel::ref && c.dtype == DType::bf16 && cpu_has_avx512bf16() && lanes == 16;
  return bf16 ? "avx512_bf16" : "none";
}

// The fields every prefill record has, for runs of `gflop` each that took `ms`.
nlohmann::json time_case_record(const BenchCase& c, Kernel kernel, int reps, const std::vector<double>& ms,
                                double gflop) {
  const double med = median(ms), gflops = gflop / (med * 1e-3);
  const Pattern pattern = Pattern::parse(c.pattern);
  return {{"op", "attention_fwd"},
          {"kernel", kernel_name(kernel)},
          {"pattern", pattern.to_string()},
          {"dtype", dtype_name(c.dtype)},
          {"B", c.shape.batch},
          {"Hq", c.shape.q_heads},
          {"Hkv", c.shape.kv_heads},
          {"Nq", c.shape.q_len},
          {"Nkv", c.shape.kv_len},
          {"Dqk", c.shape.d_qk},
          {"Dv", c.shape.d_v},
          {"threads", omp_get_max_threads()},
          {"reps", reps},
          {"median_ms", med},
          {"min_ms", *std::min_element(ms.begin(), ms.end())},
          {"visited_fraction", count_work(c.shape, pattern.bind(c.shape.q_len, c.shape.kv_len)).visited_fraction()},
          {"gflop", gflop},
          {"gflops", gflops},
          {"micro_kernels", flash_micro_kernels(c, kernel)}};
}

nlohmann::json time_case(const BenchCase& c, Kernel kernel, int reps) {
  const Timing t = time_runs(c, kernel, reps);
  nlohmann::json r = time_case_record(c, kernel, reps, t.ms, case_gflop(c));
  const double gflops = r["gflops"].get<double>();
  const double ref = kernel == Kernel::ref ? gflops : reference_gflops(c);
  r["ref_gflops"] = ref;
  r["speedup_vs_ref"] = gflops / ref;
  r["io_bytes"] = io_bytes(c);
  r["extra_peak_rss_bytes"] = t.extra_bytes;
  return r;
}

// FlashAttention's convention: the backward's five products against the forward's two,
// counted as 2.5 times the forward's FLOPs on the visited pairs.
constexpr double kBackwardFlopRatio = 2.5;

nlohmann::json time_backward_case(const BenchCase& c, Kernel kernel, int reps) {
  const BackwardTiming t = time_backward(c, kernel, reps);
  const double bwd = median(t.bwd_ms), fwd = median(t.fwd_ms);
  nlohmann::json r = time_case_record(c, kernel, reps, t.bwd_ms, kBackwardFlopRatio * case_gflop(c));
  r["op"] = "attention_bwd";
  r["flop_convention"] = "2.5 x the forward's visited-pair FLOPs (FlashAttention)";
  r["fwd_median_ms"] = fwd;
  r["bwd_over_fwd"] = bwd / fwd;
  r["ref_gflops"] = nullptr;  // the oracle's backward is not timed: minutes at these sizes
  r["speedup_vs_ref"] = nullptr;
  r["io_bytes"] = backward_io_bytes(c);
  r["extra_peak_rss_bytes"] = t.extra_bytes;
  return r;
}

// Every option is checked here, before the peaks are measured or a case is run.
struct Checked {
  Kernel kernel = Kernel::automatic;
  int reps = 0;
  std::vector<BenchCase> cases;
  KvConfig preset;
};

Checked check_prefill(const BenchArgs& a) {
  Checked k;
  k.kernel = parse_option("--kernel", a.kernel, [](const std::string& t) { return parse_kernel(t); });
  k.reps = a.reps > 0 ? a.reps : (a.quick ? 3 : 5);
  k.cases = cases_for(a);  // validates a custom case before any work
  if (a.pattern.empty())
    k.preset = parse_option("--preset", a.preset, [](const std::string& t) { return kv_preset(t); });
  return k;
}

nlohmann::json run_prefill(const BenchArgs& a, const Checked& k) {
  const Kernel kernel = k.kernel;
  const int reps = k.reps;
  const std::vector<BenchCase>& cases = k.cases;
  nlohmann::json records = nlohmann::json::array();
  std::optional<HwInfo> hw;
  if (!a.no_peak) hw = measure_hwinfo();
  fmt::print("attention {}, kernel={}, {} threads, median of {} runs\n", a.backward ? "backward" : "forward",
             kernel_name(kernel), omp_get_max_threads(), reps);
  if (a.backward)
    fmt::print("backward FLOPs: {}; bwd/fwd: the forward timed in the same run\n",
               "2.5 x the forward's on the visited pairs (FlashAttention's convention)");
  if (hw)
    fmt::print("peaks (attnkit hwinfo, {} threads): fp32 FMA {:.1f} GFLOP/s, bf16 dot {}, DRAM read {:.1f} GB/s\n",
               hw->threads, hw->fp32_fma_gflops,
               hw->has_avx512bf16 ? fmt::format("{:.1f} GFLOP/s", hw->bf16_dot_gflops) : std::string("unsupported"),
               hw->dram_read_gbps);
  fmt::print("{:<52} {:>5} {:>6} {:>13} {:>4} {:>8} {:>10} {:>8} {:>8} {:>8}\n", "pattern", "dtype", "Hq/Hkv",
             "Nq x Nkv", "D", "visited", "median ms", "GFLOP/s", "% peak", a.backward ? "bwd/fwd" : "vs ref");
  for (const BenchCase& c : cases) {
    nlohmann::json r = a.backward ? time_backward_case(c, kernel, reps) : time_case(c, kernel, reps);
    add_peak(r, peak_gflops(hw, c.dtype));
    const std::string last = a.backward ? fmt::format("{:.2f}", r["bwd_over_fwd"].get<double>())
                                        : fmt::format("{:.0f}x", r["speedup_vs_ref"].get<double>());
    fmt::print("{:<52} {:>5} {:>6} {:>13} {:>4} {:>7.1f}% {:>10.2f} {:>8.1f} {:>8} {:>8}\n",
               r["pattern"].get<std::string>(), dtype_name(c.dtype), fmt::format("{}/{}", c.shape.q_heads, c.shape.kv_heads),
               fmt::format("{}x{}", c.shape.q_len, c.shape.kv_len), c.shape.d_qk, 100 * r["visited_fraction"].get<double>(),
               r["median_ms"].get<double>(), r["gflops"].get<double>(), percent_of_peak(r), last);
    if (!a.pattern.empty() && r["extra_peak_rss_bytes"].get<int64_t>() >= 0) {
      // Only meaningful for a single case: the high-water mark is per process.
      const double extra = r["extra_peak_rss_bytes"].get<double>(), io = r["io_bytes"].get<double>();
      fmt::print("peak extra resident memory: {:.2f} MiB = {:.3f}% of inputs + outputs ({:.1f} MiB)\n",
                 extra / (1 << 20), 100 * extra / io, io / (1 << 20));
    }
    std::fflush(stdout);
    records.push_back(std::move(r));
  }
  if (a.pattern.empty() && !a.backward) {
    fmt::print("\nKV-cache memory of {} at its full context, by head layout:\n", k.preset.name);
    print_kv_comparison(k.preset);
  }
  return records;
}

int run(const BenchArgs& a) {
  apply_threads(a.threads);
  const std::vector<OutputPath> outputs = {{a.json.target(), "--json", true}};
  check_outputs(outputs);
  nlohmann::json records;
  std::FILE* json_stream = stdout;
  check(!(a.decode && a.backward), [] { return std::string("--decode and --backward: give one or the other"); });
  check(!(a.decode && !a.method.methods.empty()), [] { return std::string("--decode and --method: give one or the other"); });
  if (!a.method.methods.empty()) {
    MethodBenchArgs m = a.method;
    m.quick = a.quick, m.no_peak = a.no_peak, m.reps = a.reps, m.backward = a.backward;
    // The sweep's defaults (B = 1, 8 heads, d = 64) unless given; causal unless --pattern none
    // (Linformer: non-causal unless --pattern causal, which it refuses).
    if (a.given("--batch")) m.batch = a.batch;
    if (a.given("--q-heads")) m.q_heads = a.q_heads;
    if (a.given("--kv-heads")) m.kv_heads = a.kv_heads;
    if (a.given("--d")) m.d = a.d;
    if (a.given("--n")) m.n = a.n;
    if (a.quick && !a.given("--max-n")) m.max_n = std::min<int64_t>(m.max_n, 8192);
    check(a.pattern.empty() || a.pattern == "none" || a.pattern == "causal", [&] {
      return fmt::format("--pattern (\"{}\"): with --method, none or causal", printable(a.pattern));
    });
    const bool any_linformer = std::any_of(m.methods.begin(), m.methods.end(),
                                           [](const std::string& spec) { return spec.rfind("linformer", 0) == 0; });
    m.causal = a.pattern.empty() ? !any_linformer : a.pattern == "causal";
    check_method_bench(m);
    if (a.json.to_stdout()) json_stream = divert_stdout_to_stderr();
    records = run_method_bench(m);
  } else if (a.decode) {
    DecodeBenchArgs d = a.dec;
    d.quick = a.quick, d.no_peak = a.no_peak, d.reps = a.reps;
    d.kernel = a.kernel;
    // Shared options keep the decode defaults (32 / 8 heads, d = 128, 65536 tokens) unless given.
    if (a.given("--batch")) d.batch = a.batch;
    if (a.given("--q-heads")) d.q_heads = a.q_heads;
    if (a.given("--kv-heads")) d.kv_heads = a.kv_heads;
    if (a.given("--d")) d.d = a.d;
    if (a.given("--n")) d.n = a.n;
    if (a.given("--kv-n")) d.n = a.kv_n;  // the cached tokens: --kv-n says it best, --n is kept
    check_decode_bench(d);
    if (a.json.to_stdout()) json_stream = divert_stdout_to_stderr();
    records = run_decode_bench(d);
  } else {
    const Checked k = check_prefill(a);
    if (a.json.to_stdout()) json_stream = divert_stdout_to_stderr();
    records = run_prefill(a, k);
  }
  if (a.json.given()) {
    const nlohmann::json meta = run_metadata();
    for (nlohmann::json& r : records) r.update(meta);
    write_json(a.json, records, json_stream);
  }
  return 0;
}

ATTNKIT_COMMAND("bench", "Time attention kernels on the standard sweep; print GFLOP/s and the KV-memory comparison",
                [](CLI::App& sub) -> std::function<int()> {
                  auto a = std::make_shared<BenchArgs>();
                  sub.add_flag("--quick", a->quick, "a short sweep (a few seconds)");
                  add_json(sub, a->json, "one record per case (with CPU, ISA, commit and date)");
                  sub.add_option("--kernel", a->kernel, "auto | flash | ref (--decode: auto | generic)")
                      ->capture_default_str();
                  add_threads(sub, a->threads);
                  sub.add_option("--pattern", a->pattern, "time one case with this pattern instead of the sweep");
                  sub.add_option("--dtype", a->dtype, "input type of the custom case: f32 | bf16 | f16")->capture_default_str();
                  add_int(sub, "--batch", a->batch, "custom case: batch", 1, kMaxKvBatch)->capture_default_str();
                  add_int(sub, "--q-heads", a->q_heads, "custom case: query heads", 1, kMaxKvHeads)->capture_default_str();
                  add_int(sub, "--kv-heads", a->kv_heads, "custom case: KV heads", 1, kMaxKvHeads)->capture_default_str();
                  add_int(sub, "--n", a->n, "custom case: query length (--decode: cached tokens per sequence)", 1,
                          kMaxSeqLen)
                      ->capture_default_str();
                  add_int(sub, "--kv-n", a->kv_n, "custom case: key length (default: --n; --decode: cached tokens)", 1,
                          kMaxSeqLen);
                  add_int(sub, "--d", a->d, "custom case: head dim (d_qk = d_v)", 1, kMaxHeadDim)->capture_default_str();
                  add_int(sub, "--reps", a->reps, "timed runs per case (default 3 with --quick, else 5)", 1, 1000);
                  sub.add_flag("--no-peak", a->no_peak, "skip measuring the machine's peaks (peak fields are null)");
                  sub.add_option("--preset", a->preset, "model preset of the KV-memory comparison")->capture_default_str();
                  sub.add_flag("--decode", a->decode,
                               "time decode steps against KV caches instead (GB/s, fraction of DRAM bandwidth); with "
                               "--kernel auto | generic");
                  sub.add_flag("--backward", a->backward,
                               "time the backward (attention_bwd records; FLOPs counted as 2.5 x the forward's) "
                               "beside the forward of the same run");
                  sub.add_option("--layout", a->dec.layout, "--decode custom case: contiguous | rolling | paged");
                  sub.add_option("--storage", a->dec.storage, "--decode custom case: f32 | bf16 | f16 | int8 | int4");
                  add_int(sub, "--page", a->dec.page, "--decode: page size of the paged layout", 1, kMaxSeqLen)
                      ->capture_default_str();
                  add_int(sub, "--nq", a->dec.nq, "--decode: new tokens per sequence", 1, kMaxSeqLen)->capture_default_str();
                  add_int(sub, "--window", a->dec.window, "--decode: rolling window", 1, kMaxSeqLen)->capture_default_str();
                  add_int(sub, "--sinks", a->dec.sinks, "--decode: rolling sinks", 0, kMaxSeqLen)->capture_default_str();
                  add_int(sub, "--rolling-rss", a->dec.rolling_rss,
                          fmt::format("--decode: generate this many tokens into a rolling cache and report resident "
                                      "memory (at most {}, a few minutes)",
                                      kMaxRollingRssTokens),
                          1, kMaxRollingRssTokens);
                  sub.add_option("--method", a->method.methods,
                                 "time linear-cost methods (linear | performer:m=M | retention | linformer:k=K; repeat "
                                 "the option for several) against flash over n = --min-n .. --max-n (with --pattern "
                                 "none: non-causal)");
                  add_int(sub, "--min-n", a->method.min_n, "--method: shortest length of the sweep", 1, kMaxSeqLen)
                      ->capture_default_str();
                  add_int(sub, "--max-n", a->method.max_n, "--method: longest length of the sweep (--quick: 8192)", 1,
                          kMaxSeqLen)
                      ->capture_default_str();
                  add_int(sub, "--flash-max-n", a->method.flash_max_n,
                          "--method: time flash up to this length (its time grows as n^2)", 0, kMaxSeqLen)
                      ->capture_default_str();
                  a->given = [&sub](const char* name) { return sub.count(name) > 0; };
                  return [a] { return run(*a); };
                });

}  // namespace
}  // namespace attnkit::cli
