// Tests of the CLI's file and option safety through the binary: outputs that are not
// regular files are refused and survive; a write failing midway keeps the old file; outputs
// are distinct and checked before any work; options are validated before work (the command
// fails fast with the flag named and writes nothing); messages escape control bytes and cut
// long input; integers out of range say so. No timings: "before any work" is checked by what
// the command did not print or write.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "attnkit/npy.hpp"
#include "cli_runner.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

namespace fs = std::filesystem;
using testing::random_tensor;
using testing::run_cli;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

class CliSafety : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("attnkit_safety_{}_{}", ::getpid(), ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::set<std::string> listing() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.insert(e.path().filename().string());
    return names;
  }
  // attend's inputs: q [1, 2, nq, 16], k and v [1, 1, 8, 16].
  std::string inputs(int64_t nq = 4) {
    write_npy(path("q.npy"), random_tensor({1, 2, nq, 16}, 1).view());
    write_npy(path("k.npy"), random_tensor({1, 1, 8, 16}, 2).view());
    write_npy(path("v.npy"), random_tensor({1, 1, 8, 16}, 3).view());
    return fmt::format("attend --q {} --k {} --v {}", path("q.npy"), path("k.npy"), path("v.npy"));
  }
  void write_old(const std::string& name) {
    std::ofstream(path(name), std::ios::binary) << "old contents of " << name;
  }
  fs::path dir_;
};

