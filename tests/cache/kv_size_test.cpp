// Tests for KV-cache byte accounting (src/cache/kv_size.cpp) against hand-computed figures,
// and for the `attnkit kv-size` command run as a user would run it.
#include "attnkit/kv_size.hpp"

#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "attnkit/error.hpp"
#include "cli_runner.hpp"

namespace attnkit {
namespace {

constexpr int64_t KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024;

KvConfig shape(int64_t layers, int64_t q_heads, int64_t kv_heads, int64_t head_dim, int64_t context,
               KvStorage storage = KvStorage::f16) {
  KvConfig c;
  c.name = "test";
  c.layers = layers;
  c.q_heads = q_heads;
  c.kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.context = context;
  c.storage = storage;
  return c;
}

// The issue's figures: L=32, h=32, d=128, n=4096, fp16, batch 1.
TEST(KvSize, IssueFiguresForMhaGqaMqa) {
  EXPECT_EQ(kv_total_bytes(shape(32, 32, 32, 128, 4096)), int64_t{2} * 32 * 32 * 128 * 4096 * 2);
  EXPECT_EQ(kv_total_bytes(shape(32, 32, 32, 128, 4096)), 2 * GiB);
  EXPECT_EQ(kv_total_bytes(shape(32, 32, 8, 128, 4096)), 512 * MiB);
  EXPECT_EQ(kv_total_bytes(shape(32, 32, 4, 128, 4096)), 256 * MiB);  // "GQA-4": 4 KV heads
  EXPECT_EQ(kv_total_bytes(shape(32, 32, 1, 128, 4096)), 64 * MiB);
  KvConfig batched = shape(32, 32, 32, 128, 4096);
  batched.batch = 3;
  EXPECT_EQ(kv_total_bytes(batched), 6 * GiB);
  EXPECT_EQ(kv_bytes_per_token_per_layer(shape(32, 32, 32, 128, 4096)), 2 * 32 * 128 * 2);
}

TEST(KvSize, CompareRowsReproduceTheIssueTable) {
  const auto rows = kv_compare(shape(32, 32, 32, 128, 4096));
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows[0].label, "MHA");
  EXPECT_EQ(rows[0].size.all.total(), 2 * GiB);
  EXPECT_TRUE(rows[0].matches_input);
  EXPECT_EQ(rows[1].label, "GQA kv=8 (g=4)");
  EXPECT_EQ(rows[1].size.all.total(), 512 * MiB);
  EXPECT_EQ(rows[2].label, "GQA kv=4 (g=8)");
  EXPECT_EQ(rows[2].size.all.total(), 256 * MiB);
  EXPECT_DOUBLE_EQ(rows[2].ratio_vs_mha, 0.125);
  EXPECT_EQ(rows[3].label, "MQA");
  EXPECT_EQ(rows[3].size.all.total(), 64 * MiB);
  EXPECT_EQ(rows[4].label, "MLA 512+64");
  EXPECT_EQ(rows[4].size.all.total(), int64_t{32} * 576 * 2 * 4096);
  EXPECT_EQ(rows[5].label, "SWA W=4096 kv=32");
  EXPECT_EQ(rows[5].size.all.total(), 2 * GiB);  // context == window: nothing dropped
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_FALSE(rows[i].matches_input) << rows[i].label;
}

TEST(KvSize, CompareMarksTheInputLayout) {
  const auto rows = kv_compare(kv_preset("llama3-8b"));
  int matches = 0;
  for (const auto& r : rows) {
    matches += r.matches_input;
    if (r.matches_input) {
      EXPECT_EQ(r.label, "GQA kv=8 (g=4)");
    }
  }
  EXPECT_EQ(matches, 1);
  // A prime head count has no GQA rows.
  const auto falcon = kv_compare(kv_preset("falcon-7b"));
  ASSERT_EQ(falcon.size(), 4u);
  EXPECT_EQ(falcon[1].label, "MQA");
  EXPECT_TRUE(falcon[1].matches_input);
  const auto mistral = kv_compare(kv_preset("mistral-7b"));
  EXPECT_EQ(mistral.back().label, "SWA W=4096 kv=8");
  EXPECT_TRUE(mistral.back().matches_input);
  EXPECT_EQ(mistral.back().size.tokens_held, 4096);
}

TEST(KvSize, Presets) {
  EXPECT_EQ(kv_total_bytes(kv_preset("llama2-7b")), 2 * GiB);
  EXPECT_EQ(kv_total_bytes(kv_preset("llama2-70b")), 5 * GiB / 4);  // 2*80*8*128*4096*2
  EXPECT_EQ(kv_total_bytes(kv_preset("llama2-13b")), int64_t{2} * 40 * 40 * 128 * 4096 * 2);
  EXPECT_EQ(kv_total_bytes(kv_preset("llama3-8b")), 1 * GiB);
  EXPECT_EQ(kv_total_bytes(kv_preset("llama3-70b")), 5 * GiB / 2);

  const KvConfig ds = kv_preset("deepseek-v2");
  const KvSize s = kv_size(ds);
  EXPECT_EQ(s.bytes_per_token_per_layer * 60, 60 * 576 * 2);
  EXPECT_EQ(s.all.total(), int64_t{60} * 576 * 2 * 131072);
  EXPECT_EQ(s.all.v, 0);  // MLA caches no V
  // Its MHA form: 128 heads x (192 K + 128 V) per token per layer.
  EXPECT_EQ(kv_compare(ds).front().bytes_per_token, 60.0 * 128 * (192 + 128) * 2);

  EXPECT_EQ(kv_size(kv_preset("mistral-7b")).tokens_held, 4096);
  EXPECT_EQ(kv_total_bytes(kv_preset("mistral-7b")), int64_t{2} * 32 * 8 * 128 * 4096 * 2);
  EXPECT_EQ(kv_bytes_per_token_per_layer(kv_preset("falcon-7b")), 2 * 1 * 64 * 2);

  for (const KvPreset& p : kv_presets()) {
    EXPECT_NO_THROW(p.config.validate()) << p.config.name;
    EXPECT_FALSE(p.source.empty()) << p.config.name;
  }
  try {
    kv_preset("gpt-5");
    FAIL() << "unknown preset accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown preset 'gpt-5'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("llama2-70b"), std::string::npos) << e.what();
  }
}

TEST(KvSize, RollingWindowCapsTokens) {
  KvConfig c = shape(2, 4, 2, 8, 1000);
  c.window = 100;
  EXPECT_EQ(c.tokens_held(), 100);
  c.sinks = 4;
  EXPECT_EQ(c.tokens_held(), 104);
  EXPECT_EQ(kv_total_bytes(c), int64_t{2} * 104 * 2 * 2 * 8 * 2);
  c.context = 50;
  EXPECT_EQ(c.tokens_held(), 50);  // a window longer than the context changes nothing
}

TEST(KvSize, Int8AddsOneF16ScalePerTokenPerHead) {
  // 3 tokens, 2 KV heads of 4 dims: K = V = 3*2*4 codes, scales = 3 tokens * (2 + 2) heads * 2 B.
  const KvBytes b = kv_layer_bytes(shape(1, 2, 2, 4, 3, KvStorage::int8), 3);
  EXPECT_EQ(b.k, 24);
  EXPECT_EQ(b.v, 24);
  EXPECT_EQ(b.overhead, 24);
  EXPECT_EQ(kv_bytes_per_token_per_layer(kv_preset("llama2-7b")), 2 * 32 * 128 * 2.0);
  KvConfig i8 = kv_preset("llama2-7b");
  i8.storage = KvStorage::int8;
  EXPECT_EQ(kv_bytes_per_token_per_layer(i8), 2 * 32 * 128 + 2 * 32 * 2);
  const KvSize s = kv_size(i8);
  EXPECT_EQ(s.quantized_tokens, 4096);
  EXPECT_EQ(s.all.overhead, int64_t{32} * 4096 * 64 * 2);
}

TEST(KvSize, Int4KiviLayout) {
  // 1 KV head, d = 4, G = 2, R = 3, 8 tokens: Q = 2*floor((8-3)/2) = 4 quantized, F = 4 f16.
  KvConfig c = shape(1, 1, 1, 4, 8, KvStorage::int4);
  c.group = 2;
  c.residual = 3;
  const KvSize s = kv_size(c);
  EXPECT_EQ(s.quantized_tokens, 4);
  EXPECT_EQ(s.residual_tokens, 4);
  EXPECT_EQ(s.per_layer.k, 4 * 4 / 2 + 4 * 4 * 2);  // codes + f16 residual
  EXPECT_EQ(s.per_layer.v, 4 * 4 / 2 + 4 * 4 * 2);
  // K: (4/2) groups x 4 channels; V: 4 tokens x ceil(4/2) channel groups; 4 B each.
  EXPECT_EQ(s.per_layer.overhead, (2 * 4 + 4 * 2) * 4);
  // Fewer tokens than the residual: all f16, no scales.
  const KvBytes few = kv_layer_bytes(c, 2);
  EXPECT_EQ(few.k, 2 * 4 * 2);
  EXPECT_EQ(few.overhead, 0);
  // 4 tokens beyond R = 0 with G = 2: nothing left in f16.
  c.residual = 0;
  EXPECT_EQ(kv_size(c).residual_tokens, 0);
  // The last V channel group may be short: d_v = 6, G = 4 gives ceil(6/4) = 2 groups per token.
  KvConfig uneven = shape(1, 1, 1, 4, 4, KvStorage::int4);
  uneven.v_head_dim = 6;
  uneven.group = 4;
  uneven.residual = 0;
  const KvBytes u = kv_layer_bytes(uneven, 4);
  EXPECT_EQ(u.k, 4 * 4 / 2);
  EXPECT_EQ(u.v, 4 * 6 / 2);
  EXPECT_EQ(u.overhead, 1 * 4 * 4 + 4 * 2 * 4);
  // Steady state for llama2-7b, G = 32: per head K 64 + 128*4/32, V 64 + 4*4 bytes per token.
  KvConfig l = kv_preset("llama2-7b");
  l.storage = KvStorage::int4;
  EXPECT_EQ(kv_bytes_per_token_per_layer(l), 32 * (64 + 16 + 64 + 16));
  // A fractional amortised rate: G = 6 gives 4*d/6 bytes of K scales per token, and one
  // (short) value group per token.
  KvConfig frac = shape(1, 1, 1, 4, 8, KvStorage::int4);
  frac.group = 6;
  EXPECT_DOUBLE_EQ(kv_bytes_per_token_per_layer(frac), 2 + 16.0 / 6 + 2 + 1 * 4);
  // Odd groups cannot pair their channel codes into bytes (kv_quant.hpp's layout).
  frac.group = 3;
  EXPECT_THROW(frac.validate(), Error);
}

TEST(KvSize, MlaInt4TreatsTheLatentAsK) {
  KvConfig c = shape(1, 4, 4, 8, 4, KvStorage::int4);
  c.mla_latent = 6;
  c.mla_rope = 2;
  c.group = 4;
  c.residual = 0;
  const KvBytes b = kv_layer_bytes(c, 4);
  EXPECT_EQ(b.k, 4 * 8 / 2);
  EXPECT_EQ(b.v, 0);
  EXPECT_EQ(b.overhead, 1 * 8 * 4);  // one group of 4 tokens x 8 channels
}

void expect_error(const KvConfig& c, const std::string& needle) {
  try {
    kv_size(c);
    FAIL() << "accepted, expected: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(KvSize, BadArgumentsNameTheArgument) {
  expect_error(shape(0, 32, 32, 128, 4096), "layers (0) must be in [1, ");
  expect_error(shape(32, 32, 5, 128, 4096), "q_heads (32) must be a multiple of kv_heads (5)");
  expect_error(shape(32, 32, 64, 128, 4096), "kv_heads (64) must be in [1, 32]");
  expect_error(shape(32, 32, 32, -1, 4096), "head_dim (-1)");
  expect_error(shape(32, 32, 32, 128, 0), "context (0)");
  KvConfig c = shape(32, 32, 32, 128, 4096);
  c.batch = 0;
  expect_error(c, "batch (0)");
  c = shape(32, 32, 32, 128, 4096);
  c.sinks = 4;
  expect_error(c, "sinks (4) need a window");
  c.window = 0;
  expect_error(c, "window (0)");
  c = shape(32, 32, 32, 128, 4096);
  c.mla_rope = 64;
  expect_error(c, "mla_rope (64) needs mla_latent");
  c.mla_latent = 1000;
  expect_error(c, "mla_latent + mla_rope (1000 + 64) exceeds");
  expect_error(shape(1, 1, 1, 5, 8, KvStorage::int4), "head_dim (5) must be even for int4");
  c = shape(1, 1, 1, 4, 8, KvStorage::int4);
  c.group = 0;
  expect_error(c, "group (0)");
  EXPECT_THROW(parse_kv_storage("fp8"), Error);
  EXPECT_EQ(parse_kv_storage("int4"), KvStorage::int4);
  EXPECT_THROW(kv_layer_bytes(shape(1, 1, 1, 4, 8), -1), Error);
}

TEST(KvSize, OverflowIsAnErrorNotAWrap) {
  // Each field within its limit, the product far beyond int64.
  KvConfig c = shape(kMaxKvLayers, kMaxKvHeads, kMaxKvHeads, 1024, int64_t{1} << 31, KvStorage::f32);
  c.batch = kMaxKvBatch;
  expect_error(c, "overflows int64");
  // Per layer fits (2^31 tokens * 2^10 heads * 2^10 dims * 2 * 4 B = 2^54), the total does not.
  c = shape(kMaxKvLayers, 1024, 1024, 1024, int64_t{1} << 31, KvStorage::f32);
  expect_error(c, "when multiplied by layers (65536)");
  c.layers = 1;
  c.batch = kMaxKvBatch;
  expect_error(c, "when multiplied by batch (1073741824)");
}

TEST(KvSize, FormatsBinaryUnits) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(static_cast<double>(2 * GiB)), "2.00 GiB");
  EXPECT_EQ(format_bytes(static_cast<double>(5 * GiB / 4)), "1.25 GiB");
}

