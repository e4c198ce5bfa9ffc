// The synthetic pass-key retrieval task: a random 5-digit key hidden at a chosen depth inside
// filler (consecutive Brown sentences from a random place), then the question and the key:
//   <filler> The pass key is 48213. Remember it. 48213 is the pass key. <filler>
//   What is the pass key? The pass key is 48213.
// Everything is drawn from a seed, so a sample is a pure function of (filler, seed, length,
// depth). Lengths are in bytes, which are tokens under the byte tokenizer. Not for:
// scoring a model on it (that is the evaluation's), other tokenizers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace attnkit::model {

struct PasskeySample {
  std::string text;            // exactly the requested length
  std::string key;             // 5 digits
  int64_t needle_offset = 0;   // where the hidden sentence starts in text
  int64_t answer_offset = 0;   // where the key's final copy (the answer) starts
};

class PasskeyTask {
 public:
  // `filler`: text whose lines are sentences (Brown's plain text); blank lines are skipped.
  // Throws Error when it holds no sentence.
  explicit PasskeyTask(std::string_view filler);

  // length: bytes of the sample, at least min_length(); depth in [0, 1]: where the hidden
  // sentence sits within the filler (0 = first, 1 = just before the question). Throws Error
  // naming the argument otherwise.
  PasskeySample make(uint64_t seed, int64_t length, double depth) const;
  // A sample at a depth drawn from the seed.
  PasskeySample make(uint64_t seed, int64_t length) const;
  static int64_t min_length();

 private:
  std::vector<std::string_view> sentences_;
};

}  // namespace attnkit::model
