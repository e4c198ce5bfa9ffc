// Resident memory of this process, for the benchmarks' memory figures.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <fstream>

namespace attnkit::cli {

// Resident bytes now, from /proc/self/statm (0 where unavailable).
inline int64_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace attnkit::cli
