// linear.hpp's entry points: the choice between the engine and the reference, LinearState
// and the FLOP count (method strings and validation: src/core/method.cpp). The methods themselves live in
// linear_elu.cpp, linear_performer.cpp and linear_retention.cpp; the forms in
// linear_engine.cpp and linear_backward.cpp.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "attnkit/linear.hpp"
#include "core/view_checks.hpp"
#include "kernels/linear_engine.hpp"

namespace attnkit {

namespace {

linear::Geometry geometry(const LinearMethod& m, const AttnShape& s) {
  const bool performer = m.kind == LinearKind::performer, retention = m.kind == LinearKind::retention;
  return linear::Geometry{s.batch, s.q_heads, s.kv_heads, s.q_len, s.kv_len, s.d_qk, s.d_v,
                          performer ? m.features : s.d_qk, s.d_v + (retention ? 0 : 1), retention ? 1 : s.group(),
                          m.chunk, m.causal};
}

}  // namespace

namespace {
LinearProblem prepare_inputs(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m) {
  const AttnShape s = AttnShape::from_views(q, k, v);
  check(!m.causal || s.q_len == s.kv_len, [&] {
    return fmt::format("k and v must have q's length ({}) for a causal method, got {} (query i is paired with key i)",
                       s.q_len, s.kv_len);
  });
  m.validate(s.q_heads);
  return {s, m.kind == LinearKind::performer ? m.features : s.d_qk, linear_scale(m, s.d_qk),
          linear_gammas(m, s.q_heads)};
}
}  // namespace

LinearProblem prepare_linear(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                             const MutTensorView& o) {
  LinearProblem p = prepare_inputs(q, k, v, m);
  const AttnShape& s = p.shape;
  expect_dims(o, {s.batch, s.q_heads, s.q_len, s.d_v}, "o", "[B, Hq, N, Dv]");
  expect_no_overlap(o, "o");
  return p;
}

namespace linear {

std::unique_ptr<FeatureMap> make_feature_map(const LinearMethod& m, int64_t q_heads, int64_t dk) {
  switch (m.kind) {
    case LinearKind::performer: return make_performer_map(m, dk);
    case LinearKind::retention: return make_retention_map(m, q_heads, dk);
    case LinearKind::linear: break;
  }
  return make_elu_map(m, dk);
}

}  // namespace linear

void linear_attend_into(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                        const MutTensorView& o) {
  const LinearProblem p = prepare_linear(q, k, v, m, o);
  if (m.kernel == Kernel::ref) {
    linear_reference(q, k, v, m, o);
    return;
  }
  const auto map = linear::make_feature_map(m, p.shape.q_heads, p.shape.d_qk);
  linear::forward(*map, geometry(m, p.shape), linear::resolve_form(m), q, k, v, o);
}

Tensor linear_attend(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                     DType o_dtype) {
  const AttnShape s = AttnShape::from_views(q, k, v);
  Tensor o(o_dtype, {s.batch, s.q_heads, s.q_len, s.d_v});
  linear_attend_into(q, k, v, m, o.mut());
  return o;
}

LinearProblem prepare_linear_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                      const TensorView& dout, const LinearMethod& m, const MutTensorView& dq,
                                      const MutTensorView& dk, const MutTensorView& dv) {
  LinearProblem p = prepare_inputs(q, k, v, m);
  const AttnShape& s = p.shape;
  expect_dims(dout, {s.batch, s.q_heads, s.q_len, s.d_v}, "dout", "[B, Hq, N, Dv]");
  expect_dims(dq, {s.batch, s.q_heads, s.q_len, s.d_qk}, "dq", "[B, Hq, N, Dk]");
  expect_dims(dk, {s.batch, s.kv_heads, s.kv_len, s.d_qk}, "dk", "[B, Hkv, N, Dk]");
  expect_dims(dv, {s.batch, s.kv_heads, s.kv_len, s.d_v}, "dv", "[B, Hkv, N, Dv]");
  expect_no_overlap(dq, "dq");
  expect_no_overlap(dk, "dk");
  expect_no_overlap(dv, "dv");
  return p;
}

