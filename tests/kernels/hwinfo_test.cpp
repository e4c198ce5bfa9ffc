// Tests of measure_hwinfo() and `attnkit hwinfo`: structure and consistency only. The
// figures themselves are never compared with thresholds or with each other (no timed
// assertions: the machines are shared and noisy); budgets are tiny to keep the tests fast.
#include <omp.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <utility>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "attnkit/error.hpp"
#include "attnkit/hwinfo.hpp"
#include "cli_runner.hpp"

namespace attnkit {
namespace {

using testing::run_cli;

HwOptions quick_options() {
  HwOptions o;
  o.seconds_per_measurement = 0.01;
  o.dram_bytes = int64_t(16) << 20;
  return o;
}

bool positive_finite(double x) { return std::isfinite(x) && x > 0; }

TEST(HwInfo, FiguresArePositiveAndFinite) {
  const HwInfo h = measure_hwinfo(quick_options());
  EXPECT_EQ(h.threads, omp_get_max_threads());
  EXPECT_TRUE(positive_finite(h.fp32_fma_gflops)) << h.fp32_fma_gflops;
  EXPECT_TRUE(positive_finite(h.fp32_fma_gflops_1t)) << h.fp32_fma_gflops_1t;
  EXPECT_TRUE(positive_finite(h.seconds)) << h.seconds;
  // The DRAM figure is 0 only when memory was too short to measure, and then says so.
  EXPECT_LE(h.dram_bytes, quick_options().dram_bytes);
  EXPECT_GE(h.dram_bytes, 0);
  EXPECT_EQ(h.dram_bytes > 0, positive_finite(h.dram_read_gbps)) << h.dram_bytes << " " << h.dram_read_gbps;
  if (h.dram_bytes == 0) {
    EXPECT_EQ(h.dram_read_gbps, 0.0);
  }
}

TEST(HwInfo, Bf16FigureIsZeroExactlyWhenUnsupported) {
  const HwInfo h = measure_hwinfo(quick_options());
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  EXPECT_EQ(h.has_avx512bf16, static_cast<bool>(__builtin_cpu_supports("avx512bf16")));
#else
  EXPECT_FALSE(h.has_avx512bf16);
#endif
  EXPECT_EQ(h.has_avx512bf16, cpu_has_avx512bf16());
  if (h.has_avx512bf16) {
    EXPECT_TRUE(positive_finite(h.bf16_dot_gflops)) << h.bf16_dot_gflops;
  } else {
    EXPECT_EQ(h.bf16_dot_gflops, 0.0);
  }
}

TEST(HwInfo, LanesMatchTheDispatchedTarget) {
  const HwInfo h = measure_hwinfo(quick_options());
  int lanes = 0;
  EXPECT_EQ(h.simd_target, dispatched_simd_target(&lanes));
  EXPECT_EQ(h.f32_lanes, lanes);
  // f32 lanes of a full vector per Highway target (bytes / 4); targets of other
  // architectures are only required to have at least one lane.
  const std::map<std::string, int> expected = {{"AVX3_DL", 16}, {"AVX3", 16}, {"AVX2", 8}, {"SSE4", 4},
                                               {"SSSE3", 4},    {"EMU128", 4}, {"SCALAR", 1}};
  const auto it = expected.find(h.simd_target);
  if (it != expected.end()) {
    EXPECT_EQ(h.f32_lanes, it->second) << h.simd_target;
  } else {
    EXPECT_GE(h.f32_lanes, 1) << h.simd_target;
  }
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    EXPECT_EQ(h.f32_lanes, 16) << "AVX-512 CPU dispatched to " << h.simd_target;
  }
#endif
}

// The thread option is what the figures are measured on (0: the caller's OpenMP setting),
// and measuring leaves the caller's OpenMP setting as it was.
TEST(HwInfo, ThreadOptionIsHonouredAndOpenMpLeftAlone) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(3);
  for (const auto& [option, want] : {std::pair{0, 3}, std::pair{1, 1}, std::pair{2, 2}, std::pair{5, 5}}) {
    HwOptions o = quick_options();
    o.threads = option;
    o.dram_bytes = 0;  // not measured: nothing here depends on it
    const HwInfo h = measure_hwinfo(o);
    EXPECT_EQ(h.threads, want) << "threads option " << option;
    EXPECT_EQ(omp_get_max_threads(), 3) << "threads option " << option << " changed the caller's OpenMP setting";
    EXPECT_TRUE(positive_finite(h.fp32_fma_gflops) && positive_finite(h.fp32_fma_gflops_1t)) << option;
  }
  omp_set_num_threads(saved);
}

TEST(HwInfo, CpuModelComesFromProcCpuinfo) {
  std::ifstream f("/proc/cpuinfo");
  std::string line, name;
  while (name.empty() && std::getline(f, line))
    if (line.rfind("model name", 0) == 0) name = line.substr(line.find_first_not_of(" \t", line.find(':') + 1));
  const HwInfo h = measure_hwinfo(quick_options());
  if (name.empty()) GTEST_SKIP() << "no model name in /proc/cpuinfo";
  EXPECT_EQ(h.cpu_model.rfind(name, 0), 0u) << h.cpu_model;
}

TEST(HwInfo, BadOptionsAreRefusedWithTheirName) {
  const auto refuses = [](HwOptions o, const std::string& name) {
    try {
      measure_hwinfo(o);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      return;
    }
    ADD_FAILURE() << name << " was accepted";
  };
  HwOptions o = quick_options();
  o.threads = -1;
  refuses(o, "threads");
  o = quick_options();
  o.seconds_per_measurement = 0;
  refuses(o, "seconds_per_measurement");
  o.seconds_per_measurement = std::numeric_limits<double>::quiet_NaN();
  refuses(o, "seconds_per_measurement");
  o = quick_options();
  o.dram_bytes = -1;
  refuses(o, "dram_bytes");
}

TEST(HwinfoCli, JsonHasEveryField) {
  const auto r = run_cli("hwinfo --json --budget 0.01 --dram-mib 16 --threads 1", /*merge_stderr=*/false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  for (const char* key : {"cpu_model", "threads", "simd_target", "f32_lanes", "fp32_fma_gflops", "fp32_fma_gflops_1t",
                          "has_avx512bf16", "bf16_dot_gflops", "dram_read_gbps", "dram_bytes", "seconds", "method"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["threads"], 1);
  EXPECT_EQ(j["simd_target"], dispatched_simd_target());
  EXPECT_EQ(j["has_avx512bf16"], cpu_has_avx512bf16());
}

TEST(HwinfoCli, TableNamesEachFigure) {
  const auto r = run_cli("hwinfo --budget 0.01 --dram-mib 16");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* label : {"CPU", "threads", "SIMD target", "fp32 FMA peak", "bf16 dot peak", "DRAM read", "Method"})
    EXPECT_NE(r.output.find(label), std::string::npos) << label << "\n" << r.output;
}

TEST(HwinfoCli, BadArgumentsExitWithTwo) {
  for (const char* args : {"--threads 0", "--threads -3", "--threads abc", "--threads 5000", "--budget 0", "--budget -1",
                           "--dram-mib 0"}) {
    const auto r = run_cli(std::string("hwinfo --budget 0.01 ") + args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    const std::string name = std::string(args).substr(0, std::string(args).find(' '));
    EXPECT_NE(r.output.find(name), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace attnkit
