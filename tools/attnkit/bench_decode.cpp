// attnkit bench --decode: see bench_decode.hpp. Each case fills a cache (one layer) with
// pseudo-random K / V, then times decode_attention for one new token per sequence; GB/s
// count the cache bytes the call reads (decode_bytes_read: codes and scales of the keys it
// visits), which is what bounds decoding.
#include "bench_decode.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <omp.h>

#include <nlohmann/json.hpp>

#include "attnkit/decode.hpp"
#include "attnkit/error.hpp"
#include "attnkit/hwinfo.hpp"
#include "attnkit/shape.hpp"
#include "options.hpp"
#include "rss.hpp"

namespace attnkit::cli {
namespace {

struct DecodeCase {
  KvLayout layout = KvLayout::contiguous;
  KvStorage storage = KvStorage::bf16;
  int64_t batch = 1, hq = 32, hkv = 8, n = 65536, nq = 1, d = 128, page = 16, window = 4096, sinks = 4;
};

std::vector<DecodeCase> decode_sweep(const DecodeBenchArgs& a) {
  const auto mk = [&](KvLayout l, KvStorage s, int64_t n, int64_t batch = 1) {
    DecodeCase c;
    c.layout = l, c.storage = s, c.n = n, c.batch = batch;
    return c;
  };
  using L = KvLayout;
  using S = KvStorage;
  if (!a.layout.empty() || !a.storage.empty()) {
    DecodeCase c;
    c.layout = a.layout.empty() ? L::contiguous
                                : parse_option("--layout", a.layout, [](const std::string& t) { return parse_kv_layout(t); });
    c.storage = a.storage.empty()
                    ? S::bf16
                    : parse_option("--storage", a.storage, [](const std::string& t) { return parse_kv_storage(t); });
    c.batch = a.batch, c.hq = a.q_heads, c.hkv = a.kv_heads, c.n = a.n, c.nq = a.nq, c.d = a.d, c.page = a.page;
    c.window = a.window, c.sinks = a.sinks;
    return {c};
  }
  DecodeCase paged_int4 = mk(L::paged, S::int4, 65536);
  paged_int4.page = 32;  // int4 pages hold whole groups of G = 32 tokens
  if (a.quick)
    return {mk(L::contiguous, S::bf16, 16384), mk(L::contiguous, S::int8, 16384), mk(L::contiguous, S::int4, 16384),
            mk(L::paged, S::bf16, 16384)};
  return {mk(L::contiguous, S::bf16, 65536), mk(L::contiguous, S::f16, 65536), mk(L::contiguous, S::f32, 65536),
          mk(L::contiguous, S::int8, 65536), mk(L::contiguous, S::int4, 65536), mk(L::paged, S::bf16, 65536),
          mk(L::paged, S::int8, 65536),      paged_int4,      mk(L::rolling, S::bf16, 65536),
          mk(L::paged, S::bf16, 16384, 8)};
}

KvCacheConfig cache_config(const DecodeCase& c) {
  KvCacheConfig k;
  k.layout = c.layout;
  k.storage = c.storage;
  k.kv_heads = c.hkv;
  k.head_dim = c.d;
  k.page_size = c.page;
  k.window = c.window;
  k.sinks = c.sinks;
  k.max_append = c.nq;
  return k;
}

// Pseudo-random K / V in [-1, 1) for `tokens` tokens: [hkv, tokens, d] each.
struct Chunk {
  std::vector<float> k, v;
  Chunk(int64_t hkv, int64_t tokens, int64_t d, uint64_t seed)
      : k(static_cast<size_t>(hkv * tokens * d)), v(k.size()) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (std::vector<float>* x : {&k, &v})
      for (float& e : *x) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        e = static_cast<float>(double(s >> 40) / double(1 << 23) - 1.0);
      }
  }
};

