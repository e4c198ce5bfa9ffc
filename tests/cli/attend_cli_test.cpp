// Tests of `attnkit attend` through the binary: the output equals the library reference,
// and bad input gets one message naming the argument, exit code 2, and no crash.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "attnkit/npy.hpp"
#include "attnkit/reference.hpp"
#include "cli_runner.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

namespace fs = std::filesystem;
using testing::random_tensor;
using testing::run_cli;

class AttendCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("attnkit_attend_{}_{}", ::getpid(),
                                                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string save(const std::string& name, const Tensor& t) const {
    write_npy(path(name), t.view());
    return path(name);
  }
  fs::path dir_;
};

TEST_F(AttendCli, MatchesTheLibraryReferenceForGqaAndPatterns) {
  const Tensor q = random_tensor({2, 4, 9, 16}, 1), k = random_tensor({2, 2, 13, 16}, 2), v = random_tensor({2, 2, 13, 8}, 3);
  const std::string args = fmt::format("attend --q {} --k {} --v {} --out {} --lse {}", save("q.npy", q),
                                       save("k.npy", k), save("v.npy", v), path("o.npy"), path("lse.npy"));
  for (const char* pattern : {"none", "causal", "window:3,0", "longformer:w=2,d=2,global=1"}) {
    const auto r = run_cli(args + " --kernel ref --softcap 4 --alibi auto --pattern " + pattern);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    AttendOptions opts;
    opts.pattern = Pattern::parse(pattern);
    opts.softcap = 4;
    opts.alibi_slopes = alibi_slopes(4);
    Tensor want_o(DType::f32, {2, 4, 9, 8}), want_lse(DType::f32, {2, 4, 9});
    attention_reference(q.view(), k.view(), v.view(), opts, want_o.mut(), want_lse.mut());
    const Tensor o = read_npy(path("o.npy"), "o"), lse = read_npy(path("lse.npy"), "lse");
    ASSERT_EQ(o.shape(), want_o.shape());
    EXPECT_EQ(testing::max_abs_diff(o.view(), want_o.view()), 0.0) << pattern;
    EXPECT_EQ(testing::max_abs_diff(lse.view(), want_lse.view()), 0.0) << pattern;
  }
}

TEST_F(AttendCli, NonFiniteInputsWarnAndPropagate) {
  Tensor q = random_tensor({1, 1, 3, 4}, 4);
  q.mut().set(NAN, 0, 0, 1, 0);
  const Tensor k = random_tensor({1, 1, 3, 4}, 5), v = random_tensor({1, 1, 3, 4}, 6);
  const auto r = run_cli(fmt::format("attend --q {} --k {} --v {} --out {}", save("q.npy", q), save("k.npy", k),
                                     save("v.npy", v), path("o.npy")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("q holds 1 NaN/inf"), std::string::npos) << r.output;
  const Tensor o = read_npy(path("o.npy"), "o");
  EXPECT_TRUE(std::isnan(o.view().get(0, 0, 1, 0)));
  EXPECT_FALSE(std::isnan(o.view().get(0, 0, 0, 0)));
}

TEST_F(AttendCli, BadInputGetsOneClearMessageAndExitCode2) {
  const std::string q = save("q.npy", random_tensor({1, 4, 5, 8}, 1));
  const std::string k = save("k.npy", random_tensor({1, 2, 6, 8}, 2));
  const std::string v = save("v.npy", random_tensor({1, 2, 6, 8}, 3));
  const std::string k3 = save("k3.npy", random_tensor({1, 3, 6, 8}, 2));
  const std::string v3 = save("v3.npy", random_tensor({1, 3, 6, 8}, 3));
  const std::string kd = save("kd.npy", random_tensor({1, 2, 6, 7}, 2));
  const std::string q0 = save("q0.npy", Tensor(DType::f32, {1, 4, 0, 8}));
  const std::string q3 = save("q3.npy", random_tensor({4, 5, 8}, 1));
  {
    std::ofstream f(path("trunc.npy"), std::ios::binary);
    std::ifstream src(k, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(src)), std::istreambuf_iterator<char>());
    f << bytes.substr(0, bytes.size() - 7);
  }
  const std::string out = " --out " + path("o.npy");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {fmt::format("attend --q {} --k {} --v {}", q, k3, v3), "--q/--k/--v ("},
      {fmt::format("attend --q {} --k {} --v {}", q, kd, v), "head dims of q and k"},
      {fmt::format("attend --q {} --k {} --v {}", q, k, v3), "head counts of k and v"},
      {fmt::format("attend --q {} --k {} --v {}", q3, k, v), "q [B, Hq, Nq, Dqk] must have 4 dimensions"},
      {fmt::format("attend --q {} --k {} --v {}", q0, k, v), "query sequence (dim 2) is empty"},
      {fmt::format("attend --q {} --k {} --v {}", q, path("trunc.npy"), v), "--k"},
      {fmt::format("attend --q {} --k {} --v {}", q, path("missing.npy"), v), "missing.npy"},
      {fmt::format("attend --q {} --k {} --v {} --pattern window:-3,0", q, k, v), "window left (-3)"},
      {fmt::format("attend --q {} --k {} --v {} --pattern spiral", q, k, v), "unknown pattern kind 'spiral'"},
      {fmt::format("attend --q {} --k {} --v {} --alibi 0.5,0.25", q, k, v), "--alibi: 2 slopes given"},
      {fmt::format("attend --q {} --k {} --v {} --alibi x", q, k, v), "--alibi: 'x' is not a number"},
      {fmt::format("attend --q {} --k {} --v {} --softcap -1", q, k, v), "--softcap (-1)"},
      {fmt::format("attend --q {} --k {} --v {} --kernel fastest", q, k, v), "kernel 'fastest'"},
      {fmt::format("attend --q {} --k {} --v {} --out-dtype bf16", q, k, v), "--out-dtype"},
      {fmt::format("attend --q {} --k {} --v {} --scale abc", q, k, v), "--scale: 'abc' is not a finite number"},
      {fmt::format("attend --q {} --k {}", q, k), "--v is required"},
      {fmt::format("attend --q {} --k {} --v {} --scale nan", q, k, v), "--scale: 'nan' is not a finite number"},
  };
  for (const auto& [args, needle] : cases) {
    const auto r = run_cli(args + (args.find("--v") != std::string::npos ? out : ""));
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\nwanted: " << needle << "\ngot: " << r.output;
  }
}

}  // namespace
}  // namespace attnkit
