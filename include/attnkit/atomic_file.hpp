// attnkit/atomic_file.hpp — how attnkit writes every output file (.npy, PNG, JSON): into a
// new temporary file beside the target, flushed to disk, then renamed over the target, so a
// reader sees the old file or the complete new one and never a truncated one; and the checks
// a command runs on its outputs before it starts any work.
//
// Guarantees (docs/io.md, "Writing"):
//   - A write that fails (disk full, file-size limit, I/O error) leaves the target exactly as
//     it was; the only file removed is the temporary one this process created.
//   - A target that exists and is not a regular file (directory, device, FIFO, socket) is
//     refused before anything is created: renaming over /dev/null would replace the device
//     node, and writing through it would not be atomic.
//   - A symbolic link to a regular file is followed: the file it names is replaced, the link
//     stays. A dangling link is refused. A replaced file keeps its permission bits.
//   - An existing target that this process may not write (e.g. mode 0444) is refused, as
//     opening it for writing would be.
// A process killed mid-write can leave its temporary file (".NAME.attnkit-<8 random characters>.tmp" in
// the target's folder) behind, never a partial NAME.
//
// Not for: appending, files that several processes write at once, or reading.
#pragma once

#include <cstddef>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>

namespace attnkit {

// Checks that `path` can receive an output: not empty, not an existing non-regular file or
// dangling symbolic link, an existing file writable, and its folder an existing folder in
// which a file can be created (tried: a temporary file is created and removed at once).
// Throws Error starting with `label` (e.g. "--out (o.npy)").
void check_output_path(const std::string& path, std::string_view label);

// One output of a command, named by the option that gave it.
struct OutputPath {
  std::string path;        // empty: the option was not given, nothing to check
  std::string flag;        // "--out", "--lse", "--png", "--json"
  bool stdout_ok = false;  // "-" means standard output (--json); elsewhere "-" is refused
};

// check_output_path for each given output, and no two outputs naming the same file: the
// same existing file (device and inode, so links and ./ spellings are caught) or, for files
// still to be created, the same name in the same folder. Throws Error naming both flags.
// "-" is skipped where it means standard output and refused elsewhere (write ./- for a
// file of that name).
void check_outputs(std::span<const OutputPath> outputs);

// A new file that replaces `path` on commit(). The constructor creates the temporary file
// (O_EXCL, unique name) in the target's folder; writes go to stream() or write(); commit()
// flushes, fsyncs, renames it over the target and fsyncs the folder. The destructor of an
// uncommitted file removes the temporary file, so an exception between the two leaves the
// target untouched. Errors are Error messages starting with `label`.
class AtomicFile {
 public:
  AtomicFile(const std::string& path, std::string label);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Buffered stream on the temporary file, for writers that want a FILE* (libpng). A write
  // error on it is reported by commit().
  std::FILE* stream() { return file_; }
  // Writes n bytes; throws Error on failure.
  void write(const void* data, size_t n);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Throws Error (and removes the temporary file) when flushing, syncing or renaming fails;
  // the target is then unchanged.
  void commit();

  const std::string& target() const { return target_; }  // symbolic links resolved
  const std::string& temp_path() const { return temp_; }

 private:
  [[noreturn]] void fail(std::string_view what, int err);
  void discard() noexcept;

  std::string target_, temp_, label_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// Writes `contents` to `path` through an AtomicFile; "-" writes to standard output.
void write_file_atomically(const std::string& path, std::string_view contents, std::string label);

// The whole of a file we read (the reading side of the same rule): at most max_bytes, else
// an Error naming the path before anything is allocated.
std::string read_whole_file(const std::string& path, uint64_t max_bytes);

}  // namespace attnkit