// Sequence b holds n - b * n / (2 * batch) tokens: a batch of different lengths.
std::vector<int64_t> fill(KvCache& cache, const DecodeCase& c) {
  std::vector<int64_t> seqs;
  const int64_t step = cache.config().layout == KvLayout::rolling ? c.nq : 4096;
  const Chunk chunk(c.hkv, step, c.d, 7);
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t s = cache.add_sequence(), n = c.n - b * c.n / (2 * c.batch);
    seqs.push_back(s);
    for (int64_t t = 0; t < n; t += step) {
      const int64_t T = std::min(step, n - t);
      cache.append(s, T);
      const TensorView k(chunk.k.data(), DType::f32, {c.hkv, T, c.d}, {step * c.d, c.d, 1});
      const TensorView v(chunk.v.data(), DType::f32, {c.hkv, T, c.d}, {step * c.d, c.d, 1});
      cache.store(s, 0, k, v);
    }
  }
  return seqs;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// Median and minimum milliseconds of `reps` calls after one warm-up.
std::pair<double, double> time_decode(const KvCache& cache, const std::vector<int64_t>& seqs, const Tensor& q,
                                      Tensor& out, const DecodeOptions& o, int reps, bool reference) {
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    if (reference)
      decode_reference(cache, 0, seqs, q.view(), out.mut(), o);
    else
      decode_attention(cache, 0, seqs, q.view(), out.mut(), o);
    const auto t1 = std::chrono::steady_clock::now();
    if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return {median(ms), *std::min_element(ms.begin(), ms.end())};
}

// GFLOP of one call: 2 (dk + dv) per visible (query row, key) pair.
double decode_gflop(const KvCache& cache, const std::vector<int64_t>& seqs, const DecodeCase& c) {
  double pairs = 0;
  for (int64_t s : seqs) {
    const int64_t held = cache.sequence(s).held;
    const bool windowed = c.layout == KvLayout::rolling;
    pairs += double(c.nq) * double(windowed ? std::min(held, c.window + c.sinks) : held);
  }
  return pairs * double(c.hq) * 2.0 * double(2 * c.d) * 1e-9;
}

Tensor queries(const DecodeCase& c, int64_t batch) {
  Tensor q(DType::f32, {batch, c.hq, c.nq, c.d});
  const Chunk src(1, batch * c.hq * c.nq, c.d, 3);
  std::copy(src.k.begin(), src.k.end(), static_cast<float*>(q.data()));
  return q;
}

// The AVX-512 micro-kernels decode_attention runs on a case, by its rule (decode.cpp: the
// automatic kernel, a stored 16- or 8-bit format, the CPU's AVX-512 BF16 + VNNI, and widths
// that are multiples of 32): vdpbf16ps for bf16, vcvtph2ps for f16, vpdpbusd for int8/int4.
std::string decode_micro_kernels(const DecodeCase& c, DecodeKernel kernel) {
  const bool widths = c.d >= 32 && c.d <= kMaxHeadDim && c.d % 32 == 0;
  if (kernel != DecodeKernel::automatic || c.storage == KvStorage::f32 || !widths || !cpu_has_avx512_micro_kernels())
    return "none";
  if (c.storage == KvStorage::bf16) return "avx512_bf16";
  if (c.storage == KvStorage::f16) return "avx512_f16";
  return "avx512_vnni";
}

