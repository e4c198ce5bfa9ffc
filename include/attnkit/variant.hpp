// attnkit/variant.hpp — the score modifiers of softmax attention, one type for every kernel.
//
// Every exact kernel (attend()'s flash and reference kernels, decode_attention() and its
// reference, and the backward to come) computes, for a query row of head h at position p
// and a key at position j,
//     s = mods(scale * q . k),   mods = ALiBi after softcap:
//     softcap  c > 0:   s = c * tanh(s / c)                (Gemma 2, Grok)
//     ALiBi    slopes:  s = s - slope[h] * |p - j|         (Press et al.)
// then the softmax over the keys the pattern allows. Each modifier defaults to the
// identity, and the order is FlashAttention 2's. A learned sink logit z[h] (gpt-oss) adds
// one virtual key of score z[h] and value 0 to every row of head h: the softmax's sum gains
// e^z[h], so O shrinks by the probability the row gives the sink and LSE = log(sum_j e^s_j
// + e^z[h]); a row that sees no key then has O = 0 and LSE = z[h]. Positions: p is the query's bottom-right
// aligned position (q + kv_len - q_len), j the key's index; in decode both are the cache's
// logical indices (the index of the key in what KvCache::gather returns).
//
// The variant is a base of AttendOptions and DecodeOptions, so `opts.scale = 0.125;
// opts.softcap = 30;` reads the same for both. Masking is not a modifier: it lives in
// Pattern (attention sinks, StreamingLLM style, are the pattern `window:L,0,sinks=S` or the
// rolling cache's policy).
// Not for: kernels' inner loops (they take the validated, converted form).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace attnkit {

struct Variant {
  double scale = NAN;                // NaN: 1 / sqrt(d_qk); else finite
  double softcap = 0;                // 0: off; else finite and > 0
  std::vector<double> alibi_slopes;  // empty: off; else one finite slope per query head
  std::vector<double> sink_logits;   // empty: off; else one finite logit per query head

  double softmax_scale(int64_t d_qk) const { return std::isnan(scale) ? 1.0 / std::sqrt(double(d_qk)) : scale; }
  bool has_mods() const { return softcap > 0 || !alibi_slopes.empty(); }
  bool has_sinks() const { return !sink_logits.empty(); }

  // mods() of a scaled score s for head h, query position p and key position j: the
  // definition the references and the tests use.
  double apply(double s, int64_t h, int64_t p, int64_t j) const {
    if (softcap > 0) s = softcap * std::tanh(s / softcap);
    if (!alibi_slopes.empty()) s -= alibi_slopes[static_cast<size_t>(h)] * std::fabs(double(p - j));
    return s;
  }
  // d mods / d s at the score whose modified value is `modified` (what a backward pass
  // multiplies dS by): softcap's 1 - tanh^2 = 1 - (modified' / c)^2 with modified' the value
  // before ALiBi; ALiBi adds a constant and contributes 1.
  double derivative(double modified, int64_t h, int64_t p, int64_t j) const {
    if (softcap <= 0) return 1.0;
    double capped = modified;
    if (!alibi_slopes.empty()) capped += alibi_slopes[static_cast<size_t>(h)] * std::fabs(double(p - j));
    const double t = capped / softcap;
    return 1.0 - t * t;
  }

  // Throws Error naming the field: scale NaN or finite, softcap finite >= 0, and slopes and
  // sink logits each empty or one finite value per query head.
  void validate(int64_t q_heads) const;
};

}  // namespace attnkit
