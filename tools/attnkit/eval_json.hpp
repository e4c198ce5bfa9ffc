// The JSON of evaluation results (model/eval.hpp), shared by `eval --json` and the report's
// results.json so both spell every figure the same way.
#pragma once

#include <nlohmann/json.hpp>

#include "model/eval.hpp"

namespace attnkit::cli {

inline nlohmann::json to_json(const model::Perplexity& p) {
  return {{"tokens", p.tokens},   {"mean_nll", p.mean_nll},           {"stderr_nll", p.stderr_nll},
          {"ppl", p.ppl},         {"ppl_err", p.ppl_err},             {"bits_per_byte", p.bits_per_byte},
          {"bpb_err", p.bpb_err}};
}

inline nlohmann::json to_json(const model::Divergence& d) {
  return {{"kl_mean", d.kl_mean}, {"kl_stderr", d.kl_stderr}, {"kl_p99", d.kl_p99}, {"kl_max", d.kl_max},
          {"same_top", d.same_top}};
}

inline nlohmann::json to_json(const std::vector<model::PasskeyCell>& cells) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& c : cells)
    a.push_back({{"length", c.length}, {"depth", c.depth}, {"samples", c.samples}, {"correct", c.correct},
                 {"accuracy", c.accuracy()}, {"digit_accuracy", c.digit_accuracy}, {"mean_distance", c.mean_distance},
                 {"distances", c.distances}, {"digits", c.digits}});
  return a;
}

// Speeds and KV bytes of one scoring: prefill / decode tokens per second, the cache's bytes
// at the evaluated context as allocated and from kv-size's formulas, bytes per token.
inline nlohmann::json speed_and_memory(const model::WindowScores& s, const model::ModelConfig& mc,
                                       const KvCacheConfig& cache) {
  const int64_t formula = model::kv_bytes_formula(mc, cache, s.context);
  return {{"prefill_tok_s", static_cast<double>(s.prefill_tokens) / std::max(s.prefill_seconds, 1e-12)},
          {"decode_tok_s", static_cast<double>(s.decode_tokens) / std::max(s.decode_seconds, 1e-12)},
          {"kv_bytes_allocated", s.kv_bytes_allocated},
          {"kv_bytes_formula", formula},
          {"kv_bytes_per_token_at_context", static_cast<double>(s.kv_bytes_allocated) / static_cast<double>(s.context)},
          {"kv_bytes_per_token_steady", model::kv_bytes_per_token(mc, cache)}};
}

}  // namespace attnkit::cli
