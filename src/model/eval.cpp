// Perplexity, KL divergence, streams and pass-key retrieval of a trained model (eval.hpp).
#include "model/eval.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <span>

#include "attnkit/error.hpp"
#include "attnkit/kv_size.hpp"
#include "attnkit/layer_memory.hpp"
#include "model/corpus.hpp"
#include "model/generate.hpp"

namespace attnkit::model {
namespace {

using clock = std::chrono::steady_clock;
double since(clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); }

void check_ids(const std::vector<int32_t>& tokens, int64_t vocab, const char* what) {
  for (size_t i = 0; i < tokens.size(); ++i)
    check(tokens[i] >= 0 && tokens[i] < vocab,
          [&] { return fmt::format("{}[{}] ({}) is outside the vocabulary [0, {})", what, i, tokens[i], vocab); });
}

// log-softmax of logits [vocab] in double, written as float; returns -logprob[target].
double score(const std::vector<float>& logits, int32_t target, float* logprobs, int32_t* top) {
  const auto best = std::max_element(logits.begin(), logits.end());
  *top = static_cast<int32_t>(best - logits.begin());
  const double m = *best;
  double sum = 0;
  for (const float l : logits) sum += std::exp(static_cast<double>(l) - m);
  const double lse = m + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) logprobs[i] = static_cast<float>(static_cast<double>(logits[i]) - lse);
  return lse - static_cast<double>(logits[static_cast<size_t>(target)]);
}

// A stateless 64-bit mix (SplitMix64's finaliser), for sample seeds derived from a base seed.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

KvConfig layer_kv_config(const ModelConfig& mc, const KvCacheConfig& cache, int64_t layer, int64_t tokens) {
  const KvCacheConfig c = layer_cache_config(mc, cache, layer);
  KvConfig k;
  k.layers = 1, k.q_heads = mc.n_heads, k.kv_heads = c.kv_heads, k.head_dim = c.head_dim;
  k.storage = c.storage, k.group = c.group, k.residual = c.residual;
  k.context = c.layout == KvLayout::paged ? (tokens + c.page_size - 1) / c.page_size * c.page_size : tokens;
  // A rolling cache owns sinks + its ring of window + max_append - 1 slots (kv_cache.hpp).
  if (c.layout == KvLayout::rolling) k.window = c.ring_slots(), k.sinks = c.sinks;
  return k;
}

}  // namespace

WindowScores score_windows(const Model& model, const std::vector<int32_t>& tokens, int64_t context,
                           int64_t max_windows, const KvCacheConfig& cache) {
  const ModelConfig& mc = model.config();
  check(context >= 2 && context % 2 == 0 && context <= mc.context, [&] {
    return fmt::format("context ({}) must be even and in [2, the model's context = {}]", context, mc.context);
  });
  check(max_windows >= 0, [&] { return fmt::format("windows ({}) must be >= 0", max_windows); });
  check_ids(tokens, mc.vocab, "tokens");
  const int64_t available = static_cast<int64_t>(tokens.size()) / context;
  check(available >= 1, [&] {
    return fmt::format("the text holds {} tokens, fewer than one window of context = {}", tokens.size(), context);
  });
  WindowScores s;
  s.context = context;
  s.windows = max_windows > 0 ? std::min(max_windows, available) : available;
  const int64_t half = context / 2, scored = context - half;
  s.nll.reserve(static_cast<size_t>(s.windows * scored));
  s.logprobs.resize(static_cast<size_t>(s.windows * scored * mc.vocab));
  s.top.resize(static_cast<size_t>(s.windows * scored));
  KvCacheConfig cfg = cache;
  // Allocated once at the window's size, as llama.cpp sizes its cache to n_ctx.
  if (cfg.layout == KvLayout::contiguous && cfg.max_tokens == 0) cfg.max_tokens = context;
  for (int64_t w = 0; w < s.windows; ++w) {
    const int32_t* x = tokens.data() + (w * available / s.windows) * context;
    Generator gen(model, cfg);
    auto t0 = clock::now();
    const std::vector<float>* logits = &gen.feed(std::span<const int32_t>(x, static_cast<size_t>(half)));
    s.prefill_seconds += since(t0);
    s.prefill_tokens += half;
    for (int64_t j = half; j < context; ++j) {
      const size_t at = static_cast<size_t>(w * scored + (j - half));
      s.nll.push_back(score(*logits, x[j], s.logprobs.data() + at * static_cast<size_t>(mc.vocab), &s.top[at]));
      // The window's last token is fed too, so the cache ends holding `context` tokens.
      t0 = clock::now();
      logits = &gen.feed(std::span<const int32_t>(x + j, 1));
      s.decode_seconds += since(t0);
      ++s.decode_tokens;
    }
    s.kv_bytes_allocated = gen.kv_bytes();
  }
  return s;
}

