// Tests of attnkit/atomic_file.hpp and the writers built on it (write_npy): a write that
// fails, at the start or midway, leaves the target as it was and removes nothing attnkit did
// not create; non-regular targets are refused and survive; outputs naming one file are
// caught; permissions and symbolic links are kept.
#include "attnkit/atomic_file.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "attnkit/error.hpp"
#include "attnkit/npy.hpp"

namespace attnkit {
namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected attnkit::Error";
  return {};
}

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("attnkit_atomic_{}_{}", ::getpid(), ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // The names in the folder: what a test checks nothing was added to or removed from.
  std::set<std::string> listing() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.insert(e.path().filename().string());
    return names;
  }
  fs::path dir_;
};

TEST_F(AtomicFileTest, WritesNewFilesAndReplacesOldOnesWhole) {
  write_file_atomically(path("a.txt"), "first", "test");
  EXPECT_EQ(slurp(path("a.txt")), "first");
  fs::permissions(path("a.txt"), fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read,
                  fs::perm_options::replace);
  write_file_atomically(path("a.txt"), "second, longer", "test");
  EXPECT_EQ(slurp(path("a.txt")), "second, longer");
  // The replacement keeps the old file's permissions, and no temporary file is left.
  EXPECT_EQ(fs::status(path("a.txt")).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  EXPECT_EQ(listing(), std::set<std::string>{"a.txt"});
}

TEST_F(AtomicFileTest, TheTemporaryFileIsBesideTheTargetAndGoesAwayUncommitted) {
  spit(path("o.npy"), "old");
  {
    AtomicFile f(path("o.npy"), "test");
    EXPECT_EQ(fs::path(f.temp_path()).parent_path(), dir_);
    EXPECT_TRUE(fs::exists(f.temp_path()));
    f.write("new bytes that are never committed");
    EXPECT_EQ(slurp(path("o.npy")), "old");  // nothing reaches the target before commit()
  }
  EXPECT_EQ(slurp(path("o.npy")), "old");
  EXPECT_EQ(listing(), std::set<std::string>{"o.npy"});
}

// A write that fails midway: a file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so the
// write returns EFBIG) in a forked child, as a full disk would. The old file must survive
// byte for byte and the temporary file must be gone.
TEST_F(AtomicFileTest, AWriteFailingMidwayKeepsTheOldFile) {
  const std::string target = path("o.npy");
  const std::string old = "the previous contents of o.npy";
  spit(target, old);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{16384, 16384};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    Tensor t(DType::f32, {64, 1024});  // 256 KiB of data, far past the limit
    int code = 3;
    try {
      write_npy(target, t.view(), "--out");
      code = 1;  // the write was expected to fail
    } catch (const Error& e) {
      const std::string what = e.what();
      code = what.find("--out (") == 0 && what.find("left as it was") != std::string::npos ? 0 : 2;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the write succeeded; 2: the message did not name --out and the old file";
  EXPECT_EQ(slurp(target), old);
  EXPECT_EQ(listing(), std::set<std::string>{"o.npy"});
}

TEST_F(AtomicFileTest, NonRegularTargetsAreRefusedAndSurvive) {
  ASSERT_EQ(::mkfifo(path("pipe").c_str(), 0600), 0);
  fs::create_directory(path("sub"));
  fs::create_symlink(path("missing"), path("dangling"));
  const std::set<std::string> before = listing();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {path("pipe"), "is a FIFO (named pipe)"},
      {path("sub"), "is a directory"},
      {"/dev/null", "is a character device"},
      {path("dangling"), "symbolic link to a file that does not exist"},
      {path("sub/"), "ends in '/'"},
      {"", "the path is empty"},
  };
  for (const auto& [target, needle] : cases) {
    for (int way = 0; way < 3; ++way) {
      const std::string msg = error_of([&] {
        if (way == 0) check_output_path(target, "--out");
        if (way == 1) write_file_atomically(target, "x", "--out");
        if (way == 2) write_npy(target, Tensor(DType::f32, {2}).view(), "--out");
      });
      EXPECT_NE(msg.find(needle), std::string::npos) << target << ": " << msg;
    }
  }
  struct stat st {};
  ASSERT_EQ(::stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  ASSERT_EQ(::lstat(path("pipe").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_TRUE(fs::is_directory(path("sub")));
  EXPECT_TRUE(fs::is_symlink(path("dangling")));
  EXPECT_EQ(listing(), before);
  EXPECT_TRUE(fs::is_empty(path("sub")));
}

TEST_F(AtomicFileTest, FoldersWhereNoFileCanBeCreatedAreRefusedUpFront) {
  spit(path("file"), "not a folder");
  EXPECT_NE(error_of([&] { check_output_path(path("none/o.npy"), "--lse"); }).find("the folder"), std::string::npos);
  EXPECT_NE(error_of([&] { check_output_path(path("none/o.npy"), "--lse"); }).find("does not exist"), std::string::npos);
  EXPECT_NE(error_of([&] { check_output_path(path("file/o.npy"), "--lse"); }).find("cannot use"), std::string::npos);
  // procfs refuses new files even to root: the folder exists, the temporary file cannot.
  if (fs::is_directory("/proc/self")) {
    const std::string msg = error_of([&] { check_output_path("/proc/self/o.npy", "--lse"); });
    EXPECT_NE(msg.find("cannot create a file in the folder"), std::string::npos) << msg;
  }
  if (::geteuid() != 0) {  // root ignores permission bits
    fs::create_directory(path("ro"));
    spit(path("ro/o.npy"), "old");
    fs::permissions(path("ro"), fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
    EXPECT_NE(error_of([&] { write_npy(path("ro/o.npy"), Tensor(DType::f32, {2}).view()); }).find("cannot create"),
              std::string::npos);
    fs::permissions(path("ro"), fs::perms::owner_all, fs::perm_options::replace);
    EXPECT_EQ(slurp(path("ro/o.npy")), "old");
    spit(path("readonly.npy"), "old");
    fs::permissions(path("readonly.npy"), fs::perms::owner_read, fs::perm_options::replace);
    EXPECT_NE(error_of([&] { check_output_path(path("readonly.npy"), "--out"); }).find("not writable"),
              std::string::npos);
  }
  EXPECT_FALSE(fs::exists(path("none")));
}

TEST_F(AtomicFileTest, SymbolicLinksAreFollowedAndKept) {
  spit(path("real.txt"), "old");
  fs::create_symlink("real.txt", path("link.txt"));
  write_file_atomically(path("link.txt"), "new", "test");
  EXPECT_TRUE(fs::is_symlink(path("link.txt")));
  EXPECT_EQ(slurp(path("real.txt")), "new");
  EXPECT_EQ(listing(), (std::set<std::string>{"link.txt", "real.txt"}));
}

TEST_F(AtomicFileTest, OutputsNamingOneFileAreCaught) {
  spit(path("o.npy"), "old");
  fs::create_symlink("o.npy", path("link.npy"));
  fs::create_hard_link(path("o.npy"), path("hard.npy"));
  const std::string dot = (dir_ / "." / "new.npy").string();
  const std::vector<std::pair<std::string, std::string>> same = {
      {path("o.npy"), path("o.npy")},    {path("o.npy"), path("link.npy")}, {path("o.npy"), path("hard.npy")},
      {path("new.npy"), dot},            {path("new.npy"), (dir_ / "sub" / ".." / "new.npy").string()},
  };
  fs::create_directory(path("sub"));
  for (const auto& [a, b] : same) {
    const std::vector<OutputPath> outs = {{a, "--out"}, {b, "--lse"}};
    const std::string msg = error_of([&] { check_outputs(outs); });
    EXPECT_NE(msg.find("--out ("), std::string::npos) << msg;
    EXPECT_NE(msg.find("and --lse ("), std::string::npos) << msg;
    EXPECT_NE(msg.find("name the same file"), std::string::npos) << msg;
  }
  const std::vector<OutputPath> distinct = {
      {path("o.npy"), "--out"}, {path("lse.npy"), "--lse"}, {"", "--png"}, {"-", "--json", true}};
  EXPECT_NO_THROW(check_outputs(distinct));
  const std::vector<OutputPath> dash = {{"-", "--out"}};
  EXPECT_NE(error_of([&] { check_outputs(dash); }).find("--out: '-' (standard output) is not accepted"),
            std::string::npos);
  EXPECT_EQ(slurp(path("o.npy")), "old");
  EXPECT_FALSE(fs::exists(path("new.npy")));
  EXPECT_FALSE(fs::exists(path("lse.npy")));
}

}  // namespace
}  // namespace attnkit
