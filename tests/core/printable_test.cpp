// Tests of printable() (attnkit/error.hpp): what error messages make of untrusted text.
// Control bytes never come through raw, valid UTF-8 does, and long input is cut.
#include <string>

#include <gtest/gtest.h>

#include "attnkit/error.hpp"

namespace attnkit {
namespace {

TEST(Printable, EscapesControlBytesAndKeepsText) {
  EXPECT_EQ(printable("causal"), "causal");
  EXPECT_EQ(printable("a\x1b[31mb"), "a\\x1b[31mb");
  EXPECT_EQ(printable(std::string("x\0y\n\t\x7f", 6)), "x\\x00y\\x0a\\x09\\x7f");
  EXPECT_EQ(printable("back\\slash"), "back\\\\slash");
  EXPECT_EQ(printable("caf\xc3\xa9"), "caf\xc3\xa9");                    // é, valid UTF-8
  EXPECT_EQ(printable("\xc2\x9b" "2J"), "\\xc2\\x9b2J");                  // U+009B, the C1 CSI
  EXPECT_EQ(printable("\xff\xc3"), "\\xff\\xc3");                         // not UTF-8
  EXPECT_EQ(printable("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");                // overlong
  EXPECT_EQ(printable("caf\xc3\xa9", 80, Printable::ascii), "caf\\xc3\\xa9");
  // An escaped message passes through the last check unchanged.
  EXPECT_EQ(printable("a\\x1b b", 80, Printable::message), "a\\x1b b");
}

TEST(Printable, CutsLongInputAtACharacterBoundary) {
  const std::string big(100000, 'x');
  const std::string shown = printable(big);
  EXPECT_EQ(shown, std::string(kMaxQuotedBytes, 'x') + "... (100000 bytes)");
  EXPECT_EQ(printable("abc\xc3\xa9", 4), "abc... (5 bytes)");  // é is not split
  EXPECT_EQ(printable(std::string(80, 'y')), std::string(80, 'y'));
}

}  // namespace
}  // namespace attnkit
