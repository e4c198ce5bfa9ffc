// KV-cache byte accounting: validation, the per-format formulas of kv_size.hpp, the
// layout comparison and the published presets. Not for: allocating caches.
#include "attnkit/kv_size.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/shape.hpp"
#include "cache/kv_format.hpp"
#include "core/checked_math.hpp"

namespace attnkit {

using detail::check_range;
using detail::checked_add;
using detail::checked_mul;
using detail::KvFormat;
using detail::kv_format;

std::string_view kv_storage_name(KvStorage s) {
  return static_cast<size_t>(s) < detail::kKvFormatCount ? kv_format(s).name : "?";
}

KvStorage parse_kv_storage(std::string_view name) {
  std::vector<std::string_view> names;
  for (const KvFormat& f : detail::kv_formats()) {
    if (name == f.name) return f.storage;
    names.push_back(f.name);
  }
  throw Error(fmt::format("dtype '{}' is not one of {}", name, fmt::join(names, ", ")));
}

void KvConfig::validate() const {
  check_range(layers, 1, kMaxKvLayers, "layers");
  check_range(q_heads, 1, kMaxKvHeads, "q_heads");
  check_range(kv_heads, 1, q_heads, "kv_heads");
  check(q_heads % kv_heads == 0, [&] {
    return fmt::format("q_heads ({}) must be a multiple of kv_heads ({})", q_heads, kv_heads);
  });
  check_range(head_dim, 1, kMaxHeadDim, "head_dim");
  check_range(v_head_dim, 0, kMaxHeadDim, "v_head_dim");
  check_range(context, 1, kMaxSeqLen, "context");
  check_range(batch, 1, kMaxKvBatch, "batch");
  if (window) check_range(*window, 1, kMaxSeqLen, "window");
  check_range(sinks, 0, kMaxSeqLen, "sinks");
  check(sinks == 0 || window.has_value(), [&] {
    return fmt::format("sinks ({}) need a window: without one the whole context is kept", sinks);
  });
  check_range(mla_latent, 0, kMaxHeadDim, "mla_latent");
  check_range(mla_rope, 0, kMaxHeadDim, "mla_rope");
  check(mla_rope == 0 || mla_latent > 0,
        [&] { return fmt::format("mla_rope ({}) needs mla_latent > 0", mla_rope); });
  check(mla_latent + mla_rope <= kMaxHeadDim, [&] {
    return fmt::format("mla_latent + mla_rope ({} + {}) exceeds the head-dim limit {}", mla_latent, mla_rope,
                       kMaxHeadDim);
  });
  check_range(group, 1, kMaxKvGroup, "group");
  check_range(residual, 0, kMaxSeqLen, "residual");
  const KvFormat& f = kv_format(storage);
  if (f.packed()) {
    // Two 4-bit codes share a byte along the channel axis, so a head vector must pair up.
    auto even = [&](int64_t w, const char* what) {
      check(w % 2 == 0, [&] {
        return fmt::format("{} ({}) must be even for {} storage (two codes per byte)", what, w, f.name);
      });
    };
    // The int4 codecs (kv_quant.hpp) split value rows into groups of G channels, which
    // must also pair up.
    if (f.grouped()) even(group, "group");
    if (is_mla()) {
      even(mla_latent + mla_rope, "mla_latent + mla_rope");
    } else {
      even(head_dim, "head_dim");
      even(effective_v_head_dim(), "v_head_dim");
    }
  }
}

int64_t KvConfig::tokens_held() const {
  // window + sinks <= 2 * kMaxSeqLen: no overflow.
  return window ? std::min(context, *window + sinks) : context;
}

namespace {

// The cached streams of one layer, per token per sequence (kv_size.hpp, "Streams").
struct Streams {
  int64_t hk, wk, hv, wv;
};

Streams streams_of(const KvConfig& c) {
  if (c.is_mla()) return {1, c.mla_latent + c.mla_rope, 0, 0};
  return {c.kv_heads, c.head_dim, c.kv_heads, c.effective_v_head_dim()};
}

constexpr std::string_view kLayerWhat = "KV cache bytes per layer";

// Bytes of one layer, one sequence, with `quantized` tokens in the quantized format and
// `plain` tokens at `plain_bytes` per element (the f16 residual of int4, or every token
// of a float format). The one place the formulas of kv_size.hpp are written down, from
// the format's table (kv_format.hpp).
KvBytes layer_bytes_split(const KvConfig& c, int64_t quantized, int64_t plain, int64_t plain_bytes) {
  const Streams s = streams_of(c);
  const KvFormat& f = kv_format(c.storage);
  auto mul = [](int64_t a, int64_t b, std::string_view factor) { return checked_mul(a, b, kLayerWhat, factor); };
  auto add = [](int64_t a, int64_t b, std::string_view term) { return checked_add(a, b, kLayerWhat, term); };
  // Elements of a stream over n tokens: n * heads * width.
  auto elems = [&](int64_t n, int64_t heads, int64_t width) {
    return mul(mul(n, heads, "kv_heads"), width, "head_dim");
  };
  KvBytes b;
  b.k = mul(elems(plain, s.hk, s.wk), plain_bytes, "dtype size");
  b.v = mul(elems(plain, s.hv, s.wv), plain_bytes, "dtype size");
  if (quantized > 0) {
    // Codes (int4: widths are even, validated, so the half-byte counts are whole).
    b.k = add(b.k, mul(mul(quantized, s.hk, "kv_heads"), f.row_bytes(s.wk), "head_dim"), "K codes");
    b.v = add(b.v, mul(mul(quantized, s.hv, "kv_heads"), f.row_bytes(s.wv), "head_dim"), "V codes");
    // f16 parameters: per token row (int8: one scale per token per head, for K and for V;
    // int4 V: a scale + zero per token per ceil(wv / G) channels), and per group of G
    // tokens (int4 K: a scale + zero per channel).
    const int64_t per_row = add(mul(s.hk, f.row_params(KvStream::key, s.wk, c.group), "kv_heads"),
                                mul(s.hv, f.row_params(KvStream::value, s.wv, c.group), "kv_heads"), "V parameters");
    const int64_t per_group = mul(s.hk, f.key_group_params(s.wk), "kv_heads");
    b.overhead = add(mul(quantized, per_row, "tokens"), mul(quantized / c.group, per_group, "tokens"),
                     "key group parameters");
  }
  add(add(b.k, b.v, "V bytes"), b.overhead, "scale/zero bytes");  // total() must fit too
  return b;
}

// Quantized / plain split of `tokens` held tokens: {Q, F, bytes per plain element}.
struct Split {
  int64_t quantized, plain, plain_bytes;
};

Split split_tokens(const KvConfig& c, int64_t tokens) {
  const KvFormat& f = kv_format(c.storage);
  if (!f.quantized()) return {0, tokens, f.value_bytes()};
  if (!f.residual) return {tokens, 0, 0};
  const int64_t q = std::max<int64_t>(tokens - c.residual, 0) / c.group * c.group;
  return {q, tokens - q, kv_format(detail::kKvResidualStorage).value_bytes()};
}

}  // namespace

KvBytes kv_layer_bytes(const KvConfig& cfg, int64_t tokens) {
  cfg.validate();
  check_range(tokens, 0, kMaxSeqLen, "tokens");
  const Split s = split_tokens(cfg, tokens);
  return layer_bytes_split(cfg, s.quantized, s.plain, s.plain_bytes);
}

double kv_bytes_per_token_per_layer(const KvConfig& cfg) {
  cfg.validate();
  if (kv_format(cfg.storage).grouped())  // parameters shared by G tokens: the bytes of a group, per token
    return static_cast<double>(layer_bytes_split(cfg, cfg.group, 0, 0).total()) / static_cast<double>(cfg.group);
  const Split s = split_tokens(cfg, 1);
  return static_cast<double>(layer_bytes_split(cfg, s.quantized, s.plain, s.plain_bytes).total());
}

KvSize kv_size(const KvConfig& cfg) {
  cfg.validate();
  KvSize out;
  out.tokens_held = cfg.tokens_held();
  const Split s = split_tokens(cfg, out.tokens_held);
  out.quantized_tokens = s.quantized;
  out.residual_tokens = kv_format(cfg.storage).residual ? s.plain : 0;
  out.per_layer = layer_bytes_split(cfg, s.quantized, s.plain, s.plain_bytes);
  // Check the total once; each part is no larger, so scaling the parts cannot overflow.
  constexpr std::string_view what = "KV cache total bytes";
  checked_mul(checked_mul(out.per_layer.total(), cfg.layers, what, fmt::format("layers ({})", cfg.layers)),
              cfg.batch, what, fmt::format("batch ({})", cfg.batch));
  const int64_t n = cfg.layers * cfg.batch;
  out.all = {out.per_layer.k * n, out.per_layer.v * n, out.per_layer.overhead * n};
  out.bytes_per_token_per_layer = kv_bytes_per_token_per_layer(cfg);
  return out;
}

std::vector<KvCompareRow> kv_compare(const KvConfig& cfg) {
  cfg.validate();
  // Rows share everything but the layout: no window, no MLA unless the row adds it.
  KvConfig base = cfg;
  base.window.reset();
  base.sinks = 0;
  base.mla_latent = base.mla_rope = 0;

  std::vector<KvCompareRow> rows;
  auto add_row = [&](std::string label, const KvConfig& c) {
    KvCompareRow r;
    r.label = std::move(label);
    r.config = c;
    r.size = kv_size(c);
    r.bytes_per_token = r.size.bytes_per_token_per_layer * static_cast<double>(c.layers);
    const bool same_layout = c.is_mla() ? (cfg.mla_latent == c.mla_latent && cfg.mla_rope == c.mla_rope)
                                        : (!cfg.is_mla() && cfg.kv_heads == c.kv_heads);
    r.matches_input = same_layout && cfg.window == c.window && cfg.sinks == c.sinks;
    rows.push_back(std::move(r));
  };
  auto with_kv_heads = [&](int64_t kv) {
    KvConfig c = base;
    c.kv_heads = kv;
    return c;
  };

  add_row("MHA", with_kv_heads(cfg.q_heads));
  std::vector<int64_t> gqa;
  for (int64_t kv : {cfg.kv_heads, int64_t{8}, int64_t{4}})
    if (kv > 1 && kv < cfg.q_heads && cfg.q_heads % kv == 0 && std::find(gqa.begin(), gqa.end(), kv) == gqa.end())
      gqa.push_back(kv);
  std::sort(gqa.rbegin(), gqa.rend());
  for (int64_t kv : gqa) add_row(fmt::format("GQA kv={} (g={})", kv, cfg.q_heads / kv), with_kv_heads(kv));
  add_row("MQA", with_kv_heads(1));

  KvConfig mla = base;
  mla.mla_latent = cfg.is_mla() ? cfg.mla_latent : 512;  // DeepSeek-V2's kv_lora_rank
  mla.mla_rope = cfg.is_mla() ? cfg.mla_rope : 64;       // and qk_rope_head_dim
  add_row(fmt::format("MLA {}+{}", mla.mla_latent, mla.mla_rope), mla);

  KvConfig swa = base;
  swa.window = cfg.window.value_or(4096);  // Mistral-7B's window
  swa.sinks = cfg.sinks;
  add_row(fmt::format("SWA W={} kv={}{}", *swa.window, swa.kv_heads,
                      swa.sinks ? fmt::format(" +{} sinks", swa.sinks) : std::string()),
          swa);

  const double mha = static_cast<double>(rows.front().size.all.total());
  for (auto& r : rows) r.ratio_vs_mha = static_cast<double>(r.size.all.total()) / mha;
  return rows;
}

namespace {

KvConfig make(std::string name, int64_t layers, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
              int64_t context, KvStorage storage) {
  KvConfig c;
  c.name = std::move(name);
  c.layers = layers;
  c.q_heads = q_heads;
  c.kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.context = context;
  c.storage = storage;
  return c;
}

std::vector<KvPreset> build_presets() {
  using enum KvStorage;
  std::vector<KvPreset> p;
  // Storage is each config.json's torch_dtype; head_dim = hidden_size / num_attention_heads.
  p.push_back({make("llama2-7b", 32, 32, 32, 128, 4096, f16),
               "meta-llama/Llama-2-7b-hf config.json (Touvron et al. 2023)"});
  p.push_back({make("llama2-13b", 40, 40, 40, 128, 4096, f16),
               "meta-llama/Llama-2-13b-hf config.json (hidden 5120)"});
  p.push_back({make("llama2-70b", 80, 64, 8, 128, 4096, f16),
               "meta-llama/Llama-2-70b-hf config.json (hidden 8192, GQA)"});
  // config.json's max_position_embeddings is 32768; the paper trained at 8192 tokens.
  KvConfig mistral = make("mistral-7b", 32, 32, 8, 128, 32768, bf16);
  mistral.window = 4096;
  p.push_back({mistral, "mistralai/Mistral-7B-v0.1 config.json (sliding_window 4096; Jiang et al. 2023)"});
  p.push_back({make("llama3-8b", 32, 32, 8, 128, 8192, bf16), "meta-llama/Meta-Llama-3-8B config.json"});
  p.push_back({make("llama3-70b", 80, 64, 8, 128, 8192, bf16), "meta-llama/Meta-Llama-3-70B config.json"});
  // Same shape as llama3-8b with RoPE scaling to 128K positions: the long-context case.
  p.push_back({make("llama3.1-8b", 32, 32, 8, 128, 131072, bf16), "meta-llama/Llama-3.1-8B config.json"});
  // The MHA form has 128 heads of d_qk = 128 nope + 64 rope and d_v = 128, which the
  // comparison rows use; the MLA cache holds kv_lora_rank + qk_rope_head_dim per token.
  // config.json's max_position_embeddings is 163840; the paper states a 128K context.
  KvConfig dsv2 = make("deepseek-v2", 60, 128, 128, 192, 131072, bf16);
  dsv2.v_head_dim = 128;
  dsv2.mla_latent = 512;
  dsv2.mla_rope = 64;
  p.push_back({dsv2, "deepseek-ai/DeepSeek-V2 config.json (kv_lora_rank 512, qk_rope_head_dim 64; arXiv:2405.04434)"});
  // hidden_size 4544 / 71 heads = 64; multi_query: one KV head; 2048 tokens per the model card.
  p.push_back({make("falcon-7b", 32, 71, 1, 64, 2048, bf16), "tiiuae/falcon-7b config.json (multi_query)"});
  return p;
}

}  // namespace

std::span<const KvPreset> kv_presets() {
  static const std::vector<KvPreset> presets = build_presets();
  return presets;
}

KvConfig kv_preset(std::string_view name) {
  std::vector<std::string_view> names;
  for (const KvPreset& p : kv_presets()) {
    if (p.config.name == name) return p.config;
    names.push_back(p.config.name);
  }
  throw Error(fmt::format("unknown preset '{}'; available: {}", name, fmt::join(names, ", ")));
}

std::string format_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (std::abs(bytes) >= 1024 && u + 1 < static_cast<int>(std::size(kUnits))) {
    bytes /= 1024;
    ++u;
  }
  if (u == 0 && bytes == std::floor(bytes)) return fmt::format("{} B", static_cast<int64_t>(bytes));
  return fmt::format("{:.2f} {}", bytes, kUnits[u]);
}

}  // namespace attnkit
