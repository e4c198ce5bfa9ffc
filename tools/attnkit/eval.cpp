// attnkit eval: a trained byte-level model on the Brown test split (model/eval.hpp):
// perplexity and bits per byte with their uncertainty, the cache under test against the
// f32 contiguous cache (KL divergence, same top token), prefill and decode speed, the
// cache's bytes (allocated and from kv-size's formulas), and pass-key retrieval over a grid
// of lengths x depths. Not for: training (train) or free text (generate).
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/kv_size.hpp"
#include "command.hpp"
#include "eval_json.hpp"
#include "model/corpus.hpp"
#include "model/generate.hpp"
#include "model/train.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

struct Options {
  std::string model, corpus, cache = "contiguous", kv_dtype = "f32", lengths, depths = "0,0.25,0.5,0.75,1";
  int64_t context = 0, windows = 16, samples = 10;
  bool no_passkey = false;
  JsonOutput json;
  int threads = 0;
};

template <class T>
std::vector<T> parse_list(const std::string& text, const char* flag) {
  std::vector<T> out;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ',')) {
    T v{};
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    check(ec == std::errc() && end == item.data() + item.size(),
          [&] { return fmt::format("{}: \"{}\" is not a number", flag, printable(item)); });
    out.push_back(v);
  }
  check(!out.empty(), [&] { return fmt::format("{} needs at least one value", flag); });
  return out;
}

int run(const Options& o) {
  namespace fs = std::filesystem;
  const std::string path = fs::is_directory(o.model) ? o.model + "/model.safetensors" : o.model;
  const KvCacheConfig cache = model::parse_cache(o.cache, o.kv_dtype);
  const model::Model m = model::load_checkpoint(path, nullptr).model;
  const model::ModelConfig& mc = m.config();
  check(mc.vocab == model::kByteVocab,
        [&] { return fmt::format("--model: eval reads the byte tokenizer's models (vocabulary 256, not {})", mc.vocab); });
  const int64_t context = o.context > 0 ? o.context : mc.context;
  const model::Corpus corpus = model::load_brown(o.corpus.empty() ? model::default_corpus_dir() : o.corpus);
  const std::vector<int32_t> test = model::byte_encode(corpus.test);
  const KvCacheConfig reference = model::parse_cache("contiguous", "f32");
  const bool is_reference = o.cache == "contiguous" && o.kv_dtype == "f32";

  const model::WindowScores ref = model::score_windows(m, test, context, o.windows, reference);
  const model::Perplexity ref_ppl = model::perplexity(ref.nll);
  const model::WindowScores run = is_reference ? ref : model::score_windows(m, test, context, o.windows, cache);
  const model::Perplexity ppl = model::perplexity(run.nll);
  const model::Divergence div = model::divergence(ref, run);
  const nlohmann::json speed = speed_and_memory(run, mc, cache);

  std::vector<model::PasskeyCell> cells;
  if (!o.no_passkey) {
    std::vector<int64_t> lengths;
    if (!o.lengths.empty()) {
      lengths = parse_list<int64_t>(o.lengths, "--passkey-lengths");
    } else {  // four lengths from the shortest sample to the context
      const int64_t lo = model::PasskeyTask::min_length(), hi = mc.context + 1;
      for (int i = 0; i < 4 && lo <= hi; ++i) lengths.push_back(lo + (hi - lo) * i / 3);
    }
    const std::vector<double> depths = parse_list<double>(o.depths, "--passkey-depths");
    const model::PasskeyTask task(corpus.test);
    cells = model::passkey_grid(m, task, lengths, depths, o.samples, 1);
  }

  nlohmann::json j = {{"model", path},
                      {"cache", o.cache},
                      {"kv_dtype", o.kv_dtype},
                      {"test_bytes", test.size()},
                      {"context", context},
                      {"windows", run.windows},
                      {"reference", to_json(ref_ppl)},
                      {"perplexity", to_json(ppl)},
                      {"divergence", to_json(div)},
                      {"speed_and_memory", speed},
                      {"passkey", to_json(cells)}};
  if (o.json.given()) write_json(o.json, j);
  if (o.json.to_stdout()) return 0;

  fmt::print("test split: {} bytes; {} windows of {} tokens, the second half of each scored ({} tokens)\n", test.size(),
             run.windows, context, ppl.tokens);
  fmt::print("f32 contiguous:  perplexity {:.4f} ± {:.4f}, {:.4f} ± {:.4f} bits/byte\n", ref_ppl.ppl, ref_ppl.ppl_err,
             ref_ppl.bits_per_byte, ref_ppl.bpb_err);
  if (!is_reference) {
    fmt::print("{} {}:  perplexity {:.4f} ± {:.4f}, {:.4f} ± {:.4f} bits/byte ({:+.3f} %)\n", o.cache, o.kv_dtype,
               ppl.ppl, ppl.ppl_err, ppl.bits_per_byte, ppl.bpb_err, 100.0 * (ppl.ppl / ref_ppl.ppl - 1.0));
    fmt::print("  against f32 contiguous: KL divergence mean {:.6f} ± {:.6f}, 99th percentile {:.6f}; same top token "
               "{:.2f} %\n",
               div.kl_mean, div.kl_stderr, div.kl_p99, 100.0 * div.same_top);
  }
  fmt::print("speed ({} {}): prefill {:.0f} tok/s, decode {:.0f} tok/s\n", o.cache, o.kv_dtype,
             speed["prefill_tok_s"].get<double>(), speed["decode_tok_s"].get<double>());
  const int64_t alloc = speed["kv_bytes_allocated"], formula = speed["kv_bytes_formula"];
  fmt::print("KV cache at {} tokens: {} bytes allocated, {} by kv-size's formulas ({}); {:.1f} bytes/token held, "
             "{:.1f} per token in steady state\n",
             context, alloc, formula,
             alloc == formula ? "they agree"
                              : fmt::format("differ by {} bytes: int4 allocates its f16 residual for R + G - 1 tokens",
                                            alloc - formula),
             speed["kv_bytes_per_token_at_context"].get<double>(), speed["kv_bytes_per_token_steady"].get<double>());
  if (!cells.empty()) {
    fmt::print("pass-key retrieval (exact key, {} samples per cell; the model's own attention):\n", o.samples);
    fmt::print("{:>8}", "length");
    std::vector<double> depths;
    for (const auto& c : cells)
      if (std::find(depths.begin(), depths.end(), c.depth) == depths.end()) depths.push_back(c.depth);
    for (double d : depths) fmt::print("  depth {:<4}", d);
    for (size_t i = 0; i < cells.size(); ++i) {
      if (i % depths.size() == 0) fmt::print("\n{:>8}", cells[i].length);
      fmt::print("  {:>9.0f} %", 100.0 * cells[i].accuracy());
    }
    fmt::print("\n");
  }
  return 0;
}

