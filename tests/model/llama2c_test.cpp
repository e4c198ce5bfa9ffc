// llama2.c checkpoints: export -> import is exact and decodes the same greedy tokens;
// hostile files (truncated, padded, absurd or inconsistent headers) are errors naming the
// file and the field, never a crash or a huge allocation.
#include "model/llama2c.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include "attnkit/error.hpp"
#include "model/generate.hpp"

namespace attnkit::model {
namespace {

Model small(bool tied) {
  Model m(parse_config(std::string(R"({"dim": 32, "hidden_dim": 40, "n_layers": 2, "n_heads": 4, "vocab": 50,
      "context": 24, "heads": "gqa:2", "seed": 4, "tied_head": )") + (tied ? "true" : "false") + "}"));
  m.init_weights();
  for (float& w : m.weights) w *= 10.0f;
  return m;
}

std::vector<int32_t> greedy(const Model& m) {
  Generator g(m, parse_cache("contiguous", "f32"));
  const int32_t bos = 1;
  std::vector<float> logits = g.feed(std::span<const int32_t>(&bos, 1));
  std::vector<int32_t> ids;
  std::mt19937_64 rng(0);
  for (int i = 0; i < 20; ++i) {
    const int32_t next = sample(logits, {0.0, 0, 1.0}, rng);
    ids.push_back(next);
    if (i < 19) logits = g.feed(std::span<const int32_t>(&next, 1));
  }
  return ids;
}

std::string error_of(std::string_view bytes) {
  try {
    parse_llama2c(bytes, "m.bin");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Llama2c, ExportImportIsExact) {
  for (bool tied : {true, false}) {
    const Model m = small(tied);
    const std::string bytes = llama2c_bytes(m);
    int32_t header[7];
    std::memcpy(header, bytes.data(), sizeof header);
    EXPECT_EQ(header[4], 2);                 // n_kv_heads
    EXPECT_EQ(header[5], tied ? 50 : -50);   // negative: an unshared classifier
    const Model back = parse_llama2c(bytes, "m.bin");
    EXPECT_EQ(back.weights, m.weights);
    EXPECT_EQ(greedy(back), greedy(m));
  }
}

TEST(Llama2c, HostileFilesAreErrors) {
  const std::string good = llama2c_bytes(small(true));
  EXPECT_NE(error_of(good.substr(0, 10)).find("too short"), std::string::npos);
  EXPECT_NE(error_of(good.substr(0, good.size() - 4)).find("implies"), std::string::npos);
  EXPECT_NE(error_of(good + "xxxx").find("implies"), std::string::npos);
  auto with = [&](int field, int32_t value) {
    std::string b = good;
    std::memcpy(b.data() + 4 * field, &value, 4);
    return error_of(b);
  };
  EXPECT_NE(with(0, 0).find("dim"), std::string::npos);
  EXPECT_NE(with(0, INT32_MAX).find("dim"), std::string::npos);
  EXPECT_NE(with(2, -3).find("n_layers"), std::string::npos);
  EXPECT_NE(with(4, 3).find("n_kv_heads"), std::string::npos);
  EXPECT_NE(with(3, 5).find("n_heads"), std::string::npos);
  EXPECT_NE(with(5, INT32_MIN).find("vocab_size"), std::string::npos);
  EXPECT_NE(with(6, 1 << 24).find("implies"), std::string::npos);  // large, but the file is small
  // A model the format cannot express is refused on export.
  Model mixed(parse_config(R"({"dim": 8, "hidden_dim": 8, "n_layers": 2, "n_heads": 2, "vocab": 5, "context": 8,
      "layers": [{"heads": "mqa"}, {"heads": "mha"}]})"));
  EXPECT_THROW(llama2c_bytes(mixed), Error);
}

}  // namespace
}  // namespace attnkit::model
