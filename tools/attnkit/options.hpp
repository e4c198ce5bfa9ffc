// Options every subcommand declares the same way, so they behave the same everywhere:
// integers checked (range, "out of range" rather than clamped) while the command line is
// parsed, -t/--threads, --json [FILE], choices named with the flag, and the metadata bench
// records carry. Not for: a subcommand's own options (each file declares those).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "attnkit/error.hpp"

namespace attnkit::cli {

// An integer option whose value must lie in [lo, hi]. Checked as the command line is read,
// before any work: "--n: 9223372036854775808 is out of range: must be in [1, 2147483648]",
// "--n: '12x' is not an integer". Decimal only (CLI11 alone would read 010 as octal 8 and
// clamp 2^63 to 2^63 - 1 without a word).
CLI::Option* add_int(CLI::App& sub, const std::string& names, int64_t& value, const std::string& help,
                     int64_t lo = std::numeric_limits<int64_t>::min(), int64_t hi = std::numeric_limits<int64_t>::max());
CLI::Option* add_int(CLI::App& sub, const std::string& names, int& value, const std::string& help,
                     int lo = std::numeric_limits<int>::min(), int hi = std::numeric_limits<int>::max());

// -t/--threads N: OpenMP threads for the command's kernels, in [1, kMaxThreads]; 0 (not
// given) keeps OpenMP's default (OMP_NUM_THREADS, else one per core).
constexpr int kMaxThreads = 1024;
CLI::Option* add_threads(CLI::App& sub, int& threads, const std::string& help = {});
// omp_set_num_threads(threads) when threads > 0. Call before any work.
void apply_threads(int threads);

// --json [FILE]: the command's JSON goes to FILE (written atomically; the usual text still
// goes to standard output), or with "-" or no value to standard output instead of the text.
struct JsonOutput {
  std::string path;
  CLI::Option* option = nullptr;
  bool given() const { return option != nullptr && option->count() > 0; }
  // "" when not given, "-" for standard output, else the file.
  std::string target() const { return !given() ? std::string() : path.empty() ? std::string("-") : path; }
  bool to_stdout() const { return target() == "-"; }
};
void add_json(CLI::App& sub, JsonOutput& out, const std::string& what);
// Writes j (2-space indent, trailing newline) to out.target(): atomically to a file, or to
// `stdout_stream` for "-".
void write_json(const JsonOutput& out, const nlohmann::json& j, std::FILE* stdout_stream = stdout);

// Sends everything printed on standard output to standard error from now on, and returns a
// stream on the original standard output: for `bench --json -`, whose progress table must
// not mix with the JSON.
std::FILE* divert_stdout_to_stderr();

// Throws Error "--flag: 'value' is not accepted; give one of a, b, c" unless value is one of
// `accepted`.
void check_choice(std::string_view flag, std::string_view value, std::initializer_list<std::string_view> accepted);

// Runs a library parser (parse_kernel, parse_kv_storage, ...) on an option's value; its
// Error comes back prefixed with the flag and with the value quoted safely (printable()).
template <class Parse>
auto parse_option(std::string_view flag, const std::string& value, Parse&& parse) -> decltype(parse(value)) {
  try {
    return parse(value);
  } catch (const Error& e) {
    std::string what = e.what();
    const std::string shown = printable(value);
    if (!value.empty() && shown != value)
      for (size_t at = what.find(value); at != std::string::npos; at = what.find(value, at + shown.size()))
        what.replace(at, value.size(), shown);
    throw Error(std::string(flag) + ": " + what);
  }
}

// What a benchmark record must carry to be compared later: attnkit's version, the commit
// (ATTNKIT_COMMIT from the environment, else "unknown": the binary cannot know which
// commit it was built from), the UTC date of the run (ISO 8601), the CPU model, the
// Highway target the kernels dispatch to, and whether the CPU has AVX-512 BF16 and VNNI.
nlohmann::json run_metadata();
// The CPU has what the AVX-512 stored-format decode micro-kernels and the bf16 flash path
// need (avx512f, bw, vl, vnni, bf16).
bool cpu_has_avx512_micro_kernels();

}  // namespace attnkit::cli