nlohmann::json time_case(const DecodeCase& c, DecodeKernel kernel, int reps) {
  KvCache cache(cache_config(c));
  const std::vector<int64_t> seqs = fill(cache, c);
  const Tensor q = queries(c, c.batch);
  Tensor out(DType::f32, {c.batch, c.hq, c.nq, c.d});
  DecodeOptions o;
  o.kernel = kernel;
  const auto [med, min] = time_decode(cache, seqs, q, out, o, reps, false);
  const double bytes = double(decode_bytes_read(cache, seqs, c.nq, o));
  const double gflop = decode_gflop(cache, seqs, c);
  // The reference on the same cache kind, 2048 tokens, one sequence: its GFLOP/s.
  DecodeCase small = c;
  small.n = std::min<int64_t>(c.n, 2048);
  small.batch = 1;
  KvCache ref_cache(cache_config(small));
  const std::vector<int64_t> ref_seqs = fill(ref_cache, small);
  Tensor ref_out(DType::f32, {1, c.hq, c.nq, c.d});
  const double ref_ms = time_decode(ref_cache, ref_seqs, queries(small, 1), ref_out, o, 1, true).first;
  const double ref_gflops = decode_gflop(ref_cache, ref_seqs, small) / (ref_ms * 1e-3);
  const double gflops = gflop / (med * 1e-3);
  return {{"op", "decode"},
          {"kernel", decode_kernel_name(kernel)},
          {"layout", kv_layout_name(c.layout)},
          {"storage", kv_storage_name(c.storage)},
          {"page_size", c.layout == KvLayout::paged ? nlohmann::json(c.page) : nlohmann::json(nullptr)},
          {"window", c.layout == KvLayout::rolling ? nlohmann::json(c.window) : nlohmann::json(nullptr)},
          {"sinks", c.layout == KvLayout::rolling ? nlohmann::json(c.sinks) : nlohmann::json(nullptr)},
          {"pattern", c.layout == KvLayout::rolling ? "window+sinks" : "causal"},
          {"dtype", kv_storage_name(c.storage)},
          {"B", c.batch},
          {"Hq", c.hq},
          {"Hkv", c.hkv},
          {"Nq", c.nq},
          {"Nkv", c.n},
          {"Dqk", c.d},
          {"Dv", c.d},
          {"threads", omp_get_max_threads()},
          {"reps", reps},
          {"median_ms", med},
          {"min_ms", min},
          {"gflop", gflop},
          {"gflops", gflops},
          {"ref_gflops", ref_gflops},
          {"speedup_vs_ref", gflops / ref_gflops},
          {"bytes_read", bytes},
          {"gbps", bytes / (med * 1e-3) * 1e-9},
          {"cache_bytes", cache.bytes_allocated()},
          {"micro_kernels", decode_micro_kernels(c, kernel)}};
}

// The rolling cache of --rolling-rss (bf16 storage, as in KvCacheConfig's defaults).
DecodeCase rolling_case(const DecodeBenchArgs& a) {
  DecodeCase c;
  c.layout = KvLayout::rolling;
  c.hkv = a.kv_heads, c.hq = a.q_heads, c.d = a.d, c.window = a.window, c.sinks = a.sinks;
  return c;
}

// Generates `tokens` tokens into a rolling cache (bf16, 8 KV heads of 128, window 4096 +
// 4 sinks), decoding every 4096th step, and samples resident memory along the way.
nlohmann::json rolling_rss(const DecodeBenchArgs& a) {
  const DecodeCase c = rolling_case(a);
  KvCache cache(cache_config(c));
  const int64_t s = cache.add_sequence();
  const Chunk chunk(c.hkv, 1, c.d, 11);
  const TensorView k(chunk.k.data(), DType::f32, {c.hkv, 1, c.d}), v(chunk.v.data(), DType::f32, {c.hkv, 1, c.d});
  const Tensor q = queries(c, 1);
  Tensor out(DType::f32, {1, c.hq, 1, c.d});
  const int64_t full = c.window + c.sinks;
  const int64_t every = std::max<int64_t>(1, a.rolling_rss / 32);
  nlohmann::json samples = nlohmann::json::array();
  fmt::print("rolling cache ({} + {} sinks, bf16, {} KV heads of {}): resident memory while generating {} tokens\n",
             c.window, c.sinks, c.hkv, c.d, a.rolling_rss);
  fmt::print("{:>10} {:>14} {:>14}\n", "tokens", "resident MiB", "cache MiB");
  const int64_t step_sync = 4096;
  for (int64_t t = 1; t <= a.rolling_rss; ++t) {
    cache.append(s, 1);
    cache.store(s, 0, k, v);
    if (t % step_sync == 0) decode_attention(cache, 0, std::vector<int64_t>{s}, q.view(), out.mut());
    if (t == full || t % every == 0 || t == a.rolling_rss) {
      const int64_t rss = resident_bytes();
      samples.push_back({{"tokens", t}, {"rss_bytes", rss}, {"cache_bytes", cache.bytes_allocated()}});
      fmt::print("{:>10} {:>14.2f} {:>14.2f}\n", t, rss / 1048576.0, cache.bytes_allocated() / 1048576.0);
    }
  }
  int64_t lo = INT64_MAX, hi = 0;
  for (const auto& x : samples)
    if (x["tokens"].get<int64_t>() >= full) {
      lo = std::min(lo, x["rss_bytes"].get<int64_t>());
      hi = std::max(hi, x["rss_bytes"].get<int64_t>());
    }
  fmt::print("resident memory from {} to {} tokens: {:.2f} .. {:.2f} MiB (spread {:.3f} MiB)\n", full, a.rolling_rss,
             lo / 1048576.0, hi / 1048576.0, (hi - lo) / 1048576.0);
  return {{"op", "rolling_rss"}, {"window", c.window}, {"sinks", c.sinks}, {"tokens", a.rolling_rss},
          {"rss_spread_bytes", hi - lo}, {"samples", samples}};
}


