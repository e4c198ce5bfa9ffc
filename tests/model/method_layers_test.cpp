// Linear-cost and MLA layers in the decoder (their gradients are in model_test.cpp): config
// parsing of a layer's method and its refusals (Linformer in a decoder, a pattern beside a
// linear method, MLA with shared KV heads); generation through latent caches, where prefill
// + decode equal the training forward in a model that mixes them with recurrent-state and
// softmax layers (recurrent states alone: generate_test.cpp); decode memory that stays
// constant in the tokens (states) or grows by d_c + d_r values per token (latents), and
// equals the formula; MLA checkpoints.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "attnkit/error.hpp"
#include "attnkit/layer_memory.hpp"
#include "model/config.hpp"
#include "model/decode_testing.hpp"
#include "model/eval.hpp"
#include "model/generate.hpp"
#include "model/model.hpp"
#include "model/train.hpp"

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

const char* kWithMla =
    R"("layers": [{"method": "mla:c=8,r=4"}, {"heads": "gqa:2"}, {"method": "linear"}])";

// Logits after the last token, fed as a prompt of 5 and then one at a time.
TEST(MlaLayers, ConfigParsesRoundTripsAndRefuses) {
  const ModelConfig c = config(kWithMla);
  EXPECT_EQ(c.layers[0].method, "mla:c=8,r=4");
  EXPECT_EQ(config_to_json(parse_config(config_to_json(c))), config_to_json(c));
  EXPECT_EQ(parse_method("mla:r=4,c=8").to_string(), "mla:c=8,r=4");
  const MlaConfig mla = layer_mla_config(c, 0);
  EXPECT_EQ(mla.heads, 4);
  EXPECT_EQ(mla.d_c, 8);
  EXPECT_EQ(mla.d_r, 4);
  EXPECT_EQ(mla.d_nope, 4);  // head_dim
  EXPECT_EQ(mla.d_v, 4);
  EXPECT_THROW(layer_mla_config(c, 1), Error);  // a softmax layer
  const auto expect_error = [](const std::string& layer, const std::string& field, const std::string& why) {
    const std::string e = error_of(layer);
    EXPECT_NE(e.find(field), std::string::npos) << layer << ": " << e;
    EXPECT_NE(e.find(why), std::string::npos) << e;
  };
  expect_error(R"("method": "mla")", "config.layers[0].method", "needs its sizes");
  expect_error(R"("method": "mla:c=8")", "config.layers[0].method", "missing 'r='");
  expect_error(R"("method": "mla:r=4")", "config.layers[0].method", "missing 'c='");
  expect_error(R"("method": "mla:c=8,r=3")", "config.layers[0].method", "r (3) must be even");
  expect_error(R"("method": "mla:c=0,r=4")", "config.layers[0].method", "c ('0') must be an integer in [1, 1024]");
  expect_error(R"("method": "mla:c=8,r=4,c=2")", "config.layers[0].method", "given twice");
  expect_error(R"("method": "mla:c=8,r=4,k=2")", "config.layers[0].method", "unknown key 'k'");
  expect_error(R"("method": "mla:c=1020,r=6")", "config.layers[0].method", "c + r (1020 + 6)");
  expect_error(R"("heads": "gqa:2", "method": "mla:c=8,r=4")", "config.layers[0].heads", "must be mha");
  expect_error(R"("pattern": "window:4,0", "method": "mla:c=8,r=4")", "config.layers[0].pattern", "must be \"causal\"");
}

TEST(MlaLayers, PrefillAndDecodeEqualTheTrainingForward) {
  // The MLA layer's absorbed decode over its latent cache against the training forward's
  // naive form, beside a softmax and a linear layer.
  Model m(config(kWithMla));
  m.init_weights();
  for (float& w : m.weights) w *= 6.0f;
  const std::vector<int32_t> tokens = {1, 5, 9, 2, 3, 7, 0, 12, 3, 8, 8, 11, 4, 10, 6, 2};
  expect_decode_equals_training_forward(m, tokens, 5);
  const std::vector<float> last = decode_last(m, parse_cache("contiguous", "f32"), tokens, 5);
  // A bf16 latent cache rounds every stored row: close to the f32 cache's logits, not equal.
  const std::vector<float> bf16 = decode_last(m, parse_cache("contiguous", "bf16"), tokens, 5);
  double worst = 0;
  for (size_t j = 0; j < last.size(); ++j) worst = std::max(worst, std::abs(double(bf16[j]) - last[j]) / (1 + std::abs(last[j])));
  EXPECT_GT(worst, 0.0);
  EXPECT_LE(worst, 0.1);
}

