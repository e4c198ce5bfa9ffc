// attnkit/merge.hpp — exact merge of attention computed over disjoint key sets.
// With (O1, LSE1) over keys A and (O2, LSE2) over keys B, attention over A ∪ B is
//   LSE = log(exp(LSE1) + exp(LSE2)),  O = exp(LSE1 - LSE) O1 + exp(LSE2 - LSE) O2.
// This is what split-KV decoding, ring attention and the backward pass rely on. An empty
// part (LSE = -inf) contributes nothing; two empty parts give O = 0, LSE = -inf.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "attnkit/tensor.hpp"

namespace attnkit {

// Row form for kernels: folds (o2, lse2) into the running (o, lse); o, o2: [d].
template <class T>
inline void merge_row(T* o, T& lse, const T* o2, T lse2, int64_t d) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  if (lse2 == kNegInf) {
    if (lse == kNegInf)
      for (int64_t i = 0; i < d; ++i) o[i] = T(0);
    return;
  }
  if (lse == kNegInf) {
    for (int64_t i = 0; i < d; ++i) o[i] = o2[i];
    lse = lse2;
    return;
  }
  const T m = std::max(lse, lse2);
  const T merged = m + std::log(std::exp(lse - m) + std::exp(lse2 - m));
  const T w1 = std::exp(lse - merged), w2 = std::exp(lse2 - merged);
  for (int64_t i = 0; i < d; ++i) o[i] = w1 * o[i] + w2 * o2[i];
  lse = merged;
}

// Tensor form. o1, o2, o: [B, H, N, D]; lse1, lse2, lse: [B, H, N]. o may alias o1 and lse
// may alias lse1. Throws Error on shape mismatch.
void merge_attention(const TensorView& o1, const TensorView& lse1, const TensorView& o2, const TensorView& lse2,
                     const MutTensorView& o, const MutTensorView& lse);

}  // namespace attnkit
