// Private to hwinfo: the AVX-512 BF16 throughput loop, compiled in its own file with a
// target attribute (avx512_peak.cpp) because Highway 1.0.3 never emits vdpbf16ps.
// Not for: kernels (the bf16 attention micro-kernel gets its own per-ISA file).
#pragma once

#include <cstdint>

namespace attnkit::detail {

// Independent accumulator chains in the loop, and FLOPs per loop iteration:
// chains x 32 bf16 pair-products x 2 FLOPs.
constexpr int kBf16Chains = 16;
constexpr double kBf16FlopsPerIter = kBf16Chains * 32 * 2;

// Runs `iters` iterations of kBf16Chains vdpbf16ps on zmm registers, products a*b (a and b
// rounded to bf16), and returns the sum of all accumulators so the loop cannot be elided.
// Precondition: cpu_has_avx512bf16(); returns 0 on builds for other architectures.
float bf16_dot_chains(int64_t iters, float a, float b);

}  // namespace attnkit::detail
