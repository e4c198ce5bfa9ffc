// Tests for the score-modifier type shared by every kernel (variant.hpp): identity
// defaults, the definition of apply(), its derivative against central differences, and
// validation messages that name the field.
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "attnkit/attention.hpp"
#include "attnkit/decode.hpp"
#include "attnkit/error.hpp"
#include "attnkit/variant.hpp"

namespace attnkit {
namespace {

TEST(Variant, DefaultsAreTheIdentityAndTheStandardScale) {
  const Variant v;
  EXPECT_FALSE(v.has_mods());
  EXPECT_DOUBLE_EQ(v.softmax_scale(64), 0.125);
  for (double s : {-3.0, 0.0, 1e9}) EXPECT_EQ(v.apply(s, 0, 10, 3), s);
  EXPECT_EQ(v.derivative(2.0, 0, 10, 3), 1.0);
  // AttendOptions and DecodeOptions are the same variant with the same defaults.
  const AttendOptions a;
  const DecodeOptions d;
  EXPECT_TRUE(std::isnan(a.scale) && std::isnan(d.scale));
  EXPECT_EQ(a.softcap, d.softcap);
  EXPECT_EQ(a.alibi_slopes, d.alibi_slopes);
}

TEST(Variant, ApplyIsSoftcapThenAlibi) {
  Variant v;
  v.softcap = 5;
  v.alibi_slopes = {0.5, 0.25};
  const double s = 7.0;
  EXPECT_DOUBLE_EQ(v.apply(s, 1, 10, 4), 5 * std::tanh(7.0 / 5) - 0.25 * 6);
  EXPECT_DOUBLE_EQ(v.apply(s, 0, 4, 10), 5 * std::tanh(7.0 / 5) - 0.5 * 6);  // |p - j|
}

TEST(Variant, DerivativeMatchesCentralDifferences) {
  for (double cap : {0.0, 3.0, 30.0})
    for (bool alibi : {false, true}) {
      Variant v;
      v.softcap = cap;
      if (alibi) v.alibi_slopes = {0.7};
      for (double s : {-8.0, -1.0, 0.0, 0.4, 2.5, 9.0}) {
        const double h = 1e-5;
        const double fd = (v.apply(s + h, 0, 9, 2) - v.apply(s - h, 0, 9, 2)) / (2 * h);
        EXPECT_NEAR(v.derivative(v.apply(s, 0, 9, 2), 0, 9, 2), fd, 1e-8) << "cap " << cap << " s " << s;
      }
    }
}

void expect_error_naming(const Variant& v, int64_t heads, const std::string& field) {
  try {
    v.validate(heads);
    FAIL() << "accepted a bad " << field;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

TEST(Variant, ValidationNamesTheField) {
  Variant v;
  v.scale = INFINITY;
  expect_error_naming(v, 1, "scale");
  v = {};
  v.softcap = -1;
  expect_error_naming(v, 1, "softcap");
  v = {};
  v.alibi_slopes = {1, 2};
  expect_error_naming(v, 3, "alibi_slopes");
  v.alibi_slopes = {1, NAN, 3};
  expect_error_naming(v, 3, "alibi slope");
  v = {};
  v.scale = -0.5;  // finite: used as given
  EXPECT_NO_THROW(v.validate(4));
}

}  // namespace
}  // namespace attnkit