void linear_attend_backward_into(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& dout,
                                 const LinearMethod& m, const MutTensorView& dq, const MutTensorView& dk,
                                 const MutTensorView& dv) {
  const LinearProblem p = prepare_linear_backward(q, k, v, dout, m, dq, dk, dv);
  if (m.kernel == Kernel::ref) {
    linear_backward_reference(q, k, v, dout, m, dq, dk, dv);
    return;
  }
  const auto map = linear::make_feature_map(m, p.shape.q_heads, p.shape.d_qk);
  linear::backward(*map, geometry(m, p.shape), q, k, v, dout, dq, dk, dv);
}

LinearState::LinearState(const LinearMethod& m, int64_t batch, int64_t q_heads, int64_t kv_heads, int64_t dk,
                         int64_t dv)
    : m_(m), batch_(batch), q_heads_(q_heads), kv_heads_(kv_heads), dk_(dk), dv_(dv) {
  check(m.causal, [] {
    return std::string("LinearState: the method is not causal; only a causal method has a decode state (a "
                       "non-causal output depends on later tokens)");
  });
  AttnShape s;
  s.batch = batch, s.q_heads = q_heads, s.kv_heads = kv_heads, s.d_qk = dk, s.d_v = dv;
  s.validate();
  m.validate(q_heads);
  map_ = linear::make_feature_map(m, q_heads, dk);
  const linear::Geometry g = geometry(m, s);
  state_.assign(static_cast<size_t>(batch * g.state_heads() * g.state_floats()), 0.0f);
  if (map_->scales_keys()) scales_.assign(static_cast<size_t>(batch * g.state_heads() * g.features), -HUGE_VALF);
}

LinearState::~LinearState() = default;
LinearState::LinearState(LinearState&&) noexcept = default;
LinearState& LinearState::operator=(LinearState&&) noexcept = default;

void LinearState::step(const TensorView& q, const TensorView& k, const TensorView& v, const MutTensorView& o) {
  const AttnShape s = AttnShape::from_views(q, k, v);
  const auto agree = [](int64_t got, int64_t want, const char* what) {
    check(got == want, [&] { return fmt::format("LinearState::step: {} is {}, the state was made for {}", what, got, want); });
  };
  agree(s.batch, batch_, "the batch");
  agree(s.q_heads, q_heads_, "q's head count");
  agree(s.kv_heads, kv_heads_, "k's head count");
  agree(s.d_qk, dk_, "the head dim of q and k");
  agree(s.d_v, dv_, "v's head dim");
  check(s.q_len >= 1 && s.q_len == s.kv_len, [&] {
    return fmt::format("LinearState::step: q, k and v need the same T >= 1 tokens, got q {} and k {}", s.q_len, s.kv_len);
  });
  check(tokens_ <= kMaxSeqLen - s.q_len,
        [&] { return fmt::format("LinearState::step: more than {} tokens in one state", kMaxSeqLen); });
  expect_dims(o, {s.batch, s.q_heads, s.q_len, s.d_v}, "o", "[B, Hq, T, Dv]");
  expect_no_overlap(o, "o");
  const bool recurrent = s.q_len == 1 || m_.form == LinearForm::recurrent;
  linear::Geometry g = geometry(m_, s);
  g.chunk = std::min(g.chunk, s.q_len);  // workspaces sized for the step, not for a whole chunk
  linear::forward_from_state(*map_, g, recurrent, q, k, v, o, state_.data(),
                             scales_.empty() ? nullptr : scales_.data(), tokens_);
  tokens_ += s.q_len;
}

int64_t LinearState::bytes() const {
  return static_cast<int64_t>((state_.size() + scales_.size()) * sizeof(float));
}

void LinearState::reset() {
  std::fill(state_.begin(), state_.end(), 0.0f);
  std::fill(scales_.begin(), scales_.end(), -HUGE_VALF);
  tokens_ = 0;
}

double linear_flops(const LinearMethod& m, int64_t b, int64_t hq, int64_t hkv, int64_t n, int64_t dk, int64_t dv) {
  AttnShape s;
  s.batch = b, s.q_heads = hq, s.kv_heads = hkv, s.q_len = n, s.kv_len = n, s.d_qk = dk, s.d_v = dv;
  s.validate();
  m.validate(hq);
  const double map_flops = m.kind == LinearKind::performer ? 2.0 * static_cast<double>(dk * m.features) : 0.0;
  return linear::forward_flops(geometry(m, s), linear::resolve_form(m), map_flops);
}

}  // namespace attnkit
