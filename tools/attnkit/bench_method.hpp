// attnkit bench --method M [--method M2 ...]: linear-cost methods' forward timed against the
// flash kernel's over a sweep of sequence lengths, in one run (flash once per length, on the
// same inputs): milliseconds, the growth t(2n)/t(n), GFLOP/s as a fraction of the fp32 peak
// measured in the same run, and the length from which each method is faster than exact
// attention (the crossover).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace attnkit::cli {

struct MethodBenchArgs {
  std::vector<std::string> methods;          // method.hpp's specs (not softmax)
  bool causal = true, quick = false, no_peak = false, backward = false;
  int64_t batch = 1, q_heads = 8, kv_heads = 8, d = 64;
  int64_t n = 0;                             // one length instead of the sweep
  int64_t min_n = 1024, max_n = 65536;       // the sweep doubles from min_n to max_n
  int64_t flash_max_n = 65536;               // flash is timed up to this length (it grows as n^2)
  int reps = 0;
};

void check_method_bench(const MethodBenchArgs& a);  // every option, before any work; Error names the flag
nlohmann::json run_method_bench(const MethodBenchArgs& a);  // prints the table; one record per (kernel, n)

}  // namespace attnkit::cli
