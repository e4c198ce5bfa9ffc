// Tests of `attnkit bench` through the binary: the JSON record of a small custom case has
// the documented fields with consistent values, and bad sizes are refused with exit 2.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli_runner.hpp"

namespace attnkit {
namespace {

TEST(BenchCli, JsonRecordsHaveTheDocumentedFields) {
  const std::string json = (std::filesystem::temp_directory_path() / ("attnkit_bench_" + std::to_string(::getpid()) + ".json")).string();
  const auto r = testing::run_cli("bench --pattern causal --n 70 --q-heads 4 --kv-heads 2 --d 16 --reps 2 --no-peak --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream f(json);
  const nlohmann::json records = nlohmann::json::parse(f);
  std::filesystem::remove(json);
  ASSERT_EQ(records.size(), 1u);
  const nlohmann::json& c = records[0];
  for (const char* key : {"op", "kernel", "pattern", "dtype", "B", "Hq", "Hkv", "Nq", "Nkv", "Dqk", "Dv", "threads",
                          "median_ms", "gflops", "peak_gflops", "frac_peak", "speedup_vs_ref", "ref_gflops"})
    EXPECT_TRUE(c.contains(key)) << key;
  EXPECT_EQ(c["pattern"], "causal");
  EXPECT_EQ(c["Hq"], 4);
  EXPECT_EQ(c["Nkv"], 70);
  EXPECT_TRUE(c["peak_gflops"].is_null());  // --no-peak
  const double pairs = 70.0 * 71.0 / 2.0;   // causal, square
  EXPECT_NEAR(c["gflop"].get<double>(), pairs * 4 * (2 * 16 + 2 * 16) * 1e-9, 1e-12);
  EXPECT_NEAR(c["gflops"].get<double>(), c["gflop"].get<double>() / (c["median_ms"].get<double>() * 1e-3), 1e-6);
}

TEST(BenchCli, BadSizesAreRefused) {
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"bench --pattern causal --n 0", "--n: 0 is out of range: must be in [1, 2147483648]"},
           {"bench --pattern causal --reps=-1", "--reps: -1 is out of range: must be in [1, 1000]"},
           {"bench --pattern causal --q-heads 3 --kv-heads 2", "q_heads (3) must be a multiple of kv_heads (2)"},
           {"bench --pattern causal --n 2000000000", "this machine has"},
           {"bench --pattern causal --dtype f64", "--dtype"},
           {"bench --pattern spiral", "unknown pattern kind"}}) {
    const auto r = testing::run_cli(args + " --no-peak");
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace attnkit
