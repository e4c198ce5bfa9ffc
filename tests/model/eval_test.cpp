// Evaluation: perplexity through the decode path equals a plain computation of the same
// windows with the training forward; a cache's KL divergence against itself is 0 with the
// same top token everywhere, and a quantized cache's is small but not 0; the pass-key
// score is an exact match of all five digits and the grid is deterministic; the KV bytes
// the caches allocate equal kv-size's formulas; bad arguments are Errors.
#include "model/eval.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "attnkit/error.hpp"
#include "model/generate.hpp"

namespace attnkit::model {
namespace {

Model tiny_model() {
  Model m(parse_config(R"({"dim": 32, "hidden_dim": 48, "n_layers": 2, "n_heads": 4, "vocab": 256, "context": 128,
      "seed": 3, "layers": [{"heads": "gqa:2"}, {"heads": "mha", "pattern": "window:23,0"}]})"));
  m.init_weights();
  for (float& w : m.weights) w *= 4.0f;  // a sharper distribution than the initial one
  return m;
}

std::vector<int32_t> text_stream(int64_t n) {
  std::mt19937 rng(5);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>('a' + rng() % 26);
  return t;
}

TEST(Eval, PerplexityEqualsThePlainComputationOfTheSameWindows) {
  const Model m = tiny_model();
  const std::vector<int32_t> stream = text_stream(64 * 7 + 13);  // 7 windows of 64 and a remainder
  const int64_t ctx = 64, half = 32;
  const WindowScores s = score_windows(m, stream, ctx, 3, parse_cache("contiguous", "f32"));
  ASSERT_EQ(s.windows, 3);
  ASSERT_EQ(s.nll.size(), 3u * 32u);
  // Windows 0, 2 and 4 of the 7 (spread evenly), each scored on its second half by the
  // training forward: row j - 1 of a window predicts its token j.
  std::vector<double> plain;
  Activations acts;
  for (const int64_t w : {0, 2, 4}) {
    const int32_t* x = stream.data() + w * ctx;
    training_forward(m, x, x + 1, 1, ctx - 1, acts);
    for (int64_t j = half; j < ctx; ++j) plain.push_back(acts.losses[static_cast<size_t>(j - 1)]);
  }
  double sum = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_NEAR(s.nll[i], plain[i], 2e-4 * (1 + plain[i])) << "token " << i;
    sum += plain[i];
  }
  const Perplexity p = perplexity(s.nll);
  EXPECT_NEAR(p.ppl, std::exp(sum / static_cast<double>(plain.size())), 1e-3 * p.ppl);
  EXPECT_NEAR(p.bits_per_byte, sum / static_cast<double>(plain.size()) / std::log(2.0), 1e-4);
  EXPECT_GT(p.stderr_nll, 0.0);
}

TEST(Eval, PerplexityStatistics) {
  const Perplexity p = perplexity({1.0, 2.0, 3.0, 6.0});
  EXPECT_DOUBLE_EQ(p.mean_nll, 3.0);
  // Sample variance (1 + 4 + 0 + 9... about the mean 3: 4 + 1 + 0 + 9 = 14) / 3, over n = 4.
  EXPECT_NEAR(p.stderr_nll, std::sqrt(14.0 / 3.0 / 4.0), 1e-12);
  EXPECT_NEAR(p.ppl, std::exp(3.0), 1e-9);
  EXPECT_NEAR(p.ppl_err, std::exp(3.0) * p.stderr_nll, 1e-9);
  EXPECT_EQ(perplexity({}).tokens, 0);
}

TEST(Eval, DivergenceOfACacheAgainstItselfIsZero) {
  const Model m = tiny_model();
  const std::vector<int32_t> stream = text_stream(256);
  const WindowScores ref = score_windows(m, stream, 64, 0, parse_cache("contiguous", "f32"));
  const Divergence self = divergence(ref, ref);
  EXPECT_EQ(self.kl_mean, 0.0);
  EXPECT_EQ(self.kl_p99, 0.0);
  EXPECT_EQ(self.same_top, 1.0);
  // Paged f32 holds the same values: the same scores up to rounding.
  const Divergence paged = divergence(ref, score_windows(m, stream, 64, 0, parse_cache("paged:16", "f32")));
  EXPECT_LT(paged.kl_max, 1e-9);
  EXPECT_EQ(paged.same_top, 1.0);
  // int4 rounds every cached value: a small divergence, but not none.
  const Divergence q = divergence(ref, score_windows(m, stream, 64, 0, parse_cache("contiguous", "int4")));
  EXPECT_GT(q.kl_mean, 0.0);
  EXPECT_LT(q.kl_mean, 0.05);
  EXPECT_GE(q.kl_p99, q.kl_mean * 0.5);
  EXPECT_GE(q.kl_max, q.kl_p99);
  EXPECT_GT(q.same_top, 0.8);
  // Different windows cannot be compared.
  EXPECT_THROW(divergence(ref, score_windows(m, stream, 64, 2, parse_cache("contiguous", "f32"))), Error);
}

TEST(Eval, CacheBytesAllocatedEqualTheFormulas) {
  const Model m = tiny_model();
  const std::vector<int32_t> stream = text_stream(128);
  for (const char* cache : {"contiguous", "paged:16", "paged:48", "rolling:w=24,sinks=4", "rolling:w=30,sinks=0"})
    for (const char* dtype : {"f32", "bf16", "f16", "int8"}) {
      const KvCacheConfig c = parse_cache(cache, dtype);
      const WindowScores s = score_windows(m, stream, 128, 1, c);
      EXPECT_EQ(s.kv_bytes_allocated, kv_bytes_formula(m.config(), c, 128)) << cache << " " << dtype;
    }
  // int4 allocates its f16 residual for R + G - 1 tokens: exactly the formula once it holds
  // that many unquantized tokens (R = 9, G = 4: 100 held leave 12 in f16, 102 leave 10).
  KvCacheConfig c = parse_cache("contiguous", "int4");
  c.residual = 9, c.group = 4;
  EXPECT_EQ(score_windows(m, stream, 100, 1, c).kv_bytes_allocated, kv_bytes_formula(m.config(), c, 100));
  EXPECT_GT(score_windows(m, stream, 102, 1, c).kv_bytes_allocated, kv_bytes_formula(m.config(), c, 102));
  // Steady state: f32 is 2 (K, V) x 4 bytes x head_dim x KV heads, summed over the layers.
  EXPECT_DOUBLE_EQ(kv_bytes_per_token(m.config(), parse_cache("contiguous", "f32")), 2 * 4 * 8 * (2 + 4));
}

TEST(Eval, StreamScoresEqualTheTrainingForward) {
  const Model m = tiny_model();
  const std::vector<int32_t> stream = text_stream(300);
  const std::vector<double> nll = stream_nll(m, stream, 17, 100, parse_cache("contiguous", "f32"));
  ASSERT_EQ(nll.size(), 99u);
  Activations acts;
  training_forward(m, stream.data() + 17, stream.data() + 18, 1, 99, acts);
  for (size_t i = 0; i < nll.size(); ++i) EXPECT_NEAR(nll[i], acts.losses[i], 2e-4 * (1 + nll[i])) << i;
  // A longer RoPE table leaves the weights and the scores of the first positions alone.
  const Model longer = with_context(m, 512);
  EXPECT_EQ(longer.config().context, 512);
  EXPECT_EQ(longer.weights, m.weights);
  const std::vector<double> again = stream_nll(longer, stream, 17, 100, parse_cache("contiguous", "f32"));
  for (size_t i = 0; i < nll.size(); ++i) EXPECT_NEAR(again[i], nll[i], 1e-5 * (1 + nll[i]));
  EXPECT_THROW(stream_nll(m, stream, 250, 100, parse_cache("contiguous", "f32")), Error);
  EXPECT_THROW(stream_nll(m, stream, 0, 129, parse_cache("contiguous", "f32")), Error);
}

const char* kFiller =
    "The jury said it did find that many of the voters were registered.\n"
    "It recommended that the law be amended.\nThe grand jury took a swipe at the hospital.\n";

TEST(Eval, PasskeyIsAnExactMatchOfEveryDigit) {
  const PasskeyTask task(kFiller);
  const PasskeySample s = task.make(11, 160, 0.5);
  const int64_t vocab = 256, rows = 159;
  // Scores whose argmax is the next byte everywhere: every digit right.
  std::vector<float> scores(static_cast<size_t>(rows * vocab), 0.0f);
  for (int64_t j = 0; j < rows; ++j) scores[static_cast<size_t>(j * vocab + static_cast<uint8_t>(s.text[j + 1]))] = 1.0f;
  EXPECT_EQ(passkey_digits(s, scores.data(), vocab), 5);
  // One wrong digit (the last one's row prefers another digit): 4 of 5, not retrieved.
  const int64_t last = s.answer_offset + 4 - 1;
  const int32_t wrong = s.key[4] == '9' ? '0' : s.key[4] + 1;
  scores[static_cast<size_t>(last * vocab + wrong)] = 2.0f;
  EXPECT_EQ(passkey_digits(s, scores.data(), vocab), 4);
  // A tie goes to the lowest id, as greedy decoding's argmax does.
  scores[static_cast<size_t>(last * vocab + wrong)] = 1.0f;
  EXPECT_EQ(passkey_digits(s, scores.data(), vocab), wrong < s.key[4] ? 4 : 5);
}

TEST(Eval, PasskeyGridIsDeterministicAndChecked) {
  const Model m = with_context(tiny_model(), 320);
  const PasskeyTask task(kFiller);
  const std::vector<int64_t> lengths = {PasskeyTask::min_length(), 321};
  const auto a = passkey_grid(m, task, lengths, {0.0, 1.0}, 3, 7);
  const auto b = passkey_grid(m, task, lengths, {0.0, 1.0}, 3, 7);
  ASSERT_EQ(a.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].correct, b[i].correct);
    EXPECT_EQ(a[i].digit_accuracy, b[i].digit_accuracy);
    EXPECT_EQ(a[i].mean_distance, b[i].mean_distance);
    EXPECT_GE(a[i].digit_accuracy, 0.0);
    EXPECT_LE(a[i].digit_accuracy, 1.0);
  }
  // The key's last copy is farther from the answer at depth 0 than at depth 1.
  EXPECT_GT(a[2].mean_distance, a[3].mean_distance);
  EXPECT_THROW(passkey_grid(m, task, {322}, {0.5}, 1, 1), Error);   // longer than context + 1
  EXPECT_THROW(passkey_grid(m, task, {PasskeyTask::min_length() - 1}, {0.5}, 1, 1), Error);
  EXPECT_THROW(passkey_grid(m, task, {200}, {1.5}, 1, 1), Error);
}

TEST(Eval, BadArgumentsAreErrors) {
  const Model m = tiny_model();
  const std::vector<int32_t> stream = text_stream(200);
  const KvCacheConfig c = parse_cache("contiguous", "f32");
  EXPECT_THROW(score_windows(m, stream, 63, 0, c), Error);    // odd
  EXPECT_THROW(score_windows(m, stream, 130, 0, c), Error);   // past the model's context
  EXPECT_THROW(score_windows(m, text_stream(50), 64, 0, c), Error);  // no whole window
  std::vector<int32_t> bad = stream;
  bad[7] = 256;
  EXPECT_THROW(score_windows(m, bad, 64, 0, c), Error);
}

}  // namespace
}  // namespace attnkit::model
