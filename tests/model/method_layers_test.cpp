// Linear-cost layers in the decoder (their gradient is in model_test.cpp): config parsing of
// a layer's method and its refusals (Linformer in a decoder, a pattern beside a linear
// method); and decode memory that stays constant in the tokens and equals the formula
// (decoding through the states is tested in generate_test.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "attnkit/error.hpp"
#include "attnkit/layer_memory.hpp"
#include "model/config.hpp"
#include "model/eval.hpp"
#include "model/generate.hpp"
#include "model/model.hpp"

namespace attnkit::model {
namespace {

ModelConfig config(const std::string& layers_json, int64_t layers = 3) {
  return parse_config(R"({"dim": 16, "hidden_dim": 24, "n_heads": 4, "vocab": 13, "context": 40, "seed": 3, "n_layers": )" +
                      std::to_string(layers) + ", " + layers_json + "}");
}

const char* kMixed =
    R"("layers": [{"method": "linear"}, {"heads": "gqa:2", "method": "retention"}, {"heads": "mqa", "method": "performer:m=8,seed=4"}])";

std::string error_of(const std::string& layers_json, int64_t layers = 1) {
  try {
    config(layers_json, layers);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(MethodLayers, ConfigParsesRoundTripsAndRefuses) {
  const ModelConfig c = config(kMixed);
  EXPECT_EQ(c.layers[0].method, "linear");
  EXPECT_EQ(c.layers[2].method, "performer:m=8,seed=4");
  EXPECT_EQ(config_to_json(parse_config(config_to_json(c))), config_to_json(c));
  // A softmax model's JSON has no "method" field: cached models keep their keys.
  EXPECT_EQ(config_to_json(config(R"("heads": "mha")")).find("method"), std::string::npos);
  EXPECT_NE(error_of(R"("method": "linformer:k=8")").find("config.layers[0].method"), std::string::npos);
  EXPECT_NE(error_of(R"("method": "linformer:k=8")").find("future"), std::string::npos);
  EXPECT_NE(error_of(R"("method": "linear", "pattern": "window:4,0")").find("must be \"causal\""), std::string::npos);
  EXPECT_NE(error_of(R"("method": "cosine")").find("config.layers[0].method"), std::string::npos);
  EXPECT_NE(error_of(R"("method": "retention:gamma=1.5")").find("config.layers[0].method"), std::string::npos);
}

TEST(MethodLayers, StateBytesAreConstantInTokensAndEqualTheFormula) {
  const Model m(config(kMixed));
  Generator g(m, parse_cache("contiguous", "f32"));
  const std::vector<int32_t> prompt(4, 1);
  g.feed(prompt);
  const int64_t after_prompt = g.kv_bytes();
  for (int i = 0; i < 30; ++i) g.feed(std::span<const int32_t>(&prompt[0], 1));
  EXPECT_EQ(g.kv_bytes(), after_prompt);  // 34 tokens hold what 4 did
  EXPECT_EQ(after_prompt, kv_bytes_formula(m.config(), parse_cache("contiguous", "f32"), 34));
  EXPECT_EQ(kv_bytes_per_token(m.config(), parse_cache("contiguous", "f32")), 0.0);
  // Each layer's state is the formula's: linear over 4 KV heads, retention over the 4 query
  // heads (their decays differ), Performer over m = 8 features of its one KV head.
  for (int64_t l = 0; l < 3; ++l) {
    const LayerConfig& lc = m.config().layers[static_cast<size_t>(l)];
    EXPECT_EQ(g.memory().layer_bytes(l),
              recurrent_state_bytes(m.method(l).linear, 1, 4, lc.kv_heads, m.config().head_dim(), m.config().head_dim()))
        << l;
  }
}

TEST(MethodLayers, LayerMemoryRefusesAmbiguousSpecs) {
  LayerMemorySpec both;
  both.tokens = KvCacheConfig{};
  both.state = LinearMethod{};
  EXPECT_THROW(LayerMemory({both}), Error);
  EXPECT_THROW(LayerMemory({LayerMemorySpec{}}), Error);
  KvCacheConfig kv;
  kv.head_dim = 4;
  LayerMemorySpec tokens;
  tokens.tokens = kv;
  LayerMemory mem({tokens});
  EXPECT_THROW(mem.state(0), Error);
  EXPECT_THROW(mem.cache(1), Error);
}

}  // namespace
}  // namespace attnkit::model