TEST_F(CliSafety, OutputsThatAreNotRegularFilesAreRefusedAndSurvive) {
  const std::string attend = inputs();
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  const std::set<std::string> before = listing();
  for (const std::string& target : {path("fifo"), std::string("/dev/null"), dir_.string()}) {
    for (const std::string& args : {attend + " --out " + target, attend + " --out " + path("o.npy") + " --lse " + target,
                                    "pattern -p causal -n 8 --png " + target,
                                    "pattern -p causal -n 8 --json " + target}) {
      const auto r = run_cli(args);
      EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
      EXPECT_NE(r.output.find("give the path of a regular file"), std::string::npos) << args << "\n" << r.output;
    }
  }
  struct stat st {};
  ASSERT_EQ(::lstat(path("fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  ASSERT_EQ(::stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(listing(), before);  // no o.npy either: the refusal came before the work
}

TEST_F(CliSafety, AWriteFailingMidwayKeepsTheOldOutput) {
  // O is 2 x 512 x 16 f32 = 64 KiB; the file-size limit stops it after at most 16 KiB
  // (ulimit -f counts 512- or 1024-byte blocks by shell). SIGXFSZ is ignored, so the write
  // returns EFBIG as it would on a full disk.
  const std::string attend = inputs(512);
  write_old("o.npy");
  write_old("lse.npy");
  const std::set<std::string> before = listing();
  const auto r = run_cli(attend + " --out " + path("o.npy") + " --lse " + path("lse.npy"), true,
                         "trap '' XFSZ; ulimit -f 16;");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--out ("), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("left as it was"), std::string::npos) << r.output;
  EXPECT_EQ(slurp(path("o.npy")), "old contents of o.npy");
  EXPECT_EQ(slurp(path("lse.npy")), "old contents of lse.npy");
  EXPECT_EQ(listing(), before);  // the temporary files are gone
}

TEST_F(CliSafety, OutputsAreDistinctAndCheckedBeforeAnyWork) {
  const std::string attend = inputs();
  write_old("o.npy");
  for (const std::string& lse : {path("o.npy"), (dir_ / "." / "o.npy").string()}) {
    const auto r = run_cli(attend + " --out " + path("o.npy") + " --lse " + lse);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("name the same file"), std::string::npos) << r.output;
  }
  // --lse into a folder that does not exist: refused before --out is touched.
  const auto r = run_cli(attend + " --out " + path("o.npy") + " --lse " + path("missing/lse.npy"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--lse ("), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("does not exist"), std::string::npos) << r.output;
  EXPECT_EQ(slurp(path("o.npy")), "old contents of o.npy");
  const auto p = run_cli("pattern -p causal -n 8 --png " + path("x.png") + " --json " + path("x.png"));
  EXPECT_EQ(p.exit_code, 2) << p.output;
  EXPECT_NE(p.output.find("--png ("), std::string::npos) << p.output;
  EXPECT_NE(p.output.find("name the same file"), std::string::npos) << p.output;
  EXPECT_FALSE(fs::exists(path("x.png")));
  // And the happy path still writes both, whole.
  const auto ok = run_cli(attend + " --out " + path("o.npy") + " --lse " + path("lse.npy"));
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_EQ(read_npy(path("o.npy"), "o").shape(), (std::vector<int64_t>{1, 2, 4, 16}));
  EXPECT_EQ(read_npy(path("lse.npy"), "lse").shape(), (std::vector<int64_t>{1, 2, 4}));
}

// Each bad option fails with its flag named, exit code 2, and before the work: no table
// header or progress line is printed and no output file appears.
TEST_F(CliSafety, OptionsAreValidatedBeforeWork) {
  const std::string json = path("r.json");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bench --quick --no-peak --preset bogus --json " + json, "--preset: unknown preset 'bogus'"},
      {"bench --quick --no-peak --json " + path("missing/r.json"), "--json ("},
      {"bench --quick --no-peak --kernel fastest", "--kernel: kernel 'fastest'"},
      {"bench --decode --no-peak --rolling-rss 9223372036854775807",
       "--rolling-rss: 9223372036854775807 is out of range: must be in [1, 16777216]"},
      {"bench --decode --no-peak --rolling-rss 100 --q-heads 6 --kv-heads 4 --json " + json,
       "--q-heads (6) must be a multiple of --kv-heads (4)"},
      {"bench --decode --no-peak --layout paged --n 2000000000 --batch 4096 --json " + json, "needs about"},
      {"bench --decode --no-peak --storage int9 --json " + json, "--storage: dtype 'int9'"},
      {"bench --no-peak --pattern causal --n 2000000000 --json " + json, "this machine has"},
      {"bench --no-peak --pattern spiral --json " + json, "--pattern: pattern 'spiral'"},
      {"bench -t 0 --no-peak --quick", "--threads: 0 is out of range: must be in [1, 1024]"},
      {"pattern -p strided:stride=1 -n 2147483648 --png " + path("s.png"), "the limit is 2147483648 steps"},
      {"pattern -p longformer:w=65536,d=2 -n 2147483648 --json " + json, "counting the allowed pairs"},
      {"pattern -p bigbird:block=1,random=3 -n 2147483648", "random blocks"},
      {"pattern -p causal -n 9223372036854775808", "--n: 9223372036854775808 is out of range"},
      {"pattern -p window:99999999999999999999,0 -n 4", "window left '99999999999999999999' is out of range"},
  };
  for (const auto& [args, needle] : cases) {
    const auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\nwanted: " << needle << "\ngot: " << r.output;
    for (const char* work : {"attention forward", "timing ", "rolling cache", "pattern   "})
      EXPECT_EQ(r.output.find(work), std::string::npos) << args << " started work:\n" << r.output;
    EXPECT_TRUE(fs::is_empty(dir_)) << args;
  }
  const std::string attend = inputs();
  const auto r = run_cli(attend + " --out " + path("o.npy") + " --out-dtype int8");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--out-dtype: 'int8' is not accepted; give one of f32, f64, f16"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(path("o.npy")));
}

TEST_F(CliSafety, MessagesEscapeControlBytesAndCutLongInput) {
  const std::string attend = inputs();
  const std::vector<std::string> hostile = {
      "pattern -n 8 -p \"$(printf 'ab\\033[31mc')\"",
      attend + " --out \"$(printf '/no\\033]0;x\\007/o.npy')\"",
      attend + " --out " + path("o.npy") + " --kernel \"$(printf 'f\\033')\"",
      "\"$(printf 'be\\033nch')\"",
      "bench --no-peak --preset \"$(printf '\\233' )2J\"",
  };
  for (const std::string& args : hostile) {
    const auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << args << "\n" << r.output;
    EXPECT_EQ(r.output.find('\x07'), std::string::npos) << args << "\n" << r.output;
    EXPECT_EQ(r.output.find('\x9b'), std::string::npos) << args << "\n" << r.output;
    const bool spelled_out = r.output.find("\\x1b") != std::string::npos || r.output.find("\\x9b") != std::string::npos;
    EXPECT_TRUE(spelled_out) << args << "\n" << r.output;
  }
  // A 100 KB pattern string: the message quotes 80 bytes of it and says how long it was.
  const auto r = run_cli("pattern -n 8 -p \"$(printf '%0100000d' 0)\"");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_LT(r.output.size(), 2000u) << r.output.substr(0, 2000);
  EXPECT_NE(r.output.find("... (100000 bytes)"), std::string::npos) << r.output.substr(0, 2000);
}

}  // namespace
}  // namespace attnkit
