// SwiGLU's elementwise gate, fwd and bwd, as SIMD loops (Highway, dispatched at run time)
// over the kernels' own exponential (online_softmax-inl.h). With std::exp per element the
// gate was about 9 % of a small model's training step; the compiler does not vectorise a
// call to expf. Every element goes through the same vector arithmetic (the tail through a
// padded lane buffer), so results do not depend on how a caller splits the range.
#pragma once

#include <cstdint>

namespace attnkit::model {

// out[i] = silu(gate[i]) up[i] for i < count.
void swiglu_forward_simd(float* out, const float* gate, const float* up, int64_t count);
// dup[i] = dout silu(g), dgate[i] = dout up silu'(g) for i < count.
void swiglu_backward_simd(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                          int64_t count);

}  // namespace attnkit::model