// Bytes a case allocates, over-estimated: the cache (codes plus a tenth for scales and page
// rounding) and the f32 chunk it is filled from.
double case_bytes(const DecodeCase& c) {
  double per_value = 4;
  switch (c.storage) {
    case KvStorage::bf16:
    case KvStorage::f16: per_value = 2; break;
    case KvStorage::int8: per_value = 1; break;
    case KvStorage::int4: per_value = 0.5; break;
    default: break;
  }
  const double held = c.layout == KvLayout::rolling ? std::min<double>(double(c.n), double(c.window + c.sinks + c.nq))
                                                    : double(c.n);
  const double cache = double(c.batch) * held * double(c.hkv) * double(c.d) * 2 * per_value * 1.1;
  return cache + 2.0 * double(c.hkv) * 4096 * double(c.d) * 4;
}

void check_case(const DecodeCase& c) {
  cache_config(c).validate();
  check(c.batch >= 1 && c.batch <= 4096 && c.n >= c.nq && c.nq >= 1, [&] {
    return fmt::format("--batch ({}) must be in [1, 4096] and --n ({}) >= --nq ({}) >= 1", c.batch, c.n, c.nq);
  });
  check(c.hq % c.hkv == 0, [&] {
    return fmt::format("--q-heads ({}) must be a multiple of --kv-heads ({})", c.hq, c.hkv);
  });
  const double bytes = case_bytes(c);
  const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
  check(bytes <= ram / 2, [&] {
    return fmt::format("the {} {} case (B = {}, {} tokens, {} KV heads of {}) needs about {:.1f} GiB; this machine "
                       "has {:.1f} GiB of memory: use a smaller --n or --batch",
                       kv_layout_name(c.layout), kv_storage_name(c.storage), c.batch, c.n, c.hkv, c.d,
                       bytes / double(1 << 30), ram / double(1 << 30));
  });
}

}  // namespace

void check_decode_bench(const DecodeBenchArgs& a) {
  parse_option("--kernel", a.kernel, [](const std::string& t) { return parse_decode_kernel(t); });
  check(a.reps >= 0 && a.reps <= 1000, [&] { return fmt::format("--reps ({}) must be in [1, 1000]", a.reps); });
  check(a.rolling_rss >= 0 && a.rolling_rss <= kMaxRollingRssTokens, [&] {
    return fmt::format("--rolling-rss ({}) must be in [1, {}]", a.rolling_rss, kMaxRollingRssTokens);
  });
  if (a.rolling_rss > 0) {
    check_case(rolling_case(a));
    return;
  }
  for (const DecodeCase& c : decode_sweep(a)) check_case(c);
}

