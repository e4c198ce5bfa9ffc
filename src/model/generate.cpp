// Generation over a KV cache and sampling (generate.hpp).
#include "model/generate.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>

#include "attnkit/attention.hpp"
#include "attnkit/decode.hpp"
#include "attnkit/error.hpp"
#include "attnkit/mla.hpp"
#include "model/layers.hpp"

namespace attnkit::model {
namespace {

int64_t parse_count(std::string_view text, std::string_view what) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  check(ec == std::errc() && end == text.data() + text.size() && v >= 0,
        [&] { return fmt::format("{} (\"{}\") must be a non-negative integer", what, printable(text)); });
  return v;
}

// Decode's mask for a layer pattern: {window, sinks} (window 0: every key), or nullopt
// when decode cannot express it.
std::optional<std::pair<int64_t, int64_t>> decode_mask(const Pattern& p) {
  switch (p.kind()) {
    case Pattern::Kind::causal:
      return std::pair<int64_t, int64_t>{0, 0};
    case Pattern::Kind::window:
    case Pattern::Kind::sinks:
      if (p.window_right() != 0) return std::nullopt;
      if (p.window_left() < 0) return std::pair<int64_t, int64_t>{0, 0};
      return std::pair<int64_t, int64_t>{p.window_left() + 1, p.sinks()};
    default:
      return std::nullopt;
  }
}

}  // namespace

KvCacheConfig parse_cache(std::string_view cache, std::string_view kv_dtype) {
  KvCacheConfig c;
  c.storage = parse_kv_storage(kv_dtype);
  const std::string_view kind = cache.substr(0, cache.find(':'));
  const std::string_view args = cache.find(':') == std::string_view::npos ? "" : cache.substr(cache.find(':') + 1);
  if (kind == "contiguous" && args.empty()) {
    c.layout = KvLayout::contiguous;
  } else if (kind == "paged") {
    c.layout = KvLayout::paged;
    if (!args.empty()) c.page_size = parse_count(args, "--cache paged:P");
  } else if (kind == "rolling") {
    c.layout = KvLayout::rolling;
    c.sinks = 4;
    size_t at = 0;
    while (at < args.size()) {
      const size_t end = std::min(args.find(',', at), args.size());
      const std::string_view kv = args.substr(at, end - at);
      at = end + 1;
      if (kv.substr(0, 2) == "w=") c.window = parse_count(kv.substr(2), "--cache rolling:w");
      else if (kv.substr(0, 6) == "sinks=") c.sinks = parse_count(kv.substr(6), "--cache rolling:sinks");
      else throw Error(fmt::format("--cache: unknown rolling option \"{}\" (w=W, sinks=S)", printable(kv)));
    }
    check(c.window >= 1, [] { return std::string("--cache rolling needs w=W with W >= 1"); });
  } else {
    throw Error(fmt::format("--cache (\"{}\") must be contiguous, paged[:P] or rolling:w=W[,sinks=S]", printable(cache)));
  }
  return c;
}

KvCacheConfig layer_cache_config(const ModelConfig& config, const KvCacheConfig& cache, int64_t layer) {
  KvCacheConfig c = cache;
  c.layers = 1, c.kv_heads = config.layers[static_cast<size_t>(layer)].kv_heads, c.head_dim = config.head_dim();
  if (c.layout == KvLayout::rolling) c.max_append = std::min<int64_t>(64, c.window);
  return c;
}

MlaCacheConfig layer_latent_config(const ModelConfig& config, const KvCacheConfig& cache, int64_t layer) {
  const MlaConfig mla = layer_mla_config(config, layer);
  check(cache.layout == KvLayout::contiguous, [&] {
    return fmt::format("--cache: layer {} is MLA, whose latent cache is contiguous only (not paged or rolling)", layer);
  });
  check(cache.storage == KvStorage::f32 || cache.storage == KvStorage::bf16, [&] {
    return fmt::format("--kv-dtype ({}): layer {} is MLA, whose latent cache stores f32 or bf16 rows",
                       kv_storage_name(cache.storage), layer);
  });
  MlaCacheConfig c;
  c.layers = 1, c.sequences = 1, c.d_c = mla.d_c, c.d_r = mla.d_r;
  c.storage = cache.storage, c.max_tokens = cache.max_tokens;
  return c;
}

