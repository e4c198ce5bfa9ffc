// The training loop and its checkpoints (train.hpp).
#include "model/train.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "attnkit/error.hpp"
#include "attnkit/safetensors.hpp"
#include "model/corpus.hpp"

namespace attnkit::model {
namespace {

// Windows [start, start + seq_len] of the stream: inputs and their next tokens.
// With a pass-key task, a row is, with probability `fraction`, a pass-key sample of a
// length drawn uniformly from [min_length, seq_len + 1] followed by a corpus window: the
// answer lands at every position a shorter evaluation sample puts it, so retrieval is
// learnt at every length up to seq_len + 1, not at one. The generator is drawn from for
// this only when fraction > 0, so fraction 0 draws the plain windows.
void fill_batch(const std::vector<int32_t>& data, int64_t batch, int64_t seq_len, std::mt19937_64& rng,
                std::vector<int32_t>& tokens, std::vector<int32_t>& targets, const PasskeyTask* passkey = nullptr,
                double fraction = 0.0) {
  const uint64_t starts = static_cast<uint64_t>(static_cast<int64_t>(data.size()) - seq_len);
  tokens.resize(static_cast<size_t>(batch * seq_len));
  targets.resize(tokens.size());
  for (int64_t b = 0; b < batch; ++b) {
    if (passkey && fraction > 0.0 && std::uniform_real_distribution<double>(0.0, 1.0)(rng) < fraction) {
      const int64_t lo = PasskeyTask::min_length(), length = lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(seq_len + 2 - lo));
      const PasskeySample p = passkey->make(rng(), length);
      const size_t s = static_cast<size_t>(rng() % starts);
      auto row = [&](int64_t t) -> int32_t {  // the sample, then the corpus from s on
        return t < length ? static_cast<uint8_t>(p.text[static_cast<size_t>(t)]) : data[s + static_cast<size_t>(t - length)];
      };
      for (int64_t t = 0; t < seq_len; ++t) {
        tokens[static_cast<size_t>(b * seq_len + t)] = row(t);
        targets[static_cast<size_t>(b * seq_len + t)] = row(t + 1);
      }
      continue;
    }
    const size_t s = static_cast<size_t>(rng() % starts);
    for (int64_t t = 0; t < seq_len; ++t) {
      tokens[static_cast<size_t>(b * seq_len + t)] = data[s + static_cast<size_t>(t)];
      targets[static_cast<size_t>(b * seq_len + t)] = data[s + static_cast<size_t>(t) + 1];
    }
  }
}

void check_data(const std::vector<int32_t>& data, int64_t seq_len, int64_t vocab, const char* what) {
  check(static_cast<int64_t>(data.size()) > seq_len,
        [&] { return fmt::format("{} has {} tokens; seq_len + 1 ({}) are needed", what, data.size(), seq_len + 1); });
  for (size_t i = 0; i < data.size(); ++i)
    check(data[i] >= 0 && data[i] < vocab,
          [&] { return fmt::format("{}[{}] ({}) is outside the vocabulary [0, {})", what, i, data[i], vocab); });
}

nlohmann::json train_config_json(const TrainConfig& c) {
  return {{"batch", c.batch},         {"seq_len", c.seq_len},     {"steps", c.steps},
          {"warmup", c.warmup},       {"min_lr_ratio", c.min_lr_ratio}, {"lr", c.adamw.lr},
          {"beta1", c.adamw.beta1},   {"beta2", c.adamw.beta2},   {"eps", c.adamw.eps},
          {"weight_decay", c.adamw.weight_decay}, {"clip_norm", c.adamw.clip_norm},
          {"eval_every", c.eval_every}, {"eval_batches", c.eval_batches}, {"seed", c.seed},
          {"passkey_fraction", c.passkey_fraction}};
}

}  // namespace

double evaluate(const Model& model, const std::vector<int32_t>& data, int64_t batch, int64_t seq_len, int64_t batches) {
  check_data(data, seq_len, model.config().vocab, "validation data");
  std::mt19937_64 rng(0x5eed);
  std::vector<int32_t> tokens, targets;
  Activations acts;
  double sum = 0;
  for (int64_t i = 0; i < batches; ++i) {
    fill_batch(data, batch, seq_len, rng, tokens, targets);
    sum += training_forward(model, tokens.data(), targets.data(), batch, seq_len, acts);
  }
  return batches > 0 ? sum / static_cast<double>(batches) : NAN;
}

