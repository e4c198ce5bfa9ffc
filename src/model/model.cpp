// The decoder's weights: their layout and initialisation (model.hpp); the training
// forward / backward are in forward.cpp.
#include "model/model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "attnkit/error.hpp"

namespace attnkit::model {

Model::Model(ModelConfig config) : config_(std::move(config)) {
  config_.validate();
  const ModelConfig& c = config_;
  int64_t at = 0;
  auto add = [&](std::string name, int64_t rows, int64_t cols, bool decay) {
    params_.push_back({std::move(name), at, rows, cols, decay});
    const int64_t o = at;
    at += rows * cols;
    return o;
  };
  wte_ = add("tok_embeddings", c.vocab, c.dim, true);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const int64_t kv = c.layers[static_cast<size_t>(l)].kv_heads * c.head_dim();
    const std::string p = fmt::format("layers.{}.", l);
    methods_.push_back(parse_layer_method(c.layers[static_cast<size_t>(l)].method, fmt::format("config.layers[{}].method", l)));
    mlas_.push_back(methods_.back().family == MethodFamily::mla ? layer_mla_config(c, l) : MlaConfig{});
    LayerOffsets o;
    o.rms_att = add(p + "attention_norm", c.dim, 1, false);
    if (methods_.back().family == MethodFamily::mla) {
      const MlaConfig& m = mlas_.back();
      o.w_q = add(p + "w_q", c.dim, m.heads * m.d_qk(), true);
      o.w_dkv = add(p + "w_dkv", c.dim, m.d_c, true);
      o.w_kr = add(p + "w_kr", c.dim, m.d_r, true);
      o.w_uk = add(p + "w_uk", m.heads * m.d_nope, m.d_c, true);
      o.w_uv = add(p + "w_uv", m.heads * m.d_v, m.d_c, true);
    } else {
      o.wq = add(p + "wq", c.dim, c.dim, true);
      o.wk = add(p + "wk", kv, c.dim, true);
      o.wv = add(p + "wv", kv, c.dim, true);
    }
    o.wo = add(p + "wo", c.dim, c.dim, true);
    o.rms_ffn = add(p + "ffn_norm", c.dim, 1, false);
    o.w1 = add(p + "w1", c.hidden_dim, c.dim, true);
    o.w2 = add(p + "w2", c.dim, c.hidden_dim, true);
    o.w3 = add(p + "w3", c.hidden_dim, c.dim, true);
    layers_.push_back(o);
    patterns_.push_back(Pattern::parse(c.layers[static_cast<size_t>(l)].pattern));
  }
  rms_final_ = add("norm", c.dim, 1, false);
  wcls_ = c.tied_head ? wte_ : add("output", c.vocab, c.dim, true);
  weights.assign(static_cast<size_t>(at), 0.0f);
  rope_ = std::make_shared<const RopeCache>(c.rope, c.head_dim(), c.context);
}

const MlaConfig& Model::mla(int64_t l) const {
  check(l >= 0 && l < config_.n_layers && is_mla(l), [&] { return fmt::format("layer {} is not an MLA layer", l); });
  return mlas_[static_cast<size_t>(l)];
}

MlaWeights Model::mla_weights(int64_t l) const {
  const MlaConfig& m = mla(l);
  const LayerOffsets& o = layer(l);
  const float* w = weights.data();
  return {TensorView(w + o.w_q, DType::f32, {m.d_model, m.heads, m.d_qk()}),
          TensorView(w + o.w_dkv, DType::f32, {m.d_model, m.d_c}), TensorView(w + o.w_kr, DType::f32, {m.d_model, m.d_r}),
          TensorView(w + o.w_uk, DType::f32, {m.heads, m.d_nope, m.d_c}),
          TensorView(w + o.w_uv, DType::f32, {m.heads, m.d_v, m.d_c})};
}

void Model::init_weights() {
  std::mt19937_64 rng(config_.seed);
  const double residual_scale = 1.0 / std::sqrt(2.0 * static_cast<double>(config_.n_layers));
  for (const ParamRef& p : params_) {
    float* w = weights.data() + p.offset;
    const int64_t n = p.rows * p.cols;
    if (!p.decay) {
      std::fill(w, w + n, 1.0f);
      continue;
    }
    const bool residual = p.name.ends_with(".wo") || p.name.ends_with(".w2");
    std::normal_distribution<double> normal(0.0, 0.02 * (residual ? residual_scale : 1.0));
    for (int64_t i = 0; i < n; ++i) w[i] = static_cast<float>(normal(rng));
  }
}

}  // namespace attnkit::model