namespace {

// What the Generator keeps per layer: a token cache for softmax layers, a recurrent state
// (one sequence) for linear-cost ones, a latent cache for MLA ones.
std::vector<LayerMemorySpec> layer_specs(const Model& model, const KvCacheConfig& cache) {
  const ModelConfig& mc = model.config();
  std::vector<LayerMemorySpec> specs;
  for (size_t l = 0; l < mc.layers.size(); ++l) {
    const LayerConfig& lc = mc.layers[l];
    const Method& m = model.method(static_cast<int64_t>(l));
    LayerMemorySpec s;
    if (m.family == MethodFamily::mla) {
      s.latent = layer_latent_config(mc, cache, static_cast<int64_t>(l));
    } else if (m.has_recurrent_state()) {
      s.state = m.linear;
      s.batch = 1, s.q_heads = mc.n_heads, s.kv_heads = lc.kv_heads, s.dk = s.dv = mc.head_dim();
    } else {
      // A rolling cache holds sinks and a window, not every position: only the patterns
      // that decode's mask expresses can read it.
      check(cache.layout != KvLayout::rolling || decode_mask(model.pattern(static_cast<int64_t>(l))), [&] {
        return fmt::format("--cache rolling: layer {}'s pattern (\"{}\") needs every earlier key; use contiguous or paged",
                           l, printable(lc.pattern));
      });
      s.tokens = layer_cache_config(mc, cache, static_cast<int64_t>(l));
    }
    specs.push_back(s);
  }
  return specs;
}

}  // namespace

Generator::Generator(const Model& model, const KvCacheConfig& cache)
    : model_(model), cache_cfg_(cache), memory_(layer_specs(model, cache)) {
  for (int64_t l = 0; l < memory_.layers(); ++l)
    seqs_.push_back(memory_.is_state(l) || memory_.is_latent(l) ? -1 : memory_.cache(l).add_sequence());
}

Generator::~Generator() = default;

const std::vector<float>& Generator::feed(std::span<const int32_t> tokens) {
  const ModelConfig& mc = model_.config();
  for (size_t i = 0; i < tokens.size(); ++i)
    check(tokens[i] >= 0 && tokens[i] < mc.vocab,
          [&] { return fmt::format("token {} ({}) is out of range [0, vocab = {})", i, tokens[i], mc.vocab); });
  check(pos_ + static_cast<int64_t>(tokens.size()) <= mc.context, [&] {
    return fmt::format("{} tokens would pass the model's context ({})", pos_ + static_cast<int64_t>(tokens.size()),
                       mc.context);
  });
  if (!tokens.empty()) forward_chunk(tokens);
  return logits_;
}

