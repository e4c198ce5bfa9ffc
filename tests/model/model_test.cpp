// The decoder: config parsing and its errors, the whole model's gradient against finite
// differences of its loss (every layer kind of attention, GQA / MQA, tied and untied head),
// and a few AdamW steps lowering the loss, bitwise the same on a rerun.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "attnkit/error.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "model/optimizer.hpp"

namespace attnkit::model {
namespace {

ModelConfig tiny(const std::string& layers_json, bool tied = true) {
  return parse_config(R"({"dim": 16, "hidden_dim": 24, "n_layers": 2, "n_heads": 4, "vocab": 13, "context": 16,
                          "seed": 5, "tied_head": )" +
                      std::string(tied ? "true" : "false") + ", " + layers_json + "}");
}

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return ids;
}

TEST(ModelConfig, ParsesAndRoundTrips) {
  const ModelConfig c = tiny(R"("layers": [{"heads": "gqa:2", "pattern": "window:3,0"}, {"heads": "mqa"}])");
  EXPECT_EQ(c.layers[0].kv_heads, 2);
  EXPECT_EQ(c.layers[1].kv_heads, 1);
  EXPECT_EQ(c.layers[1].pattern, "causal");
  const ModelConfig back = parse_config(config_to_json(c));
  EXPECT_EQ(config_to_json(back), config_to_json(c));
  EXPECT_EQ(Model(c).num_params(), c.parameter_count());
}

