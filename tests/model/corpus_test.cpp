// The Brown corpus reader, its split and the byte tokenizer.
#include "model/corpus.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "attnkit/error.hpp"

namespace attnkit::model {
namespace {

TEST(BrownText, TagsStrippedAndPunctuationAttached) {
  const std::string tagged =
      "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, (/( it/pps said/vbd )/) ./.\n"
      "\n\n\tAtlanta's/np$ mayor/nn ,/, 1\\/2/cd done/vbn ./.\n";
  EXPECT_EQ(brown_to_text(tagged, "t"), "The jury said \"no evidence\", (it said).\n\nAtlanta's mayor, 1/2 done.\n");
}

TEST(BrownText, MalformedTokenIsAnErrorNamingTheFile) {
  try {
    brown_to_text("\tgood/jj bad\n", "ca99");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ca99 line 1"), std::string::npos) << e.what();
  }
}

TEST(BrownCorpus, SplitsByDocument) {
  const auto dir = std::filesystem::temp_directory_path() / "attnkit_brown_test";
  std::filesystem::create_directories(dir);
  std::ofstream cats(dir / "cats.txt");
  for (int i = 0; i < 40; ++i) {
    const std::string name = fmt::format("ca{:02d}", i);
    cats << name << " news\n";
    std::ofstream(dir / name) << "\tdoc/nn " << i << "/cd ./.\n";
  }
  cats.close();
  const Corpus c = load_brown(dir.string());
  EXPECT_EQ(c.documents[0], 36);
  EXPECT_EQ(c.documents[1], 2);
  EXPECT_EQ(c.documents[2], 2);
  EXPECT_EQ(c.validation, "doc 18.\n\ndoc 38.\n");
  EXPECT_EQ(c.test, "doc 19.\n\ndoc 39.\n");
  std::ofstream(dir / "cats.txt") << "../etc news\n";
  EXPECT_THROW(load_brown(dir.string()), Error);
  std::filesystem::remove_all(dir);
  EXPECT_THROW(load_brown(dir.string()), Error);
}

TEST(ByteTokenizer, RoundTripAndRange) {
  const std::string text = "caf\xc3\xa9 \x01\xff";
  EXPECT_EQ(byte_decode(byte_encode(text)), text);
  EXPECT_THROW(byte_decode({65, 256}), Error);
  EXPECT_THROW(byte_decode({-1}), Error);
}

TEST(UnigramEntropy, UniformAndSkewed) {
  std::vector<int32_t> uniform;
  for (int r = 0; r < 100; ++r)
    for (int32_t i = 0; i < 4; ++i) uniform.push_back(i);
  // Add-one smoothing over a vocabulary of 4 keeps the uniform distribution: log 4.
  EXPECT_NEAR(unigram_entropy(uniform, uniform, 4), std::log(4.0), 1e-12);
  std::vector<int32_t> skewed(400, 0);
  EXPECT_LT(unigram_entropy(skewed, skewed, 4), 0.01);
}

}  // namespace
}  // namespace attnkit::model
