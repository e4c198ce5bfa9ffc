// The shared option helpers of options.hpp. Not for: a subcommand's own options.
#include "options.hpp"

#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <ctime>

#include <fmt/format.h>
#include <omp.h>

#include "attnkit/atomic_file.hpp"
#include "attnkit/hwinfo.hpp"
#include "attnkit/version.hpp"

namespace attnkit::cli {
namespace {

// Reads a decimal integer in [lo, hi]; returns "" or the message CLI11 prints after the flag.
// On success `text` is rewritten in plain decimal, which is all CLI11's conversion then sees.
template <class T>
std::string read_int(std::string& text, T lo, T hi) {
  const std::string_view digits = !text.empty() && text[0] == '+' ? std::string_view(text).substr(1) : text;
  T v{};
  const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  const bool whole = !digits.empty() && ptr == digits.data() + digits.size();
  const std::string range = fmt::format("must be in [{}, {}]", lo, hi);
  if (whole && ec == std::errc::result_out_of_range) return fmt::format("{} is out of range: {}", printable(text), range);
  if (!whole || ec != std::errc()) return fmt::format("'{}' is not an integer", printable(text));
  if (v < lo || v > hi) return fmt::format("{} is out of range: {}", v, range);
  text = std::to_string(v);
  return {};
}

template <class T>
CLI::Option* add_int_option(CLI::App& sub, const std::string& names, T& value, const std::string& help, T lo, T hi) {
  const bool bounded = lo != std::numeric_limits<T>::min() || hi != std::numeric_limits<T>::max();
  CLI::Validator v([lo, hi](std::string& text) { return read_int(text, lo, hi); },
                   bounded ? fmt::format("in [{}, {}]", lo, hi) : std::string());
  return sub.add_option(names, value, help)->transform(v);
}

}  // namespace

CLI::Option* add_int(CLI::App& sub, const std::string& names, int64_t& value, const std::string& help, int64_t lo,
                     int64_t hi) {
  return add_int_option(sub, names, value, help, lo, hi);
}

CLI::Option* add_int(CLI::App& sub, const std::string& names, int& value, const std::string& help, int lo, int hi) {
  return add_int_option(sub, names, value, help, lo, hi);
}

CLI::Option* add_threads(CLI::App& sub, int& threads, const std::string& help) {
  return add_int(sub, "-t,--threads", threads,
                 help.empty() ? "threads the kernels run on (default: OMP_NUM_THREADS, else one per core)" : help, 1,
                 kMaxThreads);
}

void apply_threads(int threads) {
  if (threads > 0) omp_set_num_threads(threads);
}

void add_json(CLI::App& sub, JsonOutput& out, const std::string& what) {
  out.option = sub.add_option("--json", out.path,
                              fmt::format("write {} as JSON to FILE; '-' or no FILE: to standard output, "
                                          "instead of the text",
                                          what))
                   ->expected(0, 1)
                   ->type_name("[FILE]");
}

void write_json(const JsonOutput& out, const nlohmann::json& j, std::FILE* stdout_stream) {
  const std::string text = j.dump(2) + "\n";
  const std::string target = out.target();
  if (target == "-") {
    const bool ok = std::fwrite(text.data(), 1, text.size(), stdout_stream) == text.size() &&
                    std::fflush(stdout_stream) == 0;
    check(ok, [] { return std::string("--json: cannot write to standard output"); });
    return;
  }
  write_file_atomically(target, text, fmt::format("--json ({})", printable(target, 240)));
}

std::FILE* divert_stdout_to_stderr() {
  std::fflush(stdout);
  const int fd = ::dup(STDOUT_FILENO);
  std::FILE* original = fd >= 0 ? ::fdopen(fd, "w") : nullptr;
  check(original != nullptr, [] { return std::string("--json -: cannot duplicate standard output"); });
  ::dup2(STDERR_FILENO, STDOUT_FILENO);
  return original;
}

void check_choice(std::string_view flag, std::string_view value, std::initializer_list<std::string_view> accepted) {
  for (std::string_view a : accepted)
    if (value == a) return;
  throw Error(fmt::format("{}: '{}' is not accepted; give one of {}", flag, printable(value), fmt::join(accepted, ", ")));
}

bool cpu_has_avx512_micro_kernels() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
         __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

nlohmann::json run_metadata() {
  const char* env = std::getenv("ATTNKIT_COMMIT");
  const std::string commit = env != nullptr && *env != '\0' ? std::string(env) : std::string("unknown");
  char date[32] = "unknown";
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  if (gmtime_r(&now, &utc) != nullptr) std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &utc);
  bool vnni = false;
#if defined(__x86_64__)
  __builtin_cpu_init();
  vnni = __builtin_cpu_supports("avx512vnni");
#endif
  const std::string cpu = cpu_model_name();
  return {{"attnkit_version", ATTNKIT_VERSION_STRING},
          {"commit", commit},
          {"date", date},
          {"cpu_model", cpu.empty() ? std::string("unknown") : cpu},
          {"simd_target", dispatched_simd_target()},
          {"cpu_avx512_bf16", cpu_has_avx512bf16()},
          {"cpu_avx512_vnni", vnni}};
}

}  // namespace attnkit::cli
