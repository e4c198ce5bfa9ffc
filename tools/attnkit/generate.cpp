// attnkit generate: text from a trained model (attnkit train's checkpoint) over a KV cache
// of any kind, prefill through the flash kernel, decode through the decode kernel
// (model/generate.hpp). --prompt goes through the byte tokenizer, or llama2.c's
// tokenizer.bin with --tokenizer (BOS first, as run.c); --prompt-ids / --print-ids work on
// ids. A llama2.c model, or any model with a tokenizer, stops at BOS as run.c does. Speeds
// and the cache's bytes go to stderr. Not for: training or evaluation.
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "command.hpp"
#include "model/corpus.hpp"
#include "model/generate.hpp"
#include "model/llama2c.hpp"
#include "model/tokenizer.hpp"
#include "model/train.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

struct Options {
  std::string model, tokenizer, prompt, prompt_ids, cache = "contiguous", kv_dtype = "f32";
  int64_t max_tokens = 256, top_k = 0;
  double temperature = 0.8, top_p = 0.95;
  uint64_t seed = 0;
  bool print_ids = false;
  int threads = 0;
};

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ',')) {
    int32_t id = -1;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    check(ec == std::errc() && end == item.data() + item.size() && id >= 0, [&] {
      return fmt::format("--prompt-ids: \"{}\" is not a token id (a non-negative 32-bit integer)", printable(item));
    });
    ids.push_back(id);
  }
  return ids;
}

int run(const Options& o) {
  namespace fs = std::filesystem;
  const std::string path = fs::is_directory(o.model) ? o.model + "/model.safetensors" : o.model;
  const KvCacheConfig cache_cfg = model::parse_cache(o.cache, o.kv_dtype);
  check(o.prompt.empty() || o.prompt_ids.empty(), [] { return std::string("give --prompt or --prompt-ids, not both"); });
  const model::SamplingOptions sampling{o.temperature, o.top_k, o.top_p};
  const bool llama2c = path.size() > 4 && path.compare(path.size() - 4, 4, ".bin") == 0;
  const model::Model m = llama2c ? model::load_llama2c(path) : model::load_checkpoint(path, nullptr).model;
  const int64_t vocab = m.config().vocab;
  const bool bytes = vocab == model::kByteVocab && o.tokenizer.empty();
  check(bytes || !o.tokenizer.empty() || o.prompt.empty(), [&] {
    return fmt::format("--prompt needs --tokenizer for a model with a vocabulary of {} (the byte tokenizer covers {})",
                       vocab, model::kByteVocab);
  });
  std::optional<model::Tokenizer> tok;
  if (!o.tokenizer.empty()) tok.emplace(model::load_tokenizer(o.tokenizer, vocab));
  std::vector<int32_t> prompt;
  if (!o.prompt_ids.empty()) {
    prompt = parse_ids(o.prompt_ids);
  } else {
    prompt = tok ? tok->encode(o.prompt, true, false) : model::byte_encode(o.prompt);
  }
  // Byte models start from a line break, the others from BOS (run.c's empty prompt).
  if (prompt.empty()) prompt.push_back(bytes ? '\n' : model::kBosId);
  const bool stop_at_bos = llama2c || tok.has_value();
  model::Generator gen(m, cache_cfg);
  std::mt19937_64 rng(o.seed);
  const int64_t budget = std::min<int64_t>(o.max_tokens, m.config().context - static_cast<int64_t>(prompt.size()));
  check(budget >= 0, [&] {
    return fmt::format("the prompt ({} tokens) is longer than the model's context ({})", prompt.size(), m.config().context);
  });
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const std::vector<float>* logits = &gen.feed(prompt);
  const double prefill_s = std::chrono::duration<double>(clock::now() - t0).count();
  const bool print_text = !o.print_ids && (bytes || tok);
  if (print_text && o.prompt_ids.empty()) fmt::print("{}", o.prompt);
  std::vector<int32_t> out;
  const auto t1 = clock::now();
  for (int64_t i = 0; i < budget; ++i) {
    const int32_t next = model::sample(*logits, sampling, rng);
    if (stop_at_bos && next == model::kBosId) break;
    const int32_t prev = out.empty() ? prompt.back() : out.back();
    out.push_back(next);
    if (print_text) {
      const std::string piece = tok ? tok->decode_piece(prev, next) : std::string(1, static_cast<char>(next));
      // As run.c: a lone byte that is neither printable nor white space is not printed.
      const auto c = static_cast<unsigned char>(piece[0]);
      if (!tok || piece.size() != 1 || std::isprint(c) || std::isspace(c)) std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    if (i + 1 < budget) logits = &gen.feed(std::span<const int32_t>(&next, 1));
  }
  const double decode_s = std::chrono::duration<double>(clock::now() - t1).count();
  if (o.print_ids) {
    fmt::print("{}\n", fmt::join(out, " "));
  } else {
    fmt::print("\n");
  }
  fmt::print(stderr, "prefill: {} tokens at {:.0f} tok/s; decode: {} tokens at {:.0f} tok/s; KV cache ({} {}): {} bytes\n",
             prompt.size(), static_cast<double>(prompt.size()) / prefill_s, out.size(),
             static_cast<double>(out.size()) / std::max(decode_s, 1e-9), o.cache, o.kv_dtype, gen.kv_bytes());
  return 0;
}

std::function<int()> setup(CLI::App& sub) {
  auto o = std::make_shared<Options>();
  sub.add_option("--model", o->model, "a checkpoint (model.safetensors), the folder attnkit train wrote, or a llama2.c .bin")->required();
  sub.add_option("--prompt", o->prompt, "prompt text (the byte tokenizer, or --tokenizer's)");
  sub.add_option("--tokenizer", o->tokenizer, "llama2.c tokenizer.bin for --prompt and the printed text");
  sub.add_option("--prompt-ids", o->prompt_ids, "prompt as token ids, comma-separated (e.g. 1,2,3)");
  sub.add_flag("--print-ids", o->print_ids, "print the generated ids (one line, space-separated) instead of text");
  add_int(sub, "--max-tokens", o->max_tokens, "tokens to generate (at most the context left)", 0, int64_t{1} << 31);
  sub.add_option("--temperature", o->temperature, "sampling temperature; 0: greedy");
  add_int(sub, "--top-k", o->top_k, "sample among the k likeliest (0: off)", 0, int64_t{1} << 31);
  sub.add_option("--top-p", o->top_p, "nucleus sampling mass in (0, 1] (1: off)");
  sub.add_option("--seed", o->seed, "sampling seed");
  sub.add_option("--cache", o->cache, "contiguous | paged[:P] | rolling:w=W[,sinks=S]");
  sub.add_option("--kv-dtype", o->kv_dtype, "f32 | bf16 | f16 | int8 | int4");
  add_threads(sub, o->threads);
  return [o] {
    apply_threads(o->threads);
    return run(*o);
  };
}

ATTNKIT_COMMAND("generate", "generate text from a trained model over a KV cache of any kind", setup);

}  // namespace
}  // namespace attnkit::cli
