// The Llama-style decoder: weights, one training forward / backward over a batch of token
// sequences, and the activations it saves. Every layer is a pair of layers.hpp; attention
// goes through attend() / attend_backward() with the layer's pattern and head sharing, on
// strided views of the [B, T, H, D] projections (no copies).
//   x = wte[tokens]
//   per layer: x += Wo attn(rope(Wq n1), rope(Wk n1), Wv n1),  n1 = rmsnorm(x)
//              x += W2 (silu(W1 n2) * W3 n2),                 n2 = rmsnorm(x)
//   logits = head(rmsnorm(x)),  loss = mean cross-entropy
// An MLA layer (config "mla:c=C,r=R") replaces attn(...) by mla_forward(n1) (mla.hpp: its
// projections and RoPE on the d_r dims inside), with its own weights instead of wq, wk, wv.
// Weights are f32 in llama2.c's order and layouts ([out][in] matrices); an MLA layer's are
// in mla.hpp's x W layouts ([in][out]), since they are new names with no other convention
// to meet. Not for: generation with a KV cache (generate.hpp), the optimizer (train.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/method.hpp"
#include "attnkit/mla.hpp"
#include "attnkit/pattern.hpp"
#include "attnkit/rope.hpp"
#include "attnkit/tensor.hpp"
#include "model/config.hpp"

namespace attnkit::model {

// A named slice of the flat parameter vector, [rows][cols] (cols = 1 for vectors).
struct ParamRef {
  std::string name;  // "layers.0.wq", ... (the safetensors names)
  int64_t offset, rows, cols;
  bool decay;        // matrices take weight decay; norms do not
};

// Offsets of a layer's parameters; -1 for the ones its kind has not: a softmax or
// linear-cost layer has wq, wk, wv, an MLA layer w_q, w_dkv, w_kr, w_uk, w_uv.
struct LayerOffsets {
  int64_t rms_att = -1, wq = -1, wk = -1, wv = -1, wo = -1, rms_ffn = -1, w1 = -1, w2 = -1, w3 = -1;
  // MLA ("layers.L.w_q", ...), mla.hpp's layouts: w_q [dim][H][head_dim + d_r],
  // w_dkv [dim][d_c], w_kr [dim][d_r], w_uk [H][head_dim][d_c], w_uv [H][head_dim][d_c].
  int64_t w_q = -1, w_dkv = -1, w_kr = -1, w_uk = -1, w_uv = -1;
};

class Model {
 public:
  // Validates the config and lays out the parameters (zero); init_weights() fills them.
  explicit Model(ModelConfig config);

  const ModelConfig& config() const { return config_; }
  const std::vector<ParamRef>& params() const { return params_; }
  int64_t num_params() const { return static_cast<int64_t>(weights.size()); }

  // Normal(0, 0.02) for matrices and the embedding, scaled by 1 / sqrt(2 n_layers) for the
  // projections into the residual stream (wo, w2); norms 1. Deterministic for config.seed.
  void init_weights();

  std::vector<float> weights;  // every parameter, in params() order

  // Offsets into weights.
  int64_t wte() const { return wte_; }
  int64_t rms_final() const { return rms_final_; }
  int64_t wcls() const { return wcls_; }
  const LayerOffsets& layer(int64_t l) const { return layers_[static_cast<size_t>(l)]; }
  const RopeCache& rope() const { return *rope_; }
  const Pattern& pattern(int64_t l) const { return patterns_[static_cast<size_t>(l)]; }  // parsed once
  const Method& method(int64_t l) const { return methods_[static_cast<size_t>(l)]; }     // parsed once
  bool is_mla(int64_t l) const { return method(l).family == MethodFamily::mla; }
  // An MLA layer's sizes (layer_mla_config) and its weights as views of `weights`; Error for
  // another kind of layer.
  const MlaConfig& mla(int64_t l) const;
  MlaWeights mla_weights(int64_t l) const;

 private:
  ModelConfig config_;
  std::vector<ParamRef> params_;
  std::vector<LayerOffsets> layers_;
  int64_t wte_ = 0, rms_final_ = 0, wcls_ = 0;
  std::shared_ptr<const RopeCache> rope_;
  std::vector<Pattern> patterns_;
  std::vector<Method> methods_;
  std::vector<MlaConfig> mlas_;  // [layer]: meaningful for MLA layers only
};

// A [B, H, T, D] view of the rows of a [B][T][H][D] projection: what attention reads and
// writes, without a copy.
inline TensorView heads_view(const float* data, int64_t b, int64_t t, int64_t h, int64_t d) {
  return TensorView(data, DType::f32, {b, h, t, d}, {t * h * d, d, h * d, 1});
}
inline MutTensorView heads_mut(float* data, int64_t b, int64_t t, int64_t h, int64_t d) {
  return MutTensorView(data, DType::f32, {b, h, t, d}, {t * h * d, d, h * d, 1});
}

// Activations of one forward over tokens [B][T], kept for the backward. Sized on first use
// and reused while B and T stay the same.
struct Activations {
  int64_t b = 0, t = 0;
  struct Layer {
    std::vector<float> x, n1, rstd1, q, k, v, att, lse, x2, n2, rstd2, h1, h3, g;
  };
  std::vector<Layer> layers;
  std::vector<float> x_final, n_final, rstd_final, probs, losses;
  std::vector<int64_t> pos;  // [T]: 0..T-1
  // Wall time inside the attention kernels (attend_into, attend_backward_into; for an MLA
  // layer the whole mla_forward / mla_backward, its projections included) during the last
  // training_forward and training_backward: a measurement, not model state, so the const
  // backward may add to it.
  mutable double attention_seconds = 0;
};

// Mean cross-entropy of targets [B][T] given tokens [B][T] (T <= context); ids checked.
// Saves what training_backward needs into `acts`.
double training_forward(const Model& model, const int32_t* tokens, const int32_t* targets, int64_t b, int64_t t,
                        Activations& acts);
// grads [num_params] = d mean loss / d weights (overwritten), from the last forward.
void training_backward(const Model& model, const int32_t* tokens, const int32_t* targets, const Activations& acts,
                       std::vector<float>& grads);

}  // namespace attnkit::model
