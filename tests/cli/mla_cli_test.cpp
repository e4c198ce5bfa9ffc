// Tests of `attnkit mla` through the binary, at tiny shapes: the comparison's JSON (naive =
// absorbed forward and backward, the cache bytes per token against kv_size's formulas), sizes
// read from --weights .npy files, the --decode record's FLOP and byte counts, and bad flags
// refused with exit 2 and a message naming the flag.
#include <unistd.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "attnkit/npy.hpp"
#include "cli_runner.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTiny = "mla --heads 3 --d-model 16 --d-c 12 --d-r 4 --d-nope 8 --d-v 6 --n 20 --reps 1";

TEST(MlaCli, ComparisonJsonShowsNaiveEqualsAbsorbed) {
  const auto r = testing::run_cli(std::string(kTiny) + " --backward --batch 2 --json -", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["config"]["heads"], 3);
  EXPECT_EQ(j["config"]["d_c"], 12);
  EXPECT_NEAR(j["config"]["scale"].get<double>(), 1 / std::sqrt(12.0), 1e-12);  // 1/sqrt(d_nope + d_r)
  EXPECT_EQ(j["batch"], 2);
  EXPECT_EQ(j["n"], 20);
  EXPECT_EQ(j["pattern"], "causal");
  const double out = j["forward"]["max_abs_out"].get<double>();
  EXPECT_GT(out, 0.01);
  EXPECT_LT(j["forward"]["max_abs_diff"].get<double>(), 1e-5 * out);
  EXPECT_GT(j["forward"]["naive_ms"].get<double>(), 0);
  EXPECT_GT(j["forward"]["absorbed_ms"].get<double>(), 0);
  for (const char* g : {"dx", "dw_q", "dw_dkv", "dw_kr", "dw_uk", "dw_uv"}) {
    const nlohmann::json& d = j["backward"]["gradients"][g];
    EXPECT_GT(d["max_abs"].get<double>(), 0) << g;
    EXPECT_LT(d["max_abs_diff"].get<double>(), 1e-5 * std::max(1.0, d["max_abs"].get<double>())) << g;
  }
  // bf16: naive K/V 3 x (12 + 6) x 2 bytes per token, latent (12 + 4) x 2.
  const nlohmann::json& b = j["cache_bytes_per_token_per_layer"];
  EXPECT_EQ(b["naive_kv"].get<double>(), 3 * 18 * 2);
  EXPECT_EQ(b["latent"].get<double>(), 16 * 2);
  EXPECT_DOUBLE_EQ(b["ratio"].get<double>(), 54.0 / 16.0);
  EXPECT_TRUE(j["metadata"].contains("cpu_model"));
}

TEST(MlaCli, SizesComeFromTheWeightFiles) {
  const fs::path dir = fs::temp_directory_path() / ("attnkit_mla_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const int64_t D = 10, H = 2, dc = 6, dr = 2, dn = 4, dv = 5;
  const auto put = [&](const char* name, std::vector<int64_t> shape, uint64_t seed) {
    write_npy((dir / name).string(), testing::random_tensor(std::move(shape), seed, DType::f32, 0.3).view());
  };
  put("w_q.npy", {D, H, dn + dr}, 1);
  put("w_dkv.npy", {D, dc}, 2);
  put("w_kr.npy", {D, dr}, 3);
  put("w_uk.npy", {H, dn, dc}, 4);
  put("w_uv.npy", {H, dv, dc}, 5);
  put("x.npy", {7, D}, 6);
  auto r = testing::run_cli("mla --weights " + dir.string() + " --reps 1 --pattern none --json -", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["config"]["heads"], H);
  EXPECT_EQ(j["config"]["d_model"], D);
  EXPECT_EQ(j["config"]["d_nope"], dn);
  EXPECT_EQ(j["config"]["d_v"], dv);
  EXPECT_EQ(j["n"], 7);  // x.npy's length
  EXPECT_EQ(j["batch"], 1);
  EXPECT_LT(j["forward"]["max_abs_diff"].get<double>(), 1e-5);

  r = testing::run_cli("mla --weights " + dir.string() + " --heads 4");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--heads: the sizes come from the --weights files"), std::string::npos) << r.output;
  put("w_uk.npy", {H, dn, dc + 1}, 4);
  r = testing::run_cli("mla --weights " + dir.string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("w_uk must have shape [H, d_nope, d_c]"), std::string::npos) << r.output;
  fs::remove(dir / "w_uk.npy");
  r = testing::run_cli("mla --weights " + dir.string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--weights"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

TEST(MlaCli, DecodeRecordCountsFlopsAndBytes) {
  const auto r = testing::run_cli(
      "mla --decode --heads 4 --d-c 16 --d-r 4 --n-kv 300 --kv-dtype bf16 --no-peak --reps 2 --json -", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["n_kv"], 300);
  EXPECT_EQ(j["kv_dtype"], "bf16");
  EXPECT_EQ(j["bytes_read"].get<double>(), 300 * 20 * 2);
  EXPECT_EQ(j["cache_bytes_allocated"], 300 * 20 * 2);
  EXPECT_EQ(j["flops"].get<double>(), 2.0 * 4 * 300 * (2 * 16 + 4));
  EXPECT_NEAR(j["latent_gbps"].get<double>(), j["bytes_read"].get<double>() / (j["median_ms"].get<double>() * 1e6),
              1e-9 * j["latent_gbps"].get<double>());
  EXPECT_TRUE(j["frac_dram"].is_null());  // --no-peak
  EXPECT_TRUE(j["roofline"].is_null());
}

TEST(MlaCli, BadFlagsNameTheFlag) {
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"mla --d-r 7", "--d-r (7) must be even"},
           {"mla --heads 0", "--heads: 0 is out of range"},
           {"mla --n 0", "--n: 0 is out of range"},
           {"mla --decode --n-kv 0", "--n-kv: 0 is out of range"},
           {"mla --kv-dtype int8", "--kv-dtype: 'int8' is not accepted; give one of f32, bf16"},
           {"mla --kv-dtype nope", "--kv-dtype"},
           {"mla --pattern spiral", "--pattern"},
           {"mla --rope-style sideways", "--rope-style"},
           {"mla --d-c 1000 --d-r 64", "d_c + d_r (1000 + 64) exceeds the head-dim limit"},
           {"mla --weights /nonexistent/dir", "--weights"},
           {"mla --decode --weights /tmp", "--weights: not used by --decode"},
           {"mla --n 2000000000", "--n: the forward and backward of both forms needs about"},
           {"mla --reps 0", "--reps: 0 is out of range"}}) {
    const auto r = testing::run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace attnkit