// A softmax layer's attention over its token cache: the prompt through the flash kernel
// (the chunk attends to itself), then the chunk's K / V stored; a new token through
// decode_attention(), or attend() over the gathered cache where decode cannot express the
// layer's pattern. q, k, v, att: [T][H][D] rows.
void Generator::token_attention(int64_t l, int64_t t, const std::vector<float>& q, const std::vector<float>& k,
                                const std::vector<float>& v, std::vector<float>& att) {
  const ModelConfig& mc = model_.config();
  const int64_t hd = mc.head_dim(), hq = mc.n_heads, hkv = mc.layers[static_cast<size_t>(l)].kv_heads, kv = hkv * hd;
  KvCache& cache = memory_.cache(l);
  const int64_t seq = seqs_[static_cast<size_t>(l)];
  const Pattern& pattern = model_.pattern(l);
  const auto mask = decode_mask(pattern);
  if (pos_ == 0 && t > 1) {
    // Prefill: the chunk attends to itself with the layer's pattern (the flash kernel).
    AttendOptions opts;
    opts.pattern = pattern;
    attend_into(heads_view(q.data(), 1, t, hq, hd), heads_view(k.data(), 1, t, hkv, hd), heads_view(v.data(), 1, t, hkv, hd), opts,
                heads_mut(att.data(), 1, t, hq, hd), MutTensorView{});
  }
  // Store the chunk's keys and values, in pieces of at most max_append tokens.
  const int64_t step = cache.config().layout == KvLayout::rolling ? cache.config().max_append : t;
  for (int64_t s = 0; s < t; s += step) {
    const int64_t c = std::min(step, t - s);
    cache.append(seq, c);
    cache.store(seq, 0, TensorView(k.data() + s * kv, DType::f32, {hkv, c, hd}, {hd, kv, 1}),
                TensorView(v.data() + s * kv, DType::f32, {hkv, c, hd}, {hd, kv, 1}));
  }
  if (!(pos_ == 0 && t > 1)) {
    check(t == 1, [] { return std::string("after the prompt, tokens are fed one at a time"); });
    if (mask) {
      DecodeOptions opts;
      // The layer's own window; a rolling cache's window bounds what it holds, and a
      // layer without a window sees all of that.
      if (mask->first > 0) opts.window = mask->first, opts.sinks = mask->second;
      const int64_t s0 = seq;
      decode_attention(cache, 0, std::span<const int64_t>(&s0, 1), heads_view(q.data(), 1, 1, hq, hd),
                       heads_mut(att.data(), 1, 1, hq, hd), opts);
    } else {
      const int64_t held = cache.sequence(seq).held;
      std::vector<float> kk(static_cast<size_t>(hkv * held * hd)), vv(kk.size());
      cache.gather(seq, 0, MutTensorView(kk.data(), DType::f32, {hkv, held, hd}),
                   MutTensorView(vv.data(), DType::f32, {hkv, held, hd}));
      AttendOptions opts;
      opts.pattern = pattern;
      attend_into(heads_view(q.data(), 1, 1, hq, hd), TensorView(kk.data(), DType::f32, {1, hkv, held, hd}),
                  TensorView(vv.data(), DType::f32, {1, hkv, held, hd}), opts, heads_mut(att.data(), 1, 1, hq, hd),
                  MutTensorView{});
    }
  }
}

