// attnkit/reference.hpp — the plain-loop oracle every fast kernel is tested against.
// Obviously correct rather than fast: it walks every (q, k) pair and asks the pattern's
// allow(). Not for: production use beyond small shapes (it is also the fallback kernel).
#pragma once

#include "attnkit/attention.hpp"
#include "attnkit/linformer.hpp"

namespace attnkit {

enum class RefPrecision : uint8_t {
  f64,    // accumulate and keep everything in double: the oracle
  input,  // the "plain implementation in the input precision" baseline of the tolerance
          // rule: f32 accumulation, and S, P and O rounded to the input dtype, as a
          // framework's unfused matmul-softmax-matmul would
};

struct RefOptions {
  RefPrecision precision = RefPrecision::f64;
  // When set, receives P as f64 [B, Hq, Nq, Nkv] (0 where a pair is not allowed).
  Tensor* probs = nullptr;
};

void attention_reference(const TensorView& q, const TensorView& k, const TensorView& v, const AttendOptions& opts,
                         const MutTensorView& o, const MutTensorView& lse, const RefOptions& ref = {});

// Linformer's oracle (linformer.hpp): K' = E K and V' = F V by plain loops, then
// attention_reference over the k projected keys. RefPrecision::input is the framework
// baseline of the tolerance rule: f32 accumulation, K' and V' rounded to q's dtype, then
// attention_reference's input mode. m.kernel is ignored.
void linformer_reference(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& e,
                         const TensorView& f, const LinformerMethod& m, const MutTensorView& o,
                         RefPrecision precision = RefPrecision::f64);

// Its backward: attention_backward_reference over K', V' for dq, dK', dV', then
// dK = E^T dK', dV = F^T dV', dE = sum dK' K^T, dF = sum dV' V^T by plain loops (dE + dF
// into de for kv / layerwise sharing), rounding each to q's dtype in input mode.
void linformer_backward_reference(const TensorView& q, const TensorView& k, const TensorView& v,
                                  const TensorView& e, const TensorView& f, const TensorView& d_o,
                                  const LinformerMethod& m, const MutTensorView& dq, const MutTensorView& dk,
                                  const MutTensorView& dv, const MutTensorView& de, const MutTensorView& df,
                                  RefPrecision precision = RefPrecision::f64);

}  // namespace attnkit
