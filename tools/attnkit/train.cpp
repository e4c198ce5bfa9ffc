// attnkit train: trains a model (model/train.hpp) on the Brown corpus with the byte
// tokenizer; checkpoints and a JSON log of the curves go to --out. Progress on stderr: a
// redrawn line on a terminal, plain lines otherwise. Not for: generation or evaluation.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"
#include "command.hpp"
#include "model/corpus.hpp"
#include "model/train.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

struct Options {
  std::string config, out, corpus;
  int64_t steps = 0, tokens = 0, batch = 16, seq_len = 128, eval_every = 50, eval_batches = 8, save_every = 0;
  int64_t warmup = 30;
  double lr = 3e-3, passkey_fraction = 0.0;
  bool resume = false;
  int threads = 0;
};

std::string eta(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60);
}

int run(const Options& o) {
  namespace fs = std::filesystem;
  const std::string ckpt = o.out + "/model.safetensors", log_path = o.out + "/log.json";
  model::TrainConfig cfg;
  std::optional<model::TrainState> state;
  if (o.resume) {
    check(fs::exists(ckpt), [&] { return fmt::format("--resume: {} does not exist", printable(ckpt)); });
    state.emplace(model::load_checkpoint(ckpt, &cfg));
    if (o.steps > 0) cfg.steps = o.steps;
  } else {
    check(!o.config.empty(), [] { return std::string("--config is required unless --resume"); });
    model::ModelConfig mc = model::parse_config(read_whole_file(o.config, 16u << 20));
    check(mc.vocab == model::kByteVocab,
          [&] { return fmt::format("--config: vocab ({}) must be 256 for the byte tokenizer", mc.vocab); });
    cfg.batch = o.batch, cfg.seq_len = o.seq_len, cfg.warmup = o.warmup, cfg.adamw.lr = o.lr;
    cfg.eval_every = o.eval_every, cfg.eval_batches = o.eval_batches, cfg.passkey_fraction = o.passkey_fraction;
    cfg.steps = o.steps > 0 ? o.steps : std::max<int64_t>(1, o.tokens / (o.batch * o.seq_len));
    check(o.steps > 0 || o.tokens > 0, [] { return std::string("give --steps or --tokens"); });
    model::Model m(mc);
    m.init_weights();
    state.emplace(model::TrainState{std::move(m), {}, 0});
  }
  fs::create_directories(o.out);
  check_outputs(std::vector<OutputPath>{{ckpt, "--out", false}, {log_path, "--out", false}});
  const model::Corpus corpus = model::load_brown(o.corpus.empty() ? model::default_corpus_dir() : o.corpus);
  const std::vector<int32_t> train_ids = model::byte_encode(corpus.train), val_ids = model::byte_encode(corpus.validation);
  const double unigram = model::unigram_entropy(train_ids, val_ids, model::kByteVocab);
  // Filler for pass-key rows comes from the training split only.
  const model::PasskeyTask passkey(corpus.train);
  const model::ModelConfig& mc = state->model.config();
  fmt::print("corpus: Brown, {} / {} / {} documents, {} / {} / {} bytes (train / validation / test)\n",
             corpus.documents[0], corpus.documents[1], corpus.documents[2], corpus.train.size(),
             corpus.validation.size(), corpus.test.size());
  fmt::print("model: {} parameters, dim {}, {} layers, {} heads; batch {} x {} tokens, {} steps\n",
             mc.parameter_count(), mc.dim, mc.n_layers, mc.n_heads, cfg.batch, cfg.seq_len, cfg.steps);
  fmt::print("unigram entropy of the validation bytes: {:.4f} nats/byte ({:.3f} bits)\n", unigram, unigram / std::log(2.0));
  std::fflush(stdout);

  const bool tty = isatty(fileno(stderr));
  nlohmann::json curve = nlohmann::json::array();
  const auto start = std::chrono::steady_clock::now();
  const int64_t first = state->step;
  double last_val = NAN, step_seconds = 0, attention_seconds = 0;
  model::train(*state, cfg, train_ids, val_ids, [&](const model::StepReport& r) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tok_s = static_cast<double>((r.step - first) * cfg.batch * cfg.seq_len) / elapsed;
    const double left = elapsed / static_cast<double>(r.step - first) * static_cast<double>(cfg.steps - r.step);
    nlohmann::json rec = {{"step", r.step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm}, {"seconds", r.seconds},
                           {"attention_seconds", r.attention_seconds}};
    step_seconds += r.seconds;
    attention_seconds += r.attention_seconds;
    if (!std::isnan(r.val_loss)) rec["val_loss"] = last_val = r.val_loss;
    curve.push_back(rec);
    const std::string val = std::isnan(last_val) ? "-" : fmt::format("{:.4f}", last_val);
    const std::string line = fmt::format("step {}/{}  loss {:.4f}  val {}  {:.0f} tok/s  ETA {}", r.step, cfg.steps,
                                         r.loss, val, tok_s, eta(left));
    if (tty)
      fmt::print(stderr, "\r{:<78}", line);
    else if (!std::isnan(r.val_loss) || r.step == cfg.steps)
      fmt::print(stderr, "{}\n", line);
    if (o.save_every > 0 && r.step % o.save_every == 0 && r.step < cfg.steps) model::save_checkpoint(ckpt, *state, cfg);
  }, -1, &passkey);
  if (tty) fmt::print(stderr, "\n");
  if (step_seconds > 0)
    fmt::print("attention kernels (forward + backward): {:.1f} % of {:.2f} s in training steps\n",
               100.0 * attention_seconds / step_seconds, step_seconds);
  model::save_checkpoint(ckpt, *state, cfg);
  const double val = model::evaluate(state->model, val_ids, cfg.batch, cfg.seq_len, cfg.eval_batches);
  const nlohmann::json log = {{"unigram_entropy_nats", unigram}, {"final_val_loss", val},
                              {"attention_share", step_seconds > 0 ? attention_seconds / step_seconds : 0.0},
                              {"train", curve}};
  write_file_atomically(log_path, log.dump(1) + "\n", log_path);
  fmt::print("validation loss {:.4f} nats/byte against the unigram entropy {:.4f} ({:.1f} % of it)\n", val, unigram,
             100.0 * val / unigram);
  fmt::print("checkpoint: {}\nlog: {}\n", ckpt, log_path);
  return 0;
}

