// Output files written beside their target and renamed into place (see atomic_file.hpp).
// Not for: reading files, or outputs shared by concurrent writers.
#include "attnkit/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "attnkit/error.hpp"

namespace attnkit {
namespace {

// Paths are quoted whole up to this length: the end of a path (its file name) is usually
// the part a reader needs.
constexpr size_t kQuotedPathBytes = 240;

std::string shown_path(const std::string& path) { return printable(path, kQuotedPathBytes); }

std::string kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// What a path resolves to: the file a rename must replace, and whether it exists.
struct Target {
  std::string path;    // symbolic links resolved when the target exists
  std::string folder;  // where the temporary file goes: the folder of `path`
  std::string name;    // the last component of `path`
  bool exists = false;
  struct stat st {};
};

std::string folder_of(const std::string& path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

Target resolve(const std::string& path, std::string_view label) {
  check(!path.empty(), [&] { return fmt::format("{}: the path is empty", label); });
  check(path.back() != '/', [&] {
    return fmt::format("{}: '{}' ends in '/', which names a folder; give a file name", label, shown_path(path));
  });
  Target t;
  t.path = path;
  struct stat link {};
  if (::lstat(path.c_str(), &link) != 0) {
    const int err = errno;
    // ENOENT: a new file (whether its folder exists is checked where the folder is used).
    check(err == ENOENT, [&] { return fmt::format("{}: cannot use '{}': {}", label, shown_path(path), std::strerror(err)); });
  } else if (S_ISLNK(link.st_mode)) {
    if (::stat(path.c_str(), &t.st) != 0) {
      const int err = errno;
      throw Error(err == ENOENT ? fmt::format("{}: '{}' is a symbolic link to a file that does not exist; attnkit "
                                              "does not create files through dangling links",
                                              label, shown_path(path))
                                : fmt::format("{}: cannot follow the symbolic link '{}': {}", label, shown_path(path),
                                              std::strerror(err)));
    }
    char resolved[PATH_MAX];
    if (::realpath(path.c_str(), resolved) == nullptr) {
      const int err = errno;
      throw Error(fmt::format("{}: cannot resolve the symbolic link '{}': {}", label, shown_path(path), std::strerror(err)));
    }
    t.path = resolved;
    t.exists = true;
  } else {
    t.st = link;
    t.exists = true;
  }
  if (t.exists) {
    check(S_ISREG(t.st.st_mode), [&] {
      return fmt::format("{}: '{}' is {}; attnkit writes an output to a new file and renames it over the old one, "
                         "which would replace it, so it refuses: give the path of a regular file",
                         label, shown_path(path), kind_of(t.st.st_mode));
    });
    if (::access(t.path.c_str(), W_OK) != 0) {
      const int err = errno;
      throw Error(fmt::format("{}: the existing file '{}' is not writable: {}", label, shown_path(path), std::strerror(err)));
    }
  }
  t.folder = folder_of(t.path);
  t.name = std::filesystem::path(t.path).filename().string();
  struct stat dir {};
  if (::stat(t.folder.c_str(), &dir) != 0) {
    const int err = errno;
    throw Error(err == ENOENT
                    ? fmt::format("{}: the folder '{}' does not exist", label, shown_path(t.folder))
                    : fmt::format("{}: cannot use the folder '{}': {}", label, shown_path(t.folder), std::strerror(err)));
  }
  check(S_ISDIR(dir.st_mode), [&] { return fmt::format("{}: '{}' is not a folder", label, shown_path(t.folder)); });
  return t;
}

// Creates a new file in t.folder with a name no other file has (O_EXCL), readable and
// writable as the umask allows. Returns its descriptor and sets `name`.
int create_temp(const Target& t, std::string_view label, std::string& name) {
  static thread_local std::mt19937_64 rng{std::random_device{}() ^ (static_cast<uint64_t>(::getpid()) << 32)};
  // The target's name is kept short in the temporary name so that it stays under NAME_MAX.
  const std::string stem = t.name.substr(0, 64);
  for (int attempt = 0; attempt < 100; ++attempt) {
    name = fmt::format("{}/.{}.attnkit-{:08x}.tmp", t.folder, stem, static_cast<uint32_t>(rng()));
    const int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) return fd;
    if (errno != EEXIST) {
      const int err = errno;
      throw Error(fmt::format("{}: cannot create a file in the folder '{}': {}", label, shown_path(t.folder),
                              std::strerror(err)));
    }
  }
  throw Error(fmt::format("{}: cannot find a free temporary file name in '{}'", label, shown_path(t.folder)));
}

// The identity of an output for the distinctness check: the existing file's device and
// inode, or the canonical folder and the name of a file still to be created.
std::string identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) return fmt::format("inode {}:{}", st.st_dev, st.st_ino);
  const std::filesystem::path p(path);
  std::error_code ec;
  const std::filesystem::path folder = std::filesystem::canonical(folder_of(path), ec);
  return "new " + (ec ? std::filesystem::absolute(p).lexically_normal().string()
                      : (folder / p.filename()).string());
}

}  // namespace

