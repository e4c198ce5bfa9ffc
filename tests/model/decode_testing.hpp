// Test helper for generation: decoding through a Generator against the training forward
// over the same tokens. Not for: library code.
#pragma once

#include <gtest/gtest.h>

#include <span>
#include <vector>

#include "model/generate.hpp"
#include "model/layers.hpp"
#include "model/model.hpp"

namespace attnkit::model {

// The logits after the last token: the first `prompt` tokens in one call, the rest one by one.
inline std::vector<float> decode_last(const Model& m, const KvCacheConfig& cache, const std::vector<int32_t>& tokens,
                                      size_t prompt) {
  Generator g(m, cache);
  g.feed(std::span<const int32_t>(tokens.data(), prompt));
  std::vector<float> last;
  for (size_t i = prompt; i < tokens.size(); ++i) last = g.feed(std::span<const int32_t>(&tokens[i], 1));
  return last;
}

// decode_last's softmax equals the training forward's over the whole sequence.
inline void expect_decode_equals_training_forward(const Model& m, const std::vector<int32_t>& tokens, size_t prompt,
                                                 const KvCacheConfig& cache = parse_cache("contiguous", "f32")) {
  const std::vector<float> last = decode_last(m, cache, tokens, prompt);
  Activations acts;
  training_forward(m, tokens.data(), tokens.data(), 1, static_cast<int64_t>(tokens.size()), acts);
  // The training forward keeps softmax(logits); compare the decoder's softmax with it.
  std::vector<float> probs(last.size()), loss(1);
  const int32_t target = 0;
  crossentropy_forward(loss.data(), probs.data(), last.data(), &target, 1, static_cast<int64_t>(last.size()));
  const float* expect = acts.probs.data() + (tokens.size() - 1) * last.size();
  for (size_t j = 0; j < last.size(); ++j) EXPECT_NEAR(probs[j], expect[j], 1e-5) << j;
}

}  // namespace attnkit::model