TEST(ModelConfig, BadFieldsAreErrorsNamingTheField) {
  auto message = [](const std::string& text) {
    try {
      parse_config(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string base = R"("hidden_dim": 8, "n_layers": 1, "n_heads": 2, "vocab": 5, "context": 8)";
  EXPECT_NE(message("{" + base + "}").find("config.dim is missing"), std::string::npos);
  EXPECT_NE(message(R"({"dim": 8, )" + base + ", \"pattern\": \"none\"}").find("config.layers[0].pattern"),
            std::string::npos);  // not causal
  EXPECT_NE(message(R"({"dim": 8, )" + base + ", \"heads\": \"gqa:4\"}").find("config.heads"), std::string::npos);
  EXPECT_NE(message(R"({"dim": 7, )" + base + "}").find("multiple of n_heads"), std::string::npos);
  EXPECT_NE(message(R"({"dim": -1, )" + base + "}").find("config.dim"), std::string::npos);
  EXPECT_NE(message(R"({"dim": 99999999999999999999, )" + base + "}").find("config.dim"), std::string::npos);
  EXPECT_NE(message(R"({"dim": 8, "colour": 1, )" + base + "}").find("unknown field"), std::string::npos);
  EXPECT_NE(message("[1, 2").find("not valid JSON"), std::string::npos);
  EXPECT_NE(message(R"({"dim": 8, )" + base + ", \"layers\": [{}, {}]}").find("config.layers"), std::string::npos);
}

// d loss / d w for a sample of every parameter tensor, against central differences of the
// f32 loss (h = 1e-2 keeps the rounding of the loss below the truncation error).
void expect_gradient_matches(const ModelConfig& c) {
  Model m(c);
  m.init_weights();
  for (float& w : m.weights) w *= 2.0f;  // larger weights: gradients well above f32 noise
  const int64_t b = 2, t = 9;
  const std::vector<int32_t> tokens = random_ids(b * t, c.vocab, 1), targets = random_ids(b * t, c.vocab, 2);
  Activations acts;
  training_forward(m, tokens.data(), targets.data(), b, t, acts);
  std::vector<float> grads;
  training_backward(m, tokens.data(), targets.data(), acts, grads);
  std::mt19937_64 rng(3);
  int checked = 0;
  for (const ParamRef& p : m.params())
    for (int trial = 0; trial < 4; ++trial) {
      const int64_t i = p.offset + static_cast<int64_t>(rng() % static_cast<uint64_t>(p.rows * p.cols));
      const float w0 = m.weights[static_cast<size_t>(i)];
      const float h = 2e-3f;
      m.weights[static_cast<size_t>(i)] = w0 + h;
      const double up = training_forward(m, tokens.data(), targets.data(), b, t, acts);
      m.weights[static_cast<size_t>(i)] = w0 - h;
      const double down = training_forward(m, tokens.data(), targets.data(), b, t, acts);
      m.weights[static_cast<size_t>(i)] = w0;
      const double fd = (up - down) / (2.0 * h);
      EXPECT_NEAR(grads[static_cast<size_t>(i)], fd, 2e-4 + 2e-2 * std::abs(fd)) << p.name << " [" << i - p.offset << "]";
      ++checked;
    }
  EXPECT_GT(checked, 40);
}

TEST(ModelGradient, CausalMhaAndGqaWindow) {
  expect_gradient_matches(tiny(R"("layers": [{"heads": "mha"}, {"heads": "gqa:2", "pattern": "window:3,0"}])"));
}

TEST(ModelGradient, MqaSinksUntiedHead) {
  expect_gradient_matches(
      tiny(R"("layers": [{"heads": "mqa", "pattern": "window:2,0,sinks=2"}, {"heads": "gqa:2"}])", false));
}

TEST(ModelGradient, SparsePatterns) {
  expect_gradient_matches(tiny(
      R"("layers": [{"pattern": "longformer:w=2,global=0,causal"}, {"pattern": "strided:stride=3"}])"));
}

TEST(ModelGradient, LinearCostLayers) {
  expect_gradient_matches(tiny(R"("layers": [{"method": "linear"}, {"heads": "gqa:2", "method": "retention"}])"));
  expect_gradient_matches(tiny(R"("layers": [{"heads": "mqa", "method": "performer:m=8,seed=2"}, {"heads": "mha"}])", false));
}

TEST(ModelGradient, MlaLayer) {
  // An MLA layer beside a softmax one: its five projections, wo and the norm before it.
  expect_gradient_matches(tiny(R"("layers": [{"method": "mla:c=8,r=4"}, {"heads": "gqa:2"}])"));
  expect_gradient_matches(tiny(R"("layers": [{"heads": "mqa"}, {"method": "mla:c=6,r=2"}])", false));
}

TEST(ModelConfig, MlaLayerParametersAreCounted) {
  const ModelConfig c = tiny(R"("layers": [{"method": "mla:c=8,r=4"}, {}])");
  const Model m(c);
  EXPECT_EQ(m.num_params(), c.parameter_count());
  std::vector<std::string> names;
  for (const ParamRef& p : m.params())
    if (p.name.starts_with("layers.0.")) names.push_back(p.name.substr(9));
  EXPECT_EQ(names, (std::vector<std::string>{"attention_norm", "w_q", "w_dkv", "w_kr", "w_uk", "w_uv", "wo", "ffn_norm",
                                             "w1", "w2", "w3"}));
  // w_q: dim -> 4 heads of head_dim 4 + d_r 4; w_uk, w_uv: [4 heads][4][d_c 8].
  for (const ParamRef& p : m.params()) {
    const std::pair<int64_t, int64_t> shape{p.rows, p.cols};
    if (p.name == "layers.0.w_q") {
      EXPECT_EQ(shape, (std::pair<int64_t, int64_t>{16, 32}));
    } else if (p.name == "layers.0.w_uv") {
      EXPECT_EQ(shape, (std::pair<int64_t, int64_t>{16, 8}));
    }
  }
  // Each counts: 16*32 + 16*8 + 16*4 + 2 * 16*8 = 960, where wq, wk, wv held 3 * 16*16 = 768.
  EXPECT_EQ(c.parameter_count() - tiny(R"("heads": "mha")").parameter_count(), 960 - 768);
}

std::vector<double> train_losses(const ModelConfig& c, int steps) {
  Model m(c);
  m.init_weights();
  const int64_t b = 2, t = 12;
  // A learnable batch: each sequence counts up modulo the vocabulary.
  std::vector<int32_t> tokens(static_cast<size_t>(b * t)), targets(tokens.size());
  for (int64_t i = 0; i < b * t; ++i) {
    tokens[static_cast<size_t>(i)] = static_cast<int32_t>((i + i / t) % c.vocab);
    targets[static_cast<size_t>(i)] = static_cast<int32_t>((i + i / t + 1) % c.vocab);
  }
  Activations acts;
  std::vector<float> grads;
  AdamWState state;
  AdamWConfig cfg;
  cfg.lr = 1e-2;
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    losses.push_back(training_forward(m, tokens.data(), targets.data(), b, t, acts));
    training_backward(m, tokens.data(), targets.data(), acts, grads);
    adamw_step(m, grads, state, cfg, cosine_lr(s, steps, 2, cfg.lr, 0.0));
  }
  losses.push_back(training_forward(m, tokens.data(), targets.data(), b, t, acts));
  return losses;
}

TEST(ModelTraining, AdamWLowersTheLossDeterministically) {
  const ModelConfig c = tiny(R"("layers": [{"heads": "gqa:2"}, {"heads": "mha", "pattern": "window:4,0"}])");
  const std::vector<double> a = train_losses(c, 30), again = train_losses(c, 30);
  EXPECT_LT(a.back(), 0.5 * a.front()) << "first " << a.front() << " last " << a.back();
  EXPECT_EQ(a, again);  // bitwise
}

TEST(ModelTraining, ScheduleAndClipping) {
  EXPECT_DOUBLE_EQ(cosine_lr(0, 100, 10, 1.0, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(cosine_lr(9, 100, 10, 1.0, 0.1), 1.0);
  EXPECT_DOUBLE_EQ(cosine_lr(10, 100, 10, 1.0, 0.1), 1.0);
  EXPECT_NEAR(cosine_lr(99, 100, 10, 1.0, 0.1), 0.1, 1e-12);
  Model m(tiny(R"("heads": "mha")"));
  std::vector<float> g(m.weights.size(), 0.0f);
  g[0] = 30.0f, g[1] = 40.0f;
  AdamWState st;
  AdamWConfig cfg;
  cfg.weight_decay = 0;
  EXPECT_DOUBLE_EQ(adamw_step(m, g, st, cfg, 1e-3), 50.0);
  // Adam's first step moves each weight by lr * sign(g), whatever the clipping did.
  EXPECT_NEAR(m.weights[0], -1e-3, 1e-6);
  EXPECT_NEAR(m.weights[1], -1e-3, 1e-6);
  EXPECT_EQ(m.weights[2], 0.0f);
}

TEST(ModelTraining, BadTokensAreErrors) {
  Model m(tiny(R"("heads": "mha")"));
  Activations acts;
  const std::vector<int32_t> ok(4, 1), bad = {1, 2, 13, 0};
  EXPECT_THROW(training_forward(m, bad.data(), ok.data(), 1, 4, acts), Error);
  EXPECT_THROW(training_forward(m, ok.data(), ok.data(), 1, 17, acts), Error);  // > context
}

}  // namespace
}  // namespace attnkit::model