void check_output_path(const std::string& path, std::string_view label) {
  const Target t = resolve(path, label);
  std::string probe;
  const int fd = create_temp(t, label, probe);
  ::close(fd);
  ::unlink(probe.c_str());  // the file this call just created, and nothing else
}

void check_outputs(std::span<const OutputPath> outputs) {
  std::vector<std::pair<const OutputPath*, std::string>> seen;
  for (const OutputPath& o : outputs) {
    if (o.path.empty() || (o.path == "-" && o.stdout_ok)) continue;
    check(o.path != "-", [&] {
      return fmt::format("{}: '-' (standard output) is not accepted here; give a file path (./- for a file named '-')",
                         o.flag);
    });
    const std::string label = fmt::format("{} ({})", o.flag, shown_path(o.path));
    check_output_path(o.path, label);
    const std::string id = identity(o.path);
    for (const auto& entry : seen)
      check(id != entry.second, [&] {
        const OutputPath* other = entry.first;
        return fmt::format("{} ({}) and {} ({}) name the same file; give each output its own path", other->flag,
                           shown_path(other->path), o.flag, shown_path(o.path));
      });
    seen.emplace_back(&o, id);
  }
}

AtomicFile::AtomicFile(const std::string& path, std::string label) : label_(std::move(label)) {
  const Target t = resolve(path, label_);
  target_ = t.path;
  const int fd = create_temp(t, label_, temp_);
  if (t.exists) {
    // The replacement keeps the old file's permissions (and, for root, its owner), as an
    // in-place rewrite would. Failing to copy them is not worth failing the write.
    (void)::fchmod(fd, t.st.st_mode & 0777);
    if (::geteuid() == 0) (void)::fchown(fd, t.st.st_uid, t.st.st_gid);
  }
  file_ = ::fdopen(fd, "wb");
  if (file_ == nullptr) {
    const int err = errno;
    ::close(fd);
    fail("cannot open the temporary file", err);
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() noexcept {
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
  if (!temp_.empty() && !committed_) ::unlink(temp_.c_str());
  temp_.clear();
}

void AtomicFile::fail(std::string_view what, int err) {
  discard();
  throw Error(fmt::format("{}: {}: {} ('{}' was left as it was)", label_, what,
                          err ? std::strerror(err) : "write error", shown_path(target_)));
}

void AtomicFile::write(const void* data, size_t n) {
  check(file_ != nullptr && !committed_, [&] { return fmt::format("{}: write after commit", label_); });
  errno = 0;
  if (n != 0 && std::fwrite(data, 1, n, file_) != n) fail("cannot write", errno);
}

void AtomicFile::commit() {
  check(file_ != nullptr && !committed_, [&] { return fmt::format("{}: commit twice", label_); });
  // A full disk may first show at the flush, and a lazily allocating file system at fsync.
  errno = 0;
  if (std::fflush(file_) != 0 || std::ferror(file_)) fail("cannot write", errno);
  if (::fsync(::fileno(file_)) != 0) fail("cannot write", errno);
  std::FILE* f = file_;
  file_ = nullptr;
  if (std::fclose(f) != 0) fail("cannot write", errno);
  if (::rename(temp_.c_str(), target_.c_str()) != 0) fail("cannot rename the new file into place", errno);
  committed_ = true;
  // The rename is durable once the folder is synced; a folder that cannot be (some file
  // systems refuse fsync on folders) still holds the complete file.
  const int dir = ::open(folder_of(target_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
}

void write_file_atomically(const std::string& path, std::string_view contents, std::string label) {
  if (path == "-") {
    errno = 0;
    const bool ok = std::fwrite(contents.data(), 1, contents.size(), stdout) == contents.size() && std::fflush(stdout) == 0;
    check(ok, [&] { return fmt::format("{}: cannot write to standard output: {}", label, std::strerror(errno)); });
    return;
  }
  AtomicFile f(path, std::move(label));
  f.write(contents);
  f.commit();
}

std::string read_whole_file(const std::string& path, uint64_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), [&] { return fmt::format("cannot open {}", printable(path)); });
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  check(size >= 0 && static_cast<uint64_t>(size) <= max_bytes,
        [&] { return fmt::format("{}: cannot be read or is over {} bytes", printable(path), max_bytes); });
  in.seekg(0);
  std::string bytes(static_cast<size_t>(size), '\0');
  in.read(bytes.data(), size);
  check(static_cast<bool>(in), [&] { return fmt::format("cannot read {}", printable(path)); });
  return bytes;
}

}  // namespace attnkit
