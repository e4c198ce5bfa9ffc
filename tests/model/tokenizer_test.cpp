// llama2.c's tokenizer: run.c's encode against its literal form, decode, the file format
// (round trip, hostile files) and a round trip over the Brown corpus.
#include "model/tokenizer.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "attnkit/error.hpp"
#include "model/corpus.hpp"
#include "ref/tokenizer_ref.hpp"

namespace attnkit::model {
namespace {

// <unk> <s> </s>, the 256 byte pieces, then `extra` with their scores.
Tokenizer make(const std::vector<std::pair<std::string, float>>& extra) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) pieces.push_back(fmt::format("<0x{:02X}>", b)), scores.push_back(0);
  for (const auto& [p, s] : extra) pieces.push_back(p), scores.push_back(s);
  return Tokenizer(pieces, scores, 16);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Tokenizer, MergesTheBestPairFirstAndTheLeftmostOnTies) {
  // ids: ' '=259 a=260 b=261 c=262 ab=263 bc=264 abc=265 " a"=266
  const Tokenizer t = make({{" ", 0}, {"a", 0}, {"b", 0}, {"c", 0}, {"ab", -2}, {"bc", -1}, {"abc", -3}, {" a", -5}});
  // "bc" (-1) beats "ab" (-2) and " a" (-5); then "a" + "bc" makes "abc", and " abc" is
  // not a piece.
  EXPECT_EQ(t.encode("abc", true, false), (std::vector<int32_t>{1, 259, 265}));
  // "ab" beats " a", so the prefix space stays alone.
  EXPECT_EQ(t.encode("abab", false, true), (std::vector<int32_t>{259, 263, 263, 2}));
  // Only " a" applies: the space after the prefix merges with "a".
  EXPECT_EQ(t.encode("a", false, false), (std::vector<int32_t>{266}));
  // A code point without a piece falls back to its bytes' pieces; empty text has no prefix.
  EXPECT_EQ(t.encode("\xc3\xa9", false, false), (std::vector<int32_t>{259, 3 + 0xc3, 3 + 0xa9}));
  EXPECT_EQ(t.encode("", true, false), (std::vector<int32_t>{1}));
  EXPECT_EQ(t.decode(t.encode("abc ab\xc3\xa9", true, true)), "abc ab\xc3\xa9");
  EXPECT_EQ(t.decode_piece(1, 266), "a");   // the space after BOS is dropped
  EXPECT_EQ(t.decode_piece(5, 266), " a");
  EXPECT_EQ(t.decode_piece(5, 3 + 0x41), "A");  // <0x41>
  EXPECT_NE(error_of([&] { t.decode_piece(0, 266 + 1); }).find("outside"), std::string::npos);
}

TEST(Tokenizer, FastEncodeEqualsRunCsLoop) {
  std::mt19937 rng(7);
  const std::string alphabet = "ab c\n\xc3\xa9<s>0x";
  std::vector<std::pair<std::string, float>> extra = {{" ", 0}};
  for (const char c : std::string("abc\n<s>0x")) extra.emplace_back(std::string(1, c), 0);
  // Random pieces over the alphabet with random (often equal) scores.
  for (int i = 0; i < 60; ++i) {
    std::string p;
    const int len = 2 + static_cast<int>(rng() % 4);
    for (int k = 0; k < len; ++k) p += alphabet[rng() % alphabet.size()];
    extra.emplace_back(p, -static_cast<float>(rng() % 5));
  }
  const Tokenizer t = make(extra);
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int len = static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) text += alphabet[rng() % alphabet.size()];
    const bool bos = trial % 2 == 0;
    ASSERT_EQ(t.encode(text, bos, false), ref::tokenizer_encode(t, text, bos, false)) << text;
  }
}

