// The MLA latent cache (mla.hpp): per sequence one block of [layer][capacity][d_c + d_r]
// latent rows in f32 or bf16, its two-step append, the K / V views the absorbed form reads
// (V a view of K's first d_c values), and its accounting against kv_size. Not for: the
// attention over it (src/kernels/mla_decode.cpp) nor the general KvCache (kv_cache.cpp).
#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "attnkit/mla.hpp"
#include "core/view_checks.hpp"

namespace attnkit {

namespace {
DType storage_dtype(KvStorage s) { return s == KvStorage::f32 ? DType::f32 : DType::bf16; }
}  // namespace

void MlaCacheConfig::validate() const {
  check_in_range(layers, 1, kMaxKvLayers, "layers");
  check_in_range(sequences, 1, kMaxKvBatch, "sequences");
  check_in_range(d_c, 1, kMaxHeadDim, "d_c");
  check_in_range(d_r, 0, kMaxHeadDim, "d_r");
  check(d_c + d_r <= kMaxHeadDim, [&] {
    return fmt::format("d_c + d_r ({} + {}) exceeds the head-dim limit {}", d_c, d_r, kMaxHeadDim);
  });
  check(storage == KvStorage::f32 || storage == KvStorage::bf16, [&] {
    return fmt::format("storage ({}) must be f32 or bf16 for an MLA latent cache (its rows are read whole)",
                       kv_storage_name(storage));
  });
  check_in_range(max_tokens, 0, kMaxSeqLen, "max_tokens");
  // One sequence's block must be addressable: layers * capacity * width * 4 bytes.
  const int64_t most = max_tokens > 0 ? max_tokens : kMaxSeqLen;
  check(static_cast<double>(layers) * static_cast<double>(most) * static_cast<double>(width()) * 4 < 0x1p62, [&] {
    return fmt::format("layers * max_tokens * (d_c + d_r) ({} * {} * {}) is too large to address", layers, most,
                       width());
  });
}

MlaCache::MlaCache(const MlaCacheConfig& config) : config_(config) {
  config_.validate();
  seqs_.resize(static_cast<size_t>(config_.sequences));
  const size_t elem = dtype_size(storage_dtype(config_.storage));
  for (Sequence& s : seqs_) {
    s.stored.assign(static_cast<size_t>(config_.layers), 0);
    s.capacity = config_.max_tokens;
    s.bytes.resize(static_cast<size_t>(config_.layers * s.capacity * config_.width()) * elem);
  }
}

void MlaCache::check_seq(int64_t seq) const {
  check(seq >= 0 && seq < config_.sequences,
        [&] { return fmt::format("seq ({}) must be in [0, {}) (the cache's sequences)", seq, config_.sequences); });
}

void MlaCache::check_layer(int64_t layer) const {
  check(layer >= 0 && layer < config_.layers,
        [&] { return fmt::format("layer ({}) must be in [0, {})", layer, config_.layers); });
}

int64_t MlaCache::length(int64_t seq) const {
  check_seq(seq);
  return seqs_[static_cast<size_t>(seq)].length;
}
int64_t MlaCache::capacity(int64_t seq) const {
  check_seq(seq);
  return seqs_[static_cast<size_t>(seq)].capacity;
}

size_t MlaCache::layer_offset(const Sequence& s, int64_t layer) const {
  return static_cast<size_t>(layer * s.capacity * config_.width()) * dtype_size(storage_dtype(config_.storage));
}

void MlaCache::append(int64_t seq, int64_t tokens) {
  check_seq(seq);
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  check(tokens >= 0, [&] { return fmt::format("append: tokens ({}) must be >= 0", tokens); });
  for (int64_t l = 0; l < config_.layers; ++l)
    check(s.stored[static_cast<size_t>(l)] == s.length, [&] {
      return fmt::format("append: layer {} of sequence {} holds {} of its {} tokens; store() every layer first", l,
                         seq, s.stored[static_cast<size_t>(l)], s.length);
    });
  const int64_t need = s.length + tokens;
  check(need <= kMaxSeqLen, [&] { return fmt::format("append: sequence {} would hold {} tokens, past 2^31", seq, need); });
  if (config_.max_tokens > 0) {
    check(need <= config_.max_tokens, [&] {
      return fmt::format("append: sequence {} would hold {} tokens, past max_tokens ({})", seq, need,
                         config_.max_tokens);
    });
  } else if (need > s.capacity) {  // grow by doubling, copying every layer's rows
    int64_t cap = std::max(s.capacity, kKvInitialTokens);
    while (cap < need) cap *= 2;
    const size_t elem = dtype_size(storage_dtype(config_.storage));
    const size_t row = static_cast<size_t>(config_.width()) * elem;
    std::vector<unsigned char> grown(static_cast<size_t>(config_.layers * cap) * row);
    for (int64_t l = 0; l < config_.layers; ++l)
      if (s.length > 0)
        std::memcpy(grown.data() + static_cast<size_t>(l * cap) * row,
                    s.bytes.data() + static_cast<size_t>(l * s.capacity) * row, static_cast<size_t>(s.length) * row);
    s.bytes = std::move(grown);
    s.capacity = cap;
  }
  s.length = need;
}

void MlaCache::store(int64_t seq, int64_t layer, const TensorView& rows) {
  check_seq(seq);
  check_layer(layer);
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  const int64_t done = s.stored[static_cast<size_t>(layer)], pending = s.length - done, w = config_.width();
  check(rows.rank() == 2 && rows.size(0) == pending && rows.size(1) == w, [&] {
    return fmt::format("rows must have shape [T, d_c + d_r] = [{}, {}] (the tokens appended to sequence {} and not "
                       "yet stored in layer {}), got {}",
                       pending, w, seq, layer, rows.rank() == 0 ? std::string("no tensor") : rows.shape_string());
  });
  unsigned char* base = s.bytes.data() + layer_offset(s, layer);
  for (int64_t t = 0; t < pending; ++t)
    for (int64_t c = 0; c < w; ++c) {
      const float v = static_cast<float>(rows.get(t, c));
      const int64_t at = (done + t) * w + c;
      if (config_.storage == KvStorage::f32)
        std::memcpy(base + at * 4, &v, 4);
      else {
        const uint16_t b = float_to_bf16(v);
        std::memcpy(base + at * 2, &b, 2);
      }
    }
  s.stored[static_cast<size_t>(layer)] = s.length;
}

TensorView MlaCache::keys(int64_t seq, int64_t layer) const {
  check_seq(seq);
  check_layer(layer);
  const Sequence& s = seqs_[static_cast<size_t>(seq)];
  check(s.stored[static_cast<size_t>(layer)] == s.length, [&] {
    return fmt::format("layer {} of sequence {} holds {} of its {} tokens; store() them before reading", layer, seq,
                       s.stored[static_cast<size_t>(layer)], s.length);
  });
  const int64_t n = s.length, w = config_.width();
  return TensorView(s.bytes.data() + layer_offset(s, layer), storage_dtype(config_.storage), {1, 1, n, w}, {n * w, n * w, w, 1});
}

TensorView MlaCache::values(int64_t seq, int64_t layer) const {
  const TensorView k = keys(seq, layer);
  const int64_t n = k.size(2), w = config_.width();
  return TensorView(k.data(), k.dtype(), {1, 1, n, config_.d_c}, {n * w, n * w, w, 1});
}

int64_t MlaCache::bytes_allocated() const {
  int64_t total = 0;
  for (const Sequence& s : seqs_) total += static_cast<int64_t>(s.bytes.size());
  return total;
}

KvConfig MlaCache::kv_config(int64_t context) const { return mla_cache_kv_config(config_, context); }

KvConfig mla_cache_kv_config(const MlaCacheConfig& config, int64_t context) {
  config.validate();
  KvConfig c;
  c.name = "mla-cache";
  c.layers = config.layers;
  c.q_heads = c.kv_heads = 1;
  c.head_dim = config.width();
  c.context = context;
  c.batch = config.sequences;
  c.storage = config.storage;
  c.mla_latent = config.d_c;
  c.mla_rope = config.d_r;
  c.validate();
  return c;
}

}  // namespace attnkit
