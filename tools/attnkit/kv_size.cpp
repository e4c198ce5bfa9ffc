// attnkit kv-size: KV-cache memory of a model shape or preset, as a table with exact bytes
// and binary units, an MHA/GQA/MQA/MLA/SWA comparison, or JSON. All numbers come from
// attnkit/kv_size.hpp; this file only parses options and prints. Not for: measuring a
// live cache.
#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"
#include "attnkit/kv_size.hpp"
#include "command.hpp"
#include "options.hpp"
#include "kv_report.hpp"

namespace attnkit::cli {
namespace {

using nlohmann::json;

// Per-token rates are doubles only because int4's amortised rate may be fractional; the
// exact ones print and serialise as integers.
bool is_whole(double x) { return static_cast<double>(static_cast<int64_t>(x)) == x; }

json number(double x) { return is_whole(x) ? json(static_cast<int64_t>(x)) : json(x); }

std::string per_token_string(double x) {
  return is_whole(x) ? fmt::format("{}", static_cast<int64_t>(x)) : fmt::format("{:.2f}", x);
}

json config_json(const KvConfig& c) {
  return {{"name", c.name},
          {"layers", c.layers},
          {"q_heads", c.q_heads},
          {"kv_heads", c.kv_heads},
          {"head_dim", c.head_dim},
          {"v_head_dim", c.effective_v_head_dim()},
          {"context", c.context},
          {"batch", c.batch},
          {"dtype", kv_storage_name(c.storage)},
          {"window", c.window ? json(*c.window) : json(nullptr)},
          {"sinks", c.sinks},
          {"mla_latent", c.mla_latent},
          {"mla_rope", c.mla_rope},
          {"group", c.group},
          {"residual", c.residual}};
}

json bytes_json(const KvBytes& b) {
  return {{"k", b.k}, {"v", b.v}, {"overhead", b.overhead}, {"total", b.total()}};
}

json size_json(const KvConfig& c, const KvSize& s) {
  return {{"config", config_json(c)},
          {"tokens_held", s.tokens_held},
          {"quantized_tokens", s.quantized_tokens},
          {"residual_tokens", s.residual_tokens},
          {"bytes_per_token_per_layer", number(s.bytes_per_token_per_layer)},
          {"bytes_per_token", number(s.bytes_per_token_per_layer * static_cast<double>(c.layers))},
          {"per_layer", bytes_json(s.per_layer)},
          {"total", bytes_json(s.all)}};
}

json compare_json(const std::vector<KvCompareRow>& rows) {
  json out = json::array();
  for (const KvCompareRow& r : rows)
    out.push_back({{"label", r.label},
                   {"kv_heads", r.config.is_mla() ? 1 : r.config.kv_heads},
                   {"mla_latent", r.config.mla_latent},
                   {"mla_rope", r.config.mla_rope},
                   {"window", r.config.window ? json(*r.config.window) : json(nullptr)},
                   {"tokens_held", r.size.tokens_held},
                   {"bytes_per_token", number(r.bytes_per_token)},
                   {"total_bytes", r.size.all.total()},
                   {"ratio_vs_mha", r.ratio_vs_mha},
                   {"matches_input", r.matches_input}});
  return out;
}

std::string layout_line(const KvConfig& c) {
  const std::string dims = c.effective_v_head_dim() == c.head_dim
                               ? fmt::format("head dim {}", c.head_dim)
                               : fmt::format("head dims {} (K) / {} (V)", c.head_dim, c.effective_v_head_dim());
  std::string line = fmt::format("{}: {} layers, {} query heads, {} KV heads, {}, {}", c.name, c.layers, c.q_heads,
                                 c.kv_heads, dims, kv_storage_name(c.storage));
  if (c.is_mla())
    line += fmt::format("\nMLA cache: latent {} + rope {} = {} values per token per layer (one shared head, no V)",
                        c.mla_latent, c.mla_rope, c.mla_latent + c.mla_rope);
  return line;
}

void print_size(const KvConfig& c, const KvSize& s) {
  fmt::print("{}\n", layout_line(c));
  fmt::print("context {} tokens x batch {}", c.context, c.batch);
  if (c.window)
    fmt::print("; rolling window {}{} holds {} tokens per sequence", *c.window,
               c.sinks ? fmt::format(" + {} sinks", c.sinks) : std::string(), s.tokens_held);
  fmt::print("\n");
  if (c.storage == KvStorage::int4)
    fmt::print("int4: {} quantized tokens (groups of {}), {} f16 residual tokens per sequence\n", s.quantized_tokens,
               c.group, s.residual_tokens);
  const double per_token = s.bytes_per_token_per_layer;
  const double per_token_all = per_token * static_cast<double>(c.layers);
  struct Line {
    std::string what, bytes, human;
  };
  const std::vector<Line> lines = {
      {"per token, one layer", per_token_string(per_token), format_bytes(per_token)},
      {"per token, all layers", per_token_string(per_token_all), format_bytes(per_token_all)},
      {"K, total", fmt::format("{}", s.all.k), format_bytes(static_cast<double>(s.all.k))},
      {"V, total", fmt::format("{}", s.all.v), format_bytes(static_cast<double>(s.all.v))},
      {"scales + zeros, total", fmt::format("{}", s.all.overhead), format_bytes(static_cast<double>(s.all.overhead))},
      {"total", fmt::format("{}", s.all.total()), format_bytes(static_cast<double>(s.all.total()))},
  };
  fmt::print("\n{:<22} {:>20}  {:>11}\n", "", "bytes", "human");
  for (const Line& l : lines) fmt::print("{:<22} {:>20}  {:>11}\n", l.what, l.bytes, l.human);
  if (c.storage == KvStorage::int4)
    fmt::print("(int4 per-token figures are steady-state: scales amortised over {} tokens, residual excluded)\n",
               c.group);
}

void print_compare(const KvConfig& c, const std::vector<KvCompareRow>& rows) {
  size_t width = 6;
  for (const KvCompareRow& r : rows) width = std::max(width, r.label.size());
  fmt::print("\n  {:<{}} {:>12} {:>11} {:>20} {:>11} {:>8}\n", "layout", width, "bytes/token", "", "total bytes", "",
             "vs MHA");
  for (const KvCompareRow& r : rows) {
    const auto total = static_cast<double>(r.size.all.total());
    fmt::print("{} {:<{}} {:>12} {:>11} {:>20} {:>11} {:>8.4f}\n", r.matches_input ? '*' : ' ', r.label, width,
               per_token_string(r.bytes_per_token), format_bytes(r.bytes_per_token), r.size.all.total(),
               format_bytes(total), r.ratio_vs_mha);
  }
  fmt::print("bytes/token: all {} layers, one sequence. Totals: context {} x batch {}, {}.\n", c.layers, c.context,
             c.batch, kv_storage_name(c.storage));
  fmt::print("GQA kv=n has n KV heads. SWA holds min(context, window + sinks) tokens. * = the given config.\n");
}

void print_presets(const JsonOutput& as_json) {
  if (as_json.given()) {
    json out = json::array();
    for (const KvPreset& p : kv_presets()) out.push_back({{"source", p.source}, {"config", config_json(p.config)}});
    write_json(as_json, out);
    if (as_json.to_stdout()) return;
  }
  fmt::print("{:<12} {:>6} {:>6} {:>4} {:>7} {:>7} {:>7} {:>7} {:>5}  {}\n", "preset", "layers", "heads", "kv", "dim",
             "context", "window", "mla", "dtype", "source");
  for (const KvPreset& p : kv_presets()) {
    const KvConfig& c = p.config;
    const std::string dim = c.effective_v_head_dim() == c.head_dim
                                ? fmt::format("{}", c.head_dim)
                                : fmt::format("{}/{}", c.head_dim, c.effective_v_head_dim());
    fmt::print("{:<12} {:>6} {:>6} {:>4} {:>7} {:>7} {:>7} {:>7} {:>5}  {}\n", c.name, c.layers, c.q_heads,
               c.kv_heads, dim, c.context, c.window ? fmt::format("{}", *c.window) : "-",
               c.is_mla() ? fmt::format("{}+{}", c.mla_latent, c.mla_rope) : "-", kv_storage_name(c.storage),
               p.source);
  }
}

struct Options {
  std::string preset, dtype;
  int64_t layers = 0, heads = 0, kv_heads = 0, head_dim = 0, v_head_dim = 0, context = 0, batch = 0;
  int64_t window = 0, sinks = 0, mla_latent = 0, mla_rope = 0, group = 0, residual = 0;
  bool compare = false, list = false;
  JsonOutput json;
};

// Options a preset does not set (or the user overrides) are applied on top of it; a
// custom shape needs at least layers, heads and head dim.
KvConfig build_config(const Options& o, const CLI::App& sub) {
  auto given = [&](const char* name) { return sub.get_option(name)->count() > 0; };
  KvConfig c;
  if (given("--preset")) {
    c = parse_option("--preset", o.preset, [](const std::string& t) { return kv_preset(t); });
  } else {
    for (const char* required : {"--layers", "--heads", "--head-dim"})
      if (!given(required))
        throw Error(fmt::format("without --preset, {} is required (as are --layers, --heads, --head-dim)", required));
    c.name = "custom";
    c.context = 4096;
  }
  if (given("--layers")) c.layers = o.layers;
  if (given("--heads")) c.q_heads = o.heads;
  if (given("--kv-heads")) c.kv_heads = o.kv_heads;
  else if (!given("--preset")) c.kv_heads = o.heads;  // MHA unless told otherwise
  if (given("--head-dim")) c.head_dim = o.head_dim;
  if (given("--v-head-dim")) c.v_head_dim = o.v_head_dim;
  if (given("--context")) c.context = o.context;
  if (given("--batch")) c.batch = o.batch;
  if (given("--dtype"))
    c.storage = parse_option("--dtype", o.dtype, [](const std::string& t) { return parse_kv_storage(t); });
  if (given("--window")) {
    if (o.window == 0) c.window.reset();  // 0 turns a preset's window off
    else c.window = o.window;
  }
  if (given("--sinks")) c.sinks = o.sinks;
  if (given("--mla-latent")) {
    c.mla_latent = o.mla_latent;
    if (!given("--mla-rope")) c.mla_rope = 0;
  }
  if (given("--mla-rope")) c.mla_rope = o.mla_rope;
  for (const char* int4_only : {"--group", "--residual"})
    if (given(int4_only) && c.storage != KvStorage::int4)
      throw Error(fmt::format("{} applies to --dtype int4 only (dtype is {})", int4_only, kv_storage_name(c.storage)));
  if (given("--group")) c.group = o.group;
  if (given("--residual")) c.residual = o.residual;
  c.validate();
  return c;
}

int run(const Options& o, const CLI::App& sub) {
  const std::vector<OutputPath> outputs = {{o.json.target(), "--json", true}};
  check_outputs(outputs);
  if (o.list) {
    print_presets(o.json);
    return 0;
  }
  const KvConfig cfg = build_config(o, sub);
  const KvSize size = kv_size(cfg);
  if (o.json.given()) {
    json out = size_json(cfg, size);
    if (o.compare) out["compare"] = compare_json(kv_compare(cfg));
    write_json(o.json, out);
    if (o.json.to_stdout()) return 0;
  }
  print_size(cfg, size);
  if (o.compare) print_compare(cfg, kv_compare(cfg));
  return 0;
}

std::function<int()> setup(CLI::App& sub) {
  auto o = std::make_shared<Options>();
  sub.add_option("--preset", o->preset, "Published model config (see --list-presets)");
  add_int(sub, "--layers", o->layers, "Transformer layers");
  add_int(sub, "--heads,--q-heads", o->heads, "Query heads");
  add_int(sub, "--kv-heads", o->kv_heads, "KV heads (default: --heads, i.e. MHA)");
  add_int(sub, "--head-dim", o->head_dim, "K head dim");
  add_int(sub, "--v-head-dim", o->v_head_dim, "V head dim (default: --head-dim)");
  add_int(sub, "--context", o->context, "Tokens per sequence (default: the preset's, else 4096)");
  add_int(sub, "--batch", o->batch, "Sequences (default 1)");
  sub.add_option("--dtype", o->dtype, "Cache storage: f32, bf16, f16, int8, int4");
  add_int(sub, "--window", o->window, "Rolling window of W tokens (0: none)");
  add_int(sub, "--sinks", o->sinks, "Attention-sink tokens kept beside the window");
  add_int(sub, "--mla-latent", o->mla_latent, "MLA latent dims (kv_lora_rank); 0: no MLA");
  add_int(sub, "--mla-rope", o->mla_rope, "MLA decoupled RoPE key dims");
  add_int(sub, "--group", o->group, "int4 group size G (default 32)");
  add_int(sub, "--residual", o->residual, "int4 f16 residual tokens R (default 128)");
  sub.add_flag("--compare", o->compare, "Also compare MHA / GQA / MQA / MLA / SWA layouts");
  add_json(sub, o->json, "the sizes, with exact integer byte counts");
  sub.add_flag("--list-presets", o->list, "List the presets and their sources");
  return [o, &sub] { return run(*o, sub); };
}

ATTNKIT_COMMAND("kv-size", "KV-cache memory: exact bytes per token, per layer and in total", setup);

}  // namespace

void print_kv_comparison(const KvConfig& c) {
  fmt::print("{}\n", layout_line(c));
  print_compare(c, kv_compare(c));
}

}  // namespace attnkit::cli
