// Per-layer decoding memory: token caches beside recurrent states and MLA latent caches
// (layer_memory.hpp).
#include "attnkit/layer_memory.hpp"

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/kv_size.hpp"

namespace attnkit {

// From linear.hpp's definition of the state: S [B][state heads][F][Dv + 1] in f32 (the last
// column is the normaliser's z; retention has none), state heads Hkv (linear, Performer) or
// Hq (retention: per-head decays), F = Dk (linear, retention) or m (Performer), and the
// Performer's running key log-scale, one f32 per feature of each state head.
int64_t recurrent_state_bytes(const LinearMethod& m, int64_t batch, int64_t q_heads, int64_t kv_heads, int64_t dk,
                              int64_t dv) {
  const bool retention = m.kind == LinearKind::retention, performer = m.kind == LinearKind::performer;
  const int64_t heads = retention ? q_heads : kv_heads, features = performer ? m.features : dk;
  const int64_t width = dv + (retention ? 0 : 1);
  return static_cast<int64_t>(sizeof(float)) * batch * heads * features * (width + (performer ? 1 : 0));
}

int64_t latent_cache_bytes(const MlaCacheConfig& config, int64_t capacity) {
  return kv_total_bytes(mla_cache_kv_config(config, capacity));
}

LayerMemory::LayerMemory(const std::vector<LayerMemorySpec>& layers) {
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerMemorySpec& s = layers[l];
    check(int{s.tokens.has_value()} + int{s.state.has_value()} + int{s.latent.has_value()} == 1, [&] {
      return fmt::format("layers[{}]: give a token cache, a recurrent state or a latent cache, exactly one", l);
    });
    caches_.push_back(s.tokens ? std::make_unique<KvCache>(*s.tokens) : nullptr);
    states_.push_back(s.state ? std::make_unique<LinearState>(*s.state, s.batch, s.q_heads, s.kv_heads, s.dk, s.dv)
                              : nullptr);
    latents_.push_back(s.latent ? std::make_unique<MlaCache>(*s.latent) : nullptr);
  }
}

LayerMemory::~LayerMemory() = default;

KvCache& LayerMemory::cache(int64_t l) {
  check(l >= 0 && l < layers() && caches_[static_cast<size_t>(l)],
        [&] { return fmt::format("layer {} has no token cache (of {} layers)", l, layers()); });
  return *caches_[static_cast<size_t>(l)];
}

LinearState& LayerMemory::state(int64_t l) {
  check(l >= 0 && l < layers() && states_[static_cast<size_t>(l)],
        [&] { return fmt::format("layer {} has no recurrent state (of {} layers)", l, layers()); });
  return *states_[static_cast<size_t>(l)];
}

MlaCache& LayerMemory::latent(int64_t l) {
  check(l >= 0 && l < layers() && latents_[static_cast<size_t>(l)],
        [&] { return fmt::format("layer {} has no latent cache (of {} layers)", l, layers()); });
  return *latents_[static_cast<size_t>(l)];
}

int64_t LayerMemory::layer_bytes(int64_t l) const {
  const size_t i = static_cast<size_t>(l);
  if (states_[i]) return states_[i]->bytes();
  return latents_[i] ? latents_[i]->bytes_allocated() : caches_[i]->bytes_allocated();
}

int64_t LayerMemory::bytes_allocated() const {
  int64_t n = 0;
  for (int64_t l = 0; l < layers(); ++l) n += layer_bytes(l);
  return n;
}

}  // namespace attnkit
