// Evaluation of a trained model on held-out text, in the conventions of llama.cpp's
// perplexity tool: the stream is cut into consecutive windows of `context` tokens, each
// window starts from an empty cache, and the second half of each window is scored (every
// scored token sees at least context / 2 tokens before it). The scored tokens are decoded
// one at a time through a Generator, so every score reads the KV cache under test (its
// layout, storage format and window); the first half is the prefill.
//   perplexity     exp(mean NLL), ± exp(mean) * standard error of the mean NLL
//   bits per byte  mean NLL / ln 2 (a byte tokenizer: a token is a byte)
//   KL divergence  per scored token, KL(P_ref || P_cache) over the vocabulary, against the
//                  f32 contiguous cache on the same windows: mean and 99th percentile, and
//                  the share of tokens whose argmax agrees (llama.cpp's --kl-divergence)
// Pass-key retrieval is scored teacher-forced through the training forward (the model's
// own attention, no cache): a sample is correct when the argmax at each of the key's five
// positions is the key's digit, which is exactly when greedy decoding would write the key.
// Not for: training-time validation loss (train.hpp's evaluate, on random windows).
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/kv_cache.hpp"
#include "model/model.hpp"
#include "model/retrieval.hpp"

namespace attnkit::model {

// Per scored token of every window, in order.
struct WindowScores {
  int64_t context = 0, windows = 0;
  std::vector<double> nll;       // [N]: -log p(token)
  std::vector<float> logprobs;   // [N][vocab]: log-softmax of the logits (for KL)
  std::vector<int32_t> top;      // [N]: argmax of the logits (ties: lowest id)
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0;
  int64_t kv_bytes_allocated = 0;  // the caches' bytes after a whole window
};

// Scores up to max_windows windows (0: all that fit) of `context` tokens (even, >= 2, <= the
// model's context), spread evenly over the consecutive windows of `tokens`. Throws Error
// naming the argument when the stream holds no window or ids are out of range.
WindowScores score_windows(const Model& model, const std::vector<int32_t>& tokens, int64_t context,
                           int64_t max_windows, const KvCacheConfig& cache);

struct Perplexity {
  int64_t tokens = 0;
  double mean_nll = 0, stderr_nll = 0;  // nats per token
  double ppl = 0, ppl_err = 0;
  double bits_per_byte = 0, bpb_err = 0;
};
Perplexity perplexity(const std::vector<double>& nll);

struct Divergence {
  double kl_mean = 0, kl_stderr = 0, kl_p99 = 0, kl_max = 0;
  double same_top = 0;  // share of tokens with the same argmax, in [0, 1]
};
// Both scored the same windows of the same stream; throws Error otherwise.
Divergence divergence(const WindowScores& reference, const WindowScores& other);

// NLL of every token of a stream of `length` tokens fed one at a time through a cache
// (position i is predicted from tokens 0..i-1; the first token is not scored, so the result
// has length - 1 entries). `start` picks where in `tokens` the stream begins.
std::vector<double> stream_nll(const Model& model, const std::vector<int32_t>& tokens, int64_t start, int64_t length,
                               const KvCacheConfig& cache);

struct PasskeyCell {
  int64_t length = 0;
  double depth = 0;
  int64_t samples = 0, correct = 0;  // exact matches of the whole key
  double digit_accuracy = 0;         // share of the key's digits predicted, chance 0.1
  double mean_distance = 0;          // tokens from the key's last copy to the answer
  std::vector<int64_t> distances, digits;  // per sample: that distance, the digits right
  double accuracy() const { return samples > 0 ? static_cast<double>(correct) / static_cast<double>(samples) : 0.0; }
};
// How many of the key's digits a model predicts for a sample: rows [length - 1][vocab] hold
// scores (logits or probabilities) with row j predicting text[j + 1]; the digit counts when
// its row's argmax (ties: lowest id) is that digit. The key is retrieved when all 5 count.
int64_t passkey_digits(const PasskeySample& sample, const float* rows, int64_t vocab);

// One cell per (length, depth), `samples` samples each with seeds derived from `seed`; a
// length must lie in [PasskeyTask::min_length(), context + 1]. Byte-level models only.
std::vector<PasskeyCell> passkey_grid(const Model& model, const PasskeyTask& task, const std::vector<int64_t>& lengths,
                                      const std::vector<double>& depths, int64_t samples, uint64_t seed);

// The model with a longer (or shorter) RoPE table: the same weights, config.context = context.
Model with_context(const Model& model, int64_t context);

// Bytes a cache of this kind holds for the model after `tokens` tokens, from kv_size.hpp's
// formulas layer by layer (the layers may differ in KV heads; a recurrent state's bytes are
// recurrent_state_bytes, an MLA layer's latent cache kv_size's MLA figure); what
// Generator::kv_bytes() must equal for f32 / bf16 / f16 / int8 and for int4 once its
// residual is full.
int64_t kv_bytes_formula(const ModelConfig& config, const KvCacheConfig& cache, int64_t tokens);
// Steady-state bytes per cached token, all layers (kv_size's bytes_per_token_per_layer summed).
double kv_bytes_per_token(const ModelConfig& config, const KvCacheConfig& cache);

}  // namespace attnkit::model
