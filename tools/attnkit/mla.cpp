// attnkit mla: multi-head latent attention (mla.hpp) shown to be one function in two forms.
// Default mode: random (or --weights) projections and inputs, the naive and the absorbed
// forward timed and compared (max |naive - absorbed|), with --backward the gradients too, and
// the cache bytes per token of the naive MHA-style K / V against the latent. --decode: the
// absorbed decode step over a latent cache (DeepSeek-V2's shape by default: 128 heads,
// 512 + 64 latent, 65536 tokens, bf16), in GB/s of latent read and GFLOP/s, each as a
// fraction of the peaks hwinfo measures in the same run, with the roofline that says which
// bound the step hits. Not for: checkpoints of whole models (the weights of one layer only).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <omp.h>
#include <nlohmann/json.hpp>

#include "attnkit/atomic_file.hpp"
#include "attnkit/hwinfo.hpp"
#include "attnkit/kv_size.hpp"
#include "attnkit/mla.hpp"
#include "attnkit/npy.hpp"
#include "command.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

struct MlaArgs {
  MlaConfig cfg;  // sizes from the flags (or from --weights)
  int64_t n = 128, batch = 1, seed = 1, n_kv = 65536;
  int reps = 5, threads = 0;
  std::string weights, pattern = "causal", kv_dtype = "bf16", rope_style = "interleaved";
  bool backward = false, decode = false, no_peak = false;
  std::vector<CLI::Option*> size_flags;  // refused together with --weights
  JsonOutput json;
};

double ram_bytes() { return double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE)); }

// Uniform in [-scale, scale), f32, from one seed.
Tensor random_f32(std::vector<int64_t> shape, uint64_t seed, double scale) {
  Tensor t(DType::f32, std::move(shape));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto* p = static_cast<float*>(t.data());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(scale) * u(rng);
  return t;
}

struct Layer {
  Tensor w_q, w_dkv, w_kr, w_uk, w_uv;
  MlaWeights views() const { return {w_q.view(), w_dkv.view(), w_kr.view(), w_uk.view(), w_uv.view()}; }
};

// Random projections scaled by 1/sqrt(fan-in), so scores are O(1) as in a trained layer.
Layer random_layer(const MlaConfig& c, uint64_t seed) {
  const double in = 1 / std::sqrt(double(c.d_model)), lat = 1 / std::sqrt(double(c.d_c));
  return {random_f32({c.d_model, c.heads, c.d_qk()}, seed, 2 * in), random_f32({c.d_model, c.d_c}, seed + 1, in),
          random_f32({c.d_model, c.d_r}, seed + 2, 2 * in), random_f32({c.heads, c.d_nope, c.d_c}, seed + 3, 2 * lat),
          random_f32({c.heads, c.d_v, c.d_c}, seed + 4, lat)};
}

// DIR/w_q.npy [d_model, H, d_nope + d_r], w_dkv.npy [d_model, d_c], w_kr.npy [d_model, d_r],
// w_uk.npy [H, d_nope, d_c], w_uv.npy [H, d_v, d_c]: the sizes are read from the shapes.
Layer read_layer(const std::string& dir, MlaConfig& cfg) {
  const auto load = [&](const char* name, int rank, const char* layout) {
    const std::string path = (std::filesystem::path(dir) / name).string();
    Tensor t = read_npy(path, "--weights");
    check(static_cast<int>(t.shape().size()) == rank, [&] {
      return fmt::format("--weights ({}): {} must be {}, got {}", printable(dir, 240), name, layout,
                         t.view().shape_string());
    });
    return t;
  };
  Layer l{load("w_q.npy", 3, "[d_model, H, d_nope + d_r]"), load("w_dkv.npy", 2, "[d_model, d_c]"),
          load("w_kr.npy", 2, "[d_model, d_r]"), load("w_uk.npy", 3, "[H, d_nope, d_c]"),
          load("w_uv.npy", 3, "[H, d_v, d_c]")};
  cfg.d_model = l.w_q.shape()[0];
  cfg.heads = l.w_q.shape()[1];
  cfg.d_c = l.w_dkv.shape()[1];
  cfg.d_r = l.w_kr.shape()[1];
  cfg.d_nope = l.w_uk.shape()[1];
  cfg.d_v = l.w_uv.shape()[1];
  try {
    l.views().validate(cfg);
  } catch (const Error& e) {
    throw Error(fmt::format("--weights ({}): {}", printable(dir, 240), e.what()));
  }
  return l;
}

