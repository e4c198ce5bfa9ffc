// attend() and attend_backward(): argument checking shared by every kernel, and the
// choice of kernel.
#include "attnkit/attention.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "attnkit/backward.hpp"
#include "attnkit/reference.hpp"
#include "core/view_checks.hpp"
#include "kernels/flash.hpp"
#include "kernels/flash_bwd.hpp"

namespace attnkit {


std::vector<double> alibi_slopes(int64_t heads) {
  check(heads >= 1 && heads <= 1 << 16, [&] { return fmt::format("alibi: heads ({}) must be in [1, 65536]", heads); });
  auto geometric = [](int64_t n) {
    std::vector<double> s;
    for (int64_t h = 0; h < n; ++h) s.push_back(std::exp2(-8.0 * double(h + 1) / double(n)));
    return s;
  };
  int64_t pow2 = 1;
  while (pow2 * 2 <= heads) pow2 *= 2;
  std::vector<double> slopes = geometric(pow2);
  const std::vector<double> extra = geometric(2 * pow2);
  for (int64_t i = 0; static_cast<int64_t>(slopes.size()) < heads; ++i) slopes.push_back(extra[static_cast<size_t>(2 * i)]);
  return slopes;
}

AttnProblem prepare_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                              const AttendOptions& opts, const MutTensorView& o, const MutTensorView& lse) {
  const AttnShape s = AttnShape::from_views(q, k, v, opts.scale);
  expect_dims(o, {s.batch, s.q_heads, s.q_len, s.d_v}, "o", "[B, Hq, Nq, Dv]");
  if (lse.rank() != 0) expect_dims(lse, {s.batch, s.q_heads, s.q_len}, "lse", "[B, Hq, Nq]");
  expect_no_overlap(o, "o");
  if (lse.rank() != 0) expect_no_overlap(lse, "lse");
  opts.validate(s.q_heads);
  return {s, opts.pattern.bind(s.q_len, s.kv_len)};
}

void attend_into(const TensorView& q, const TensorView& k, const TensorView& v, const AttendOptions& opts,
                 const MutTensorView& o, const MutTensorView& lse) {
  switch (opts.kernel) {
    case Kernel::automatic:
    case Kernel::flash: flash::flash_forward(q, k, v, opts, o, lse); return;
    case Kernel::ref: attention_reference(q, k, v, opts, o, lse); return;
  }
}

Output attend(const TensorView& q, const TensorView& k, const TensorView& v, const AttendOptions& opts,
              DType o_dtype) {
  const AttnShape s = AttnShape::from_views(q, k, v, opts.scale);
  Output out{Tensor(o_dtype, {s.batch, s.q_heads, s.q_len, s.d_v}), Tensor(DType::f32, {s.batch, s.q_heads, s.q_len})};
  attend_into(q, k, v, opts, out.o.mut(), out.lse.mut());
  return out;
}

AttnProblem prepare_backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                             const TensorView& lse, const TensorView& d_o, const AttendOptions& opts,
                             const MutTensorView& dq, const MutTensorView& dk, const MutTensorView& dv,
                             const MutTensorView& dsink) {
  const AttnShape s = AttnShape::from_views(q, k, v, opts.scale);
  expect_dims(o, {s.batch, s.q_heads, s.q_len, s.d_v}, "o", "[B, Hq, Nq, Dv]");
  expect_dims(lse, {s.batch, s.q_heads, s.q_len}, "lse", "[B, Hq, Nq]");
  expect_dims(d_o, {s.batch, s.q_heads, s.q_len, s.d_v}, "d_o", "[B, Hq, Nq, Dv]");
  expect_dims(dq, {s.batch, s.q_heads, s.q_len, s.d_qk}, "dq", "[B, Hq, Nq, Dqk]");
  expect_dims(dk, {s.batch, s.kv_heads, s.kv_len, s.d_qk}, "dk", "[B, Hkv, Nkv, Dqk]");
  expect_dims(dv, {s.batch, s.kv_heads, s.kv_len, s.d_v}, "dv", "[B, Hkv, Nkv, Dv]");
  check(dsink.rank() == 0 || opts.has_sinks(),
        [] { return std::string("dsink: given, but opts.sink_logits is empty (no sink to differentiate)"); });
  if (dsink.rank() != 0) expect_dims(dsink, {s.q_heads}, "dsink", "[Hq]");
  expect_no_overlap(dq, "dq");
  expect_no_overlap(dk, "dk");
  expect_no_overlap(dv, "dv");
  opts.validate(s.q_heads);
  return {s, opts.pattern.bind(s.q_len, s.kv_len)};
}

void attend_backward_into(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                          const TensorView& lse, const TensorView& d_o, const AttendOptions& opts,
                          const MutTensorView& dq, const MutTensorView& dk, const MutTensorView& dv,
                          const MutTensorView& dsink) {
  switch (opts.kernel) {
    case Kernel::automatic:
    case Kernel::flash: flash::flash_backward(q, k, v, o, lse, d_o, opts, dq, dk, dv, dsink); return;
    case Kernel::ref: attention_backward_reference(q, k, v, o, lse, d_o, opts, dq, dk, dv, dsink); return;
  }
}

Gradients attend_backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                          const TensorView& lse, const TensorView& d_o, const AttendOptions& opts,
                          DType grad_dtype) {
  const AttnShape s = AttnShape::from_views(q, k, v, opts.scale);
  Gradients g{Tensor(grad_dtype, {s.batch, s.q_heads, s.q_len, s.d_qk}),
              Tensor(grad_dtype, {s.batch, s.kv_heads, s.kv_len, s.d_qk}),
              Tensor(grad_dtype, {s.batch, s.kv_heads, s.kv_len, s.d_v}), Tensor()};
  if (opts.has_sinks()) g.dsink = Tensor(DType::f32, {s.q_heads});
  attend_backward_into(q, k, v, o, lse, d_o, opts, g.dq.mut(), g.dk.mut(), g.dv.mut(),
                       opts.has_sinks() ? g.dsink.mut() : MutTensorView());
  return g;
}

}  // namespace attnkit
