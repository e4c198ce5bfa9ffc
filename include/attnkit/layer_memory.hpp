// attnkit/layer_memory.hpp — the decoding memory of a model whose layers differ in kind:
// per layer either a token cache (KvCache: softmax attention in any layout and storage
// format) or a recurrent state (LinearState: linear attention, Performer, retention) whose
// size does not grow with the tokens appended. Every layer's bytes are accounted, so a
// model that mixes kinds reports its memory exactly.
// Not for: the caches or states themselves (kv_cache.hpp, linear.hpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "attnkit/kv_cache.hpp"
#include "attnkit/linear.hpp"

namespace attnkit {

// One layer's memory: `tokens` for a token cache, or `state` (a causal linear method) with
// the layer's heads and widths for a recurrent state of `batch` sequences.
struct LayerMemorySpec {
  std::optional<KvCacheConfig> tokens;
  std::optional<LinearMethod> state;
  int64_t batch = 1, q_heads = 0, kv_heads = 0, dk = 0, dv = 0;  // state layers
};

// Bytes a recurrent state of these shapes holds: the formula LinearState::bytes() meets.
int64_t recurrent_state_bytes(const LinearMethod& m, int64_t batch, int64_t q_heads, int64_t kv_heads, int64_t dk,
                              int64_t dv);

class LayerMemory {
 public:
  // Throws Error naming "layers[l]" when a spec gives both kinds or neither.
  explicit LayerMemory(const std::vector<LayerMemorySpec>& layers);
  ~LayerMemory();
  int64_t layers() const { return static_cast<int64_t>(caches_.size()); }
  bool is_state(int64_t l) const { return states_[static_cast<size_t>(l)] != nullptr; }
  KvCache& cache(int64_t l);       // a token layer's cache; Error for a state layer
  LinearState& state(int64_t l);   // a state layer's state; Error for a token layer
  int64_t layer_bytes(int64_t l) const;  // KvCache::bytes_allocated() or LinearState::bytes()
  int64_t bytes_allocated() const;       // summed over layers

 private:
  std::vector<std::unique_ptr<KvCache>> caches_;     // [layer]: null for state layers
  std::vector<std::unique_ptr<LinearState>> states_;  // [layer]: null for token layers
};

}  // namespace attnkit
