// Training: a checkpoint round trip is bit-exact, and a run stopped and resumed from its
// checkpoint ends with the same weights as one that was never stopped.
#include "model/train.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "attnkit/error.hpp"
#include "attnkit/safetensors.hpp"

namespace attnkit::model {
namespace {

ModelConfig small() {
  return parse_config(R"({"dim": 16, "hidden_dim": 32, "n_layers": 2, "n_heads": 2, "vocab": 256, "context": 32,
                          "seed": 3, "layers": [{"heads": "mqa"}, {"pattern": "window:7,0"}]})");
}

std::vector<int32_t> data() {
  std::vector<int32_t> d;
  const std::string text = "the cat sat on the mat. the dog sat on the log. ";
  for (int r = 0; r < 20; ++r)
    for (char ch : text) d.push_back(static_cast<unsigned char>(ch));
  return d;
}

TrainConfig config() {
  TrainConfig c;
  c.batch = 2, c.seq_len = 16, c.steps = 12, c.warmup = 2, c.eval_every = 4, c.eval_batches = 2;
  return c;
}

TEST(Train, ResumeContinuesBitForBit) {
  const auto dir = std::filesystem::temp_directory_path() / "attnkit_train_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "ckpt.safetensors").string();
  const TrainConfig cfg = config();

  TrainState whole{Model(small()), {}, 0};
  whole.model.init_weights();
  std::vector<double> losses;
  train(whole, cfg, data(), data(), [&](const StepReport& r) {
    losses.push_back(r.loss);
    // The attention kernels' time is a part of the step's.
    EXPECT_GT(r.attention_seconds, 0.0);
    EXPECT_LE(r.attention_seconds, r.seconds);
  });
  EXPECT_LT(losses.back(), losses.front());

  TrainState part{Model(small()), {}, 0};
  part.model.init_weights();
  train(part, cfg, data(), data(), nullptr, 5);  // stopped after 5 of 12 steps
  save_checkpoint(path, part, cfg);
  TrainConfig loaded;
  TrainState resumed = load_checkpoint(path, &loaded);
  EXPECT_EQ(resumed.step, 5);
  EXPECT_EQ(resumed.model.weights, part.model.weights);
  EXPECT_EQ(resumed.adam.m, part.adam.m);
  EXPECT_EQ(resumed.adam.v, part.adam.v);
  EXPECT_EQ(loaded.steps, cfg.steps);
  train(resumed, loaded, data(), data(), nullptr);
  EXPECT_EQ(resumed.model.weights, whole.model.weights);  // bitwise

  // A checkpoint whose tensor has the wrong shape is an error naming it.
  SafeTensorsFile f = read_safetensors(path);
  f.tensors["layers.0.wq"].shape = {8, 32};
  write_safetensors(path, f);
  try {
    load_checkpoint(path, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.wq"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(Train, PasskeyRowsAreMixedInDeterministically) {
  ModelConfig mc = small();
  mc.context = 128;
  TrainConfig cfg = config();
  cfg.seq_len = 120, cfg.steps = 3, cfg.eval_every = 0;
  std::vector<int32_t> long_data;
  const std::vector<int32_t> one = data();
  for (int r = 0; r < 4; ++r) long_data.insert(long_data.end(), one.begin(), one.end());
  const PasskeyTask task("The cat sat on the mat.\nThe dog sat on the log.\n");
  const auto losses = [&](double fraction) {
    TrainConfig c = cfg;
    c.passkey_fraction = fraction;
    TrainState st{Model(mc), {}, 0};
    st.model.init_weights();
    std::vector<double> out;
    train(st, c, long_data, {}, [&](const StepReport& r) { out.push_back(r.loss); }, -1, &task);
    return out;
  };
  const std::vector<double> none = losses(0.0), half = losses(0.5);
  EXPECT_NE(none, half);           // some rows were pass-key samples
  EXPECT_EQ(half, losses(0.5));    // and the same ones on a rerun
  TrainState st{Model(mc), {}, 0};
  cfg.passkey_fraction = 0.5;
  EXPECT_THROW(train(st, cfg, long_data, {}, nullptr), Error);  // no task
  cfg.seq_len = 16;
  EXPECT_THROW(train(st, cfg, long_data, {}, nullptr, -1, &task), Error);  // too short for a sample
}

TEST(Train, ShortDataIsAnError) {
  TrainState st{Model(small()), {}, 0};
  EXPECT_THROW(train(st, config(), std::vector<int32_t>(10, 1), {}, nullptr), Error);
  EXPECT_THROW(train(st, config(), std::vector<int32_t>(100, 300), {}, nullptr), Error);
}

}  // namespace
}  // namespace attnkit::model
