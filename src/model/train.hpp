// Training a Model on a token stream: batches of random windows (drawn from a generator
// seeded by (seed, step), so a resumed run draws what an uninterrupted one would), AdamW on
// the warm-up + cosine schedule, validation loss at intervals, and checkpoints: weights
// and optimizer moments as safetensors, config / step / hyper-parameters in its metadata.
// Bitwise reproducible for a given thread count. Not for: the CLI's progress display.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/model.hpp"
#include "model/optimizer.hpp"
#include "model/retrieval.hpp"

namespace attnkit::model {

struct TrainConfig {
  int64_t batch = 8, seq_len = 128;
  int64_t steps = 1000, warmup = 50;
  double min_lr_ratio = 0.1;  // the cosine ends at lr * this
  AdamWConfig adamw;
  int64_t eval_every = 100, eval_batches = 8;
  uint64_t seed = 1;  // data order
  // The share of training rows that are pass-key samples (retrieval.hpp) of seq_len + 1
  // bytes instead of corpus windows, drawn per row from the same seeded generator.
  double passkey_fraction = 0.0;
};

struct StepReport {
  int64_t step;                // 1-based: updates done
  double loss, lr, grad_norm;
  double val_loss;             // NaN unless evaluated at this step
  double seconds;              // wall time of this step (forward, backward, update)
  double attention_seconds;    // of which inside the attention kernels, forward and backward
};

struct TrainState {
  Model model;
  AdamWState adam;
  int64_t step = 0;
};

// Mean loss over `batches` fixed windows of `tokens` (the same windows every call).
double evaluate(const Model& model, const std::vector<int32_t>& tokens, int64_t batch, int64_t seq_len,
                int64_t batches);

// Runs steps state.step .. min(cfg.steps, until) - 1 (until < 0: to cfg.steps); report()
// after each. The schedule is always cfg.steps long, so a run cut at `until` and resumed
// takes the steps an uninterrupted one would. Throws Error when the data
// is shorter than seq_len + 1 tokens or holds ids outside the vocabulary, or when
// cfg.passkey_fraction > 0 without a task or with a model that is not byte-level.
void train(TrainState& state, const TrainConfig& cfg, const std::vector<int32_t>& train_tokens,
           const std::vector<int32_t>& val_tokens, const std::function<void(const StepReport&)>& report,
           int64_t until = -1, const PasskeyTask* passkey = nullptr);

// Checkpoint: one safetensors file, written whole or not at all.
void save_checkpoint(const std::string& path, const TrainState& state, const TrainConfig& cfg);
// Reads a checkpoint (weights, and the optimizer state when it has one); cfg gets the saved
// training settings. Throws Error naming the file and the tensor or field.
TrainState load_checkpoint(const std::string& path, TrainConfig* cfg);

}  // namespace attnkit::model
