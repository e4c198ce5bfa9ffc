// Generation: the model run token by token over a KV cache of any kind (kv_cache.hpp),
// the prompt prefilled through attend() (the flash kernel) in one call, each new token
// through decode_attention(), and sampling (greedy, temperature, top-k, top-p).
// Layers whose pattern decode cannot express (Longformer, BigBird, strided, fixed) attend
// with attend() over the cache's gathered K / V, the query bottom-right aligned: exact,
// at the cost of a gather per token. Keys are rotated (RoPE) before they are stored, at
// their absolute positions. A layer with a linear-cost method (linear, Performer, retention)
// keeps a recurrent state instead of a cache (layer_memory.hpp), prompt and new tokens
// alike through LinearState::step. An MLA layer keeps a latent cache (MlaCache, d_c + d_r
// values per token) and runs prompt and new tokens alike through mla_decode: the chunk's
// latent rows stored, then the absorbed form's attention over the cache (bottom-right
// causal). Not for: batched generation, beam search.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string_view>
#include <vector>

#include "attnkit/kv_cache.hpp"
#include "attnkit/layer_memory.hpp"
#include "model/model.hpp"

namespace attnkit::model {

// --cache: "contiguous" | "paged[:P]" (P slots per page, default 16) |
// "rolling:w=W[,sinks=S]" (W keys per query, itself included; S sinks, default 4);
// --kv-dtype: f32 | bf16 | f16 | int8 | int4. Throws Error naming the flag.
KvCacheConfig parse_cache(std::string_view cache, std::string_view kv_dtype);

// The cache a Generator builds for one layer from `cache`: one layer, the layer's KV heads
// and the head width; a rolling cache takes the prompt in chunks of at most 64 tokens (its
// window if smaller), so it holds sinks + window + 63 slots. For the KV-memory formulas too.
KvCacheConfig layer_cache_config(const ModelConfig& config, const KvCacheConfig& cache, int64_t layer);

// The latent cache a Generator builds for an MLA layer: one layer, one sequence, the layer's
// d_c and d_r, `cache`'s max_tokens; storage f32 or bf16 from --kv-dtype. Throws Error naming
// --cache when the layout is not contiguous (a latent cache is contiguous only) and
// --kv-dtype for another storage (a latent row is read whole, unquantized).
MlaCacheConfig layer_latent_config(const ModelConfig& config, const KvCacheConfig& cache, int64_t layer);

class Generator {
 public:
  // One cache per softmax layer (layers may differ in KV heads), built from `cache` (its
  // layout, storage and window; the shapes come from the model), one recurrent state per
  // linear-cost layer and one latent cache per MLA layer. Keeps a reference to model.
  Generator(const Model& model, const KvCacheConfig& cache);
  ~Generator();

  // Appends tokens (ids checked) and returns the logits [vocab] after the last one. The
  // first call with several tokens is the prefill; later calls usually pass one.
  const std::vector<float>& feed(std::span<const int32_t> tokens);
  int64_t position() const { return pos_; }
  int64_t kv_bytes() const { return memory_.bytes_allocated(); }  // caches and states, summed
  const LayerMemory& memory() const { return memory_; }

 private:
  void forward_chunk(std::span<const int32_t> tokens);
  void token_attention(int64_t layer, int64_t t, const std::vector<float>& q, const std::vector<float>& k,
                       const std::vector<float>& v, std::vector<float>& att);
  const Model& model_;
  KvCacheConfig cache_cfg_;
  LayerMemory memory_;
  std::vector<int64_t> seqs_;  // [layer]: the sequence of a token cache (-1 for a state or latent)
  int64_t pos_ = 0;
  std::vector<float> logits_;
};

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy (argmax, ties to the lowest id)
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // nucleus; 1: off
};
// Draws a token from logits [vocab]. Throws Error naming the option when out of range.
int32_t sample(const std::vector<float>& logits, const SamplingOptions& opts, std::mt19937_64& rng);

}  // namespace attnkit::model
