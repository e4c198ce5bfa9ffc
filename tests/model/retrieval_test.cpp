// The pass-key task: samples are pure functions of the seed, exactly the length asked, with
// the key hidden at the depth asked and repeated as the answer at the end; training mixes
// them in at the stated fraction.
#include "model/retrieval.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "attnkit/error.hpp"

namespace attnkit::model {
namespace {

const char* kFiller =
    "The jury said it did find that many of the voters were registered.\n\n"
    "It recommended that the law be amended.\nThe grand jury took a swipe at the hospital.\n"
    "Only a few of the problems were discussed.\n";

TEST(Passkey, SampleIsExactAndSeeded) {
  const PasskeyTask task(kFiller);
  for (const int64_t length : {PasskeyTask::min_length(), int64_t{300}, int64_t{2000}}) {
    for (const double depth : {0.0, 0.25, 0.5, 1.0}) {
      const PasskeySample s = task.make(42, length, depth);
      ASSERT_EQ(static_cast<int64_t>(s.text.size()), length);
      ASSERT_EQ(s.key.size(), 5u);
      EXPECT_EQ(s.text.compare(static_cast<size_t>(s.needle_offset), 20, "The pass key is " + s.key.substr(0, 4)), 0);
      EXPECT_EQ(s.text.substr(static_cast<size_t>(s.answer_offset), 5), s.key);
      EXPECT_EQ(s.text.substr(s.text.size() - 45, 22), "What is the pass key? ");
      // The needle sits at a sentence boundary within one sentence of the depth.
      const double filler = static_cast<double>(length - PasskeyTask::min_length());
      EXPECT_LE(std::abs(static_cast<double>(s.needle_offset) - depth * filler), 80.0) << length << " " << depth;
      EXPECT_EQ(task.make(42, length, depth).text, s.text);
    }
  }
  EXPECT_NE(task.make(1, 500).key + task.make(2, 500).key + task.make(3, 500).key,
            task.make(1, 500).key + task.make(1, 500).key + task.make(1, 500).key);
  EXPECT_THROW(task.make(1, PasskeyTask::min_length() - 1, 0.5), Error);
  EXPECT_THROW(task.make(1, 500, 1.5), Error);
  EXPECT_THROW(task.make(1, 500, std::nan("")), Error);
  EXPECT_THROW(PasskeyTask("\n\n"), Error);
}

TEST(Passkey, KeysAreUniformOverFiveDigits) {
  const PasskeyTask task(kFiller);
  int64_t first_digit[10] = {};
  for (uint64_t seed = 0; seed < 2000; ++seed) ++first_digit[task.make(seed, 200).key[0] - '0'];
  for (const int64_t n : first_digit) EXPECT_GT(n, 120);  // 200 expected per digit
}

}  // namespace
}  // namespace attnkit::model
