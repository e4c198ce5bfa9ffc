// The umbrella header compiles on its own, before anything else, and its version macros
// agree with each other. (tests/install/check_umbrella.cmake checks it lists every public
// header; install_test.sh compiles it from an installed copy, without src/.)
#include "attnkit/attnkit.hpp"

#include <string>

#include <gtest/gtest.h>

namespace {

TEST(Umbrella, VersionMacrosAgree) {
  const std::string composed = std::to_string(ATTNKIT_VERSION_MAJOR) + "." + std::to_string(ATTNKIT_VERSION_MINOR) +
                               "." + std::to_string(ATTNKIT_VERSION_PATCH);
  EXPECT_EQ(composed, ATTNKIT_VERSION_STRING);
  EXPECT_EQ(ATTNKIT_VERSION, ATTNKIT_VERSION_MAJOR * 10000 + ATTNKIT_VERSION_MINOR * 100 + ATTNKIT_VERSION_PATCH);
  static_assert(ATTNKIT_VERSION_MINOR < 100 && ATTNKIT_VERSION_PATCH < 100, "ATTNKIT_VERSION packs two digits each");
}

TEST(Umbrella, DeclaresTheApi) {
  // A few names from different headers, used so that a missing declaration fails to compile.
  attnkit::AttendOptions opts;
  opts.pattern = attnkit::Pattern::causal();
  EXPECT_TRUE(opts.pattern.is_causal());
  EXPECT_EQ(attnkit::dtype_size(attnkit::DType::bf16), 2u);
}

}  // namespace
