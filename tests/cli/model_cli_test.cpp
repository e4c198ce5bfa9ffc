// attnkit train and generate end to end on a small Brown-format corpus written here: the
// loss falls, the checkpoint generates, every cache layout gives the same greedy ids, and
// bad configs and checkpoints are errors (exit 2) that name the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "cli_runner.hpp"
#include "model/tokenizer.hpp"

namespace attnkit {
namespace {

using testing::run_cli;

TEST(ModelCli, TrainThenGenerate) {
  const auto dir = std::filesystem::temp_directory_path() / "attnkit_model_cli";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir / "corpus");
  std::ofstream cats(dir / "corpus/cats.txt");
  for (int i = 0; i < 20; ++i) {
    const std::string name = fmt::format("ca{:02d}", i);
    cats << name << " news\n";
    std::ofstream doc(dir / "corpus" / name);
    for (int s = 0; s < 30; ++s) doc << "\tThe/at cat/nn sat/vbd on/in the/at mat/nn ./.\n\n";
  }
  cats.close();
  std::ofstream(dir / "tiny.json") << R"({"dim": 32, "hidden_dim": 64, "n_layers": 2, "n_heads": 2, "vocab": 256,
      "context": 64, "layers": [{"heads": "mqa"}, {"pattern": "window:15,0"}]})";
  const std::string d = dir.string();
  auto r = run_cli(fmt::format("train --config {0}/tiny.json --out {0}/run --corpus {0}/corpus --steps 40 --batch 4 "
                               "--seq-len 32 --eval-every 20 --lr 1e-2",
                               d));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("unigram entropy"), std::string::npos) << r.output;
  ASSERT_TRUE(std::filesystem::exists(dir / "run/model.safetensors"));
  ASSERT_TRUE(std::filesystem::exists(dir / "run/log.json"));

  std::string first;
  for (const char* cache : {"contiguous", "paged:8", "rolling:w=64,sinks=4"}) {
    r = run_cli(fmt::format("generate --model {}/run --prompt-ids 84,104,101 --max-tokens 20 --temperature 0 "
                            "--print-ids --cache {}",
                            d, cache),
                false);
    ASSERT_EQ(r.exit_code, 0) << cache;
    if (first.empty()) first = r.output;
    EXPECT_EQ(r.output, first) << cache;
  }
  r = run_cli(fmt::format("generate --model {}/run --prompt 'The cat' --max-tokens 30 --temperature 0", d));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("tok/s"), std::string::npos) << r.output;

  // A tokenizer.bin over the same 256 ids (every id from 3 up its own byte): the prompt is
  // encoded with BOS first and the generated ids are decoded through it.
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  for (int b = 3; b < 256; ++b) pieces.emplace_back(1, static_cast<char>(b));
  model::save_tokenizer(model::Tokenizer(pieces, std::vector<float>(256, 0.0f), 5), d + "/tok.bin");
  r = run_cli(fmt::format("generate --model {0}/run --tokenizer {0}/tok.bin --prompt 'The cat' --max-tokens 10 "
                          "--temperature 0",
                          d),
              false);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("The cat", 0), 0u) << r.output;
  pieces.emplace_back("extra");
  model::save_tokenizer(model::Tokenizer(pieces, std::vector<float>(257, 0.0f), 5), d + "/tok257.bin");
  r = run_cli(fmt::format("generate --model {0}/run --tokenizer {0}/tok257.bin --prompt x", d));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("more than the model's vocabulary (256 pieces)"), std::string::npos) << r.output;

  // Resume to a longer run continues from the checkpoint.
  r = run_cli(fmt::format("train --out {0}/run --corpus {0}/corpus --resume --steps 50", d));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("50 steps"), std::string::npos) << r.output;

  std::ofstream(dir / "bad.json") << R"({"dim": 32, "hidden_dim": 64, "n_layers": 1, "n_heads": 2, "vocab": 256,
      "context": 64, "pattern": "none"})";
  r = run_cli(fmt::format("train --config {0}/bad.json --out {0}/bad --corpus {0}/corpus --steps 1", d));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("must be causal"), std::string::npos) << r.output;
  std::ofstream(dir / "junk.safetensors") << "\x10\0\0\0\0\0\0\0{\"a\":1}";
  r = run_cli(fmt::format("generate --model {}/junk.safetensors --prompt x", d));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("junk.safetensors"), std::string::npos) << r.output;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace attnkit