// --- the CLI, run as a process ---

using testing::run_cli;

TEST(KvSizeCli, BadArgumentsExitTwoWithTheReason) {
  auto r = run_cli("kv-size --preset nope");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown preset 'nope'; available: llama2-7b"), std::string::npos) << r.output;

  r = run_cli("kv-size --layers 0 --heads 32 --head-dim 128");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("layers (0) must be in"), std::string::npos) << r.output;

  r = run_cli("kv-size --layers 32 --head-dim 128");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--heads is required"), std::string::npos) << r.output;

  r = run_cli("kv-size --preset llama2-7b --group 16");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--group applies to --dtype int4 only"), std::string::npos) << r.output;

  r = run_cli("kv-size --preset llama2-7b --dtype fp8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("dtype 'fp8'"), std::string::npos) << r.output;

  r = run_cli("kv-size --preset llama2-7b --context many");
  EXPECT_EQ(r.exit_code, 2);

  r = run_cli("kv-size --preset llama2-70b --batch 1073741824 --context 2147483648 --dtype f32");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("overflows int64"), std::string::npos) << r.output;
}

TEST(KvSizeCli, HumanTableShowsExactBytesAndUnits) {
  const auto r = run_cli("kv-size --preset llama2-7b");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2147483648"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("2.00 GiB"), std::string::npos) << r.output;
  const auto cmp = run_cli("kv-size --preset llama3-8b --compare");
  ASSERT_EQ(cmp.exit_code, 0) << cmp.output;
  for (const char* label : {"MHA", "GQA kv=8 (g=4)", "MQA", "MLA 512+64", "SWA W=4096 kv=8"})
    EXPECT_NE(cmp.output.find(label), std::string::npos) << label << "\n" << cmp.output;
  EXPECT_NE(cmp.output.find("* GQA kv=8 (g=4)"), std::string::npos) << cmp.output;
}

