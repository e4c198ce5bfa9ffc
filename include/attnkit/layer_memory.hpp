// attnkit/layer_memory.hpp — the decoding memory of a model whose layers differ in kind:
// per layer a token cache (KvCache: softmax attention in any layout and storage format), a
// recurrent state (LinearState: linear attention, Performer, retention) whose size does not
// grow with the tokens appended, or an MLA latent cache (MlaCache: d_c + d_r values per
// token, V a view of K). Every layer's bytes are accounted, so a model that mixes kinds
// reports its memory exactly.
// Not for: the caches or states themselves (kv_cache.hpp, linear.hpp, mla.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "attnkit/kv_cache.hpp"
#include "attnkit/linear.hpp"
#include "attnkit/mla.hpp"

namespace attnkit {

// One layer's memory, exactly one of: `tokens` for a token cache, `state` (a causal linear
// method) with the layer's heads and widths for a recurrent state of `batch` sequences, or
// `latent` for an MLA latent cache (its `layers` counts the cache's own layers: 1 per
// model layer).
struct LayerMemorySpec {
  std::optional<KvCacheConfig> tokens;
  std::optional<LinearMethod> state;
  std::optional<MlaCacheConfig> latent;
  int64_t batch = 1, q_heads = 0, kv_heads = 0, dk = 0, dv = 0;  // state layers
};

// Bytes a recurrent state of these shapes holds: the formula LinearState::bytes() meets.
int64_t recurrent_state_bytes(const LinearMethod& m, int64_t batch, int64_t q_heads, int64_t kv_heads, int64_t dk,
                              int64_t dv);

// Bytes an MLA latent cache holds when each of its sequences has `capacity` token slots:
// kv_size's MLA figure, the formula MlaCache::bytes_allocated() meets.
int64_t latent_cache_bytes(const MlaCacheConfig& config, int64_t capacity);

class LayerMemory {
 public:
  // Throws Error naming "layers[l]" when a spec gives more than one kind or none.
  explicit LayerMemory(const std::vector<LayerMemorySpec>& layers);
  ~LayerMemory();
  int64_t layers() const { return static_cast<int64_t>(caches_.size()); }
  bool is_state(int64_t l) const { return states_[static_cast<size_t>(l)] != nullptr; }
  bool is_latent(int64_t l) const { return latents_[static_cast<size_t>(l)] != nullptr; }
  KvCache& cache(int64_t l);       // a token layer's cache; Error for another kind
  LinearState& state(int64_t l);   // a state layer's state; Error for another kind
  MlaCache& latent(int64_t l);     // an MLA layer's latent cache; Error for another kind
  // KvCache::bytes_allocated(), LinearState::bytes() or MlaCache::bytes_allocated().
  int64_t layer_bytes(int64_t l) const;
  int64_t bytes_allocated() const;  // summed over layers

 private:
  std::vector<std::unique_ptr<KvCache>> caches_;      // [layer]: null unless a token layer
  std::vector<std::unique_ptr<LinearState>> states_;  // [layer]: null unless a state layer
  std::vector<std::unique_ptr<MlaCache>> latents_;    // [layer]: null unless an MLA layer
};

}  // namespace attnkit
