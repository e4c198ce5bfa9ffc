// `attnkit attend --method` and `attnkit bench --method` through the binary: the outputs
// and gradients equal the library's calls on the same files (tests/cli/method_crosscheck.py
// checks them against textbook formulas), and bad input gets one message naming the
// argument and exit code 2.
#include <filesystem>

#include <fmt/format.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "attnkit/method.hpp"
#include "attnkit/npy.hpp"
#include "cli_runner.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

namespace fs = std::filesystem;
using testing::random_tensor;
using testing::run_cli;

class MethodCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("attnkit_method_{}_{}", ::getpid(),
                                                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    q_ = random_tensor({1, 4, 12, 8}, 1), k_ = random_tensor({1, 2, 12, 8}, 2), v_ = random_tensor({1, 2, 12, 6}, 3);
    d_o_ = random_tensor({1, 4, 12, 6}, 4);
    args_ = fmt::format("attend --q {} --k {} --v {} --out {}", save("q.npy", q_), save("k.npy", k_), save("v.npy", v_),
                        path("o.npy"));
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string save(const std::string& name, const Tensor& t) const {
    write_npy(path(name), t.view());
    return path(name);
  }
  Tensor load(const std::string& name) const { return read_npy(path(name), name); }
  fs::path dir_;
  Tensor q_, k_, v_, d_o_;
  std::string args_;
};

TEST_F(MethodCli, LinearMethodsEqualTheLibraryForwardAndBackward) {
  const std::string grads = fmt::format(" --grad-out {} --dq {} --dk {} --dv {}", save("do.npy", d_o_), path("dq.npy"),
                                        path("dk.npy"), path("dv.npy"));
  for (const std::string spec : {"linear", "performer:m=16,seed=3", "retention:gamma=0.9"})
    for (const std::string pattern : {"none", "causal"}) {
      if (spec.rfind("retention", 0) == 0 && pattern == "none") continue;  // retention is causal
      const auto r = run_cli(args_ + grads + " --method " + spec + " --pattern " + pattern);
      ASSERT_EQ(r.exit_code, 0) << spec << " " << r.output;
      LinearMethod m = parse_linear_method(spec);
      m.causal = pattern == "causal";
      const Tensor o = linear_attend(q_.view(), k_.view(), v_.view(), m);
      EXPECT_EQ(testing::max_abs_diff(load("o.npy").view(), o.view()), 0.0) << spec << " " << pattern;
      Tensor dq(DType::f32, q_.shape()), dk(DType::f32, k_.shape()), dv(DType::f32, v_.shape());
      linear_attend_backward_into(q_.view(), k_.view(), v_.view(), d_o_.view(), m, dq.mut(), dk.mut(), dv.mut());
      EXPECT_EQ(testing::max_abs_diff(load("dq.npy").view(), dq.view()), 0.0) << spec << " " << pattern;
      EXPECT_EQ(testing::max_abs_diff(load("dk.npy").view(), dk.view()), 0.0) << spec << " " << pattern;
      EXPECT_EQ(testing::max_abs_diff(load("dv.npy").view(), dv.view()), 0.0) << spec << " " << pattern;
    }
}

TEST_F(MethodCli, LinformerUsesItsSeededProjectionsOrTheGivenOnes) {
  const auto r = run_cli(args_ + " --method linformer:k=5,seed=7");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const LinformerMethod m = parse_linformer_method("linformer:k=5,seed=7");
  const LinformerProjections p = make_linformer_projections(m, 2, 12);
  const Tensor o = linformer_attend(q_.view(), k_.view(), v_.view(), p.e.view(), p.f.view(), m);
  EXPECT_EQ(testing::max_abs_diff(load("o.npy").view(), o.view()), 0.0);
  // Given E and F replace the drawn ones.
  const Tensor e = random_tensor({1, 5, 12}, 8), f = random_tensor({1, 5, 12}, 9);
  const auto given = run_cli(args_ + fmt::format(" --method linformer:k=5 --e {} --f {}", save("e.npy", e), save("f.npy", f)));
  ASSERT_EQ(given.exit_code, 0) << given.output;
  const Tensor o2 = linformer_attend(q_.view(), k_.view(), v_.view(), e.view(), f.view(), parse_linformer_method("linformer:k=5"));
  EXPECT_EQ(testing::max_abs_diff(load("o.npy").view(), o2.view()), 0.0);
}

TEST_F(MethodCli, BadInputGetsOneClearMessageAndExitCode2) {
  const auto expect_error = [&](const std::string& extra, const std::string& needle) {
    const auto r = run_cli(args_ + " " + extra);
    EXPECT_EQ(r.exit_code, 2) << extra << ": " << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << extra << ": " << r.output;
    EXPECT_FALSE(fs::exists(path("o.npy"))) << extra;
  };
  expect_error("--method cosine", "--method");
  expect_error("--method linformer:k=4 --pattern causal", "causal");
  expect_error("--method linear --pattern window:3,0", "--pattern");
  expect_error("--method linear --lse " + path("lse.npy"), "--lse");
  expect_error("--method linear --softcap 3", "--softcap");
  expect_error("--method linear --scale 0.5", "--scale");
  expect_error("--method linear --kernel flash", "--kernel");
  expect_error("--method linear --e " + path("q.npy"), "--e");
  expect_error("--method performer:m=0", "m");
  expect_error("--method retention:gamma=0", "gamma");
  expect_error("--method retention:gamma=1.5", "gamma");
  expect_error("--method linformer:k=0", "k");
  expect_error("--method mla:c=8,r=4", "attnkit mla");  // a layer with its own weights, not f(Q, K, V)
  expect_error("--method mla:c=8", "missing 'r='");
  // E of the wrong length: the projection must span the sequence.
  expect_error("--method linformer:k=4 --e " + save("bad_e.npy", random_tensor({1, 4, 11}, 5)), "--e");
}

TEST(MethodBenchCli, RecordsTimeAgainstFlashAndRefusesBadOptions) {
  const auto r = run_cli("bench --method linear --min-n 64 --max-n 128 --d 16 --q-heads 2 --kv-heads 2 --reps 1 --no-peak "
                         "--json -",
                         false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto records = nlohmann::json::parse(r.output);
  ASSERT_EQ(records.size(), 2u);
  for (const auto& rec : records) {
    EXPECT_EQ(rec["op"], "method_fwd");
    EXPECT_GT(rec["median_ms"].get<double>(), 0.0);
    EXPECT_GT(rec["flash_median_ms"].get<double>(), 0.0);
    EXPECT_TRUE(rec.contains("crossover_n"));
  }
  EXPECT_EQ(records[0]["n"], 64);
  EXPECT_EQ(records[1]["n"], 128);
  EXPECT_GT(records[1]["growth"].get<double>(), 0.0);
  for (const auto& [extra, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--method softmax", "softmax"},
           {"--method linformer:k=8 --pattern causal", "causal"},
           {"--method mla:c=8,r=4", "attnkit mla"},
           {"--method linear --min-n 256 --max-n 128", "--min-n"},
           {"--method linear --decode", "--decode"},
           {"--method linear --pattern window:3,0", "--pattern"}}) {
    const auto bad = run_cli("bench --no-peak " + extra);
    EXPECT_EQ(bad.exit_code, 2) << extra << ": " << bad.output;
    EXPECT_NE(bad.output.find(needle), std::string::npos) << extra << ": " << bad.output;
  }
}

}  // namespace
}  // namespace attnkit