TEST(Tokenizer, FileRoundTripIsBitExact) {
  const Tokenizer t = make({{" the", -1.5f}, {"", 0}, {"x", 2}});
  const std::string bytes = tokenizer_bytes(t);
  const Tokenizer back = parse_tokenizer(bytes, t.vocab(), "t.bin");
  EXPECT_EQ(tokenizer_bytes(back), bytes);
  EXPECT_EQ(parse_tokenizer(bytes, -1, "t.bin").vocab(), t.vocab());
  const auto path = std::filesystem::temp_directory_path() / "attnkit_tokenizer_test.bin";
  save_tokenizer(t, path.string());
  EXPECT_EQ(tokenizer_bytes(load_tokenizer(path.string(), t.vocab())), bytes);
  std::filesystem::remove(path);
}

TEST(Tokenizer, HostileFilesAreClearErrors) {
  const Tokenizer t = make({{"ab", -1}});
  const std::string good = tokenizer_bytes(t);
  // Every truncation is an Error, never a crash.
  for (size_t n = 0; n < good.size(); ++n) EXPECT_THROW(parse_tokenizer(good.substr(0, n), t.vocab(), "t"), Error) << n;
  EXPECT_NE(error_of([&] { parse_tokenizer(good + "x", t.vocab(), "t"); }).find("1 bytes follow piece 259"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse_tokenizer(good, t.vocab() + 1, "t"); }).find("truncated in piece 260"),
            std::string::npos);
  const auto patched = [&](size_t at, int32_t v) {
    std::string b = good;
    std::memcpy(b.data() + at, &v, 4);
    return b;
  };
  EXPECT_NE(error_of([&] { parse_tokenizer(patched(0, 0), -1, "t"); }).find("max_token_length 0"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_tokenizer(patched(0, 1 << 30), -1, "t"); }).find("max_token_length"),
            std::string::npos);
  // Piece 0 starts at byte 4: score, then length.
  EXPECT_NE(error_of([&] { parse_tokenizer(patched(8, -1), -1, "t"); }).find("piece 0 has length -1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse_tokenizer(patched(8, 1 << 20), -1, "t"); }).find("piece 0 has length"),
            std::string::npos);
  const float nan = std::nanf("");
  int32_t nan_bits;
  std::memcpy(&nan_bits, &nan, 4);
  EXPECT_NE(error_of([&] { parse_tokenizer(patched(4, nan_bits), -1, "t"); }).find("non-finite"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_tokenizer(good.substr(0, 4), -1, "t"); }).find("outside [3"), std::string::npos);
  // A tokenizer without byte pieces cannot encode an unknown byte: an Error, not id -1.
  const Tokenizer small({"<unk>", "<s>", "</s>", " "}, {0, 0, 0, 0}, 5);
  EXPECT_NE(error_of([&] { small.encode("q", false, false); }).find("byte 0x71"), std::string::npos);
}

TEST(Tokenizer, LearnedOnBrownRoundTripsTheValidationSplit) {
  const std::string dir = default_corpus_dir();
  if (!std::filesystem::exists(dir + "/cats.txt")) GTEST_SKIP() << "no corpus at " << dir << " (scripts/fetch_corpus.sh)";
  const Corpus c = load_brown(dir);
  const Tokenizer learned = learn_bpe(std::string_view(c.train).substr(0, 300000), 1024);
  ASSERT_EQ(learned.vocab(), 1024);
  const Tokenizer t = parse_tokenizer(tokenizer_bytes(learned), 1024, "learned");
  const std::vector<int32_t> ids = t.encode(c.validation, true, false);
  EXPECT_EQ(t.decode(ids), c.validation);
  // Merges learned on the training split compress the validation split.
  const double per_byte = static_cast<double>(ids.size()) / static_cast<double>(c.validation.size());
  EXPECT_LT(per_byte, 0.5) << ids.size() << " tokens for " << c.validation.size() << " bytes";
  const std::string para = c.validation.substr(0, 600);
  EXPECT_EQ(t.encode(para, true, false), ref::tokenizer_encode(t, para, true, false));
}

}  // namespace
}  // namespace attnkit::model