Perplexity perplexity(const std::vector<double>& nll) {
  Perplexity p;
  p.tokens = static_cast<int64_t>(nll.size());
  if (nll.empty()) return p;
  double sum = 0, sq = 0;
  for (const double v : nll) sum += v;
  p.mean_nll = sum / static_cast<double>(nll.size());
  for (const double v : nll) sq += (v - p.mean_nll) * (v - p.mean_nll);
  const double n = static_cast<double>(nll.size());
  p.stderr_nll = nll.size() > 1 ? std::sqrt(sq / (n - 1) / n) : 0.0;
  p.ppl = std::exp(p.mean_nll);
  p.ppl_err = p.ppl * p.stderr_nll;
  p.bits_per_byte = p.mean_nll / std::log(2.0);
  p.bpb_err = p.stderr_nll / std::log(2.0);
  return p;
}

Divergence divergence(const WindowScores& ref, const WindowScores& other) {
  check(ref.nll.size() == other.nll.size() && ref.logprobs.size() == other.logprobs.size() && !ref.nll.empty() &&
            ref.context == other.context && ref.windows == other.windows,
        [] { return std::string("KL divergence needs two scorings of the same windows"); });
  const size_t n = ref.nll.size(), vocab = ref.logprobs.size() / n;
  std::vector<double> kl(n);
  Divergence d;
  int64_t same = 0;
  for (size_t i = 0; i < n; ++i) {
    const float* p = ref.logprobs.data() + i * vocab;
    const float* q = other.logprobs.data() + i * vocab;
    double k = 0;
    for (size_t v = 0; v < vocab; ++v) k += std::exp(static_cast<double>(p[v])) * (static_cast<double>(p[v]) - q[v]);
    kl[i] = std::max(k, 0.0);  // rounding can leave a tiny negative sum
    same += ref.top[i] == other.top[i];
  }
  const Perplexity stats = perplexity(kl);  // mean and its standard error
  d.kl_mean = stats.mean_nll, d.kl_stderr = stats.stderr_nll;
  d.same_top = static_cast<double>(same) / static_cast<double>(n);
  std::sort(kl.begin(), kl.end());
  d.kl_p99 = kl[static_cast<size_t>(std::ceil(0.99 * static_cast<double>(n))) - 1];
  d.kl_max = kl.back();
  return d;
}

std::vector<double> stream_nll(const Model& model, const std::vector<int32_t>& tokens, int64_t start, int64_t length,
                               const KvCacheConfig& cache) {
  const ModelConfig& mc = model.config();
  check(length >= 2 && length <= mc.context,
        [&] { return fmt::format("stream length ({}) must be in [2, the model's context = {}]", length, mc.context); });
  check(start >= 0 && start + length <= static_cast<int64_t>(tokens.size()), [&] {
    return fmt::format("stream [{}, {}) lies outside the text ({} tokens)", start, start + length, tokens.size());
  });
  Generator gen(model, cache);
  std::vector<double> nll;
  std::vector<float> lp(static_cast<size_t>(mc.vocab));
  int32_t top = 0;
  const std::vector<float>* logits = &gen.feed(std::span<const int32_t>(tokens.data() + start, 1));
  for (int64_t i = 1; i < length; ++i) {
    const int32_t next = tokens[static_cast<size_t>(start + i)];
    check(next >= 0 && next < mc.vocab, [&] { return fmt::format("tokens[{}] ({}) is outside the vocabulary", start + i, next); });
    nll.push_back(score(*logits, next, lp.data(), &top));
    if (i + 1 < length) logits = &gen.feed(std::span<const int32_t>(&next, 1));
  }
  return nll;
}

int64_t passkey_digits(const PasskeySample& p, const float* rows, int64_t vocab) {
  int64_t hit = 0;
  for (int64_t k = 0; k < static_cast<int64_t>(p.key.size()); ++k) {
    const float* row = rows + (p.answer_offset + k - 1) * vocab;  // predicts text[answer_offset + k]
    hit += std::max_element(row, row + vocab) - row == static_cast<uint8_t>(p.key[static_cast<size_t>(k)]);
  }
  return hit;
}