nlohmann::json run_decode_bench(const DecodeBenchArgs& a) {
  check_decode_bench(a);
  const DecodeKernel kernel = parse_decode_kernel(a.kernel);
  const int reps = a.reps > 0 ? a.reps : (a.quick ? 5 : 15);
  nlohmann::json records = nlohmann::json::array();
  const std::vector<DecodeCase> cases = a.rolling_rss > 0 ? std::vector<DecodeCase>{} : decode_sweep(a);
  // The DRAM peak is measured before and after the cases and the larger figure taken: on a
  // shared machine the bandwidth left to this process changes over seconds, and noise only
  // ever makes a peak look lower (a low figure at the start once put cases above 100 %).
  std::optional<HwInfo> hw;
  if (!a.no_peak && !cases.empty()) hw = measure_hwinfo();
  for (const DecodeCase& c : cases) {  // progress, and the timings should a later case fail
    fmt::print("timing {} {}{}: ", kv_layout_name(c.layout), kv_storage_name(c.storage),
               c.batch > 1 ? fmt::format(", B = {}", c.batch) : std::string());
    std::fflush(stdout);
    records.push_back(time_case(c, kernel, reps));
    fmt::print("{:.3f} ms\n", records.back()["median_ms"].get<double>());
  }
  double dram_start = 0, dram_end = 0;
  if (hw) {
    dram_start = hw->dram_read_gbps;
    dram_end = measure_hwinfo().dram_read_gbps;
    hw->dram_read_gbps = std::max(dram_start, dram_end);
    fmt::print("peaks (attnkit hwinfo, {} threads): DRAM read {:.1f} GB/s (the larger of {:.1f} before the cases "
               "and {:.1f} after), fp32 FMA {:.1f} GFLOP/s\n",
               hw->threads, hw->dram_read_gbps, dram_start, dram_end, hw->fp32_fma_gflops);
  }
  if (!cases.empty()) {
    fmt::print("decode, kernel={}, {} threads, median of {} calls (best %: the fastest call)\n",
               decode_kernel_name(kernel), omp_get_max_threads(), reps);
    fmt::print("{:<11} {:>7} {:>5} {:>3} {:>6} {:>7} {:>9} {:>8} {:>8} {:>7} {:>7} {:>9} {:>7}\n", "layout",
               "storage", "page", "B", "Hq/Hkv", "Nkv", "median ms", "MiB read", "GB/s", "% DRAM", "best %",
               "vs bf16", "vs ref");
  }
  std::optional<double> bf16_ms;
  for (size_t i = 0; i < cases.size(); ++i) {
    const DecodeCase& c = cases[i];
    nlohmann::json& r = records[i];
    const bool peak = hw && hw->dram_read_gbps > 0;
    r["dram_gbps"] = peak ? nlohmann::json(hw->dram_read_gbps) : nlohmann::json(nullptr);
    r["dram_gbps_before"] = hw ? nlohmann::json(dram_start) : nlohmann::json(nullptr);
    r["dram_gbps_after"] = hw ? nlohmann::json(dram_end) : nlohmann::json(nullptr);
    r["frac_bw"] = peak ? nlohmann::json(r["gbps"].get<double>() / hw->dram_read_gbps) : nlohmann::json(nullptr);
    // Like for like with hwinfo's peak, which is the best of several trials: the best call.
    r["gbps_best"] = r["bytes_read"].get<double>() / (r["min_ms"].get<double>() * 1e-3) * 1e-9;
    r["frac_bw_best"] =
        peak ? nlohmann::json(r["gbps_best"].get<double>() / hw->dram_read_gbps) : nlohmann::json(nullptr);
    r["peak_gflops"] = hw ? nlohmann::json(hw->fp32_fma_gflops) : nlohmann::json(nullptr);
    r["frac_peak"] = hw ? nlohmann::json(r["gflops"].get<double>() / hw->fp32_fma_gflops) : nlohmann::json(nullptr);
    const double ms = r["median_ms"].get<double>();
    if (c.layout == KvLayout::contiguous && c.storage == KvStorage::bf16 && c.batch == 1) bf16_ms = ms;
    const bool comparable = bf16_ms && c.batch == 1 && c.layout != KvLayout::rolling;
    r["speedup_vs_bf16"] = comparable ? nlohmann::json(*bf16_ms / ms) : nlohmann::json(nullptr);
    fmt::print("{:<11} {:>7} {:>5} {:>3} {:>6} {:>7} {:>9.3f} {:>8.1f} {:>8.2f} {:>7} {:>7} {:>9} {:>6.0f}x\n",
               kv_layout_name(c.layout), kv_storage_name(c.storage),
               c.layout == KvLayout::paged ? fmt::format("{}", c.page) : std::string("-"), c.batch,
               fmt::format("{}/{}", c.hq, c.hkv), c.n, ms, r["bytes_read"].get<double>() / 1048576.0,
               r["gbps"].get<double>(),
               peak ? fmt::format("{:.1f}%", 100 * r["frac_bw"].get<double>()) : std::string("-"),
               peak ? fmt::format("{:.1f}%", 100 * r["frac_bw_best"].get<double>()) : std::string("-"),
               comparable ? fmt::format("{:.2f}x", *bf16_ms / ms) : std::string("-"),
               r["speedup_vs_ref"].get<double>());
  }
  if (a.rolling_rss > 0) records.push_back(rolling_rss(a));
  return records;
}

}  // namespace attnkit::cli
