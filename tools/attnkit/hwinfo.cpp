// attnkit hwinfo: measures and prints this machine's peaks (fp32 FMA, bf16 dot, DRAM read),
// the denominators of every "fraction of peak" attnkit reports, as a table or JSON. All
// measuring is in attnkit/hwinfo.hpp; this file only parses options and prints.
// Not for: benchmarking kernels (attnkit bench).
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <omp.h>
#include <nlohmann/json.hpp>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"
#include "attnkit/hwinfo.hpp"
#include "command.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

struct HwinfoArgs {
  JsonOutput json;
  int threads = 0;  // 0: all OpenMP threads
  double budget = HwOptions{}.seconds_per_measurement;
  int64_t dram_mib = HwOptions{}.dram_bytes >> 20;
};

constexpr const char* kMethod =
    "fp32: 12 independent vector FMA chains per thread (Highway, dispatched target), 2 FLOPs per "
    "lane per FMA; bf16: 16 chains of AVX-512 vdpbf16ps, 64 FLOPs each; DRAM: SIMD sum of a "
    "first-touched buffer, each thread its own slice; best of several trials, all threads at once";

nlohmann::json to_json(const HwInfo& h) {
  return {{"cpu_model", h.cpu_model},
          {"threads", h.threads},
          {"simd_target", h.simd_target},
          {"f32_lanes", h.f32_lanes},
          {"fp32_fma_gflops", h.fp32_fma_gflops},
          {"fp32_fma_gflops_1t", h.fp32_fma_gflops_1t},
          {"has_avx512bf16", h.has_avx512bf16},
          {"bf16_dot_gflops", h.bf16_dot_gflops},
          {"dram_read_gbps", h.dram_read_gbps},
          {"dram_bytes", h.dram_bytes},
          {"seconds", h.seconds},
          {"method", kMethod}};
}

int run(const HwinfoArgs& a) {
  check(a.budget > 0 && a.budget <= 60, [&] { return fmt::format("--budget ({}) must be in (0, 60] seconds", a.budget); });
  const std::vector<OutputPath> outputs = {{a.json.target(), "--json", true}};
  check_outputs(outputs);
  HwOptions o;
  o.threads = a.threads;
  o.seconds_per_measurement = a.budget;
  o.dram_bytes = a.dram_mib << 20;
  const HwInfo h = measure_hwinfo(o);
  if (a.json.given()) {
    write_json(a.json, to_json(h));
    if (a.json.to_stdout()) return 0;
  }
  const std::string bf16 = h.has_avx512bf16 ? fmt::format("{:.1f} GFLOP/s", h.bf16_dot_gflops) : "unsupported (no AVX-512 BF16)";
  const std::string dram = h.dram_bytes > 0 ? fmt::format("{:.1f} GB/s ({} MiB buffer)", h.dram_read_gbps, h.dram_bytes >> 20)
                                            : "not measured (memory too short)";
  fmt::print("{:<22} {}\n", "CPU", h.cpu_model.empty() ? "unknown" : h.cpu_model);
  fmt::print("{:<22} {}\n", "threads", h.threads);
  fmt::print("{:<22} {} ({} f32 lanes)\n", "SIMD target", h.simd_target, h.f32_lanes);
  fmt::print("{:<22} {:.1f} GFLOP/s ({:.1f} on 1 thread)\n", "fp32 FMA peak", h.fp32_fma_gflops, h.fp32_fma_gflops_1t);
  fmt::print("{:<22} {}\n", "bf16 dot peak", bf16);
  fmt::print("{:<22} {}\n", "DRAM read", dram);
  fmt::print("\nmeasured in {:.1f} s. Method: {}.\n", h.seconds, kMethod);
  return 0;
}

ATTNKIT_COMMAND("hwinfo", "Measure this machine's peaks: fp32 FMA and bf16 dot GFLOP/s, DRAM read GB/s",
                [](CLI::App& sub) -> std::function<int()> {
                  auto a = std::make_shared<HwinfoArgs>();
                  add_json(sub, a->json, "the peaks");
                  add_threads(sub, a->threads, "threads to measure on (default: all OpenMP threads)");
                  sub.add_option("--budget", a->budget, "seconds per measurement (4 measurements)")->capture_default_str();
                  add_int(sub, "--dram-mib", a->dram_mib, "DRAM read buffer in MiB (shrunk if memory is short)", 1,
                          int64_t{1} << 20)
                      ->capture_default_str();
                  return [a] { return run(*a); };
                });

}  // namespace
}  // namespace attnkit::cli
