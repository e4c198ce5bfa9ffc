// attnkit/hwinfo.hpp — this machine's peaks, measured in-process in a few seconds: fp32 FMA
// throughput (all threads and one), bf16 dot-product throughput (AVX-512 BF16), and DRAM
// read bandwidth. They are the denominators every attnkit benchmark reports against
// ("fraction of peak"), so they are measured with the same compiler, dispatch and threads
// as the kernels, not copied from a datasheet.
// Not for: selecting SIMD targets or tuning kernels (dispatch lives with the kernels), nor
// cache sizes or topology (read them from the OS when a kernel needs them).
//
// Conventions: one fused multiply-add is 2 FLOPs; one bf16 pair-product accumulated by
// vdpbf16ps is 2 FLOPs, so a 512-bit vdpbf16ps is 64 FLOPs. GB/s and GFLOP/s are 1e9-based.
// Each figure is the best of several trials, because noise on a shared machine only ever
// makes a peak look lower.
#pragma once

#include <cstdint>
#include <string>

namespace attnkit {

struct HwOptions {
  int threads = 0;                       // 0: omp_get_max_threads()
  double seconds_per_measurement = 0.5;  // time budget of each of the four measurements
  // Read-bandwidth buffer: shrunk to a quarter of the available memory if that is less, and
  // not measured (figure 0) if that leaves under min(dram_bytes, 64 MiB); 0 skips it.
  int64_t dram_bytes = int64_t(512) << 20;
};

struct HwInfo {
  int threads = 0;
  std::string simd_target;  // the Highway target the dispatched code ran on, e.g. "AVX3"
  int f32_lanes = 0;        // f32 lanes of one vector on that target
  double fp32_fma_gflops = 0;     // all threads
  double fp32_fma_gflops_1t = 0;  // one thread
  bool has_avx512bf16 = false;
  double bf16_dot_gflops = 0;     // all threads; 0 when AVX-512 BF16 is unsupported
  double dram_read_gbps = 0;      // all threads; 0 when there was not memory enough to measure
  int64_t dram_bytes = 0;         // the buffer size actually read (after any shrinking)
  double seconds = 0;             // wall time the whole measurement took
  // "model name" from /proc/cpuinfo (empty if unreadable), with the family/model numbers
  // appended because hypervisors often mask the name (here: plain "AMD EPYC").
  std::string cpu_model;
};

// Throws Error for bad options (threads outside [0, 1024], a time budget outside (0, 60] s,
// dram_bytes < 0). Takes about 4 x seconds_per_measurement, plus the buffer's first touch.
HwInfo measure_hwinfo(const HwOptions& options = {});

// The Highway target HWY_DYNAMIC_DISPATCH picks on this machine and its f32 lane count;
// cheap (no timing), for tests and reports that need only the target.
std::string dispatched_simd_target(int* f32_lanes = nullptr);

// HwInfo::cpu_model without measuring anything: cheap, for reports that label results.
std::string cpu_model_name();

// Whether this CPU (and OS) can run AVX-512 BF16 instructions.
bool cpu_has_avx512bf16();

}  // namespace attnkit
