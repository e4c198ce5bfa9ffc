// The model's configuration: a Llama-style decoder's dimensions and, per layer, its
// attention (head sharing and pattern), read from and written to JSON. Parsing treats the
// text as hostile: every field is type- and range-checked, and an Error names the field.
// Not for: training hyper-parameters (train.hpp) or weights (model.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "attnkit/method.hpp"
#include "attnkit/mla.hpp"
#include "attnkit/pattern.hpp"
#include "attnkit/rope.hpp"

namespace attnkit::model {

// One layer's attention. `heads` in the JSON: "mha" (kv_heads = n_heads), "mqa" (1), or
// "gqa:G" (G KV heads, each shared by n_heads / G query heads: GQA-G as the GQA paper names
// it). `pattern`: any causal attnkit pattern string (causal, window:L,0[,sinks=S],
// longformer:...,causal, strided:..., fixed:...). `method`: method.hpp's spec — "softmax"
// (exact attention with the pattern), or a causal linear-cost family ("linear",
// "performer:m=M", "retention[:gamma=G]"), whose pattern must be "causal"; Linformer is
// refused (its projection mixes future positions into every key). "mla:c=C,r=R" makes the
// layer multi-head latent attention (mla.hpp) with latent d_c = C and decoupled RoPE dims
// d_r = R; its queries and keys are head_dim + R wide, its values head_dim (d_nope = d_v =
// head_dim), its pattern "causal" and its heads "mha" (every head reads the one latent).
struct LayerConfig {
  int64_t kv_heads = 0;
  std::string pattern = "causal";
  std::string method = "softmax";
};

struct ModelConfig {
  int64_t dim = 0;          // model width C
  int64_t hidden_dim = 0;   // SwiGLU width
  int64_t n_layers = 0;
  int64_t n_heads = 0;      // query heads; head_dim = dim / n_heads
  int64_t vocab = 0;
  int64_t context = 0;      // longest sequence (RoPE table, training sequence length)
  double norm_eps = 1e-5;
  RopeConfig rope{RopeStyle::interleaved, 0, 10000.0};  // llama2.c's convention
  bool tied_head = true;    // output head shares the token embedding
  uint64_t seed = 0;        // weight initialisation
  std::vector<LayerConfig> layers;  // n_layers entries

  int64_t head_dim() const { return dim / n_heads; }
  // Throws Error naming the field ("config.layers[2].pattern", ...).
  void validate() const;
  // Parameters, counting the output head once when tied.
  int64_t parameter_count() const;
};

// Fields: dim, hidden_dim, n_layers, n_heads, vocab, context (required); norm_eps,
// rope_base, rope_style ("interleaved" | "rotate_half"), tied_head, seed, and either
// "layers": [{"heads": "gqa:2", "pattern": "causal", "method": "softmax"}, ...] (n_layers
// entries) or "heads", "pattern" and "method" applied to every layer (defaults "mha",
// "causal", "softmax"). Unknown fields are errors. config_to_json writes "method" only for
// layers that are not softmax, so the JSON of a softmax model is what it always was.
ModelConfig parse_config(std::string_view json_text);
std::string config_to_json(const ModelConfig& config);  // parse_config reads it back exactly

// "mha" | "mqa" | "gqa:G" for a model of n_heads query heads -> KV heads; throws Error naming `what`.
int64_t parse_heads(std::string_view text, int64_t n_heads, std::string_view what);

// A layer's method spec, parsed and checked for a decoder layer (causal; not Linformer);
// throws Error naming `what`.
Method parse_layer_method(std::string_view spec, std::string_view what);

// An MLA layer's sizes for mla.hpp: n_heads heads over d_model = dim, d_nope = d_v =
// head_dim, d_c and d_r from its method, the model's RoPE style and base over all d_r dims,
// the default scale 1 / sqrt(head_dim + d_r). Throws Error when layer l is not MLA.
MlaConfig layer_mla_config(const ModelConfig& config, int64_t layer);

}  // namespace attnkit::model
