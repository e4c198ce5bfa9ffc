// Tests for the sliding-window receptive field (src/core/receptive_field.cpp) and the
// `attnkit receptive-field` command.
#include "attnkit/receptive_field.hpp"

#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "attnkit/error.hpp"
#include "cli_runner.hpp"

namespace attnkit {
namespace {

TEST(ReceptiveField, MistralStack) {
  // 32 layers of W = 4096: each layer adds 4095 tokens of reach.
  const ReceptiveField rf = receptive_field(32, 4096);
  EXPECT_EQ(rf.reach(1), 4095);
  EXPECT_EQ(rf.reach(2), 8190);
  EXPECT_EQ(rf.reach(32), 32 * 4095);
  EXPECT_EQ(rf.span(), 131041);
  EXPECT_EQ(rf.reachable_tokens(), rf.span());
}

TEST(ReceptiveField, SmallCasesByHand) {
  // W = 1 sees only itself, at any depth.
  EXPECT_EQ(receptive_field(5, 1).span(), 1);
  // W = 3, 2 layers: i sees i-2..i, which saw down to i-4.
  EXPECT_EQ(receptive_field(2, 3).span(), 5);
  // Dilation 2: keys i, i-2, i-4 per layer; 4 layers reach 16 back through 9 tokens.
  const ReceptiveField d = receptive_field(4, 3, 2);
  EXPECT_EQ(d.reach_per_layer(), 4);
  EXPECT_EQ(d.span(), 17);
  EXPECT_EQ(d.reachable_tokens(), 9);
}

TEST(ReceptiveField, BadArgumentsAndOverflow) {
  EXPECT_THROW(receptive_field(0, 4096), Error);
  EXPECT_THROW(receptive_field(32, 0), Error);
  EXPECT_THROW(receptive_field(32, 4096, 0), Error);
  try {
    receptive_field(65536, int64_t{1} << 31, int64_t{1} << 31);
    FAIL() << "overflow accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("overflows int64"), std::string::npos) << e.what();
  }
}

TEST(ReceptiveFieldCli, JsonAndErrors) {
  auto r = testing::run_cli("receptive-field --layers 32 --window 4096 --json", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["span"].get<int64_t>(), 131041);
  ASSERT_EQ(j["reach"].size(), 32u);
  EXPECT_EQ(j["reach"][31].get<int64_t>(), 131040);

  r = testing::run_cli("receptive-field --layers 32 --window 4096");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("131041"), std::string::npos) << r.output;

  r = testing::run_cli("receptive-field --layers 32 --window 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("window (0) must be in"), std::string::npos) << r.output;
  EXPECT_EQ(testing::run_cli("receptive-field --window 16").exit_code, 2);  // --layers is required
}

}  // namespace
}  // namespace attnkit
