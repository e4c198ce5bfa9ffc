// Test helper: runs the built attnkit CLI (ATTNKIT_CLI_PATH, set by CMake) and captures its
// exit code and output, so CLI tests check what a user would see. Not for: library tests.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace attnkit::testing {

struct CliResult {
  int exit_code = -1;
  std::string output;
};

// Runs `attnkit <args>`; `args` is passed to the shell as written. With merge_stderr the
// output holds stderr too (for error messages); without, stdout alone (for JSON). `shell`
// is shell text run first in the same subshell, e.g. "ulimit -f 16;" or "export X=1;".
inline CliResult run_cli(const std::string& args, bool merge_stderr = true, const std::string& shell = {}) {
  const std::string cmd = "(" + shell + " exec '" + ATTNKIT_CLI_PATH + "' " + args + ")" +
                          (merge_stderr ? " 2>&1" : " 2>/dev/null");
  CliResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace attnkit::testing
