// The plain-loop oracle of Linformer (reference.hpp): the projections K' = E K and V' = F V,
// their transposes for dK and dV, and dE, dF written as the sums they are, around
// attention_reference and attention_backward_reference over the k projected keys.
// One body serves both precisions: Acc accumulates and round() rounds to q's dtype after
// each product (identity in f64 mode), as a framework's unfused matmuls would.
// Not for: speed (the fast form is src/kernels/linformer.cpp).
#include <utility>

#include "attnkit/backward.hpp"
#include "attnkit/reference.hpp"

namespace attnkit {

namespace {

template <class Acc>
struct LinformerRef {
  const LinformerProblem& pr;
  DType round_type;  // f64 in oracle mode, else q's dtype

  double round(Acc x) const { return round_to(round_type, static_cast<double>(x)); }
  // The projection KV head h uses.
  int64_t proj(int64_t h) const { return pr.projections == 1 ? 0 : h; }

  // x'[b, h, j, c] = sum_t E[p(h), j, t] x[b, h, t, c]: f64 [B, Hkv, k, D] from
  // e [P, k, n] and x [B, Hkv, n, D].
  Tensor project(const TensorView& e, const TensorView& x) const {
    const AttnShape& s = pr.shape;
    const int64_t d = x.size(3);
    Tensor out(DType::f64, {s.batch, s.kv_heads, pr.proj_len, d});
    const MutTensorView o = out.mut();
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.kv_heads; ++h)
        for (int64_t j = 0; j < pr.proj_len; ++j)
          for (int64_t c = 0; c < d; ++c) {
            Acc acc = 0;
            for (int64_t t = 0; t < s.kv_len; ++t)
              acc += static_cast<Acc>(e.get(proj(h), j, t)) * static_cast<Acc>(x.get(b, h, t, c));
            o.set(round(acc), b, h, j, c);
          }
    return out;
  }

  // dx[b, h, t, c] = sum_j E[p(h), j, t] dx'[b, h, j, c]: dx [B, Hkv, n, D] from
  // dx' [B, Hkv, k, D].
  void unproject(const TensorView& e, const Tensor& dxp, const MutTensorView& dx) const {
    const AttnShape& s = pr.shape;
    const int64_t d = dx.size(3);
    const TensorView g = dxp.view();
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.kv_heads; ++h)
        for (int64_t t = 0; t < s.kv_len; ++t)
          for (int64_t c = 0; c < d; ++c) {
            Acc acc = 0;
            for (int64_t j = 0; j < pr.proj_len; ++j)
              acc += static_cast<Acc>(e.get(proj(h), j, t)) * static_cast<Acc>(g.get(b, h, j, c));
            dx.set(round(acc), b, h, t, c);
          }
  }

  // de[p, j, t] = sum over the terms (dx', x), the batch and the heads h of p of
  // sum_c dx'[b, h, j, c] x[b, h, t, c].
  void projection_grad(std::initializer_list<std::pair<const Tensor*, const TensorView*>> terms,
                       const MutTensorView& de) const {
    const AttnShape& s = pr.shape;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t p = 0; p < pr.projections; ++p)
      for (int64_t j = 0; j < pr.proj_len; ++j)
        for (int64_t t = 0; t < s.kv_len; ++t) {
          Acc acc = 0;
          for (const auto& [dxp, x] : terms)
            for (int64_t b = 0; b < s.batch; ++b)
              for (int64_t h = 0; h < s.kv_heads; ++h) {
                if (proj(h) != p) continue;
                for (int64_t c = 0; c < x->size(3); ++c)
                  acc += static_cast<Acc>(dxp->view().get(b, h, j, c)) * static_cast<Acc>(x->get(b, h, t, c));
              }
          de.set(round(acc), p, j, t);
        }
  }
};

// Runs body(LinformerRef<Acc>) with double in oracle mode (or for f64 inputs), else float.
template <class Body>
void with_precision(const LinformerProblem& pr, const TensorView& q, RefPrecision precision, Body body) {
  if (precision == RefPrecision::f64 || q.dtype() == DType::f64) {
    body(LinformerRef<double>{pr, DType::f64});
  } else {
    body(LinformerRef<float>{pr, q.dtype()});
  }
}

AttendOptions inner_options(const LinformerProblem& pr) {
  AttendOptions opts;
  opts.scale = pr.shape.softmax_scale();
  return opts;
}

}  // namespace

void linformer_reference(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& e,
                         const TensorView& f, const LinformerMethod& m, const MutTensorView& o,
                         RefPrecision precision) {
  const LinformerProblem pr = prepare_linformer(q, k, v, e, f, m, o);
  const TensorView& fv = m.shares_ef() ? e : f;
  RefOptions ro;
  ro.precision = precision;
  with_precision(pr, q, precision, [&](const auto& ref) {
    const Tensor kp = ref.project(e, k), vp = ref.project(fv, v);
    attention_reference(q, kp.view(), vp.view(), inner_options(pr), o, MutTensorView(), ro);
  });
}

void linformer_backward_reference(const TensorView& q, const TensorView& k, const TensorView& v,
                                  const TensorView& e, const TensorView& f, const TensorView& d_o,
                                  const LinformerMethod& m, const MutTensorView& dq, const MutTensorView& dk,
                                  const MutTensorView& dv, const MutTensorView& de, const MutTensorView& df,
                                  RefPrecision precision) {
  const LinformerProblem pr = prepare_linformer_backward(q, k, v, e, f, d_o, m, dq, dk, dv, de, df);
  const AttnShape& s = pr.shape;
  const TensorView& fv = m.shares_ef() ? e : f;
  const AttendOptions opts = inner_options(pr);
  with_precision(pr, q, precision, [&](const auto& ref) {
    const Tensor kp = ref.project(e, k), vp = ref.project(fv, v);
    // attention_backward_reference recomputes P from q, K', V'; O and LSE are only checked.
    Tensor o(DType::f64, {s.batch, s.q_heads, s.q_len, s.d_v}), lse(DType::f64, {s.batch, s.q_heads, s.q_len});
    attention_reference(q, kp.view(), vp.view(), opts, o.mut(), lse.mut());
    Tensor dkp(DType::f64, kp.shape()), dvp(DType::f64, vp.shape());
    attention_backward_reference(q, kp.view(), vp.view(), o.view(), lse.view(), d_o, opts, dq, dkp.mut(), dvp.mut(),
                                 MutTensorView(), precision);
    ref.unproject(e, dkp, dk);
    ref.unproject(fv, dvp, dv);
    if (m.shares_ef()) {
      ref.projection_grad({{&dkp, &k}, {&dvp, &v}}, de);
    } else {
      ref.projection_grad({{&dkp, &k}}, de);
      ref.projection_grad({{&dvp, &v}}, df);
    }
  });
}

}  // namespace attnkit
