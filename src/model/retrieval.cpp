// The pass-key retrieval task (retrieval.hpp).
#include "model/retrieval.hpp"

#include <fmt/format.h>

#include <cmath>
#include <random>

#include "attnkit/error.hpp"

namespace attnkit::model {
namespace {

std::string needle(const std::string& key) { return fmt::format("The pass key is {0}. Remember it. {0} is the pass key. ", key); }
std::string question(const std::string& key) { return fmt::format("\nWhat is the pass key? The pass key is {}.\n", key); }

}  // namespace

PasskeyTask::PasskeyTask(std::string_view filler) {
  size_t start = 0;
  while (start < filler.size()) {
    size_t end = filler.find('\n', start);
    if (end == std::string_view::npos) end = filler.size();
    if (end > start) sentences_.push_back(filler.substr(start, end - start));
    start = end + 1;
  }
  check(!sentences_.empty(), [] { return std::string("passkey task: the filler text holds no sentence"); });
}

int64_t PasskeyTask::min_length() {
  return static_cast<int64_t>(needle("00000").size() + question("00000").size());
}

PasskeySample PasskeyTask::make(uint64_t seed, int64_t length, double depth) const {
  check(length >= min_length() && length <= (int64_t{1} << 30), [&] {
    return fmt::format("passkey task: length {} is outside [{}, 2^30] (the key's sentences and the question)", length,
                       min_length());
  });
  check(depth >= 0.0 && depth <= 1.0, [&] { return fmt::format("passkey task: depth {} is outside [0, 1]", depth); });
  std::mt19937_64 rng(seed);
  PasskeySample s;
  s.key = fmt::format("{:05d}", static_cast<int>(rng() % 100000));
  const std::string hidden = needle(s.key), ask = question(s.key);
  const size_t filler_bytes = static_cast<size_t>(length) - hidden.size() - ask.size();
  // Consecutive sentences from a random one on, wrapping around, cut at filler_bytes.
  std::string filler;
  std::vector<size_t> boundaries = {0};  // sentence starts within filler
  for (size_t i = static_cast<size_t>(rng() % sentences_.size()); filler.size() < filler_bytes; i = (i + 1) % sentences_.size()) {
    filler.append(sentences_[i]).push_back(' ');
    boundaries.push_back(filler.size());
  }
  filler.resize(filler_bytes);
  // The hidden sentence goes at the sentence boundary nearest the depth.
  const double target = depth * static_cast<double>(filler_bytes);
  size_t at = 0;
  for (const size_t b : boundaries)
    if (b <= filler_bytes && std::abs(static_cast<double>(b) - target) < std::abs(static_cast<double>(at) - target)) at = b;
  s.text = filler.substr(0, at) + hidden + filler.substr(at) + ask;
  s.needle_offset = static_cast<int64_t>(at);
  s.answer_offset = static_cast<int64_t>(s.text.size() - 2 - s.key.size());
  return s;
}

PasskeySample PasskeyTask::make(uint64_t seed, int64_t length) const {
  std::mt19937_64 rng(seed ^ 0xd1b54a32d192ed03ull);
  return make(seed, length, std::uniform_real_distribution<double>(0.0, 1.0)(rng));
}

}  // namespace attnkit::model
