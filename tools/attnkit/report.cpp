// attnkit report: the trade-off report. Trains one small model per attention variant on
// the same data and token budget (the head-sharing and MLA variants at the same parameter
// count, their MLP widened to pay for the smaller K / V projections), reusing models from a cache
// folder keyed by config + training settings + data + code version; evaluates each with
// every cache kind that applies (model/eval.hpp); times each attention kind's training step
// against context; writes DIR/results.json, DIR/README.md (report_markdown.cpp) and PNG
// plots (scripts/plot_report.py, matplotlib). A progress bar covers the whole run.
// Not for: evaluating one model (eval) or one training run (train).
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <tuple>

#include <fmt/format.h>

#include "attnkit/atomic_file.hpp"
#include "attnkit/attention.hpp"
#include "attnkit/backward.hpp"
#include "attnkit/error.hpp"
#include "attnkit/flops.hpp"
#include "attnkit/hwinfo.hpp"
#include "attnkit/linear.hpp"
#include "attnkit/method.hpp"
#include "command.hpp"
#include "eval_json.hpp"
#include "model/corpus.hpp"
#include "model/generate.hpp"
#include "model/train.hpp"
#include "options.hpp"
#include "report.hpp"

#ifndef ATTNKIT_SOURCE_DIR
#define ATTNKIT_SOURCE_DIR "."
#endif

namespace attnkit::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using clock = std::chrono::steady_clock;

// Bumped whenever training's numerics change, so the model cache never serves a model the
// current code would not train.
constexpr const char* kTrainingCodeVersion = "train-3";
// The share of training rows that start with a pass-key sample, the same for every variant.
// Every row: a sample is at most the context and carries Brown sentences as its filler, and
// the row goes on with corpus text, so the language model still trains on corpus bytes
// throughout; a smaller share left too few samples for retrieval to be learnt (measured).
constexpr double kPasskeyFraction = 1.0;

// The report's Performer draws 2 d random features per head (FAVOR+'s m ~ d log d at d = 32).
constexpr int64_t kPerformerFeaturesPerDim = 2;

struct Options {
  bool quick = false, no_plots = false;
  std::string out, cache_dir, corpus, config, python;
  int64_t steps = 0;
  int threads = 0;
};

struct Budget {
  int64_t steps, batch, eval_every, eval_batches, windows, streams, samples;
  std::vector<int64_t> lengths, timing_contexts;
  double timing_seconds;
};

Budget make_budget(bool quick, const model::ModelConfig& base, int64_t steps) {
  Budget b = quick ? Budget{150, 8, 25, 4, 8, 4, 4, {}, {256, 512, 1024}, 0.02}
                   : Budget{4000, 8, 200, 8, 64, 32, 20, {}, {256, 512, 1024, 2048, 4096}, 0.25};
  if (steps > 0) b.steps = steps, b.eval_every = std::max<int64_t>(1, steps / 4);
  const int64_t lo = model::PasskeyTask::min_length(), hi = base.context + 1, count = quick ? 3 : 6;
  for (int64_t i = 0; i < count && lo <= hi; ++i) b.lengths.push_back(lo + (hi - lo) * i / (count - 1));
  return b;
}

struct Variant {
  std::string name, label, group;  // group: heads | window | sparse | linear | latent | probe
  model::ModelConfig config;
  int64_t reach = 0;               // receptive field L·w in tokens; 0 when unbounded
  std::string rolling;             // the rolling cache that matches the pattern, if any
};

model::ModelConfig uniform(model::ModelConfig c, const std::string& heads, const std::string& pattern, int64_t layers,
                           const std::string& method = "softmax") {
  c.n_layers = layers;
  c.layers.assign(static_cast<size_t>(layers), {model::parse_heads(heads, c.n_heads, "heads"), pattern, method});
  c.validate();
  return c;
}