void Generator::forward_chunk(std::span<const int32_t> tokens) {
  const ModelConfig& mc = model_.config();
  const int64_t t = static_cast<int64_t>(tokens.size()), dim = mc.dim, hd = mc.head_dim(), hq = mc.n_heads;
  const int64_t hidden = mc.hidden_dim;
  const float* w = model_.weights.data();
  const float eps = static_cast<float>(mc.norm_eps);
  std::vector<int64_t> pos(static_cast<size_t>(t));
  std::iota(pos.begin(), pos.end(), pos_);
  std::vector<float> x(static_cast<size_t>(t * dim)), n(x.size()), rstd(static_cast<size_t>(t)), q(x.size()), att(x.size());
  std::vector<float> h1(static_cast<size_t>(t * hidden)), h3(h1.size()), g(h1.size());
  embedding_forward(x.data(), tokens.data(), w + model_.wte(), t, dim);
  for (int64_t l = 0; l < mc.n_layers; ++l) {
    const LayerOffsets& o = model_.layer(l);
    const LayerConfig& lc = mc.layers[static_cast<size_t>(l)];
    const int64_t hkv = lc.kv_heads, kv = hkv * hd;
    rmsnorm_forward(n.data(), rstd.data(), x.data(), w + o.rms_att, t, dim, eps);
    if (memory_.is_latent(l)) {
      // Prompt and new tokens alike: n [T, dim] -> att [T, H, head_dim], positions pos_ ..
      // pos_ + T - 1 (the cache's length after the append).
      MlaCache& latent = memory_.latent(l);
      latent.append(0, t);
      mla_decode(model_.mla(l), model_.mla_weights(l), latent, 0, 0, TensorView(n.data(), DType::f32, {t, dim}),
                 MutTensorView(att.data(), DType::f32, {t, hq, hd}));
    } else {
      std::vector<float> k(static_cast<size_t>(t * kv)), v(k.size());
      linear_forward(q.data(), n.data(), w + o.wq, t, dim, dim);
      linear_forward(k.data(), n.data(), w + o.wk, t, dim, kv);
      linear_forward(v.data(), n.data(), w + o.wv, t, dim, kv);
      rope_forward(model_.rope(), q.data(), pos.data(), t, hq);
      rope_forward(model_.rope(), k.data(), pos.data(), t, hkv);
      if (memory_.is_state(l)) {
        // Prompt and new tokens alike: the state takes the chunk and gives its outputs.
        memory_.state(l).step(heads_view(q.data(), 1, t, hq, hd), heads_view(k.data(), 1, t, hkv, hd),
                              heads_view(v.data(), 1, t, hkv, hd), heads_mut(att.data(), 1, t, hq, hd));
      } else {
        token_attention(l, t, q, k, v, att);
      }
    }
    linear_forward(x.data(), att.data(), w + o.wo, t, dim, dim, 1.0f);
    rmsnorm_forward(n.data(), rstd.data(), x.data(), w + o.rms_ffn, t, dim, eps);
    linear_forward(h1.data(), n.data(), w + o.w1, t, dim, hidden);
    linear_forward(h3.data(), n.data(), w + o.w3, t, dim, hidden);
    swiglu_forward(g.data(), h1.data(), h3.data(), t, hidden);
    linear_forward(x.data(), g.data(), w + o.w2, t, hidden, dim, 1.0f);
  }
  // Logits of the last token only.
  const float* last = x.data() + (t - 1) * dim;
  std::vector<float> nl(static_cast<size_t>(dim));
  float r = 0;
  rmsnorm_forward(nl.data(), &r, last, w + model_.rms_final(), 1, dim, eps);
  logits_.assign(static_cast<size_t>(mc.vocab), 0.0f);
  linear_forward(logits_.data(), nl.data(), w + model_.wcls(), 1, dim, mc.vocab);
  pos_ += t;
}

int32_t sample(const std::vector<float>& logits, const SamplingOptions& o, std::mt19937_64& rng) {
  check(std::isfinite(o.temperature) && o.temperature >= 0,
        [&] { return fmt::format("--temperature ({}) must be finite and >= 0", o.temperature); });
  check(o.top_k >= 0, [&] { return fmt::format("--top-k ({}) must be >= 0", o.top_k); });
  check(o.top_p > 0 && o.top_p <= 1, [&] { return fmt::format("--top-p ({}) must be in (0, 1]", o.top_p); });
  check(!logits.empty(), [] { return std::string("no logits to sample from"); });
  if (o.temperature == 0)
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  size_t keep = o.top_k > 0 ? std::min<size_t>(ids.size(), static_cast<size_t>(o.top_k)) : ids.size();
  std::vector<double> p(keep);
  const double m = logits[static_cast<size_t>(ids[0])];
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += p[i] = std::exp((logits[static_cast<size_t>(ids[i])] - m) / o.temperature);
  if (o.top_p < 1) {
    double acc = 0;
    size_t cut = 0;
    while (cut < keep && acc < o.top_p * sum) acc += p[cut++];
    keep = std::max<size_t>(cut, 1);
    sum = acc;
  }
  double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
  for (size_t i = 0; i < keep; ++i) {
    if (u < p[i]) return ids[i];
    u -= p[i];
  }
  return ids[keep - 1];
}

}  // namespace attnkit::model