std::function<int()> setup(CLI::App& sub) {
  auto o = std::make_shared<Options>();
  sub.add_option("--model", o->model, "a checkpoint (model.safetensors) or the folder attnkit train wrote")->required();
  sub.add_option("--corpus", o->corpus, "Brown corpus folder (default: the cache scripts/fetch_corpus.sh fills)");
  sub.add_option("--cache", o->cache, "cache under test: contiguous | paged[:P] | rolling:w=W[,sinks=S]");
  sub.add_option("--kv-dtype", o->kv_dtype, "its storage: f32 | bf16 | f16 | int8 | int4");
  add_int(sub, "--context", o->context, "tokens per window, even (default: the model's context)", 0, int64_t{1} << 31);
  add_int(sub, "--windows", o->windows, "windows of the test split to score, spread evenly (0: all)", 0,
          int64_t{1} << 31);
  sub.add_option("--passkey-lengths", o->lengths, "pass-key sample lengths in bytes, comma-separated");
  sub.add_option("--passkey-depths", o->depths, "pass-key depths in [0, 1], comma-separated");
  add_int(sub, "--passkey-samples", o->samples, "pass-key samples per cell", 1, 1 << 20);
  sub.add_flag("--no-passkey", o->no_passkey, "skip the pass-key grid");
  add_json(sub, o->json, "the figures");
  add_threads(sub, o->threads);
  return [o] {
    apply_threads(o->threads);
    return run(*o);
  };
}

ATTNKIT_COMMAND("eval", "perplexity, KL divergence, speed, KV bytes and pass-key retrieval on the test split", setup);

}  // namespace
}  // namespace attnkit::cli
