// Generation: every cache layout gives the contiguous f32 cache's logits (paged bitwise,
// rolling inside its window to rounding), prefill + decode equals the training forward's
// logits (also with recurrent-state layers beside token caches), layers decode cannot mask
// fall back exactly, and sampling obeys its options.
#include "model/generate.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "attnkit/error.hpp"
#include "model/decode_testing.hpp"
#include "model/layers.hpp"

namespace attnkit::model {
namespace {

Model random_model(const std::string& layers) {
  Model m(parse_config(R"({"dim": 32, "hidden_dim": 48, "n_layers": 3, "n_heads": 4, "vocab": 40, "context": 96,
                           "seed": 9, )" + layers + "}"));
  m.init_weights();
  for (float& w : m.weights) w *= 10.0f;  // decisive logits: argmax far from ties
  return m;
}

const char* kLayers =
    R"("layers": [{"heads": "gqa:2"}, {"heads": "mqa", "pattern": "window:20,0,sinks=2"}, {"heads": "mha"}])";

// Logits after every token: the prompt in one call, then greedy decoding.
std::vector<std::vector<float>> run(const Model& m, const KvCacheConfig& cache, int64_t new_tokens,
                                    std::vector<int32_t>* ids = nullptr) {
  Generator g(m, cache);
  const std::vector<int32_t> prompt = {1, 5, 9, 2, 33, 7, 0, 12, 3};
  std::vector<std::vector<float>> out = {g.feed(prompt)};
  std::mt19937_64 rng(0);
  for (int64_t i = 0; i < new_tokens; ++i) {
    const int32_t next = sample(out.back(), {0.0, 0, 1.0}, rng);
    if (ids) ids->push_back(next);
    out.push_back(g.feed(std::span<const int32_t>(&next, 1)));
  }
  return out;
}

double max_diff(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < a[i].size(); ++j) worst = std::max(worst, std::abs(double(a[i][j]) - b[i][j]) / (1 + std::abs(b[i][j])));
  return worst;
}

TEST(Generate, EveryLayoutMatchesContiguous) {
  const Model m = random_model(kLayers);
  std::vector<int32_t> base_ids, paged_ids, rolling_ids;
  const auto base = run(m, parse_cache("contiguous", "f32"), 60, &base_ids);
  EXPECT_EQ(run(m, parse_cache("paged:16", "f32"), 60, &paged_ids), base);
  EXPECT_EQ(run(m, parse_cache("paged:5", "f32"), 60), base);
  EXPECT_EQ(paged_ids, base_ids);
  // Inside its window a rolling cache holds every key; it only visits them in another order.
  EXPECT_LE(max_diff(run(m, parse_cache("rolling:w=80,sinks=4", "f32"), 60, &rolling_ids), base), 1e-5);
  EXPECT_EQ(rolling_ids, base_ids);
}

TEST(Generate, QuantizedCachesStayClose) {
  const Model m = random_model(kLayers);
  const auto base = run(m, parse_cache("contiguous", "f32"), 30);
  for (const char* dtype : {"bf16", "f16", "int8", "int4"}) {
    const auto q = run(m, parse_cache("contiguous", dtype), 30);
    EXPECT_EQ(q[0], base[0]) << dtype;  // the prompt's logits come from the prefill, not the cache
    const double first_step = max_diff({q[1]}, {base[1]});
    std::printf("%s cache: first decode step's logits within %.3g (relative) of f32\n", dtype, first_step);
    EXPECT_GT(first_step, 0.0) << dtype;  // the cache really stores the format
    EXPECT_LE(first_step, 0.2) << dtype;
  }
}

TEST(Generate, PrefillAndDecodeEqualTheTrainingForward) {
  const Model m = random_model(
      R"("layers": [{"pattern": "longformer:w=3,global=0,causal"}, {"heads": "mqa", "pattern": "strided:stride=4"}, {}])");
  expect_decode_equals_training_forward(m, {1, 5, 9, 2, 33, 7, 0, 12, 3, 8, 8, 21, 4, 39}, 6);
}

// A softmax layer between two recurrent-state layers: both kinds of memory in one model.
TEST(Generate, RecurrentStatesBesideCachesEqualTheTrainingForward) {
  const Model m = random_model(R"("layers": [{"method": "retention:gamma=0.9"}, {"heads": "gqa:2"}, {"method": "linear"}])");
  Generator g(m, parse_cache("contiguous", "f32"));
  EXPECT_TRUE(g.memory().is_state(0));
  EXPECT_FALSE(g.memory().is_state(1));
  expect_decode_equals_training_forward(m, {1, 5, 9, 2, 3, 7, 0, 12, 3, 8, 8, 11, 4, 10, 6, 2}, 5);
}

TEST(Generate, BadInputIsAnError) {
  const Model m = random_model(kLayers);
  EXPECT_THROW(parse_cache("ring", "f32"), Error);
  EXPECT_THROW(parse_cache("rolling:w=0", "f32"), Error);
  EXPECT_THROW(parse_cache("rolling:w=8,x=1", "f32"), Error);
  EXPECT_THROW(parse_cache("contiguous", "f64"), Error);
  Generator g(m, parse_cache("contiguous", "f32"));
  const std::vector<int32_t> bad = {40};
  EXPECT_THROW(g.feed(bad), Error);
  const std::vector<int32_t> too_long(97, 1);
  EXPECT_THROW(g.feed(too_long), Error);
  const Model sparse = random_model(R"("pattern": "strided:stride=4")");
  EXPECT_THROW(Generator(sparse, parse_cache("rolling:w=8", "f32")), Error);
}

TEST(Sample, GreedyTopKTopP) {
  std::mt19937_64 rng(1);
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.9f};
  EXPECT_EQ(sample(logits, {0.0, 0, 1.0}, rng), 1);
  for (int i = 0; i < 200; ++i) {
    const int32_t k2 = sample(logits, {1.0, 2, 1.0}, rng);
    EXPECT_TRUE(k2 == 1 || k2 == 3);
    const int32_t p = sample(logits, {1.0, 0, 0.3}, rng);  // the top token alone holds > 30 %
    EXPECT_EQ(p, 1);
  }
  EXPECT_THROW(sample(logits, {-1.0, 0, 1.0}, rng), Error);
  EXPECT_THROW(sample(logits, {1.0, 0, 0.0}, rng), Error);
}

}  // namespace
}  // namespace attnkit::model
