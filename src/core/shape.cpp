// Validation of AttnShape and its inference from Q, K, V views.
#include "attnkit/shape.hpp"

#include <fmt/format.h>

namespace attnkit {

void AttnShape::validate() const {
  auto at_least_one = [](int64_t v, const char* name) {
    check(v >= 1, [&] { return fmt::format("{} must be >= 1, got {}", name, v); });
  };
  at_least_one(batch, "batch");
  at_least_one(q_heads, "q_heads");
  at_least_one(kv_heads, "kv_heads");
  at_least_one(d_qk, "d_qk");
  at_least_one(d_v, "d_v");
  check(q_heads % kv_heads == 0, [&] {
    return fmt::format("q_heads ({}) must be a multiple of kv_heads ({})", q_heads, kv_heads);
  });
  check(d_qk <= kMaxHeadDim, [&] { return fmt::format("d_qk ({}) exceeds the limit {}", d_qk, kMaxHeadDim); });
  check(d_v <= kMaxHeadDim, [&] { return fmt::format("d_v ({}) exceeds the limit {}", d_v, kMaxHeadDim); });
  check(q_len >= 0 && q_len <= kMaxSeqLen,
        [&] { return fmt::format("q_len ({}) must be in [0, {}]", q_len, kMaxSeqLen); });
  check(kv_len >= 0 && kv_len <= kMaxSeqLen,
        [&] { return fmt::format("kv_len ({}) must be in [0, {}]", kv_len, kMaxSeqLen); });
  check(std::isnan(scale) || std::isfinite(scale),
        [&] { return fmt::format("scale ({}) must be finite", scale); });
}

std::string AttnShape::to_string() const {
  return fmt::format("B={} Hq={} Hkv={} Nq={} Nkv={} Dqk={} Dv={} scale={:.6g}", batch, q_heads, kv_heads,
                     q_len, kv_len, d_qk, d_v, softmax_scale());
}

AttnShape AttnShape::from_views(const TensorView& q, const TensorView& k, const TensorView& v, double scale) {
  q.expect_rank(4, "q [B, Hq, Nq, Dqk]");
  k.expect_rank(4, "k [B, Hkv, Nkv, Dqk]");
  v.expect_rank(4, "v [B, Hkv, Nkv, Dv]");
  auto agree = [](int64_t a, int64_t b, const char* what) {
    check(a == b, [&] { return fmt::format("{} disagree ({} vs {})", what, a, b); });
  };
  agree(q.size(0), k.size(0), "batch sizes of q and k");
  agree(k.size(0), v.size(0), "batch sizes of k and v");
  agree(k.size(1), v.size(1), "head counts of k and v");
  agree(k.size(2), v.size(2), "sequence lengths of k and v");
  agree(q.size(3), k.size(3), "head dims of q and k (d_qk)");
  AttnShape s;
  s.batch = q.size(0);
  s.q_heads = q.size(1);
  s.kv_heads = k.size(1);
  s.q_len = q.size(2);
  s.kv_len = k.size(2);
  s.d_qk = q.size(3);
  s.d_v = v.size(3);
  s.scale = scale;
  s.validate();
  return s;
}

}  // namespace attnkit