// The MLP width (a multiple of 8) whose parameter count is closest to `target`.
model::ModelConfig match_params(model::ModelConfig c, int64_t target) {
  model::ModelConfig best = c;
  const int64_t widest = 4 * c.hidden_dim;
  for (int64_t h = 8; h <= widest; h += 8) {
    c.hidden_dim = h;
    if (std::llabs(c.parameter_count() - target) < std::llabs(best.parameter_count() - target)) best = c;
  }
  return best;
}

std::vector<Variant> make_variants(const model::ModelConfig& base) {
  // Windows reach half the context through the whole stack (L·w = n / 2), so pass-key
  // samples put keys both within and beyond that reach.
  const int64_t n = base.context, layers = base.n_layers, w = std::max<int64_t>(4, n / (2 * layers));
  const int64_t w1 = std::max<int64_t>(4, 3 * n / 8), lf = std::max<int64_t>(2, n / 16), stride = std::max<int64_t>(2, n / 16);
  const model::ModelConfig mha = uniform(base, "mha", "causal", layers);
  const int64_t target = mha.parameter_count();
  const std::string gqa = fmt::format("gqa:{}", std::max<int64_t>(1, base.n_heads / 2));
  const std::string win = fmt::format("window:{},0", w - 1), win_s = fmt::format("window:{},0,sinks=4", w - 1);
  model::ModelConfig seed2 = mha;
  seed2.seed = base.seed + 1;
  std::vector<Variant> v = {
      {"mha", "MHA", "heads", mha, 0, ""},
      {"mha-seed2", "MHA (seed 2)", "heads", seed2, 0, ""},
      {"gqa", fmt::format("GQA-{}", base.n_heads / 2), "heads", match_params(uniform(base, gqa, "causal", layers), target), 0, ""},
      {"mqa", "MQA", "heads", match_params(uniform(base, "mqa", "causal", layers), target), 0, ""},
      {"window", fmt::format("window w={}", w), "window", uniform(base, "mha", win, layers), layers * w,
       fmt::format("rolling:w={},sinks=0", w)},
      {"window-sinks", fmt::format("window w={} + 4 sinks", w), "window", uniform(base, "mha", win_s, layers), layers * w,
       fmt::format("rolling:w={},sinks=4", w)},
      {"longformer", fmt::format("Longformer w={},d=2", lf), "sparse",
       uniform(base, "mha", fmt::format("longformer:w={},d=2,global=0,causal", lf), layers), 0, ""},
      {"strided", fmt::format("strided {}", stride), "sparse",
       uniform(base, "mha", fmt::format("strided:stride={}", stride), layers), 0, ""},
      {"window-1layer", fmt::format("1 layer, window w={}", w1), "probe", uniform(base, "mha", fmt::format("window:{},0", w1 - 1), 1),
       w1, fmt::format("rolling:w={},sinks=0", w1)},
      {"full-1layer", "1 layer, full", "probe", uniform(base, "mha", "causal", 1), 0, ""},
      // The linear-cost families, every layer of the stack (same heads and MLP as MHA: they
      // add no parameters). Performer's m = 2 d features, FAVOR+'s usual ratio.
      {"linear", "linear (elu+1)", "linear", uniform(base, "mha", "causal", layers, "linear"), 0, ""},
      {"performer", fmt::format("Performer m={}", kPerformerFeaturesPerDim * base.head_dim()), "linear",
       uniform(base, "mha", "causal", layers, fmt::format("performer:m={}", kPerformerFeaturesPerDim * base.head_dim())), 0,
       ""},
      {"retention", "retention (RetNet decays)", "linear", uniform(base, "mha", "causal", layers, "retention"), 0, ""},
  };
  // MLA in every layer, its latent row c + r = dim / 2 values a quarter of MHA's 2 dim per
  // token (dim 128: c = 48, r = 16), an eighth of dim its RoPE dims; at MHA's parameter count.
  const int64_t mla_r = std::max<int64_t>(2, base.dim / 16 * 2), mla_c = std::max<int64_t>(1, base.dim / 2 - mla_r);
  v.push_back({"mla", fmt::format("MLA c={},r={}", mla_c, mla_r), "latent",
               match_params(uniform(base, "mha", "causal", layers, fmt::format("mla:c={},r={}", mla_c, mla_r)), target), 0,
               ""});
  return v;
}

