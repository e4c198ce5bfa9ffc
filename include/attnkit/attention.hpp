// attnkit/attention.hpp — attend(): the entry point for exact softmax attention.
//
//   O[b, h, i, :] = sum_j P[i, j] V[b, h / g, j, :],  P = softmax_j(S) over allowed j,
//   S[i, j] = mods(scale * Q[b, h, i, :] . K[b, h / g, j, :]),   g = Hq / Hkv,
//   LSE[b, h, i] = log sum_j exp(S[i, j])  (natural log; f32).
// A row with no allowed key yields O = 0 and LSE = -inf, never NaN. NaN or inf in the
// inputs propagate as in a plain softmax (the row becomes NaN); they never crash.
// Score modifiers (scale, softcap, ALiBi) are the Variant of variant.hpp, shared with decode.
// Not for: KV caches and decoding (kv_cache.hpp), linear-cost approximations.
#pragma once

#include <cmath>
#include <string_view>
#include <vector>

#include "attnkit/pattern.hpp"
#include "attnkit/shape.hpp"
#include "attnkit/tensor.hpp"
#include "attnkit/variant.hpp"

namespace attnkit {

enum class Kernel : uint8_t {
  automatic,  // the fastest kernel that covers the call (today: flash)
  flash,      // tiled online-softmax kernel with SIMD and threads (src/kernels)
  ref,        // the plain-loop f64 oracle (src/ref)
};
Kernel parse_kernel(std::string_view name);  // "auto", "flash", "ref"; throws Error
std::string_view kernel_name(Kernel k);

// The variant's fields (scale, softcap, alibi_slopes) plus what selects keys and kernel.
struct AttendOptions : Variant {
  Pattern pattern;  // default: none (full attention)
  Kernel kernel = Kernel::automatic;
};

struct Output {
  Tensor o;    // [B, Hq, Nq, Dv]
  Tensor lse;  // [B, Hq, Nq], f32
};

// Computes attention into new tensors; o_dtype is f32 by default or the input type.
Output attend(const TensorView& q, const TensorView& k, const TensorView& v, const AttendOptions& opts = {},
              DType o_dtype = DType::f32);

// Computes into caller-provided views (any strides). lse may be a default-constructed
// view (rank 0) when the caller does not want it.
void attend_into(const TensorView& q, const TensorView& k, const TensorView& v, const AttendOptions& opts,
                 const MutTensorView& o, const MutTensorView& lse);

// The standard ALiBi slopes of Press et al.: 2^(-8 (h + 1) / H) for H a power of two; for
// other H, those of the nearest lower power of two followed by every other slope of twice it.
std::vector<double> alibi_slopes(int64_t heads);

// The checked description of one call, shared by every kernel: validates shapes, output
// views and options and binds the pattern. Throws Error naming the argument.
struct AttnProblem {
  AttnShape shape;
  BoundPattern pattern;
};
AttnProblem prepare_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                              const AttendOptions& opts, const MutTensorView& o, const MutTensorView& lse);

}  // namespace attnkit
