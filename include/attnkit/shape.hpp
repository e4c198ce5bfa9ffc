// attnkit/shape.hpp — the sizes of one attention call and their validation.
// Layout convention everywhere: Q [B, Hq, Nq, Dqk], K [B, Hkv, Nkv, Dqk],
// V [B, Hkv, Nkv, Dv], O [B, Hq, Nq, Dv], LSE [B, Hq, Nq] (as PyTorch's
// scaled_dot_product_attention); strides let callers pass [B, N, H, D] memory too.
// Query head h reads KV head h / (Hq / Hkv): MHA when equal, MQA when Hkv = 1, GQA between.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "attnkit/tensor.hpp"

namespace attnkit {

// Largest head dimension any kernel accepts (DeepSeek's MLA uses 576 / 512).
constexpr int64_t kMaxHeadDim = 1024;
// Sequence lengths beyond this are refused as absurd rather than overflowing indices.
constexpr int64_t kMaxSeqLen = int64_t{1} << 31;

struct AttnShape {
  int64_t batch = 1;
  int64_t q_heads = 1;
  int64_t kv_heads = 1;
  int64_t q_len = 0;
  int64_t kv_len = 0;
  int64_t d_qk = 0;
  int64_t d_v = 0;
  double scale = NAN;  // NaN means the default 1 / sqrt(d_qk)

  // Throws Error naming the first field that breaks a constraint: batch, heads and head
  // dims >= 1 (dims <= kMaxHeadDim), q_heads % kv_heads == 0, lengths in [0, kMaxSeqLen],
  // scale finite when given. q_len = 0 or kv_len = 0 are valid (a row with no key
  // yields O = 0, LSE = -inf).
  void validate() const;

  int64_t group() const { return q_heads / kv_heads; }  // query heads per KV head
  double softmax_scale() const { return std::isnan(scale) ? 1.0 / std::sqrt(double(d_qk)) : scale; }
  // Bottom-right causal alignment: query i is at absolute position i + causal_offset().
  int64_t causal_offset() const { return kv_len - q_len; }
  std::string to_string() const;

  // Infers the shape from 4-D Q, K, V views and checks they agree; names the tensor and
  // dimension that disagrees.
  static AttnShape from_views(const TensorView& q, const TensorView& k, const TensorView& v,
                              double scale = NAN);
};

}  // namespace attnkit
