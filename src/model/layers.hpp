// The transformer's layers, llm.c-shaped: each a pair X_forward / X_backward on plain f32
// arrays, shapes on every argument, the activations a backward needs saved explicitly by
// the forward. Rows are tokens: N = batch x sequence positions, row-major [N][C].
// Backwards accumulate (+=) into parameter gradients and into the input gradient, as a
// residual stream needs; callers zero them once per step.
// The linear layers go through BLAS (cblas_sgemm), SwiGLU's gate through a Highway loop
// (pointwise.hpp); the rest are loops the compiler vectorises. The oracle of every layer
// is its plain double-precision twin in src/ref/layers_ref.hpp. Not here: attention (the kernels in src/kernels), the optimizer.
#pragma once

#include <cstdint>

#include "attnkit/rope.hpp"

namespace attnkit::model {

// out[N][C] = wte[tokens[n]][:]. tokens in [0, V), checked by the caller.
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t n, int64_t c);
// dwte[tokens[n]][:] += dout[n][:] (in token order: deterministic).
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t n, int64_t c);

// out = x / rms(x) * w per row, rms(x) = sqrt(mean(x^2) + eps); rstd[N] saved (1 / rms).
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t n, int64_t c, float eps);
// dx[N][C] += d/dx, dw[C] += d/dw, from dout[N][C], x, w and the saved rstd.
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int64_t n, int64_t c);

// out[N][OC] = x[N][C] W^T, W: [OC][C] (the PyTorch / llama2.c layout). beta 1 adds to out.
void linear_forward(float* out, const float* x, const float* w, int64_t n, int64_t c, int64_t oc, float beta = 0.0f);
// dx[N][C] += dout W (skipped when dx is null), dw[OC][C] += dout^T x.
void linear_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, int64_t n, int64_t c,
                     int64_t oc);

// SwiGLU's gate: out[N][H] = silu(gate) * up, silu(g) = g / (1 + e^-g).
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n, int64_t h);
// dgate, dup [N][H] = (not +=) the gradients from dout.
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n,
                     int64_t h);

// RoPE on x[N][heads][D] in place, row n at position pos[n] (< cache.max_pos(), checked by
// the caller). The backward rotates the gradient back by -theta (a rotation's transpose).
void rope_forward(const RopeCache& cache, float* x, const int64_t* pos, int64_t n, int64_t heads);
void rope_backward(const RopeCache& cache, float* dx, const int64_t* pos, int64_t n, int64_t heads);

// Softmax cross-entropy per row: losses[N] = logsumexp(logits[n]) - logits[n][targets[n]];
// probs[N][V] saved (the softmax). targets in [0, V), checked by the caller.
void crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int64_t n,
                          int64_t v);
// dlogits[N][V] = dloss[n] (probs - onehot(targets)) (not +=; may alias probs).
void crossentropy_backward(float* dlogits, const float* probs, const float* dloss, const int32_t* targets, int64_t n,
                           int64_t v);

}  // namespace attnkit::model