void train(TrainState& st, const TrainConfig& cfg, const std::vector<int32_t>& train_tokens,
           const std::vector<int32_t>& val_tokens, const std::function<void(const StepReport&)>& report,
           int64_t until, const PasskeyTask* passkey) {
  check(cfg.seq_len >= 1 && cfg.seq_len <= st.model.config().context, [&] {
    return fmt::format("seq_len ({}) must be in [1, context = {}]", cfg.seq_len, st.model.config().context);
  });
  check(cfg.batch >= 1, [&] { return fmt::format("batch ({}) must be >= 1", cfg.batch); });
  check_data(train_tokens, cfg.seq_len, st.model.config().vocab, "training data");
  check(cfg.passkey_fraction >= 0.0 && cfg.passkey_fraction <= 1.0,
        [&] { return fmt::format("passkey_fraction ({}) must be in [0, 1]", cfg.passkey_fraction); });
  if (cfg.passkey_fraction > 0.0) {
    check(passkey != nullptr, [] { return std::string("passkey_fraction > 0 needs a pass-key task"); });
    check(st.model.config().vocab == kByteVocab, [&] {
      return fmt::format("pass-key rows are bytes: the model's vocabulary must be {} (it is {})", kByteVocab,
                         st.model.config().vocab);
    });
    check(cfg.seq_len + 1 >= PasskeyTask::min_length(), [&] {
      return fmt::format("pass-key rows need seq_len + 1 >= {} (seq_len is {})", PasskeyTask::min_length(), cfg.seq_len);
    });
  }
  std::vector<int32_t> tokens, targets;
  std::vector<float> grads;
  Activations acts;
  const int64_t stop = until < 0 ? cfg.steps : std::min(until, cfg.steps);
  while (st.step < stop) {
    const auto t0 = std::chrono::steady_clock::now();
    std::mt19937_64 rng(cfg.seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(st.step));
    fill_batch(train_tokens, cfg.batch, cfg.seq_len, rng, tokens, targets, passkey, cfg.passkey_fraction);
    const double loss = training_forward(st.model, tokens.data(), targets.data(), cfg.batch, cfg.seq_len, acts);
    training_backward(st.model, tokens.data(), targets.data(), acts, grads);
    const double lr = cosine_lr(st.step, cfg.steps, cfg.warmup, cfg.adamw.lr, cfg.adamw.lr * cfg.min_lr_ratio);
    const double norm = adamw_step(st.model, grads, st.adam, cfg.adamw, lr);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++st.step;
    const bool eval = !val_tokens.empty() && cfg.eval_every > 0 && (st.step % cfg.eval_every == 0 || st.step == cfg.steps);
    const double val = eval ? evaluate(st.model, val_tokens, cfg.batch, cfg.seq_len, cfg.eval_batches) : NAN;
    if (report) report({st.step, loss, lr, norm, val, seconds, acts.attention_seconds});
  }
}

void save_checkpoint(const std::string& path, const TrainState& st, const TrainConfig& cfg) {
  SafeTensorsFile f;
  const Model& m = st.model;
  const bool with_adam = st.adam.m.size() == m.weights.size();
  for (const ParamRef& p : m.params()) {
    auto slice = [&](const std::vector<float>& v) {
      return SafeTensor{{p.rows, p.cols}, std::vector<float>(v.begin() + p.offset, v.begin() + p.offset + p.rows * p.cols)};
    };
    f.tensors[p.name] = slice(m.weights);
    if (with_adam) {
      f.tensors["adam_m." + p.name] = slice(st.adam.m);
      f.tensors["adam_v." + p.name] = slice(st.adam.v);
    }
  }
  f.metadata["format"] = "attnkit-checkpoint-1";
  f.metadata["config"] = config_to_json(m.config());
  f.metadata["train"] = train_config_json(cfg).dump();
  f.metadata["step"] = std::to_string(st.step);
  f.metadata["adam_step"] = std::to_string(st.adam.step);
  write_safetensors(path, f);
}

TrainState load_checkpoint(const std::string& path, TrainConfig* cfg) {
  const SafeTensorsFile f = read_safetensors(path);
  const std::string where = printable(path);
  auto meta = [&](const char* key) -> const std::string& {
    const auto it = f.metadata.find(key);
    check(it != f.metadata.end(), [&] { return fmt::format("{}: metadata \"{}\" is missing", where, key); });
    return it->second;
  };
  check(meta("format") == "attnkit-checkpoint-1", [&] { return fmt::format("{}: not an attnkit checkpoint", where); });
  TrainState st{Model(parse_config(meta("config"))), {}, 0};
  auto parse_count = [&](const char* key) {
    const std::string& s = meta(key);
    int64_t v = -1;
    try {
      size_t used = 0;
      v = std::stoll(s, &used);
      if (used != s.size()) v = -1;
    } catch (const std::exception&) {
    }
    check(v >= 0, [&] { return fmt::format("{}: metadata \"{}\" must be a non-negative integer", where, key); });
    return v;
  };
  st.step = parse_count("step");
  Model& m = st.model;
  const bool with_adam = f.tensors.count("adam_m." + m.params().front().name) > 0;
  if (with_adam) st.adam.m.assign(m.weights.size(), 0.0f), st.adam.v.assign(m.weights.size(), 0.0f);
  st.adam.step = with_adam ? parse_count("adam_step") : 0;
  for (const ParamRef& p : m.params()) {
    auto load = [&](const std::string& name, std::vector<float>& dst) {
      const auto it = f.tensors.find(name);
      check(it != f.tensors.end(), [&] { return fmt::format("{}: tensor \"{}\" is missing", where, printable(name)); });
      check(it->second.shape == std::vector<int64_t>{p.rows, p.cols}, [&] {
        return fmt::format("{}: tensor \"{}\" must have shape [{}, {}]", where, printable(name), p.rows, p.cols);
      });
      std::copy(it->second.data.begin(), it->second.data.end(), dst.begin() + p.offset);
    };
    load(p.name, m.weights);
    if (with_adam) load("adam_m." + p.name, st.adam.m), load("adam_v." + p.name, st.adam.v);
  }
  if (cfg) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(meta("train"));
      TrainConfig c;
      c.batch = j.at("batch"), c.seq_len = j.at("seq_len"), c.steps = j.at("steps"), c.warmup = j.at("warmup");
      c.min_lr_ratio = j.at("min_lr_ratio"), c.adamw.lr = j.at("lr"), c.adamw.beta1 = j.at("beta1");
      c.adamw.beta2 = j.at("beta2"), c.adamw.eps = j.at("eps"), c.adamw.weight_decay = j.at("weight_decay");
      c.adamw.clip_norm = j.at("clip_norm"), c.eval_every = j.at("eval_every"), c.eval_batches = j.at("eval_batches");
      c.seed = j.at("seed");
      c.passkey_fraction = j.value("passkey_fraction", 0.0);
      *cfg = c;
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}: metadata \"train\" is not a training config ({})", where, printable(e.what())));
    }
  }
  return st;
}

}  // namespace attnkit::model