std::function<int()> setup(CLI::App& sub) {
  auto o = std::make_shared<Options>();
  sub.add_option("--config", o->config, "model config (JSON; see configs/quick.json)");
  sub.add_option("--out", o->out, "output folder: model.safetensors (weights + optimizer), log.json")->required();
  sub.add_option("--corpus", o->corpus, "Brown corpus folder (default: the cache scripts/fetch_corpus.sh fills)");
  add_int(sub, "--steps", o->steps, "optimizer steps (with --resume: the new total)", 1, int64_t{1} << 40);
  add_int(sub, "--tokens", o->tokens, "train on about this many tokens (instead of --steps)", 1, int64_t{1} << 50);
  add_int(sub, "--batch", o->batch, "sequences per step", 1, 65536);
  add_int(sub, "--seq-len", o->seq_len, "tokens per sequence (<= the config's context)", 1, int64_t{1} << 31);
  add_int(sub, "--warmup", o->warmup, "learning-rate warm-up steps", 0, int64_t{1} << 40);
  sub.add_option("--lr", o->lr, "peak learning rate (AdamW)")->check(CLI::PositiveNumber);
  sub.add_option("--passkey-fraction", o->passkey_fraction,
                 "share of training rows that are pass-key retrieval samples (0: none)")
      ->check(CLI::Range(0.0, 1.0));
  add_int(sub, "--eval-every", o->eval_every, "validation loss every this many steps (0: only at the end)", 0,
          int64_t{1} << 40);
  add_int(sub, "--eval-batches", o->eval_batches, "batches in each validation", 1, 1 << 20);
  add_int(sub, "--save-every", o->save_every, "checkpoint every this many steps (0: at the end)", 0, int64_t{1} << 40);
  sub.add_flag("--resume", o->resume, "continue from --out/model.safetensors (bit-for-bit as if never stopped)");
  add_threads(sub, o->threads);
  return [o] {
    apply_threads(o->threads);
    return run(*o);
  };
}

ATTNKIT_COMMAND("train", "train a model on the Brown corpus (byte tokenizer)", setup);

}  // namespace
}  // namespace attnkit::cli
