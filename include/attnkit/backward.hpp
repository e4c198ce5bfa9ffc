// attnkit/backward.hpp — attend_backward(): exact gradients of attend().
//
// Given the forward's inputs, its output O and LSE, and dO = dLoss/dO, with
// P[i, j] = e^(S[i, j] - LSE[i]) over the keys the pattern allows:
//   D[i]     = sum_c dO[i, c] O[i, c]
//   dV[j]    = sum_i P[i, j] dO[i]                       (summed over the query heads of a group)
//   dS[i, j] = P[i, j] (dO[i] . V[j] - D[i]) mods'(i, j)  (mods' = the softcap's derivative)
//   dQ[i]    = scale sum_j dS[i, j] K[j],   dK[j] = scale sum_i dS[i, j] Q[i]
//   dsink[h] = -sum_{b, i} e^(z[h] - LSE[b, h, i]) D[b, h, i]   (learned sink logits z)
// Rows that see no key get zero gradients. NaN or inf in the inputs reach the gradients
// the rows that see them touch, as in the forward. The flash kernel never forms the
// Nq x Nkv matrix: its workspace is a few tiles per thread, D (Nq floats per head), and,
// when dQ is not contiguous f32, an f32 copy of dQ to accumulate in. Results are bitwise
// identical for any thread count.
// Not for: gradients of KV caches or decode (training runs whole sequences).
#pragma once

#include "attnkit/attention.hpp"
#include "attnkit/reference.hpp"

namespace attnkit {

struct Gradients {
  Tensor dq;     // [B, Hq, Nq, Dqk]
  Tensor dk;     // [B, Hkv, Nkv, Dqk]
  Tensor dv;     // [B, Hkv, Nkv, Dv]
  Tensor dsink;  // [Hq], f32; empty (rank 0) without sink logits
};

// Gradients in new tensors of grad_dtype (f32 by default, or the input type). o and lse
// are attend()'s outputs for the same q, k, v and opts (lse f32 [B, Hq, Nq]); d_o has o's
// shape. opts.kernel: automatic / flash (the tiled kernel) or ref (the f64 oracle).
Gradients attend_backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                          const TensorView& lse, const TensorView& d_o, const AttendOptions& opts = {},
                          DType grad_dtype = DType::f32);

// Into caller-provided views (any strides, distinct addresses). dsink may be rank 0 when
// there are no sink logits or the caller does not want it.
void attend_backward_into(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                          const TensorView& lse, const TensorView& d_o, const AttendOptions& opts,
                          const MutTensorView& dq, const MutTensorView& dk, const MutTensorView& dv,
                          const MutTensorView& dsink);

// The checked description of a backward call: validates every view against the forward's
// shape and binds the pattern. Throws Error naming the argument.
AttnProblem prepare_backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                             const TensorView& lse, const TensorView& d_o, const AttendOptions& opts,
                             const MutTensorView& dq, const MutTensorView& dk, const MutTensorView& dv,
                             const MutTensorView& dsink);

// The plain-loop oracle of the backward: recomputes P from q, k, v (o and lse are only
// checked, not used), walks every pair the pattern allows and applies the formulas above
// literally. RefPrecision::f64 accumulates in double; RefPrecision::input is the unfused
// framework baseline of the tolerance rule (f32 accumulation, S, P, dP and dS rounded to
// the input dtype).
void attention_backward_reference(const TensorView& q, const TensorView& k, const TensorView& v,
                                  const TensorView& o, const TensorView& lse, const TensorView& d_o,
                                  const AttendOptions& opts, const MutTensorView& dq, const MutTensorView& dk,
                                  const MutTensorView& dv, const MutTensorView& dsink,
                                  RefPrecision precision = RefPrecision::f64);

}  // namespace attnkit
