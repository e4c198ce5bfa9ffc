// Tests of the habits every attnkit command shares, through the binary: --version, an
// unknown command named as such, -t/--threads, --json [FILE] with the same meaning in every
// command, bench records carrying their metadata, and the causal-alignment note in --help.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "attnkit/hwinfo.hpp"
#include "attnkit/version.hpp"
#include "cli_runner.hpp"

namespace attnkit {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;

// A bench case that takes milliseconds: one head pair, 16 x 16, d = 8.
constexpr const char* kTinyBench = "bench --no-peak --reps 1 --pattern causal --n 16 --q-heads 2 --kv-heads 1 --d 8";

TEST(CliHabits, VersionAndUnknownCommands) {
  auto r = run_cli("--version");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, std::string("attnkit ") + ATTNKIT_VERSION_STRING + "\n");

  r = run_cli("foo --n 3");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown command 'foo'; commands are: attend, bench, convert, eval, generate, hwinfo, kv-size, mla, pattern, receptive-field, report, train"),
            std::string::npos)
      << r.output;
  r = run_cli("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("a command is required; commands are: attend,"), std::string::npos) << r.output;
  r = run_cli("pattern -p causal -n 4 --nope");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--nope"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("attnkit pattern --help"), std::string::npos) << r.output;
}

TEST(CliHabits, ThreadsAreValidatedAndApplied) {
  for (const char* cmd : {"attend --q q --k k --v v --out o", "bench --quick", "hwinfo", "train --out t", "generate --model m"})
    for (const char* bad : {"-t 0", "--threads 1025", "-t x", "--threads 99999999999999999999"}) {
      const auto r = run_cli(fmt::format("{} {}", cmd, bad));
      EXPECT_EQ(r.exit_code, 2) << cmd << " " << bad << "\n" << r.output;
      EXPECT_NE(r.output.find("--threads: "), std::string::npos) << cmd << " " << bad << "\n" << r.output;
    }
  for (int threads : {1, 3}) {
    const auto r = run_cli(fmt::format("{} -t {} --json -", kTinyBench, threads), false);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(nlohmann::json::parse(r.output)[0]["threads"], threads);
  }
}

TEST(CliHabits, BenchRecordsCarryTheirMetadata) {
  auto r = run_cli(fmt::format("{} --json -", kTinyBench), false, "export ATTNKIT_COMMIT=0123abc;");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json records = nlohmann::json::parse(r.output);  // stdout holds the JSON alone
  ASSERT_EQ(records.size(), 1u);
  const nlohmann::json& c = records[0];
  EXPECT_EQ(c["commit"], "0123abc");
  EXPECT_EQ(c["attnkit_version"], ATTNKIT_VERSION_STRING);
  EXPECT_TRUE(std::regex_match(c["date"].get<std::string>(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")))
      << c["date"];
  EXPECT_EQ(c["simd_target"], dispatched_simd_target());
  EXPECT_EQ(c["cpu_avx512_bf16"], cpu_has_avx512bf16());
  EXPECT_TRUE(c["cpu_avx512_vnni"].is_boolean());
  EXPECT_EQ(c["cpu_model"], cpu_model_name().empty() ? std::string("unknown") : cpu_model_name());
  EXPECT_EQ(c["micro_kernels"], "none");  // f32 inputs never take the bf16 path

  r = run_cli(fmt::format("{} --json -", kTinyBench), false, "unset ATTNKIT_COMMIT;");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)[0]["commit"], "unknown");

  r = run_cli("bench --decode --no-peak --reps 1 --layout contiguous --storage int8 --n 64 --q-heads 2 --kv-heads 1 "
              "--d 32 --json -",
              false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json d = nlohmann::json::parse(r.output)[0];
  for (const char* key : {"commit", "date", "cpu_model", "simd_target", "micro_kernels", "attnkit_version"})
    EXPECT_TRUE(d.contains(key)) << key;
  EXPECT_TRUE(d["micro_kernels"] == "avx512_vnni" || d["micro_kernels"] == "none") << d["micro_kernels"];
}

// --json FILE writes the file and keeps the text on stdout; --json - (or a bare --json)
// prints the JSON alone; in every command.
TEST(CliHabits, JsonMeansTheSameEverywhere) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("attnkit_habits_{}", ::getpid());
  fs::create_directories(dir);
  const std::vector<std::pair<std::string, std::string>> commands = {
      {"pattern -p causal -n 8", "allowed_pairs"},
      {"kv-size --preset llama2-7b", "tokens_held"},
      {"receptive-field --layers 4 --window 16", "reach"},
      {"hwinfo --budget 0.01 --dram-mib 1 -t 1", "fp32_fma_gflops"},
      {kTinyBench, "median_ms"},
      {"mla --heads 2 --d-model 8 --d-c 6 --d-r 2 --d-nope 4 --d-v 3 --n 5 --reps 1", "forward"},
  };
  for (const auto& [cmd, key] : commands) {
    for (const char* to_stdout : {" --json -", " --json"}) {
      const auto r = run_cli(cmd + to_stdout, false);
      ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
      const nlohmann::json j = nlohmann::json::parse(r.output);  // nothing but JSON on stdout
      EXPECT_TRUE((j.is_array() ? j[0] : j).contains(key)) << cmd;
    }
    const std::string file = (dir / "out.json").string();
    const auto r = run_cli(cmd + " --json " + file, false);
    ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
    EXPECT_FALSE(r.output.empty()) << cmd;  // the text is still printed
    EXPECT_FALSE(nlohmann::json::accept(r.output)) << cmd;
    std::ifstream f(file);
    const nlohmann::json j = nlohmann::json::parse(f);
    EXPECT_TRUE((j.is_array() ? j[0] : j).contains(key)) << cmd;
    fs::remove(file);
  }
  fs::remove_all(dir);
}

TEST(CliHabits, HelpStatesTheCausalAlignment) {
  for (const char* cmd : {"attend --help", "pattern --help"}) {
    const auto r = run_cli(cmd);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    for (const char* needle : {"bottom-right", "is_causal=True) is top-left", "Nq == Nkv", "first Nq rows"})
      EXPECT_NE(r.output.find(needle), std::string::npos) << cmd << ": " << needle << "\n" << r.output;
  }
  EXPECT_NE(run_cli("bench --help").output.find("-t,--threads"), std::string::npos);
}

}  // namespace
}  // namespace attnkit
