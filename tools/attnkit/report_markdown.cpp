// The trade-off report's README.md (report.hpp): every table is computed from results.json
// and every reading sentence from the table's own numbers, so the text cannot claim what
// the numbers do not show.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "report.hpp"

namespace attnkit::cli {
namespace {

using nlohmann::json;

const json* variant(const json& r, const std::string& name) {
  for (const json& v : r["variants"])
    if (v["name"] == name) return &v;
  return nullptr;
}

const json* cache_row(const json& v, const std::string& cache, const std::string& dtype) {
  for (const json& c : v["caches"])
    if (c["cache"] == cache && c["kv_dtype"] == dtype) return &c;
  return nullptr;
}

const json& reference(const json& v) { return v["caches"][0]; }  // contiguous f32 comes first
double ppl(const json& v) { return reference(v)["perplexity"]["ppl"].get<double>(); }
double pct(double a, double b) { return 100.0 * (a / b - 1.0); }

std::string bytes(double b) {
  if (b >= 1 << 20) return fmt::format("{:.2f} MiB", b / (1 << 20));
  if (b >= 1 << 10) return fmt::format("{:.1f} KiB", b / (1 << 10));
  return fmt::format("{:.0f} B", b);
}

// Pass-key accuracy over the samples whose key's last copy lies in (lo, hi] tokens before
// the answer; NaN when no sample does.
double passkey_share(const json& v, int64_t lo, int64_t hi) {
  int64_t samples = 0, correct = 0;
  for (const json& c : v["passkey"])
    for (size_t i = 0; i < c["distances"].size(); ++i) {
      const int64_t d = c["distances"][i];
      if (d <= lo || d > hi) continue;
      ++samples;
      correct += c["digits"][i].get<int64_t>() == 5;
    }
  return samples > 0 ? static_cast<double>(correct) / static_cast<double>(samples) : NAN;
}
constexpr int64_t kFar = int64_t{1} << 40;

std::string percent(double x) { return std::isnan(x) ? "–" : fmt::format("{:.0f} %", 100.0 * x); }

// Pass-key accuracy over every cell (whole keys); NaN without samples.
double passkey_all(const json& v) {
  int64_t samples = 0, correct = 0;
  for (const json& cell : v["passkey"]) samples += cell["samples"].get<int64_t>(), correct += cell["correct"].get<int64_t>();
  return samples > 0 ? static_cast<double>(correct) / static_cast<double>(samples) : NAN;
}

std::string ppl_cell(const json& p) {
  return fmt::format("{:.3f} ± {:.3f}", p["ppl"].get<double>(), p["ppl_err"].get<double>());
}

void setup_section(std::string& md, const json& r) {
  const json& m = r["machine"];
  const json& b = r["budget"];
  const json& mc = r["model"];
  md += fmt::format("# attnkit trade-off report{}\n\n", r["quick"].get<bool>() ? " (quick)" : "");
  md += fmt::format("Command: `{}`. Machine: {} (Highway target {}), threads: {}; attnkit {}, {}.\n\n",
                    r["command"].get<std::string>(), m["cpu_model"].get<std::string>(), m["simd_target"].get<std::string>(),
                    r["threads"].get<int>(), m["attnkit_version"].get<std::string>(), m["date"].get<std::string>());
  md += fmt::format(
      "Every variant is a byte-level Llama-style decoder (dim {}, {} heads of {}, context {}) trained on the Brown "
      "corpus for {} steps of {} × {} tokens ({:.2f} M tokens); {:.0f} % of the rows start with a pass-key sample of a "
      "random length (its filler is Brown sentences) and go on with corpus text; the "
      "head-sharing variants widen their MLP to keep MHA's parameter count. Perplexity is on the test split: windows "
      "of {} tokens, the second half of each scored through the cache under test (llama.cpp's convention), "
      "{} windows; ± is the standard error. The unigram entropy of the validation bytes is {:.3f} nats/byte.\n\n",
      mc["dim"].get<int64_t>(), mc["n_heads"].get<int64_t>(), mc["dim"].get<int64_t>() / mc["n_heads"].get<int64_t>(),
      mc["context"].get<int64_t>(), b["steps"].get<int64_t>(), b["batch"].get<int64_t>(), b["seq_len"].get<int64_t>(),
      1e-6 * static_cast<double>(b["steps"].get<int64_t>() * b["batch"].get<int64_t>() * b["seq_len"].get<int64_t>()),
      100.0 * b["passkey_fraction"].get<double>(), b["seq_len"].get<int64_t>(), b["windows"].get<int64_t>(),
      r["unigram_entropy"].get<double>());
}

// One row per variant with the figures a reader compares first.
void headline_section(std::string& md, const json& r) {
  const json* mha = variant(r, "mha");
  if (!mha) return;
  md += "## Headline\n\n";
  md += "| variant | test perplexity | vs MHA | KV bytes/token | pass-key (all cells) | decode tokens/s | training tokens/s |\n";
  md += "|---|---|---|---|---|---|---|\n";
  for (const json& v : r["variants"]) {
    if (v["group"] == "probe") continue;
    const json& c = reference(v);
    md += fmt::format("| {} | {} | {:+.2f} % | {} | {} | {:.0f} | {:.0f} |\n", v["label"].get<std::string>(),
                      ppl_cell(c["perplexity"]), pct(ppl(v), ppl(*mha)),
                      bytes(c["speed_and_memory"]["kv_bytes_per_token_steady"].get<double>()), percent(passkey_all(v)),
                      c["speed_and_memory"]["decode_tok_s"].get<double>(), v["train"]["tok_s"].get<double>());
  }
  md += "\nKV bytes are per token in steady state (f32 cache, all layers); the sections below give every cache kind.\n\n";
}

void training_section(std::string& md, const json& r) {
  md += "## Training: stability, throughput and attention's share\n\n";
  md += "| variant | layers | pattern | parameters | final val loss (nats/byte) | tokens/s | of the fp32 peak | attention "
        "share | cached |\n";
  md += "|---|---|---|---|---|---|---|---|---|\n";
  bool later = false;
  const double unigram = r["unigram_entropy"].get<double>();
  int bad = 0;
  for (const json& v : r["variants"]) {
    const json& t = v["train"];
    const double val = t["final_val_loss"].get<double>();
    const bool ok = t["finite"].get<bool>() && val < unigram;
    bad += !ok;
    const double peak = t.value("peak_fp32_gflops", 0.0);
    later = later || t.value("peak_measured_later", false);
    const std::string share =
        peak > 0 && v.contains("train_flops_per_token")
            ? fmt::format("{:.1f} %{}", 100.0 * t["tok_s"].get<double>() * v["train_flops_per_token"].get<double>() / (peak * 1e9),
                          t.value("peak_measured_later", false) ? "*" : "")
            : "–";
    md += fmt::format("| {} | {} | `{}` | {} | {:.4f}{} | {:.0f} | {} | {:.1f} % | {} |\n", v["label"].get<std::string>(),
                      v["layers"].get<int64_t>(), v["pattern"].get<std::string>(), v["params"].get<int64_t>(), val,
                      ok ? "" : " (not below unigram)", t["tok_s"].get<double>(), share,
                      100.0 * t["attention_share"].get<double>(), t["cached"].get<bool>() ? "yes" : "no");
  }
  md += bad == 0 ? fmt::format("\nEvery variant trained without a NaN and ended below the unigram entropy ({:.3f}).", unigram)
                 : fmt::format("\n{} variant(s) did not end below the unigram entropy ({:.3f}) or met a NaN.", bad, unigram);
  md += " Throughput and attention's share are wall time measured while the model trained (a cached model keeps the "
        "figures of the run that trained it); the fraction of peak counts 6 FLOPs per parameter per token plus 3.5 × "
        "attention's visited-pair FLOPs, against the fp32 FMA peak measured by the run that trained the model";
  md += later ? " (*: by this run, on the same machine, for models trained before the peak was recorded).\n\n" : ".\n\n";
}

void heads_section(std::string& md, const json& r) {
  const json *mha = variant(r, "mha"), *seed2 = variant(r, "mha-seed2"), *gqa = variant(r, "gqa"), *mqa = variant(r, "mqa");
  if (!mha || !seed2 || !gqa || !mqa) return;
  md += "## 1. MHA, GQA and MQA at equal parameters and tokens\n\n";
  md += "| variant | KV heads | parameters | test perplexity | bits/byte | vs MHA | KV bytes/token | decode tokens/s |\n";
  md += "|---|---|---|---|---|---|---|---|\n";
  for (const json* v : {mha, seed2, gqa, mqa}) {
    const json& c = reference(*v);
    md += fmt::format("| {} | {} | {} | {} | {:.4f} | {:+.2f} % | {} | {:.0f} |\n", (*v)["label"].get<std::string>(),
                      (*v)["kv_heads"].get<int64_t>(), (*v)["params"].get<int64_t>(), ppl_cell(c["perplexity"]),
                      c["perplexity"]["bits_per_byte"].get<double>(), pct(ppl(*v), ppl(*mha)),
                      bytes(c["speed_and_memory"]["kv_bytes_per_token_steady"].get<double>()),
                      c["speed_and_memory"]["decode_tok_s"].get<double>());
  }
  const double spread = std::abs(pct(ppl(*seed2), ppl(*mha)));
  const double g = pct(ppl(*gqa), ppl(*mha)), q = pct(ppl(*mqa), ppl(*mha));
  auto versus = [&](double gap) { return std::abs(gap) > spread ? "outside" : "within"; };
  md += fmt::format(
      "\nReading: {} is {:+.2f} % and MQA {:+.2f} % in perplexity against MHA, whose two seeds differ by {:.2f} %: "
      "GQA's gap is {} the seed spread and MQA's {} it, for {:.0f} × and {:.0f} × fewer KV bytes per token. ",
      (*gqa)["label"].get<std::string>(), g, q, spread, versus(g), versus(q),
      reference(*mha)["speed_and_memory"]["kv_bytes_per_token_steady"].get<double>() /
          reference(*gqa)["speed_and_memory"]["kv_bytes_per_token_steady"].get<double>(),
      reference(*mha)["speed_and_memory"]["kv_bytes_per_token_steady"].get<double>() /
          reference(*mqa)["speed_and_memory"]["kv_bytes_per_token_steady"].get<double>());
  md += (g <= q || std::abs(g - q) <= spread)
            ? "The ordering the GQA paper reports (GQA between MHA and MQA, closer to MHA) is not contradicted here.\n\n"
            : "This contradicts the GQA paper's ordering (GQA closer to MHA than MQA is).\n\n";
}

void window_section(std::string& md, const json& r) {
  const json *mha = variant(r, "mha"), *win = variant(r, "window");
  if (!mha || !win) return;
  md += "## 2. Sliding windows: receptive field L·w and pass-key retrieval\n\n";
  md += "Pass-key accuracy is the share of samples whose whole 5-digit key the model writes (greedy), split by the "
        "distance d from the key's last copy to the answer: within one window (d ≤ w), within the stack's receptive "
        "field but not one window (w < d ≤ L·w), and beyond it (d > L·w). Full-attention rows use the window model's "
        "w and L·w for the split. Chance is 10⁻⁵.\n\n";
  md += "| variant | layers | w | L·w | test perplexity | vs MHA | pass-key, d ≤ w | w < d ≤ L·w | d > L·w |\n";
  md += "|---|---|---|---|---|---|---|---|---|\n";
  const int64_t layers = (*win)["layers"].get<int64_t>(), reach_l = (*win)["reach"].get<int64_t>();
  const int64_t w_l = reach_l / std::max<int64_t>(1, layers);
  const json* w1 = variant(r, "window-1layer");
  const int64_t reach_1 = w1 ? (*w1)["reach"].get<int64_t>() : 0;
  for (const std::string name : {"mha", "window", "window-sinks", "full-1layer", "window-1layer"}) {
    const json* v = variant(r, name);
    if (!v) continue;
    const bool one = (*v)["layers"].get<int64_t>() == 1;
    const int64_t w = one ? reach_1 : w_l, reach = one ? reach_1 : reach_l;
    md += fmt::format("| {} | {} | {} | {} | {} | {:+.2f} % | {} | {} | {} |\n", (*v)["label"].get<std::string>(),
                      (*v)["layers"].get<int64_t>(), w, reach, ppl_cell(reference(*v)["perplexity"]),
                      pct(ppl(*v), ppl(*mha)), percent(passkey_share(*v, 0, w)),
                      reach > w ? percent(passkey_share(*v, w, reach)) : "–", percent(passkey_share(*v, reach, kFar)));
  }
  const double full_in = passkey_share(*mha, 0, kFar), near = passkey_share(*win, 0, w_l),
               mid = passkey_share(*win, w_l, reach_l), far = passkey_share(*win, reach_l, kFar);
  md += fmt::format(
      "\nReading: full attention retrieves {} of all keys. With {} layers of w = {} (L·w = {}) the window model costs "
      "{:+.2f} % perplexity and retrieves {} of keys within one window, {} between w and L·w, and {} beyond L·w",
      percent(full_in), layers, w_l, reach_l, pct(ppl(*win), ppl(*mha)), percent(near), percent(mid), percent(far));
  if (const json* f1 = variant(r, "full-1layer"); w1 && f1)
    md += fmt::format("; one layer of w = {} retrieves {} within w and {} beyond it (one full layer: {})", reach_1,
                      percent(passkey_share(*w1, 0, reach_1)), percent(passkey_share(*w1, reach_1, kFar)),
                      percent(passkey_share(*f1, 0, kFar)));
  md += ". ";
  if (!(full_in >= 0.5)) {
    double digits = 0, samples = 0;
    for (const json& c : (*mha)["passkey"])
      for (const json& d : c["digits"]) digits += d.get<double>(), samples += 5;
    md += fmt::format(
        "Full attention itself has not learnt the task at this budget (it writes {:.0f} % of the key's digits, against "
        "10 % by chance), so these rows cannot tell a window's limited reach from a task not learnt; the target of "
        "≥ 95 % for full attention is not met. ",
        samples > 0 ? 100.0 * digits / samples : 0.0);
  }
  if (!std::isnan(mid) && !std::isnan(near) && near >= 0.5 && mid < 0.5 * near)
    md += "Stacking layers extends the receptive field to L·w, but retrieval does not follow it: a key more than one "
          "window back is mostly lost, since the copying head must see the key itself, not a summary of it. ";
  md += "\n\n";
}

void sparse_section(std::string& md, const json& r) {
  const json* mha = variant(r, "mha");
  if (!mha) return;
  md += "## 3. Sparse patterns: perplexity and speed at their visited fraction\n\n";
  // Each kind's timing at the longest context measured (a null json when it was not timed).
  const auto longest = [&](const std::string& name) -> json {
    for (const json& t : r["timing"])
      if (t["variant"] == name) return t["points"].back();
    return json();
  };
  const auto field = [](const json& point, const char* key) {
    return point.is_object() && point.contains(key) ? point[key].get<double>() : NAN;
  };
  const json causal = longest("mha");
  const double causal_ms = field(causal, "ms");
  const int64_t n = causal.is_object() ? causal["n"].get<int64_t>() : 0;
  md += fmt::format("| variant | pattern | visited fraction (n = {}) | test perplexity | vs MHA | attention step at n = {} "
                    "| GFLOP/s (of the {:.0f} fp32 peak) | vs causal | training tokens/s |\n|---|---|---|---|---|---|---|---|---|\n",
                    r["model"]["context"].get<int64_t>(), n, r.value("peak_fp32_gflops", 0.0));
  std::string best, each;
  double best_speed = 0;
  for (const std::string name : {"mha", "window", "longformer", "strided"}) {
    const json* v = variant(r, name);
    if (!v) continue;
    const json point = longest(name);
    const double ms = field(point, "ms"), speed = causal_ms / ms;
    const std::string rate = std::isnan(field(point, "gflops"))
                                 ? "–"
                                 : fmt::format("{:.1f} ({:.1f} %)", field(point, "gflops"), 100.0 * field(point, "peak_fraction"));
    md += fmt::format("| {} | `{}` | {:.1f} % | {} | {:+.2f} % | {:.3f} ms | {} | {:.2f} × | {:.0f} |\n",
                      (*v)["label"].get<std::string>(), (*v)["pattern"].get<std::string>(),
                      100.0 * (*v)["visited_fraction"].get<double>(), ppl_cell(reference(*v)["perplexity"]),
                      pct(ppl(*v), ppl(*mha)), ms, rate, speed, (*v)["train"]["tok_s"].get<double>());
    if (name == "mha") continue;
    if (speed > best_speed) best_speed = speed, best = (*v)["label"];
    // The speed-up a pattern would get if time followed the pairs it visits.
    const double ideal = field(causal, "visited_fraction") / field(point, "visited_fraction");
    each += fmt::format("{}{} {:.1f} × of an ideal {:.1f} ×{}", each.empty() ? "" : "; ", (*v)["label"].get<std::string>(),
                        speed, ideal, speed < 0.5 * ideal ? " (a slow path: under half its share)" : "");
  }
  md += fmt::format(
      "\nReading: against causal at n = {}, the attention step (forward + backward, one layer's shape) runs: {}. The "
      "ideal is the ratio of visited pairs; GFLOP/s count 3.5 × the forward's visited-pair FLOPs (FlashAttention's "
      "forward + backward), against the fp32 FMA peak measured in the same run. At the model's context of {} the training speed-up is smaller, since "
      "attention is a minority of a step (see the training table). Best: {} ({:.1f} ×). BigBird has no causal form in "
      "attnkit (its random and global blocks see the future), so it cannot be a decoder layer and has no row.\n\n",
      n, each, r["model"]["context"].get<int64_t>(), best, best_speed);
}

void quant_section(std::string& md, const json& r) {
  const json* mha = variant(r, "mha");
  if (!mha) return;
  md += "## 4. Cache storage and layout on the MHA model\n\n";
  md += "KL divergence and same-top-token are against the f32 contiguous cache on the same windows.\n\n";
  md += "| cache | storage | test perplexity | vs f32 | KL mean | KL 99th pct | same top token | decode tokens/s | KV "
        "bytes at context | allocated = formula |\n|---|---|---|---|---|---|---|---|---|---|\n";
  const double base = ppl(*mha);
  for (const json& c : (*mha)["caches"]) {
    const json& s = c["speed_and_memory"];
    const int64_t alloc = s["kv_bytes_allocated"], formula = s["kv_bytes_formula"];
    md += fmt::format("| {} | {} | {} | {:+.3f} % | {:.5f} | {:.5f} | {:.2f} % | {:.0f} | {} | {} |\n",
                      c["cache"].get<std::string>(), c["kv_dtype"].get<std::string>(), ppl_cell(c["perplexity"]),
                      pct(c["perplexity"]["ppl"].get<double>(), base), c["divergence"]["kl_mean"].get<double>(),
                      c["divergence"]["kl_p99"].get<double>(), 100.0 * c["divergence"]["same_top"].get<double>(),
                      s["decode_tok_s"].get<double>(), bytes(static_cast<double>(alloc)),
                      alloc == formula ? "yes" : fmt::format("+{} (int4 residual slots)", bytes(static_cast<double>(alloc - formula))));
  }
  const json *i8 = cache_row(*mha, "contiguous", "int8"), *i4 = cache_row(*mha, "contiguous", "int4");
  if (i8 && i4)
    md += fmt::format(
        "\nReading: int8 changes perplexity by {:+.3f} % (mean KL {:.5f}, same top token {:.1f} %) and int4 by {:+.3f} % "
        "(mean KL {:.5f}, {:.1f} %): {}. int4 keeps its newest 128 tokens in f16, so at a context of {} only the older "
        "tokens are 4-bit. At this model size decode is bound by the weights, not the cache, so storage hardly moves "
        "decode speed.\n\n",
        pct((*i8)["perplexity"]["ppl"].get<double>(), base), (*i8)["divergence"]["kl_mean"].get<double>(),
        100.0 * (*i8)["divergence"]["same_top"].get<double>(), pct((*i4)["perplexity"]["ppl"].get<double>(), base),
        (*i4)["divergence"]["kl_mean"].get<double>(), 100.0 * (*i4)["divergence"]["same_top"].get<double>(),
        std::abs(pct((*i4)["perplexity"]["ppl"].get<double>(), base)) < 1.0
            ? "both under 1 %, as KIVI's and llama.cpp's measurements say of 8- and 4-bit caches"
            : "int4's cost is above 1 %, more than KIVI reports",
        r["model"]["context"].get<int64_t>());
}

// Perplexity over positions [lo, hi) of a stream's per-position mean NLL.
double stream_ppl(const json& nll, size_t lo, size_t hi) {
  double s = 0;
  for (size_t i = lo; i < hi; ++i) s += nll[i].get<double>();
  return std::exp(s / static_cast<double>(hi - lo));
}

void stream_section(std::string& md, const json& r) {
  md += "## 5. Rolling caches with and without attention sinks\n\n";
  md += "Streams of the model's whole context fed one token at a time through each cache (keys at absolute "
        "positions); perplexity over the first window and over the last quarter of the stream.\n\n";
  md += "| model | cache | perplexity, first window | perplexity, last quarter | last quarter vs contiguous |\n";
  md += "|---|---|---|---|---|\n";
  double contiguous = NAN, no_sinks = NAN, sinks = NAN;
  for (const json& v : r["variants"])
    for (const json& s : v["streams"]) {
      const json& nll = s["nll"];
      const size_t n = nll.size(), w = static_cast<size_t>(r["model"]["context"].get<int64_t>() / 8);
      const double first = stream_ppl(nll, 0, std::min(w, n)), last = stream_ppl(nll, n - n / 4, n);
      const std::string cache = s["cache"];
      if (v["name"] == "mha") {
        if (cache == "contiguous") contiguous = last;
        else if (cache.find("sinks=0") != std::string::npos) no_sinks = last;
        else sinks = last;
      }
      md += fmt::format("| {} | {} | {:.3f} | {:.3f} | {} |\n", v["label"].get<std::string>(), cache, first, last,
                        std::isnan(contiguous) ? "–" : fmt::format("{:+.1f} %", pct(last, contiguous)));
    }
  if (!std::isnan(contiguous))
    md += fmt::format(
        "\nReading: on the full-attention model a rolling cache without sinks ends {:+.1f} % above the contiguous "
        "cache and one with 4 sinks {:+.1f} %; {}\n\n",
        pct(no_sinks, contiguous), pct(sinks, contiguous),
        pct(no_sinks, sinks) > 1.0
            ? "the sinks hold back the loss of the first tokens, as StreamingLLM reports."
            : "the two differ by less than 1 %: at this scale and within the trained context, losing the first tokens "
              "does not blow perplexity up, so StreamingLLM's effect is not reproduced here.");
}


// The first timed length from which `name`'s attention step stays faster than causal flash
// (every longer length too), or 0 when it never does within the lengths timed.
int64_t crossover(const json& r, const std::string& name) {
  const json *mine = nullptr, *flash = nullptr;
  for (const json& t : r["timing"]) {
    if (t["variant"] == name) mine = &t;
    if (t["variant"] == "mha") flash = &t;
  }
  if (!mine || !flash) return 0;
  int64_t from = 0;
  for (size_t i = 0; i < (*mine)["points"].size() && i < (*flash)["points"].size(); ++i) {
    const bool ahead = (*mine)["points"][i]["ms"].get<double>() < (*flash)["points"][i]["ms"].get<double>();
    if (ahead && from == 0) from = (*mine)["points"][i]["n"].get<int64_t>();
    if (!ahead) from = 0;
  }
  return from;
}

void linear_section(std::string& md, const json& r) {
  const json* mha = variant(r, "mha");
  if (!mha || !r.contains("approximation")) return;
  md += "## 6. Linear-cost families: linear attention, Performer, retention\n\n";
  md += "Every layer of the stack uses the method (same heads and MLP as MHA). Decoding keeps a recurrent state per "
        "layer instead of a token cache (layer_memory.hpp); its bytes do not grow with the tokens.\n\n";
  const json& mem = reference(*mha)["speed_and_memory"];
  md += fmt::format("| variant | method | test perplexity | vs MHA | pass-key (all cells) | decode memory at context "
                    "(MHA: {}) | bytes per extra token | decode tokens/s | attention step at n = {} (vs causal) | faster "
                    "than causal flash from n = | training tokens/s |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
                    bytes(mem["kv_bytes_allocated"].get<double>()),
                    r["timing"].empty() ? 0 : r["timing"][0]["points"].back()["n"].get<int64_t>());
  const auto longest_ms = [&](const std::string& name) {
    for (const json& t : r["timing"])
      if (t["variant"] == name) return t["points"].back()["ms"].get<double>();
    return static_cast<double>(NAN);
  };
  std::string reading;
  for (const json& v : r["variants"]) {
    if (v["group"] != "linear") continue;
    const json& c = reference(v);
    const json& s = c["speed_and_memory"];
    const int64_t from = crossover(r, v["name"]);
    const double ms = longest_ms(v["name"]), flash = longest_ms("mha");
    md += fmt::format("| {} | `{}` | {} | {:+.2f} % | {} | {} | {} | {:.0f} | {:.3f} ms ({:.2f} ×) | {} | {:.0f} |\n",
                      v["label"].get<std::string>(), v["method"].get<std::string>(), ppl_cell(c["perplexity"]),
                      pct(ppl(v), ppl(*mha)), percent(passkey_all(v)), bytes(s["kv_bytes_allocated"].get<double>()), bytes(s["kv_bytes_per_token_steady"].get<double>()),
                      s["decode_tok_s"].get<double>(), ms, flash / ms, from > 0 ? fmt::format("{}", from) : "–",
                      v["train"]["tok_s"].get<double>());
    reading += fmt::format("{}{} {:+.1f} %", reading.empty() ? "" : ", ", v["label"].get<std::string>(), pct(ppl(v), ppl(*mha)));
  }
  const json& a = r["approximation"];
  std::string dist;
  for (const json& d : a["distances"])
    dist += fmt::format("{}{} {:.3f}", dist.empty() ? "" : ", ", d["method"].get<std::string>(), d["relative_error"].get<double>());
  const json& pf = a["performer"];
  const double e0 = pf.front()["mean"], e1 = pf.back()["mean"];
  const double m0 = pf.front()["m"], m1 = pf.back()["m"];
  const double slope = std::log(e1 / e0) / std::log(m1 / m0);
  md += fmt::format(
      "\nReading: perplexity against MHA: {}. The step time is one layer's forward + backward at the model's shape; "
      "the crossover column is the first timed length from which the method stays faster than the flash kernel's "
      "causal step (the attention-time plot shows the lines cross). Distance from exact causal softmax attention on "
      "the same random inputs (n = {}, {} heads of {}; relative Frobenius error of O): {}. Linear attention and "
      "retention compute other functions by design, so theirs is large; Performer estimates softmax attention and its "
      "error falls from {:.3f} at m = {:.0f} to {:.3f} at m = {:.0f} (mean of {} feature draws), a slope of {:.2f} on "
      "log-log axes against the −0.5 of a Monte-Carlo estimate{}.\n\n",
      reading, a["n"].get<int64_t>(), a["heads"].get<int64_t>(), a["head_dim"].get<int64_t>(), dist, e0, m0, e1, m1,
      pf.front()["seeds"].get<int>(), slope, e1 < e0 ? "" : " — it did not fall, which needs a look");
}

void mla_section(std::string& md, const json& r) {
  const json *mha = variant(r, "mha"), *seed2 = variant(r, "mha-seed2"), *mla = variant(r, "mla");
  if (!mha || !mla) return;
  md += "## 7. MLA: a latent cache at MHA's parameters\n\n";
  md += fmt::format(
      "Every layer is multi-head latent attention (`{}`): keys and values are up-projected per head from one latent "
      "row per token, which is all the cache holds (d_c + d_r values; the decode reads it once for every head, in the "
      "absorbed form), and the MLP is widened to MHA's parameter count. Training runs the naive form (flash attention "
      "with d_qk = head_dim + d_r), decoding the absorbed one over the latent cache.\n\n",
      (*mla)["method"].get<std::string>());
  md += "| variant | cache | parameters | test perplexity | vs MHA | pass-key (all cells) | KV bytes/token | decode "
        "tokens/s | KV bytes at context | allocated = formula |\n|---|---|---|---|---|---|---|---|---|---|\n";
  for (const json* v : {mha, mla})
    for (const char* dtype : {"f32", "bf16"}) {
      const json* c = cache_row(*v, "contiguous", dtype);
      if (!c) continue;
      const json& s = (*c)["speed_and_memory"];
      md += fmt::format("| {} | contiguous {} | {} | {} | {:+.2f} % | {} | {} | {:.0f} | {} | {} |\n",
                        (*v)["label"].get<std::string>(), dtype, (*v)["params"].get<int64_t>(), ppl_cell((*c)["perplexity"]),
                        pct((*c)["perplexity"]["ppl"].get<double>(), ppl(*mha)), percent(passkey_all(*v)),
                        bytes(s["kv_bytes_per_token_steady"].get<double>()), s["decode_tok_s"].get<double>(),
                        bytes(s["kv_bytes_allocated"].get<double>()),
                        s["kv_bytes_allocated"] == s["kv_bytes_formula"] ? "yes" : "no");
    }
  const double mha_bytes = reference(*mha)["speed_and_memory"]["kv_bytes_per_token_steady"].get<double>();
  const double mla_bytes = reference(*mla)["speed_and_memory"]["kv_bytes_per_token_steady"].get<double>();
  const double gap = pct(ppl(*mla), ppl(*mha));
  md += fmt::format("\nReading: MLA caches {} per token against MHA's {} ({:.1f} × fewer) and changes perplexity by "
                    "{:+.2f} %",
                    bytes(mla_bytes), bytes(mha_bytes), mha_bytes / mla_bytes, gap);
  if (seed2) {
    const double spread = std::abs(pct(ppl(*seed2), ppl(*mha)));
    md += fmt::format(", {} MHA's seed spread of {:.2f} %", std::abs(gap) > spread ? "outside" : "within", spread);
  }
  if (const json* b = cache_row(*mla, "contiguous", "bf16"))
    md += fmt::format("; its bf16 latent costs {:+.3f} % against the f32 one (mean KL {:.5f})",
                      pct((*b)["perplexity"]["ppl"].get<double>(), ppl(*mla)), (*b)["divergence"]["kl_mean"].get<double>());
  md += fmt::format(". Pass-key: MHA {}, MLA {}. MLA has no row in the attention timings (sections 3 and 6, the "
                    "attention-time plot): its call holds its projections as well as the attention, so it would not time "
                    "one attention kernel as the other rows do; its decode speed is in the table.\n\n",
                    percent(passkey_all(*mha)), percent(passkey_all(*mla)));
}

}  // namespace

std::string report_markdown(const json& r, const std::vector<std::string>& plots, const std::vector<std::string>& pages) {
  std::string md;
  setup_section(md, r);
  headline_section(md, r);
  training_section(md, r);
  heads_section(md, r);
  window_section(md, r);
  sparse_section(md, r);
  quant_section(md, r);
  stream_section(md, r);
  linear_section(md, r);
  mla_section(md, r);
  if (!plots.empty()) {
    md += "## Plots\n\n";
    for (const std::string& p : plots) md += fmt::format("![{0}]({0})\n\n", p);
  }
  if (!pages.empty()) {
    md += "## More\n\n";
    for (const std::string& p : pages) md += fmt::format("- [{0}]({0})\n", p);
    md += "\n";
  }
  md += "Every number above is in results.json beside this file, from the run named at the top.\n";
  return md;
}

}  // namespace attnkit::cli
