// attnkit report --quick end to end on a tiny budget (a Brown-format corpus written here, a
// small base config, 3 steps per variant): README.md with a table per question, results.json,
// and non-empty PNG plots; a second run reuses every trained model from the cache folder;
// `attnkit eval` reads a cached model. Bad input is an error that names the argument.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_runner.hpp"

namespace attnkit {
namespace {

using testing::run_cli;
namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A corpus of 20 documents of varied sentences (the pass-key filler needs sentences).
void write_corpus(const fs::path& dir) {
  fs::create_directories(dir);
  std::ofstream cats(dir / "cats.txt");
  const char* words[] = {"cat/nn", "dog/nn", "sat/vbd", "ran/vbd", "on/in", "under/in", "mat/nn", "log/nn"};
  for (int i = 0; i < 20; ++i) {
    const std::string name = fmt::format("ca{:02d}", i);
    cats << name << " news\n";
    std::ofstream doc(dir / name);
    for (int s = 0; s < 60; ++s)
      doc << "\tThe/at " << words[(i + s) % 2] << " " << words[2 + s % 2] << " " << words[4 + (s / 2) % 2] << " the/at "
          << words[6 + (s / 3) % 2] << " ./.\n\n";
  }
}

bool has_matplotlib() { return std::system("/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1") == 0; }

TEST(ReportCli, QuickReportOnATinyBudget) {
  if (!has_matplotlib()) GTEST_SKIP() << "python3-matplotlib is not installed (scripts/setup.sh installs it)";
  const fs::path dir = fs::temp_directory_path() / "attnkit_report_cli";
  fs::remove_all(dir);
  write_corpus(dir / "corpus");
  std::ofstream(dir / "base.json") << R"({"dim": 32, "hidden_dim": 64, "n_layers": 2, "n_heads": 2, "vocab": 256,
      "context": 128, "seed": 1})";
  const std::string d = dir.string();
  const std::string args = fmt::format("report --quick --out {0}/out --cache-dir {0}/cache --corpus {0}/corpus "
                                       "--config {0}/base.json --steps 3 -t 2",
                                       d);
  auto r = run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("report: " + d + "/out/README.md"), std::string::npos) << r.output;
  const std::string md = slurp(dir / "out/README.md");
  for (const char* section : {"## Training", "## 1. MHA, GQA and MQA", "## 2. Sliding windows", "## 3. Sparse patterns",
                              "## 4. Cache storage", "## 5. Rolling caches", "## 6. Linear-cost families", "## 7. MLA",
                              "Reading:"})
    EXPECT_NE(md.find(section), std::string::npos) << section << "\n" << md;
  for (const char* png : {"val_loss.png", "pareto.png", "passkey.png", "attention_time.png", "performer_error.png",
                          "kv_bytes.png", "stream.png"}) {
    const std::string bytes = slurp(dir / "out" / png);
    ASSERT_GT(bytes.size(), 1000u) << png;
    EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << png;
    EXPECT_NE(md.find(std::string("](") + png + ")"), std::string::npos) << png;
  }
  const nlohmann::json res = nlohmann::json::parse(slurp(dir / "out/results.json"));
  // 10 softmax variants, the linear, Performer and retention stacks, and the MLA stack.
  ASSERT_EQ(res["variants"].size(), 14u);
  const auto& mla = res["variants"][13];
  EXPECT_EQ(mla["name"], "mla");
  EXPECT_EQ(mla["method"], "mla:c=12,r=4");  // dim 32: a latent row of 16 values, a quarter of MHA's 64
  ASSERT_EQ(mla["caches"].size(), 2u);
  EXPECT_EQ(mla["caches"][1]["kv_dtype"], "bf16");
  EXPECT_EQ(mla["caches"][0]["speed_and_memory"]["kv_bytes_per_token_steady"], 2 * 16 * 4);  // 2 layers, f32
  EXPECT_EQ(mla["caches"][1]["speed_and_memory"]["kv_bytes_per_token_steady"], 2 * 16 * 2);
  for (const auto& v : res["variants"]) {
    EXPECT_FALSE(v["train"]["cached"].get<bool>()) << v["name"];
    EXPECT_TRUE(v["train"]["finite"].get<bool>()) << v["name"];
    // Every cache's bytes, recurrent states' included: allocated as the formulas say (int4
    // keeps spare residual slots).
    for (const auto& c : v["caches"]) {
      if (c["kv_dtype"] == "int4") continue;
      EXPECT_EQ(c["speed_and_memory"]["kv_bytes_allocated"], c["speed_and_memory"]["kv_bytes_formula"]) << c["cache"];
    }
  }

  // The second run trains nothing.
  r = run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json again = nlohmann::json::parse(slurp(dir / "out/results.json"));
  for (const auto& v : again["variants"]) EXPECT_TRUE(v["train"]["cached"].get<bool>()) << v["name"];
  EXPECT_EQ(again["variants"][0]["caches"][0]["perplexity"], res["variants"][0]["caches"][0]["perplexity"]);
  // Performer's distance from softmax attention falls as its features grow.
  const auto& pf = res["approximation"]["performer"];
  EXPECT_LT(pf.back()["mean"].get<double>(), pf.front()["mean"].get<double>());

  // eval on a cached model: text and JSON.
  std::string model;
  for (const auto& e : fs::directory_iterator(dir / "cache"))
    if (e.path().filename().string().rfind("mha-", 0) == 0) model = e.path().string();
  ASSERT_FALSE(model.empty());
  r = run_cli(fmt::format("eval --model {} --corpus {}/corpus --cache rolling:w=16,sinks=4 --kv-dtype int8 "
                          "--windows 4 --passkey-samples 2",
                          model, d));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* line : {"perplexity", "KL divergence mean", "same top token", "decode", "they agree", "pass-key"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
  r = run_cli(fmt::format("eval --model {} --corpus {}/corpus --windows 2 --no-passkey --json -", model, d), false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json ev = nlohmann::json::parse(r.output);
  EXPECT_EQ(ev["divergence"]["kl_mean"], 0.0);
  EXPECT_EQ(ev["divergence"]["same_top"], 1.0);
  EXPECT_EQ(ev["perplexity"], ev["reference"]);

  // Bad input names the argument.
  r = run_cli(fmt::format("eval --model {} --corpus {}/corpus --context 63", model, d));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("context (63) must be even"), std::string::npos) << r.output;
  r = run_cli(fmt::format("eval --model {} --corpus {}/corpus --kv-dtype int3", model, d));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("int3"), std::string::npos) << r.output;
  std::ofstream(dir / "small.json") << R"({"dim": 32, "hidden_dim": 64, "n_layers": 2, "n_heads": 2, "vocab": 256,
      "context": 64})";
  r = run_cli(fmt::format("report --quick --out {0}/bad --corpus {0}/corpus --config {0}/small.json", d));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--config: context (64)"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace attnkit
