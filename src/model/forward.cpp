// The decoder's training forward and backward (model.hpp): the layers of layers.hpp,
// attention through attend() / attend_backward(), a linear-cost layer through
// linear_attend() / linear_attend_backward(), or an MLA layer through mla_forward() /
// mla_backward() (naive form: per token pair it costs H (2 head_dim + d_r) FLOPs against
// the absorbed form's H (2 d_c + d_r), and training has no cache to save).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "attnkit/attention.hpp"
#include "attnkit/backward.hpp"
#include "attnkit/linear.hpp"
#include "attnkit/error.hpp"
#include "attnkit/mla.hpp"
#include "model/layers.hpp"
#include "model/model.hpp"

namespace attnkit::model {
namespace {

AttendOptions layer_options(const Model& model, int64_t l) {
  AttendOptions opts;
  opts.pattern = model.pattern(l);
  return opts;
}

void resize(std::vector<float>& v, int64_t n) { v.assign(static_cast<size_t>(n), 0.0f); }

MlaOptions mla_options(const Model& model, int64_t l) {
  MlaOptions opts;
  opts.form = MlaForm::naive;
  opts.pattern = model.pattern(l);
  return opts;
}

// dst[i] += t's f32 elements (a contiguous gradient from mla_backward).
void accumulate(float* dst, const Tensor& t) {
  const float* src = static_cast<const float*>(t.data());
  for (int64_t i = 0; i < t.numel(); ++i) dst[i] += src[i];
}

// Runs f and adds its wall time to `seconds`.
template <class F>
void timed(double& seconds, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

double training_forward(const Model& model, const int32_t* tokens, const int32_t* targets, int64_t b, int64_t t,
                        Activations& a) {
  const ModelConfig& c = model.config();
  check(b >= 1 && t >= 1 && t <= c.context,
        [&] { return fmt::format("batch ({}) must be >= 1 and sequence length ({}) in [1, context = {}]", b, t, c.context); });
  const int64_t n = b * t, dim = c.dim, hd = c.head_dim(), hq = c.n_heads, hidden = c.hidden_dim;
  for (int64_t i = 0; i < n; ++i) {
    check(tokens[i] >= 0 && tokens[i] < c.vocab,
          [&] { return fmt::format("tokens[{}] ({}) is out of range [0, vocab = {})", i, tokens[i], c.vocab); });
    check(targets[i] >= 0 && targets[i] < c.vocab,
          [&] { return fmt::format("targets[{}] ({}) is out of range [0, vocab = {})", i, targets[i], c.vocab); });
  }
  if (a.b != b || a.t != t || a.layers.size() != static_cast<size_t>(c.n_layers)) {
    a.b = b, a.t = t;
    a.layers.assign(static_cast<size_t>(c.n_layers), {});
    for (int64_t l = 0; l < c.n_layers; ++l) {
      auto& s = a.layers[static_cast<size_t>(l)];
      // An MLA layer keeps no q, k, v or LSE: mla_backward recomputes its own.
      const bool mla = model.is_mla(l);
      const int64_t kv = mla ? 0 : c.layers[static_cast<size_t>(l)].kv_heads * hd;
      for (auto* v : {&s.x, &s.n1, &s.att, &s.x2, &s.n2}) resize(*v, n * dim);
      for (auto* v : {&s.rstd1, &s.rstd2}) resize(*v, n);
      resize(s.q, mla ? 0 : n * dim), resize(s.k, n * kv), resize(s.v, n * kv), resize(s.lse, mla ? 0 : b * hq * t);
      for (auto* v : {&s.h1, &s.h3, &s.g}) resize(*v, n * hidden);
    }
    resize(a.x_final, n * dim), resize(a.n_final, n * dim), resize(a.rstd_final, n);
    resize(a.probs, n * c.vocab), resize(a.losses, n);
    a.pos.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) a.pos[static_cast<size_t>(i)] = i % t;
  }
  const float* w = model.weights.data();
  const float eps = static_cast<float>(c.norm_eps);
  a.attention_seconds = 0;
  std::vector<float> x(static_cast<size_t>(n * dim));
  embedding_forward(x.data(), tokens, w + model.wte(), n, dim);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    auto& s = a.layers[static_cast<size_t>(l)];
    const LayerOffsets& o = model.layer(l);
    const LayerConfig& lc = c.layers[static_cast<size_t>(l)];
    const int64_t hkv = lc.kv_heads, kv = hkv * hd;
    s.x = x;
    rmsnorm_forward(s.n1.data(), s.rstd1.data(), s.x.data(), w + o.rms_att, n, dim, eps);
    if (model.is_mla(l)) {
      // n1: [B, T, dim] -> att: [B, T, H, head_dim]; positions 0..T-1 in every row (null).
      timed(a.attention_seconds, [&] {
        mla_forward(model.mla(l), model.mla_weights(l), TensorView(s.n1.data(), DType::f32, {b, t, dim}), nullptr,
                    mla_options(model, l), MutTensorView(s.att.data(), DType::f32, {b, t, hq, hd}));
      });
    } else {
      linear_forward(s.q.data(), s.n1.data(), w + o.wq, n, dim, dim);
      linear_forward(s.k.data(), s.n1.data(), w + o.wk, n, dim, kv);
      linear_forward(s.v.data(), s.n1.data(), w + o.wv, n, dim, kv);
      rope_forward(model.rope(), s.q.data(), a.pos.data(), n, hq);
      rope_forward(model.rope(), s.k.data(), a.pos.data(), n, hkv);
      timed(a.attention_seconds, [&] {
        const TensorView q = heads_view(s.q.data(), b, t, hq, hd), k = heads_view(s.k.data(), b, t, hkv, hd);
        const TensorView v = heads_view(s.v.data(), b, t, hkv, hd);
        if (model.method(l).has_recurrent_state())
          linear_attend_into(q, k, v, model.method(l).linear, heads_mut(s.att.data(), b, t, hq, hd));
        else
          attend_into(q, k, v, layer_options(model, l), heads_mut(s.att.data(), b, t, hq, hd),
                      MutTensorView(s.lse.data(), DType::f32, {b, hq, t}));
      });
    }
    s.x2 = s.x;
    linear_forward(s.x2.data(), s.att.data(), w + o.wo, n, dim, dim, 1.0f);
    rmsnorm_forward(s.n2.data(), s.rstd2.data(), s.x2.data(), w + o.rms_ffn, n, dim, eps);
    linear_forward(s.h1.data(), s.n2.data(), w + o.w1, n, dim, hidden);
    linear_forward(s.h3.data(), s.n2.data(), w + o.w3, n, dim, hidden);
    swiglu_forward(s.g.data(), s.h1.data(), s.h3.data(), n, hidden);
    x = s.x2;
    linear_forward(x.data(), s.g.data(), w + o.w2, n, hidden, dim, 1.0f);
  }
  a.x_final = x;
  rmsnorm_forward(a.n_final.data(), a.rstd_final.data(), a.x_final.data(), w + model.rms_final(), n, dim, eps);
  std::vector<float> logits(static_cast<size_t>(n * c.vocab));
  linear_forward(logits.data(), a.n_final.data(), w + model.wcls(), n, dim, c.vocab);
  crossentropy_forward(a.losses.data(), a.probs.data(), logits.data(), targets, n, c.vocab);
  double sum = 0;
  for (float v : a.losses) sum += v;
  return sum / static_cast<double>(n);
}

void training_backward(const Model& model, const int32_t* tokens, const int32_t* targets, const Activations& a,
                       std::vector<float>& grads) {
  const ModelConfig& c = model.config();
  const int64_t b = a.b, t = a.t, n = b * t, dim = c.dim, hd = c.head_dim(), hq = c.n_heads, hidden = c.hidden_dim;
  grads.assign(model.weights.size(), 0.0f);
  const float* w = model.weights.data();
  float* dw = grads.data();

  // Head and final norm: dres = d loss / d x_final.
  std::vector<float> dloss(static_cast<size_t>(n), 1.0f / static_cast<float>(n));
  std::vector<float> dlogits(static_cast<size_t>(n * c.vocab));
  crossentropy_backward(dlogits.data(), a.probs.data(), dloss.data(), targets, n, c.vocab);
  std::vector<float> dn(static_cast<size_t>(n * dim), 0.0f), dres(static_cast<size_t>(n * dim), 0.0f);
  linear_backward(dn.data(), dw + model.wcls(), dlogits.data(), a.n_final.data(), w + model.wcls(), n, dim, c.vocab);
  rmsnorm_backward(dres.data(), dw + model.rms_final(), dn.data(), a.x_final.data(), w + model.rms_final(),
                   a.rstd_final.data(), n, dim);

  std::vector<float> dg(static_cast<size_t>(n * hidden)), dh1(dg.size()), dh3(dg.size());
  std::vector<float> datt(static_cast<size_t>(n * dim)), dq(datt.size()), dk, dv;
  for (int64_t l = c.n_layers - 1; l >= 0; --l) {
    const auto& s = a.layers[static_cast<size_t>(l)];
    const LayerOffsets& o = model.layer(l);
    const LayerConfig& lc = c.layers[static_cast<size_t>(l)];
    const int64_t hkv = lc.kv_heads, kv = hkv * hd;
    // MLP branch: dres holds d/dx3; the residual passes it to x2 unchanged.
    std::fill(dg.begin(), dg.end(), 0.0f);
    linear_backward(dg.data(), dw + o.w2, dres.data(), s.g.data(), w + o.w2, n, hidden, dim);
    swiglu_backward(dh1.data(), dh3.data(), dg.data(), s.h1.data(), s.h3.data(), n, hidden);
    std::fill(dn.begin(), dn.end(), 0.0f);
    linear_backward(dn.data(), dw + o.w1, dh1.data(), s.n2.data(), w + o.w1, n, dim, hidden);
    linear_backward(dn.data(), dw + o.w3, dh3.data(), s.n2.data(), w + o.w3, n, dim, hidden);
    rmsnorm_backward(dres.data(), dw + o.rms_ffn, dn.data(), s.x2.data(), w + o.rms_ffn, s.rstd2.data(), n, dim);
    // Attention branch: dres now holds d/dx2.
    std::fill(datt.begin(), datt.end(), 0.0f);
    linear_backward(datt.data(), dw + o.wo, dres.data(), s.att.data(), w + o.wo, n, dim, dim);
    if (model.is_mla(l)) {
      // d_out = datt: [B, T, H, head_dim]; dx (-> dn) and every projection's gradient.
      MlaGradients g;
      timed(a.attention_seconds, [&] {
        g = mla_backward(model.mla(l), model.mla_weights(l), TensorView(s.n1.data(), DType::f32, {b, t, dim}), nullptr,
                         mla_options(model, l), TensorView(datt.data(), DType::f32, {b, t, hq, hd}));
      });
      for (const auto& [offset, grad] : {std::pair<int64_t, const Tensor*>{o.w_q, &g.dw_q}, {o.w_dkv, &g.dw_dkv},
                                         {o.w_kr, &g.dw_kr}, {o.w_uk, &g.dw_uk}, {o.w_uv, &g.dw_uv}})
        accumulate(dw + offset, *grad);
      std::copy_n(static_cast<const float*>(g.dx.data()), n * dim, dn.begin());
    } else {
      dk.assign(static_cast<size_t>(n * kv), 0.0f);
      dv.assign(static_cast<size_t>(n * kv), 0.0f);
      timed(a.attention_seconds, [&] {
        const TensorView q = heads_view(s.q.data(), b, t, hq, hd), k = heads_view(s.k.data(), b, t, hkv, hd);
        const TensorView v = heads_view(s.v.data(), b, t, hkv, hd), d_att = heads_view(datt.data(), b, t, hq, hd);
        const MutTensorView d_q = heads_mut(dq.data(), b, t, hq, hd), d_k = heads_mut(dk.data(), b, t, hkv, hd);
        const MutTensorView d_v = heads_mut(dv.data(), b, t, hkv, hd);
        if (model.method(l).has_recurrent_state())
          linear_attend_backward_into(q, k, v, d_att, model.method(l).linear, d_q, d_k, d_v);
        else
          attend_backward_into(q, k, v, heads_view(s.att.data(), b, t, hq, hd),
                               TensorView(s.lse.data(), DType::f32, {b, hq, t}), d_att, layer_options(model, l), d_q,
                               d_k, d_v, MutTensorView{});
      });
      rope_backward(model.rope(), dq.data(), a.pos.data(), n, hq);
      rope_backward(model.rope(), dk.data(), a.pos.data(), n, hkv);
      std::fill(dn.begin(), dn.end(), 0.0f);
      linear_backward(dn.data(), dw + o.wq, dq.data(), s.n1.data(), w + o.wq, n, dim, dim);
      linear_backward(dn.data(), dw + o.wk, dk.data(), s.n1.data(), w + o.wk, n, dim, kv);
      linear_backward(dn.data(), dw + o.wv, dv.data(), s.n1.data(), w + o.wv, n, dim, kv);
    }
    rmsnorm_backward(dres.data(), dw + o.rms_att, dn.data(), s.x.data(), w + o.rms_att, s.rstd1.data(), n, dim);
  }
  embedding_backward(dw + model.wte(), dres.data(), tokens, n, dim);
}

}  // namespace attnkit::model
