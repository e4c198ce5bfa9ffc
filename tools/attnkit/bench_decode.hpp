// attnkit bench --decode: decode steps against KV caches of every layout and storage
// format, reported in GB/s of cache bytes read and as a fraction of the DRAM read
// bandwidth hwinfo measures in the same run; and the resident-memory curve of a rolling
// cache over a long generation (--rolling-rss).
#pragma once

#include <cstdint>
#include <string>

namespace attnkit::cli {

struct DecodeBenchArgs {
  bool quick = false, no_peak = false;
  std::string json, kernel = "auto";
  int reps = 0;
  // A custom case instead of the sweep, when --layout or --storage is given.
  std::string layout, storage;
  int64_t batch = 1, q_heads = 32, kv_heads = 8, n = 65536, nq = 1, d = 128, page = 16;
  int64_t window = 4096, sinks = 4;  // the rolling layout's
  // > 0: generate this many tokens into a rolling cache and sample its resident memory.
  int64_t rolling_rss = 0;
};

int run_decode_bench(const DecodeBenchArgs& a);

}  // namespace attnkit::cli