// Best and median wall time of `reps` calls after one warm-up call, in ms.
struct Timing {
  double median_ms, best_ms;
};
Timing time_calls(int reps, const std::function<void()>& f) {
  f();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double worst = 0;
  const TensorView va = a.view(), vb = b.view();
  for (int64_t i = 0; i < va.numel(); ++i) {
    const double d = std::abs(va.load(i) - vb.load(i));
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  return worst;
}

double max_abs(const Tensor& a) {
  double m = 0;
  const TensorView v = a.view();
  for (int64_t i = 0; i < v.numel(); ++i) m = std::max(m, std::abs(v.load(i)));
  return m;
}

// Bytes one cached token costs one layer: the MHA-style K / V of the naive form against the
// latent row, from kv_size.hpp in the storage type given.
nlohmann::json cache_bytes(const MlaConfig& c, KvStorage storage) {
  KvConfig mha;
  mha.layers = 1, mha.q_heads = mha.kv_heads = c.heads, mha.head_dim = c.d_qk(), mha.v_head_dim = c.d_v;
  mha.context = 1, mha.storage = storage;
  KvConfig lat = mha;
  lat.mla_latent = c.d_c, lat.mla_rope = c.d_r;
  const double a = kv_bytes_per_token_per_layer(mha), b = kv_bytes_per_token_per_layer(lat);
  return {{"storage", kv_storage_name(storage)}, {"naive_kv", a}, {"latent", b}, {"ratio", a / b}};
}

nlohmann::json config_json(const MlaConfig& c) {
  return {{"heads", c.heads}, {"d_model", c.d_model}, {"d_c", c.d_c},      {"d_r", c.d_r},
          {"d_nope", c.d_nope}, {"d_v", c.d_v},       {"scale", c.softmax_scale()},
          {"rope_style", rope_style_name(c.rope.style)}, {"rope_base", c.rope.base}};
}

void check_memory(double need, std::string_view flag, std::string_view what) {
  check(need <= 0.5 * ram_bytes(), [&] {
    return fmt::format("{}: {} needs about {:.1f} GiB; this machine has {:.1f} GiB of memory", flag, what,
                       need / double(1 << 30), ram_bytes() / double(1 << 30));
  });
}

nlohmann::json run_compare(const MlaArgs& a, const MlaConfig& cfg, const Layer& layer, const Tensor& x,
                           const Pattern& pattern, KvStorage storage) {
  const int64_t B = x.shape()[0], N = x.shape()[1];
  Tensor out[2] = {Tensor(DType::f32, {B, N, cfg.heads, cfg.d_v}), Tensor(DType::f32, {B, N, cfg.heads, cfg.d_v})};
  Timing fwd[2];
  for (MlaForm form : {MlaForm::naive, MlaForm::absorbed}) {
    const int f = static_cast<int>(form);
    fwd[f] = time_calls(a.reps, [&] { mla_forward(cfg, layer.views(), x.view(), nullptr, {form, pattern}, out[f].mut()); });
  }
  nlohmann::json j = {{"command", "mla"},
                      {"config", config_json(cfg)},
                      {"batch", B},
                      {"n", N},
                      {"pattern", pattern.to_string()},
                      {"threads", omp_get_max_threads()},
                      {"reps", a.reps},
                      {"weights", a.weights.empty() ? nlohmann::json("random") : nlohmann::json(a.weights)},
                      {"seed", a.seed}};
  const double diff = max_abs_diff(out[0], out[1]);
  j["forward"] = {{"naive_ms", fwd[0].median_ms},  {"absorbed_ms", fwd[1].median_ms},
                  {"naive_best_ms", fwd[0].best_ms}, {"absorbed_best_ms", fwd[1].best_ms},
                  {"max_abs_diff", diff},           {"max_abs_out", max_abs(out[0])}};
  fmt::print("mla: H={} d_model={} d_c={} d_r={} d_nope={} d_v={}, B={} N={}, pattern {}, {} threads\n", cfg.heads,
             cfg.d_model, cfg.d_c, cfg.d_r, cfg.d_nope, cfg.d_v, B, N, pattern.to_string(), omp_get_max_threads());
  fmt::print("forward   naive {:9.3f} ms   absorbed {:9.3f} ms   max |naive - absorbed| = {:.3g} (max |out| {:.3g})\n",
             fwd[0].median_ms, fwd[1].median_ms, diff, max_abs(out[0]));
  if (a.backward) {
    const Tensor d_out = random_f32({B, N, cfg.heads, cfg.d_v}, static_cast<uint64_t>(a.seed) + 100, 1.0);
    MlaGradients g[2];
    Timing bwd[2];
    for (MlaForm form : {MlaForm::naive, MlaForm::absorbed}) {
      const int f = static_cast<int>(form);
      bwd[f] = time_calls(a.reps, [&] { g[f] = mla_backward(cfg, layer.views(), x.view(), nullptr, {form, pattern}, d_out.view()); });
    }
    nlohmann::json diffs;
    double worst = 0;
    for (auto [name, t0, t1] : {std::tuple{"dx", &g[0].dx, &g[1].dx}, {"dw_q", &g[0].dw_q, &g[1].dw_q},
                                {"dw_dkv", &g[0].dw_dkv, &g[1].dw_dkv}, {"dw_kr", &g[0].dw_kr, &g[1].dw_kr},
                                {"dw_uk", &g[0].dw_uk, &g[1].dw_uk}, {"dw_uv", &g[0].dw_uv, &g[1].dw_uv}}) {
      const double d = max_abs_diff(*t0, *t1);
      diffs[name] = {{"max_abs_diff", d}, {"max_abs", max_abs(*t0)}};
      worst = std::max(worst, d);
    }
    j["backward"] = {{"naive_ms", bwd[0].median_ms}, {"absorbed_ms", bwd[1].median_ms}, {"max_abs_diff", worst},
                     {"gradients", diffs}};
    fmt::print("backward  naive {:9.3f} ms   absorbed {:9.3f} ms   max |naive - absorbed| over dx, dW_* = {:.3g}\n",
               bwd[0].median_ms, bwd[1].median_ms, worst);
  }
  j["cache_bytes_per_token_per_layer"] = cache_bytes(cfg, storage);
  const nlohmann::json& cb = j["cache_bytes_per_token_per_layer"];
  fmt::print("cache per token per layer ({}): naive K/V {} x ({} + {}) = {}; latent {} + {} = {} ({:.1f}x smaller)\n",
             kv_storage_name(storage), cfg.heads, cfg.d_qk(), cfg.d_v, format_bytes(cb["naive_kv"].get<double>()),
             cfg.d_c, cfg.d_r, format_bytes(cb["latent"].get<double>()), cb["ratio"].get<double>());
  return j;
}

nlohmann::json run_decode(const MlaArgs& a, const MlaConfig& cfg, KvStorage storage) {
  std::optional<HwInfo> hw;
  if (!a.no_peak) hw = measure_hwinfo();
  MlaCacheConfig cc;
  cc.d_c = cfg.d_c;
  cc.d_r = cfg.d_r;
  cc.storage = storage;
  cc.max_tokens = a.n_kv;
  MlaCache cache(cc);
  constexpr int64_t kFill = 4096;  // rows generated and stored at a time
  for (int64_t t0 = 0; t0 < a.n_kv; t0 += kFill) {
    const int64_t t = std::min(kFill, a.n_kv - t0);
    cache.append(0, t);
    cache.store(0, 0, random_f32({t, cc.width()}, static_cast<uint64_t>(a.seed) + 7 + static_cast<uint64_t>(t0), 1.0).view());
  }
  // Absorbed queries of the size W_UK^T q_nope gives for unit-scale inputs.
  const Tensor q = random_f32({1, cfg.heads, cc.width()}, static_cast<uint64_t>(a.seed) + 3, 1.0);
  Tensor o(DType::f32, {1, cfg.heads, cfg.d_c});
  const Timing t = time_calls(a.reps, [&] { mla_decode_attention(cache, 0, 0, q.view(), cfg.softmax_scale(), o.mut()); });
  const double flops = mla_decode_flops(1, cfg.heads, a.n_kv, cfg.d_c, cfg.d_r);
  const double bytes = static_cast<double>(mla_decode_bytes_read(cache, 0));
  const double gflops = flops / (t.median_ms * 1e-3) * 1e-9, gbps = bytes / (t.median_ms * 1e-3) * 1e-9;
  // The naive form's decode would read every head's K / V: the bytes MLA saves per step.
  KvConfig mha;
  mha.layers = 1, mha.q_heads = mha.kv_heads = cfg.heads, mha.head_dim = cfg.d_qk(), mha.v_head_dim = cfg.d_v;
  mha.context = a.n_kv, mha.storage = storage;
  const double mha_bytes = static_cast<double>(kv_total_bytes(mha));
  nlohmann::json j = {{"command", "mla --decode"},
                      {"config", config_json(cfg)},
                      {"n_kv", a.n_kv},
                      {"kv_dtype", kv_storage_name(storage)},
                      {"threads", omp_get_max_threads()},
                      {"reps", a.reps},
                      {"median_ms", t.median_ms},
                      {"best_ms", t.best_ms},
                      {"flops", flops},
                      {"bytes_read", bytes},
                      {"naive_kv_bytes", mha_bytes},
                      {"gflops", gflops},
                      {"latent_gbps", gbps},
                      {"cache_bytes_allocated", cache.bytes_allocated()}};
  fmt::print("mla decode: {} heads, latent {} + {} ({}), n_kv = {}, {} threads, median of {} calls\n", cfg.heads,
             cfg.d_c, cfg.d_r, kv_storage_name(storage), a.n_kv, omp_get_max_threads(), a.reps);
  fmt::print("  {:.3f} ms per step (best {:.3f}); {:.1f} MiB of latent read ({:.1f} MiB for naive K/V); "
             "{:.2f} GFLOP\n",
             t.median_ms, t.best_ms, bytes / double(1 << 20), mha_bytes / double(1 << 20), flops * 1e-9);
  if (hw) {
    // Measured again after the timing and the larger figures kept, as `bench --decode` does:
    // on a shared machine what is left to this process changes over seconds, and noise only
    // ever makes a peak look lower.
    const HwInfo after = measure_hwinfo();
    j["peaks_before"] = {{"fp32_gflops", hw->fp32_fma_gflops}, {"dram_gbps", hw->dram_read_gbps}};
    j["peaks_after"] = {{"fp32_gflops", after.fp32_fma_gflops}, {"dram_gbps", after.dram_read_gbps}};
    hw->fp32_fma_gflops = std::max(hw->fp32_fma_gflops, after.fp32_fma_gflops);
    hw->dram_read_gbps = std::max(hw->dram_read_gbps, after.dram_read_gbps);
  }
  if (!hw) {
    fmt::print("  {:.1f} GFLOP/s, {:.2f} GB/s of latent read (peaks not measured: --no-peak)\n", gflops, gbps);
    for (const char* k : {"fp32_peak_gflops", "dram_gbps", "frac_fp32_peak", "frac_dram", "roofline"}) j[k] = nullptr;
    return j;
  }
  // Roofline: the step can be no faster than its FLOPs at the FMA peak, nor than its bytes
  // at the DRAM bandwidth; the larger of the two names the bound.
  const double compute_ms = flops / (hw->fp32_fma_gflops * 1e9) * 1e3;
  const double memory_ms = hw->dram_read_gbps > 0 ? bytes / (hw->dram_read_gbps * 1e9) * 1e3 : 0;
  const bool compute_bound = compute_ms >= memory_ms;
  const double frac_peak = gflops / hw->fp32_fma_gflops;
  const double frac_dram = hw->dram_read_gbps > 0 ? gbps / hw->dram_read_gbps : 0;
  j["fp32_peak_gflops"] = hw->fp32_fma_gflops;
  j["bf16_dot_peak_gflops"] = hw->bf16_dot_gflops;
  j["dram_gbps"] = hw->dram_read_gbps;
  j["frac_fp32_peak"] = frac_peak;
  j["frac_dram"] = frac_dram;
  j["roofline"] = {{"compute_ms", compute_ms},
                   {"memory_ms", memory_ms},
                   {"bound", compute_bound ? "compute" : "memory"},
                   {"intensity_flop_per_byte", flops / bytes},
                   {"machine_balance_flop_per_byte", hw->dram_read_gbps > 0 ? hw->fp32_fma_gflops / hw->dram_read_gbps : 0},
                   {"frac_of_roofline", std::max(compute_ms, memory_ms) / t.median_ms}};
  fmt::print("  {:.1f} GFLOP/s = {:.1f} % of the fp32 FMA peak ({:.1f}); {:.2f} GB/s of latent = {:.1f} % of DRAM "
             "read ({:.1f} GB/s; peaks: the larger of hwinfo before and after the timing)\n",
             gflops, 100 * frac_peak, hw->fp32_fma_gflops, gbps, 100 * frac_dram, hw->dram_read_gbps);
  fmt::print("  roofline: {:.0f} FLOP per byte read against a machine balance of {:.1f}: {}-bound; the bound "
             "allows {:.2f} ms, {:.1f} % of it reached\n",
             flops / bytes, hw->dram_read_gbps > 0 ? hw->fp32_fma_gflops / hw->dram_read_gbps : 0.0,
             compute_bound ? "compute" : "memory", std::max(compute_ms, memory_ms),
             100 * std::max(compute_ms, memory_ms) / t.median_ms);
  return j;
}

int run(MlaArgs a) {
  apply_threads(a.threads);
  const std::vector<OutputPath> outputs = {{a.json.target(), "--json", true}};
  check_outputs(outputs);
  std::FILE* json_stream = stdout;
  const Pattern pattern = parse_option("--pattern", a.pattern, [](const std::string& t) { return Pattern::parse(t); });
  const KvStorage storage = parse_option("--kv-dtype", a.kv_dtype, [](const std::string& t) { return parse_kv_storage(t); });
  check(storage == KvStorage::f32 || storage == KvStorage::bf16,
        [&] { return fmt::format("--kv-dtype: '{}' is not accepted; give one of f32, bf16", a.kv_dtype); });
  a.cfg.rope.style = parse_option("--rope-style", a.rope_style, [](const std::string& t) { return parse_rope_style(t); });
  check(a.cfg.d_r % 2 == 0, [&] { return fmt::format("--d-r ({}) must be even: RoPE turns pairs of channels", a.cfg.d_r); });
  check(a.weights.empty() || !a.decode, [] { return std::string("--weights: not used by --decode (it times the attention over the cache)"); });
  for (CLI::Option* f : a.size_flags)
    check(a.weights.empty() || f->count() == 0, [&] {
      return fmt::format("{}: the sizes come from the --weights files; drop {}", f->get_name(), f->get_name());
    });
  Layer layer;
  if (!a.weights.empty()) layer = read_layer(a.weights, a.cfg);
  try {
    a.cfg.validate();
  } catch (const Error& e) {
    throw Error(fmt::format("the sizes (--heads, --d-c, --d-r, --d-nope, --d-v, --d-model): {}", e.what()));
  }
  // With --json - the JSON alone goes to standard output; the progress text to stderr.
  if (a.json.to_stdout()) json_stream = divert_stdout_to_stderr();
  nlohmann::json j;
  if (a.decode) {
    check_memory(double(a.n_kv) * double(a.cfg.latent_width()) * 4.0, "--n-kv", "the latent cache");
    j = run_decode(a, a.cfg, storage);
  } else {
    Tensor x;
    const std::string x_path = a.weights.empty() ? std::string() : (std::filesystem::path(a.weights) / "x.npy").string();
    if (!x_path.empty() && std::filesystem::exists(x_path)) x = read_npy(x_path, "--weights");
    const MlaConfig& c = a.cfg;
    const int64_t B = x.shape().empty() ? a.batch : (x.shape().size() == 3 ? x.shape()[0] : 1);
    const int64_t N = x.shape().empty() ? a.n : x.shape()[x.shape().size() - 2];
    // Per row: q, k, v, q~, o, o~ and their gradients; and every weight three times (f32
    // copy, gradient per form).
    const double per_row = 4.0 * double(c.heads) * double(4 * c.d_qk() + 3 * c.d_v + 4 * c.latent_width() + 3 * c.d_c);
    const double weights = 4.0 * 3 * double(c.heads * (c.d_model * c.d_qk() + (c.d_nope + c.d_v) * c.d_c) +
                                            c.d_model * c.latent_width());
    check_memory(double(B) * double(N) * per_row + weights, "--n", "the forward and backward of both forms");
    if (a.weights.empty()) layer = random_layer(c, static_cast<uint64_t>(a.seed));
    if (x.shape().empty()) x = random_f32({B, N, c.d_model}, static_cast<uint64_t>(a.seed) + 50, 1.0);
    check(x.shape().back() == c.d_model, [&] {
      return fmt::format("--weights: x.npy's last dimension ({}) must be d_model ({})", x.shape().back(), c.d_model);
    });
    if (x.shape().size() == 2) {  // one sequence
      Tensor x3(x.dtype(), {1, x.shape()[0], x.shape()[1]});
      std::memcpy(x3.data(), x.data(), x.nbytes());
      x = std::move(x3);
    }
    check(x.shape().size() == 3, [&] {
      return fmt::format("--weights: x.npy must be [N, d_model] or [B, N, d_model], got {}", x.view().shape_string());
    });
    j = run_compare(a, c, layer, x, pattern, storage);
  }
  j["metadata"] = run_metadata();
  if (a.json.given()) write_json(a.json, j, json_stream);
  return 0;
}

std::function<int()> setup(CLI::App& sub) {
  auto a = std::make_shared<MlaArgs>();
  MlaConfig& c = a->cfg;
  c.d_model = 512;  // the demo's; DeepSeek-V2's 5120 only widens the projections
  a->size_flags = {
      add_int(sub, "--heads", c.heads, "query heads H (default 128, DeepSeek-V2)", 1, kMaxMlaHeads),
      add_int(sub, "--d-model", c.d_model, "model width of x (default 512)", 1, kMaxMlaModel),
      add_int(sub, "--d-c", c.d_c, "latent width, kv_lora_rank (default 512)", 1, kMaxHeadDim),
      add_int(sub, "--d-r", c.d_r, "decoupled RoPE dims, even (default 64)", 2, kMaxHeadDim),
      add_int(sub, "--d-nope", c.d_nope, "per-head q/k dims without RoPE (default 128)", 1, kMaxHeadDim),
      add_int(sub, "--d-v", c.d_v, "per-head value dims (default 128)", 1, kMaxHeadDim)};
  add_int(sub, "--n", a->n, "tokens per sequence of the comparison (default 128)", 1, kMaxSeqLen);
  add_int(sub, "--batch", a->batch, "sequences of the comparison (default 1)", 1, 1 << 16);
  add_int(sub, "--seed", a->seed, "seed of the random weights and inputs (default 1)", 0,
          std::numeric_limits<int64_t>::max());
  sub.add_option("--weights", a->weights,
                 "folder of w_q.npy [d_model,H,d_nope+d_r], w_dkv.npy [d_model,d_c], w_kr.npy "
                 "[d_model,d_r], w_uk.npy [H,d_nope,d_c], w_uv.npy [H,d_v,d_c] and optionally x.npy "
                 "[N,d_model] or [B,N,d_model]; the sizes come from them");
  sub.add_option("--pattern", a->pattern, "mask over the N tokens (attend's patterns)")->capture_default_str();
  sub.add_option("--rope-style", a->rope_style, "interleaved (DeepSeek-V2) | rotate_half")
      ->capture_default_str();
  sub.add_flag("--backward", a->backward, "also compare and time the gradients of both forms");
  sub.add_flag("--decode", a->decode, "time the absorbed decode step over a latent cache instead");
  add_int(sub, "--n-kv", a->n_kv, "--decode: cached tokens (default 65536)", 1, kMaxSeqLen);
  sub.add_option("--kv-dtype", a->kv_dtype, "latent cache storage: bf16 | f32 (also the bytes table)")
      ->capture_default_str();
  add_int(sub, "--reps", a->reps, "timed calls after a warm-up (median reported; default 5)", 1, 1000);
  sub.add_flag("--no-peak", a->no_peak, "--decode: skip measuring the peaks (fractions are null)");
  add_threads(sub, a->threads);
  add_json(sub, a->json, "the comparison or the decode timing");
  return [a] { return run(*a); };
}

ATTNKIT_COMMAND("mla", "Multi-head latent attention: naive = absorbed, cache bytes, absorbed decode timing", setup);

}  // namespace
}  // namespace attnkit::cli