// FNV-1a, 64-bit: the cache key of a trained model.
uint64_t fnv(std::string_view s, uint64_t h = 0xcbf29ce484222325ull) {
  for (const char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

// The whole run's progress: work in units of about one 4-layer training step.
class Progress {
 public:
  explicit Progress(double total) : total_(total), start_(clock::now()), tty_(isatty(fileno(stderr))) {}
  void add(double units, const std::string& what) {
    done_ = std::min(total_, done_ + units);
    const double elapsed = std::chrono::duration<double>(clock::now() - start_).count();
    const double left = done_ > 0 ? elapsed / done_ * (total_ - done_) : 0;
    const int bar = static_cast<int>(30 * done_ / total_);
    const std::string line = fmt::format("[{}{}] {:3.0f} %  {:<34.34}  ETA {:.0f} s", std::string(bar, '#'),
                                         std::string(30 - bar, '.'), 100 * done_ / total_, what, left);
    if (tty_) {
      fmt::print(stderr, "\r{}", line);
    } else if (done_ >= printed_ + 0.05 * total_ || done_ == total_) {  // a log: a line per 5 %
      fmt::print(stderr, "{}\n", line);
      printed_ = done_;
    }
  }
  void finish() {
    if (tty_) fmt::print(stderr, "\n");
  }

 private:
  double total_, done_ = 0, printed_ = -1;
  clock::time_point start_;
  bool tty_;
};

double layer_units(const model::ModelConfig& c) { return static_cast<double>(c.n_layers) / 4.0; }

struct Data {
  std::vector<int32_t> train, val, test;
  std::string fingerprint;
  double unigram;
};

// Trains the variant or loads it from the cache; returns the model and its training log.
std::pair<model::Model, json> train_or_load(const Variant& v, const Budget& b, const Data& d, const model::PasskeyTask& task,
                                            const std::string& cache_dir, double peak_gflops, Progress& progress) {
  model::TrainConfig tc;
  tc.batch = b.batch, tc.seq_len = v.config.context, tc.steps = b.steps, tc.warmup = std::max<int64_t>(1, b.steps / 20);
  tc.adamw.lr = 3e-3, tc.eval_every = b.eval_every, tc.eval_batches = b.eval_batches, tc.seed = v.config.seed;
  tc.passkey_fraction = kPasskeyFraction;
  const std::string key = fmt::format(
      "{:016x}", fnv(fmt::format("{}|{}|{}|{}|{}|{}|{}", model::config_to_json(v.config), tc.batch, tc.steps, tc.warmup,
                                 tc.passkey_fraction, d.fingerprint, kTrainingCodeVersion)));
  const std::string dir = cache_dir + "/" + v.name + "-" + key;
  const double units = layer_units(v.config);
  if (fs::exists(dir + "/model.safetensors") && fs::exists(dir + "/log.json")) {
    json log = json::parse(read_whole_file(dir + "/log.json", 64u << 20));
    log["cached"] = true;
    progress.add(units * static_cast<double>(b.steps), "loaded " + v.name);
    return {model::load_checkpoint(dir + "/model.safetensors", nullptr).model, log};
  }
  model::Model m(v.config);
  m.init_weights();
  model::TrainState st{std::move(m), {}, 0};
  json curve = json::array();
  double seconds = 0, attention = 0;
  bool finite = true;
  model::train(st, tc, d.train, d.val, [&](const model::StepReport& r) {
    seconds += r.seconds, attention += r.attention_seconds;
    finite = finite && std::isfinite(r.loss);
    json rec = {r.step, r.loss, nullptr};
    if (!std::isnan(r.val_loss)) rec[2] = r.val_loss;
    curve.push_back(rec);
    progress.add(units, fmt::format("training {} {}/{}", v.name, r.step, tc.steps));
  }, -1, &task);
  const double val = model::evaluate(st.model, d.val, tc.batch, tc.seq_len, tc.eval_batches);
  json log = {{"steps", tc.steps},
                    {"tokens", tc.steps * tc.batch * tc.seq_len},
                    {"seconds", seconds},
                    {"tok_s", static_cast<double>(tc.steps * tc.batch * tc.seq_len) / seconds},
                    {"attention_share", attention / seconds},
                    {"final_val_loss", val},
                    {"finite", finite && std::isfinite(val)},
                    {"curve", curve},
                    {"cached", false}};
  fs::create_directories(dir);
  model::save_checkpoint(dir + "/model.safetensors", st, tc);
  log["peak_fp32_gflops"] = peak_gflops;
  write_file_atomically(dir + "/log.json", log.dump() + "\n", dir + "/log.json");
  return {std::move(st.model), log};
}

struct CacheRun {
  std::string cache, dtype;
};

// The rolling window the causal models are streamed and evaluated through: an eighth of the
// context, so a stream of the whole context is 8 windows long.
int64_t rolling_window(int64_t context) { return std::max<int64_t>(4, context / 8); }

std::vector<CacheRun> caches_for(const Variant& v) {
  const int64_t w = rolling_window(v.config.context);
  if (v.group == "heads")
    return {{"contiguous", "f32"}, {"contiguous", "bf16"}, {"contiguous", "f16"}, {"contiguous", "int8"},
            {"contiguous", "int4"}, {"paged:16", "f32"}, {fmt::format("rolling:w={},sinks=4", w), "f32"},
            {fmt::format("rolling:w={},sinks=0", w), "f32"}};
  if (v.group == "window") return {{"contiguous", "f32"}, {v.rolling, "f32"}, {v.rolling, "int8"}};
  if (v.group == "sparse") return {{"contiguous", "f32"}, {"contiguous", "int8"}};
  if (v.group == "latent") return {{"contiguous", "f32"}, {"contiguous", "bf16"}};  // MlaCache's storages
  return {{"contiguous", "f32"}};
}

// Streams: the model's context through caches that keep a window, with and without sinks.
std::vector<CacheRun> streams_for(const Variant& v) {
  const int64_t w = rolling_window(v.config.context);
  if (v.name == "mha")
    return {{"contiguous", "f32"}, {fmt::format("rolling:w={},sinks=0", w), "f32"},
            {fmt::format("rolling:w={},sinks=4", w), "f32"}};
  if (v.group == "window") return {{v.rolling, "f32"}};
  return {};
}

json evaluate_variant(const Variant& v, const model::Model& m, const Budget& b, const Data& d,
                      const model::PasskeyTask& task, Progress& progress) {
  const int64_t ctx = m.config().context;
  const double units = layer_units(v.config);
  json out = json::object();
  json caches = json::array();
  std::optional<model::WindowScores> ref;
  for (const CacheRun& c : caches_for(v)) {
    const KvCacheConfig cfg = model::parse_cache(c.cache, c.dtype);
    model::WindowScores s = model::score_windows(m, d.test, ctx, b.windows, cfg);
    if (!ref) ref = s;
    caches.push_back({{"cache", c.cache},
                      {"kv_dtype", c.dtype},
                      {"perplexity", to_json(model::perplexity(s.nll))},
                      {"divergence", to_json(model::divergence(*ref, s))},
                      {"speed_and_memory", speed_and_memory(s, m.config(), cfg)}});
    progress.add(units * 0.1 * static_cast<double>(b.windows), fmt::format("evaluating {} {} {}", v.name, c.cache, c.dtype));
  }
  out["caches"] = caches;
  out["passkey"] = to_json(model::passkey_grid(m, task, b.lengths, {0.0, 0.25, 0.5, 0.75, 1.0}, b.samples, 1));
  progress.add(units * 0.02 * static_cast<double>(b.samples * static_cast<int64_t>(b.lengths.size())), "pass-key " + v.name);
  json streams = json::array();
  for (const CacheRun& c : streams_for(v)) {
    const KvCacheConfig cfg = model::parse_cache(c.cache, c.dtype);
    std::vector<double> mean(static_cast<size_t>(ctx - 1), 0.0);
    const int64_t span = static_cast<int64_t>(d.test.size()) - ctx;
    for (int64_t s = 0; s < b.streams; ++s) {
      const std::vector<double> nll = model::stream_nll(m, d.test, span * s / b.streams, ctx, cfg);
      for (size_t i = 0; i < nll.size(); ++i) mean[i] += nll[i] / static_cast<double>(b.streams);
    }
    streams.push_back({{"cache", c.cache}, {"nll", mean}});
    progress.add(units * 0.2 * static_cast<double>(b.streams), "streams " + v.name);
  }
  out["streams"] = streams;
  return out;
}

// One attention layer's training step (forward + backward) on random inputs, ms per call,
// the median of three timed batches of calls.
double time_attention(const Pattern& pattern, const Method& method, int64_t n, int64_t hq, int64_t hkv, int64_t d,
                      double seconds) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  auto fill = [&](int64_t count) {
    std::vector<float> x(static_cast<size_t>(count));
    for (float& e : x) e = nd(rng);
    return x;
  };
  const std::vector<float> q = fill(hq * n * d), k = fill(hkv * n * d), v = fill(hkv * n * d), dout = fill(hq * n * d);
  std::vector<float> o(q.size()), lse(static_cast<size_t>(hq * n)), dq(q.size()), dk(k.size()), dv(v.size());
  const TensorView qv(q.data(), DType::f32, {1, hq, n, d}), kv(k.data(), DType::f32, {1, hkv, n, d}),
      vv(v.data(), DType::f32, {1, hkv, n, d});
  AttendOptions opts;
  opts.pattern = pattern;
  auto step = [&] {
    if (method.has_recurrent_state()) {
      linear_attend_into(qv, kv, vv, method.linear, MutTensorView(o.data(), DType::f32, {1, hq, n, d}));
      linear_attend_backward_into(qv, kv, vv, TensorView(dout.data(), DType::f32, {1, hq, n, d}), method.linear,
                                  MutTensorView(dq.data(), DType::f32, {1, hq, n, d}),
                                  MutTensorView(dk.data(), DType::f32, {1, hkv, n, d}),
                                  MutTensorView(dv.data(), DType::f32, {1, hkv, n, d}));
      return;
    }
    attend_into(qv, kv, vv, opts, MutTensorView(o.data(), DType::f32, {1, hq, n, d}),
                MutTensorView(lse.data(), DType::f32, {1, hq, n}));
    attend_backward_into(qv, kv, vv, TensorView(o.data(), DType::f32, {1, hq, n, d}),
                         TensorView(lse.data(), DType::f32, {1, hq, n}), TensorView(dout.data(), DType::f32, {1, hq, n, d}),
                         opts, MutTensorView(dq.data(), DType::f32, {1, hq, n, d}),
                         MutTensorView(dk.data(), DType::f32, {1, hkv, n, d}),
                         MutTensorView(dv.data(), DType::f32, {1, hkv, n, d}), MutTensorView{});
  };
  step();  // warm-up
  std::vector<double> ms;
  for (int r = 0; r < 3; ++r) {
    int64_t calls = 0;
    const auto t0 = clock::now();
    double el = 0;
    do {
      step();
      ++calls;
      el = std::chrono::duration<double>(clock::now() - t0).count();
    } while (el < seconds / 3);
    ms.push_back(1e3 * el / static_cast<double>(calls));
  }
  std::sort(ms.begin(), ms.end());
  return ms[1];
}

// Training FLOPs of one attention step: the forward's visited-pair FLOPs (flops.hpp) times
// 3.5, FlashAttention's count for forward + backward (the backward is 2.5 forwards); for a
// linear-cost method its forward's FLOPs (linear_flops) times the same 3.5; for MLA the
// naive form's attention that training runs (every head's queries and keys d + d_r wide).
double step_flops(const Pattern& p, const Method& m, int64_t n, int64_t hq, int64_t hkv, int64_t d) {
  if (m.has_recurrent_state()) return 3.5 * linear_flops(m.linear, 1, hq, hkv, n, d, d);
  const bool mla = m.family == MethodFamily::mla;
  AttnShape shape;
  shape.q_heads = hq, shape.kv_heads = mla ? hq : hkv, shape.q_len = n, shape.kv_len = n;
  shape.d_qk = d + (mla ? m.mla.rope : 0), shape.d_v = d;
  return 3.5 * count_work(shape, p.bind(n, n)).flops;
}

json timing(const std::vector<Variant>& vars, const Budget& b, double peak_gflops, Progress& progress) {
  json out = json::array();
  for (const Variant& v : vars) {
    // MLA has no row: its call (mla_forward) holds its projections too, so it would not
    // time one attention kernel as the other rows do.
    if (v.name == "mha-seed2" || v.group == "probe" || v.group == "latent") continue;
    const model::ModelConfig& c = v.config;
    const Pattern p = Pattern::parse(c.layers[0].pattern);
    const Method m = model::parse_layer_method(c.layers[0].method, "method");
    json points = json::array();
    for (const int64_t n : b.timing_contexts) {
      const double ms = time_attention(p, m, n, c.n_heads, c.layers[0].kv_heads, c.head_dim(), b.timing_seconds);
      const BoundPattern bound = p.bind(n, n);
      const double gflops = step_flops(p, m, n, c.n_heads, c.layers[0].kv_heads, c.head_dim()) / (ms * 1e6);
      points.push_back({{"n", n}, {"ms", ms}, {"gflops", gflops}, {"peak_fraction", gflops / peak_gflops},
                        {"visited_fraction", static_cast<double>(bound.visited_pairs()) / (double(n) * double(n))}});
      progress.add(b.timing_seconds / 0.15, fmt::format("timing {} n={}", v.name, n));
    }
    out.push_back({{"variant", v.name}, {"label", v.label}, {"pattern", c.layers[0].pattern},
                   {"method", c.layers[0].method}, {"points", points}});
  }
  return out;
}

// KV bytes against context for each cache design, from kv-size's formulas.
json kv_designs(const std::vector<Variant>& vars) {
  const auto find = [&](const std::string& name) -> const Variant& {
    return *std::find_if(vars.begin(), vars.end(), [&](const Variant& v) { return v.name == name; });
  };
  const int64_t w = rolling_window(find("mha").config.context);
  const std::vector<std::tuple<std::string, std::string, std::string, std::string>> designs = {
      {"MHA f32", "mha", "contiguous", "f32"},       {"MHA bf16", "mha", "contiguous", "bf16"},
      {"MHA int8", "mha", "contiguous", "int8"},     {"MHA int4", "mha", "contiguous", "int4"},
      {find("gqa").label + " f32", "gqa", "contiguous", "f32"}, {"MQA f32", "mqa", "contiguous", "f32"},
      {"MHA paged:16 f32", "mha", "paged:16", "f32"},
      {fmt::format("MHA rolling w={} + 4 sinks f32", w), "mha", fmt::format("rolling:w={},sinks=4", w), "f32"},
      {"linear (elu+1) recurrent state", "linear", "contiguous", "f32"},
      {find("performer").label + " recurrent state", "performer", "contiguous", "f32"},
      {find("mla").label + " latent f32", "mla", "contiguous", "f32"}};
  json out = json::array();
  for (const auto& [label, name, cache, dtype] : designs) {
    json points = json::array();
    for (int64_t n = 16; n <= 65536; n *= 2)
      points.push_back({n, model::kv_bytes_formula(find(name).config, model::parse_cache(cache, dtype), n)});
    out.push_back({{"label", label}, {"points", points}});
  }
  return out;
}

int run(const Options& o, const std::string& command) {
  const std::string out = !o.out.empty() ? o.out : o.quick ? "report-quick" : "report";
  const char* env = std::getenv("ATTNKIT_CACHE");
  const std::string home = std::getenv("HOME") ? std::getenv("HOME") : ".";
  const std::string cache_dir = !o.cache_dir.empty() ? o.cache_dir
                                : env && *env        ? std::string(env) + "/report"
                                                     : home + "/.cache/attnkit/report";
  model::ModelConfig base = model::parse_config(o.config.empty() ? read_whole_file(std::string(ATTNKIT_SOURCE_DIR) + "/configs/report.json", 1u << 20)
                                                                 : read_whole_file(o.config, 1u << 20));
  check(base.vocab == model::kByteVocab, [&] { return fmt::format("--config: vocab ({}) must be 256", base.vocab); });
  check(base.context + 1 >= model::PasskeyTask::min_length(), [&] {
    return fmt::format("--config: context ({}) must be at least {} for the pass-key samples", base.context,
                       model::PasskeyTask::min_length() - 1);
  });
  const Budget b = make_budget(o.quick, base, o.steps);
  const std::vector<Variant> vars = make_variants(base);
  fs::create_directories(out);
  fs::create_directories(cache_dir);

  const model::Corpus corpus = model::load_brown(o.corpus.empty() ? model::default_corpus_dir() : o.corpus);
  Data d{model::byte_encode(corpus.train), model::byte_encode(corpus.validation), model::byte_encode(corpus.test), {}, 0};
  d.fingerprint = fmt::format("{:016x}-{}-{}-{}", fnv(corpus.train, fnv(corpus.validation)), corpus.train.size(),
                              corpus.validation.size(), corpus.test.size());
  d.unigram = model::unigram_entropy(d.train, d.val, model::kByteVocab);
  const model::PasskeyTask train_task(corpus.train), test_task(corpus.test);

  double total = 0;
  for (const Variant& v : vars)
    total += layer_units(v.config) * (static_cast<double>(b.steps) + 0.1 * static_cast<double>(b.windows * 8) +
                                      0.02 * static_cast<double>(b.samples * static_cast<int64_t>(b.lengths.size())) +
                                      0.2 * static_cast<double>(b.streams * 3));
  total += 10.0 * static_cast<double>(b.timing_contexts.size()) * b.timing_seconds / 0.15;
  Progress progress(total);
  fmt::print(stderr, "report: {} variants, {} steps of {} x {} tokens each; models cached in {}\n", vars.size(), b.steps,
             b.batch, base.context, cache_dir);

  // The fp32 FMA peak, measured here, is what the attention timings are a fraction of.
  HwOptions hw;
  hw.seconds_per_measurement = 0.2, hw.dram_bytes = 0;
  const HwInfo peak = measure_hwinfo(hw);
  json variants = json::array();
  for (const Variant& v : vars) {
    auto [m, log] = train_or_load(v, b, d, train_task, cache_dir, peak.fp32_fma_gflops, progress);
    json e = evaluate_variant(v, m, b, d, test_task, progress);
    const Pattern p = Pattern::parse(v.config.layers[0].pattern);
    e["name"] = v.name, e["label"] = v.label, e["group"] = v.group, e["reach"] = v.reach;
    e["layers"] = v.config.n_layers, e["pattern"] = v.config.layers[0].pattern, e["method"] = v.config.layers[0].method;
    e["kv_heads"] = v.config.layers[0].kv_heads, e["params"] = v.config.parameter_count();
    e["hidden_dim"] = v.config.hidden_dim;
    e["visited_fraction"] = static_cast<double>(p.bind(base.context, base.context).visited_pairs()) /
                            (static_cast<double>(base.context) * static_cast<double>(base.context));
    // Training FLOPs per token: 6 per parameter (forward + backward of every matrix, the tied
    // head counted once) and each layer's attention step over a training row.
    double attention_flops = 0;
    for (const auto& l : v.config.layers)
      attention_flops += step_flops(Pattern::parse(l.pattern), model::parse_layer_method(l.method, "method"), base.context,
                                    v.config.n_heads, l.kv_heads, v.config.head_dim());
    e["train_flops_per_token"] = 6.0 * static_cast<double>(v.config.parameter_count()) +
                                 attention_flops / static_cast<double>(base.context);
    if (!log.contains("peak_fp32_gflops")) log["peak_fp32_gflops"] = peak.fp32_fma_gflops, log["peak_measured_later"] = true;
    e["train"] = log;
    variants.push_back(e);
  }
  json results = {{"command", command},
                  {"quick", o.quick},
                  {"machine", run_metadata()},
                  {"threads", omp_get_max_threads()},
                  {"model", json::parse(model::config_to_json(base))},
                  {"budget",
                   {{"steps", b.steps}, {"batch", b.batch}, {"seq_len", base.context}, {"windows", b.windows},
                    {"streams", b.streams}, {"passkey_samples", b.samples}, {"passkey_fraction", kPasskeyFraction}}},
                  {"unigram_entropy", d.unigram},
                  {"variants", variants},
                  {"timing", timing(vars, b, peak.fp32_fma_gflops, progress)},
                  {"approximation", approximation(base.n_heads, base.head_dim(), base.context, o.quick)},
                  {"kv_designs", kv_designs(vars)}};
  progress.finish();
  results["peak_fp32_gflops"] = peak.fp32_fma_gflops;
  write_file_atomically(out + "/results.json", results.dump(1) + "\n", out + "/results.json");

  std::vector<std::string> plots;
  if (!o.no_plots) {
    // Debian's interpreter, the one python3-matplotlib installs into, before any other on PATH.
    const std::string python = !o.python.empty() ? o.python : fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
    const std::string script = std::string(ATTNKIT_SOURCE_DIR) + "/scripts/plot_report.py";
    const std::string cmd = fmt::format("'{}' '{}' '{}/results.json' '{}'", python, script, out, out);
    const int rc = std::system(cmd.c_str());
    check(rc == 0, [&] {
      return fmt::format("the plots failed ({}): is python3-matplotlib installed? (scripts/setup.sh installs it)", cmd);
    });
    for (const auto& f : fs::directory_iterator(out))
      if (f.path().extension() == ".png") plots.push_back(f.path().filename().string());
    std::sort(plots.begin(), plots.end());
  }
  // Pages written beside the report by hand (follow-up experiments) are linked from it.
  std::vector<std::string> pages;
  for (const auto& f : fs::directory_iterator(out))
    if (f.path().extension() == ".md" && f.path().filename() != "README.md") pages.push_back(f.path().filename().string());
  std::sort(pages.begin(), pages.end());
  write_file_atomically(out + "/README.md", report_markdown(results, plots, pages), out + "/README.md");
  fmt::print("report: {}/README.md ({} plots, results.json)\n", out, plots.size());
  return 0;
}

std::function<int()> setup(CLI::App& sub) {
  auto o = std::make_shared<Options>();
  sub.add_flag("--quick", o->quick, "the small budget (a few minutes on 2 cores)");
  sub.add_option("--out", o->out, "report folder (default: report-quick with --quick, else report)");
  sub.add_option("--cache-dir", o->cache_dir, "trained models (default: $ATTNKIT_CACHE/report, ~/.cache/attnkit/report)");
  sub.add_option("--corpus", o->corpus, "Brown corpus folder (default: the cache scripts/fetch_corpus.sh fills)");
  sub.add_option("--config", o->config, "base model config (default: configs/report.json)");
  add_int(sub, "--steps", o->steps, "training steps per variant (default: the budget's)", 1, int64_t{1} << 40);
  sub.add_flag("--no-plots", o->no_plots, "skip the PNG plots (no matplotlib needed)");
  sub.add_option("--python", o->python, "the Python that runs scripts/plot_report.py (default: /usr/bin/python3)");
  add_threads(sub, o->threads);
  return [o, &sub] {
    apply_threads(o->threads);
    std::string command = "attnkit report";
    for (const auto* opt : sub.get_options())
      if (opt->count() > 0 && opt->get_name() != "--help")
        command += " " + opt->get_name() + (opt->get_expected_min() > 0 ? " " + opt->as<std::string>() : "");
    return run(*o, command);
  };
}

ATTNKIT_COMMAND("report", "train, evaluate and plot every attention variant and cache kind: the trade-off report", setup);

}  // namespace
}  // namespace attnkit::cli