std::vector<PasskeyCell> passkey_grid(const Model& model, const PasskeyTask& task, const std::vector<int64_t>& lengths,
                                      const std::vector<double>& depths, int64_t samples, uint64_t seed) {
  const ModelConfig& mc = model.config();
  check(mc.vocab == kByteVocab,
        [&] { return fmt::format("pass-key samples are bytes: the vocabulary must be {} (it is {})", kByteVocab, mc.vocab); });
  check(samples >= 1, [&] { return fmt::format("pass-key samples ({}) must be >= 1", samples); });
  std::vector<PasskeyCell> cells;
  std::vector<int32_t> tokens, targets;
  Activations acts;
  for (size_t li = 0; li < lengths.size(); ++li) {
    const int64_t len = lengths[li];
    check(len >= PasskeyTask::min_length() && len - 1 <= mc.context, [&] {
      return fmt::format("pass-key length {} must be in [{}, context + 1 = {}]", len, PasskeyTask::min_length(),
                         mc.context + 1);
    });
    for (size_t di = 0; di < depths.size(); ++di) {
      PasskeyCell cell;
      cell.length = len, cell.depth = depths[di], cell.samples = samples;
      std::vector<PasskeySample> batch;
      tokens.resize(static_cast<size_t>(samples * (len - 1)));
      targets.resize(tokens.size());
      for (int64_t b = 0; b < samples; ++b) {
        batch.push_back(task.make(mix(seed ^ mix(li * 1000003u + di) ^ mix(static_cast<uint64_t>(b) + 0x7a3)), len, depths[di]));
        const std::string& text = batch.back().text;
        for (int64_t t = 0; t + 1 < len; ++t) {
          tokens[static_cast<size_t>(b * (len - 1) + t)] = static_cast<uint8_t>(text[static_cast<size_t>(t)]);
          targets[static_cast<size_t>(b * (len - 1) + t)] = static_cast<uint8_t>(text[static_cast<size_t>(t) + 1]);
        }
      }
      training_forward(model, tokens.data(), targets.data(), samples, len - 1, acts);
      int64_t digits = 0;
      double distance = 0;
      for (int64_t b = 0; b < samples; ++b) {
        const PasskeySample& p = batch[static_cast<size_t>(b)];
        const int64_t hit = passkey_digits(p, acts.probs.data() + b * (len - 1) * mc.vocab, mc.vocab);
        digits += hit;
        cell.correct += hit == static_cast<int64_t>(p.key.size());
        cell.digits.push_back(hit);
        cell.distances.push_back(p.answer_offset - static_cast<int64_t>(p.text.rfind(p.key, p.answer_offset - 1)));
        distance += static_cast<double>(cell.distances.back());
      }
      cell.digit_accuracy = static_cast<double>(digits) / static_cast<double>(samples * 5);
      cell.mean_distance = distance / static_cast<double>(samples);
      cells.push_back(cell);
    }
  }
  return cells;
}

Model with_context(const Model& model, int64_t context) {
  ModelConfig c = model.config();
  c.context = context;
  Model m(c);
  check(m.weights.size() == model.weights.size(), [] { return std::string("with_context: the layout changed"); });
  m.weights = model.weights;
  return m;
}

namespace {

Method layer_method(const ModelConfig& config, int64_t l) {
  return parse_layer_method(config.layers[static_cast<size_t>(l)].method, "method");
}

}  // namespace

int64_t kv_bytes_formula(const ModelConfig& config, const KvCacheConfig& cache, int64_t tokens) {
  int64_t total = 0;
  for (int64_t l = 0; l < config.n_layers; ++l) {
    const Method m = layer_method(config, l);
    if (m.family == MethodFamily::mla)
      total += latent_cache_bytes(layer_latent_config(config, cache, l), tokens);
    else if (m.has_recurrent_state())
      total += recurrent_state_bytes(m.linear, 1, config.n_heads, config.layers[static_cast<size_t>(l)].kv_heads,
                                     config.head_dim(), config.head_dim());
    else
      total += kv_size(layer_kv_config(config, cache, l, tokens)).all.total();
  }
  return total;
}

double kv_bytes_per_token(const ModelConfig& config, const KvCacheConfig& cache) {
  double total = 0;
  for (int64_t l = 0; l < config.n_layers; ++l) {
    const Method m = layer_method(config, l);
    if (m.has_recurrent_state()) continue;  // a recurrent state does not grow with the tokens
    KvConfig k = m.family == MethodFamily::mla ? mla_cache_kv_config(layer_latent_config(config, cache, l), 1)
                                                : layer_kv_config(config, cache, l, 1);
    k.window.reset(), k.sinks = 0;
    total += kv_bytes_per_token_per_layer(k);
  }
  return total;
}

}  // namespace attnkit::model
