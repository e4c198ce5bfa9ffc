// attnkit bench --decode: decode steps against KV caches of every layout and storage
// format, reported in GB/s of cache bytes read and as a fraction of the DRAM read
// bandwidth hwinfo measures in the same run; and the resident-memory curve of a rolling
// cache over a long generation (--rolling-rss).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace attnkit::cli {

// --rolling-rss generates tokens one by one (about 6 us each with the sampled decode steps),
// so 2^24 tokens (16x the documented run) take a few minutes; more is refused.
constexpr int64_t kMaxRollingRssTokens = int64_t{1} << 24;

struct DecodeBenchArgs {
  bool quick = false, no_peak = false;
  std::string kernel = "auto";
  int reps = 0;
  // A custom case instead of the sweep, when --layout or --storage is given.
  std::string layout, storage;
  int64_t batch = 1, q_heads = 32, kv_heads = 8, n = 65536, nq = 1, d = 128, page = 16;
  int64_t window = 4096, sinks = 4;  // the rolling layout's
  // > 0: generate this many tokens into a rolling cache and sample its resident memory.
  int64_t rolling_rss = 0;
};

// Checks every option, each case's cache config and memory, and the --rolling-rss run
// before any work; throws Error naming the flag.
void check_decode_bench(const DecodeBenchArgs& a);
// Runs the cases (after check_decode_bench), prints the table and returns one JSON record
// per case.
nlohmann::json run_decode_bench(const DecodeBenchArgs& a);

}  // namespace attnkit::cli