TEST(KvSizeCli, JsonMatchesTheLibraryWithOverrides) {
  const auto r = run_cli("kv-size --preset llama2-7b --context 32768 --dtype int8 --batch 2 --json --compare", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  KvConfig c = kv_preset("llama2-7b");
  c.context = 32768;
  c.storage = KvStorage::int8;
  c.batch = 2;
  const KvSize s = kv_size(c);
  EXPECT_EQ(j["config"]["context"], 32768);
  EXPECT_EQ(j["config"]["dtype"], "int8");
  EXPECT_EQ(j["tokens_held"].get<int64_t>(), s.tokens_held);
  EXPECT_EQ(j["total"]["total"].get<int64_t>(), s.all.total());
  EXPECT_EQ(j["total"]["k"].get<int64_t>(), s.all.k);
  EXPECT_EQ(j["total"]["overhead"].get<int64_t>(), s.all.overhead);
  EXPECT_EQ(j["per_layer"]["total"].get<int64_t>(), s.per_layer.total());
  EXPECT_EQ(j["bytes_per_token_per_layer"].get<int64_t>(), 8320);
  const auto rows = kv_compare(c);
  ASSERT_EQ(j["compare"].size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(j["compare"][i]["label"], rows[i].label);
    EXPECT_EQ(j["compare"][i]["total_bytes"].get<int64_t>(), rows[i].size.all.total());
    EXPECT_EQ(j["compare"][i]["matches_input"].get<bool>(), rows[i].matches_input);
  }
}

TEST(KvSizeCli, CustomShapeWindowAndMla) {
  auto r = run_cli("kv-size --layers 32 --heads 32 --kv-heads 4 --head-dim 128 --json", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["total"]["total"].get<int64_t>(), 256 * MiB);

  r = run_cli("kv-size --preset mistral-7b --window 0 --json", false);  // window off
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["tokens_held"].get<int64_t>(), 32768);

  r = run_cli("kv-size --preset llama3-8b --mla-latent 512 --mla-rope 64 --json", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["bytes_per_token"].get<int64_t>(), 32 * 576 * 2);

  r = run_cli("kv-size --list-presets --json", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output).size(), kv_presets().size());
}

}  // namespace
}  // namespace attnkit
