// attnkit/reference.hpp — the plain-loop oracle every fast kernel is tested against.
// Obviously correct rather than fast: it walks every (q, k) pair and asks the pattern's
// allow(). Not for: production use beyond small shapes (it is also the fallback kernel).
#pragma once

#include "attnkit/attention.hpp"

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

}  // namespace attnkit