TEST(MlaLayers, LatentBytesPerTokenAndAllocationEqualTheFormula) {
  const Model m(config(kWithMla));
  for (const auto& [dtype, element] : {std::pair<const char*, int64_t>{"f32", 4}, {"bf16", 2}}) {
    KvCacheConfig cache = parse_cache("contiguous", dtype);
    cache.max_tokens = 40;  // allocated once at the context, as eval does
    Generator g(m, cache);
    const std::vector<int32_t> prompt(6, 1);
    g.feed(prompt);
    for (int i = 0; i < 20; ++i) g.feed(std::span<const int32_t>(&prompt[0], 1));
    EXPECT_TRUE(g.memory().is_latent(0));
    EXPECT_FALSE(g.memory().is_latent(1));
    // The latent layer holds d_c + d_r = 12 values for each of its 40 slots.
    EXPECT_EQ(g.memory().layer_bytes(0), 40 * 12 * element) << dtype;
    EXPECT_EQ(g.memory().layer_bytes(0), latent_cache_bytes(layer_latent_config(m.config(), cache, 0), 40)) << dtype;
    EXPECT_EQ(g.kv_bytes(), kv_bytes_formula(m.config(), cache, 40)) << dtype;
    // Per token: the latent row, plus the gqa:2 layer's K and V (2 x 2 heads x 4), the
    // linear layer nothing.
    EXPECT_EQ(kv_bytes_per_token(m.config(), cache), static_cast<double>((12 + 2 * 2 * 4) * element)) << dtype;
  }
  // An all-MLA model: (d_c + d_r) x element size per token per layer.
  const ModelConfig all = config(R"("method": "mla:c=10,r=6")", 2);
  EXPECT_EQ(kv_bytes_per_token(all, parse_cache("contiguous", "f32")), 2.0 * 16 * 4);
  EXPECT_EQ(kv_bytes_per_token(all, parse_cache("contiguous", "bf16")), 2.0 * 16 * 2);
}

TEST(MlaLayers, LayoutsAndStoragesALatentCacheLacksAreRefused) {
  const Model m(config(kWithMla));
  const auto message = [&](const char* cache, const char* dtype) {
    try {
      Generator g(m, parse_cache(cache, dtype));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("paged:16", "f32").find("--cache: layer 0 is MLA"), std::string::npos);
  EXPECT_NE(message("rolling:w=8", "f32").find("contiguous only"), std::string::npos);
  for (const char* dtype : {"f16", "int8", "int4"})
    EXPECT_NE(message("contiguous", dtype).find("--kv-dtype"), std::string::npos) << dtype;
}

TEST(MlaLayers, CheckpointsRoundTrip) {
  const auto dir = std::filesystem::temp_directory_path() / "attnkit_mla_layers_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "mla.safetensors").string();
  TrainState st{Model(config(kWithMla)), {}, 0};
  st.model.init_weights();
  save_checkpoint(path, st, TrainConfig{});
  const TrainState back = load_checkpoint(path, nullptr);
  EXPECT_EQ(back.model.config().layers[0].method, "mla:c=8,r=4");
  EXPECT_EQ(back.model.weights, st.model.weights);
  bool named = false;
  for (const ParamRef& p : back.model.params()) named = named || p.name == "layers.0.w_dkv";
  EXPECT_TRUE(named);
  std::filesystem::remove_all(dir);
}

TEST(MethodLayers, LayerMemoryRefusesAmbiguousSpecs) {
  LayerMemorySpec both;
  both.tokens = KvCacheConfig{};
  both.state = LinearMethod{};
  EXPECT_THROW(LayerMemory({both}), Error);
  LayerMemorySpec latent_and_tokens;
  latent_and_tokens.tokens = KvCacheConfig{};
  latent_and_tokens.latent = MlaCacheConfig{};
  EXPECT_THROW(LayerMemory({latent_and_tokens}), Error);
  EXPECT_THROW(LayerMemory({LayerMemorySpec{}}), Error);
  KvCacheConfig kv;
  kv.head_dim = 4;
  LayerMemorySpec tokens;
  tokens.tokens = kv;
  LayerMemory mem({tokens});
  EXPECT_THROW(mem.state(0), Error);
  EXPECT_THROW(mem.latent(0), Error);
  EXPECT_THROW(mem.cache(1), Error);
}

}  // namespace
}  // namespace attnkit::model
