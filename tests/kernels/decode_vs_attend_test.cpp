// Tests that decode_attention() (decode.hpp) equals attend() (attention.hpp) run on the K / V
// that KvCache::gather() returns, with the same mask and variant. Decode's window W and
// sinks S are attend()'s pattern window(W - 1, 0, S) over gather()'s logical indices: query t
// of Nq is attend()'s row t, at bottom-right position n - Nq + t, which is decode's logical
// index qi. Covered: every layout (contiguous; paged, also after a fork with copy-on-write;
// rolling with sinks, with RoPE in both position modes and without) x storage (f32, bf16,
// f16, int8, int4; the rolling layout refuses int4 by design) x mask (causal, window, window
// with sinks) x variant (scale, softcap, ALiBi) x Nq in {1, 3} x MHA / GQA / MQA, odd widths
// and lengths, and the portable path on every SIMD target Highway compiled.
//
// Tolerances (ARCHITECTURE.md's rule). The oracle is attention_reference() in f64 on the
// gathered K / V (the f32 values every kernel reads, promoted) and on queries rotated in
// double. Decode's portable path (DecodeKernel::generic: f32 tiles) and attend()'s flash
// kernel must each stay within twice the error of the plain reference run in f32 (+1e-7
// on O, +1e-6 on LSE, where that baseline happens to be exact); so decode and attend() are
// within the sum of the two bounds of each other. The automatic kernel computes bf16, int8
// and int4 caches straight from the stored bytes and rounds operands as decode_micro.hpp
// documents: it is compared with the f64 attention over those rounded operands, within the
// plain bound plus what the roundings that depend on its tiles can add (emulate_row below).
#include <hwy/targets.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/attention.hpp"
#include "attnkit/decode.hpp"
#include "attnkit/kv_cache.hpp"
#include "attnkit/rope.hpp"
#include "kernels/decode_micro.hpp"
#include "kernels/decode_simd.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::max_abs_diff;
using testing::random_tensor;
using testing::reference_run;
using testing::two_x_bound;

constexpr int64_t kLayers = 2, kLayer = 1;  // decode reads layer 1; layer 0 holds other data
constexpr int64_t kGroup = 16, kResidual = 40;  // int4
constexpr double kU = 0x1p-24;

struct CacheCase {
  std::string name;
  KvLayout layout = KvLayout::contiguous;
  KvStorage storage = KvStorage::f32;
  int64_t hkv = 2, dk = 64, dv = 32;
  std::vector<int64_t> lengths = {203, 150};  // tokens appended per sequence
  int64_t window = 0, sinks = 0, max_append = 4;  // rolling
  int64_t page = 7;                               // paged (int4: a multiple of kGroup)
  // paged: sequence 1 is a fork of sequence 0 taken after fork_at tokens; both go on
  // appending their own tokens (the shared page of the fork point is copied on write).
  bool fork = false;
  int64_t fork_at = 90;
  bool rope = false;
  KvPositions positions = KvPositions::absolute;
};

std::string describe(const CacheCase& c) {
  return c.name + " " + std::string(kv_storage_name(c.storage)) + " hkv=" + std::to_string(c.hkv) +
         " dk=" + std::to_string(c.dk) + " dv=" + std::to_string(c.dv);
}

KvCacheConfig config_of(const CacheCase& c) {
  KvCacheConfig k;
  k.layout = c.layout;
  k.storage = c.storage;
  k.layers = kLayers;
  k.kv_heads = c.hkv;
  k.head_dim = c.dk;
  k.v_head_dim = c.dv;
  k.window = c.window;
  k.sinks = c.sinks;
  k.max_append = c.max_append;
  k.page_size = c.storage == KvStorage::int4 ? 2 * kGroup : c.page;
  k.group = kGroup;
  k.residual = kResidual;
  k.positions = c.positions;
  if (c.rope) k.rope = RopeConfig{};
  return k;
}

// A cache filled from seeded data, and the history of layer kLayer of each sequence as it
// was appended (keys before RoPE): k [hkv, length, dk], v [hkv, length, dv].
struct Filled {
  CacheCase c;
  KvCache cache;
  std::vector<int64_t> seqs;
  std::vector<Tensor> k, v;

  explicit Filled(const CacheCase& cc, uint64_t seed = 1) : c(cc), cache(config_of(cc)) {
    const int64_t B = static_cast<int64_t>(c.lengths.size());
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = c.lengths[static_cast<size_t>(b)];
      k.push_back(random_tensor({c.hkv, n, c.dk}, seed + 10 * b));
      v.push_back(random_tensor({c.hkv, n, c.dv}, seed + 10 * b + 1));
    }
    if (c.fork) {  // the child's history starts with the parent's first fork_at tokens
      for (Tensor* t : {&k[1], &v[1]}) {
        const Tensor& parent = t == &k[1] ? k[0] : v[0];
        const int64_t d = t->shape()[2];
        for (int64_t h = 0; h < c.hkv; ++h)
          for (int64_t i = 0; i < c.fork_at; ++i)
            for (int64_t x = 0; x < d; ++x) t->mut().set(parent.view().get(h, i, x), h, i, x);
      }
      seqs.push_back(cache.add_sequence());
      feed(0, 0, c.fork_at);
      seqs.push_back(cache.fork(seqs[0]));
      feed(0, c.fork_at, c.lengths[0]);
      feed(1, c.fork_at, c.lengths[1]);
    } else {
      for (int64_t b = 0; b < B; ++b) {
        seqs.push_back(cache.add_sequence());
        feed(b, 0, c.lengths[static_cast<size_t>(b)]);
      }
    }
  }

  // Appends tokens [from, to) of sequence b in appends of varying sizes (at most
  // max_append on the rolling layout), crossing pages, int4 groups and tiles unevenly.
  void feed(int64_t b, int64_t from, int64_t to) {
    static const int64_t kChunks[] = {1, 7, 2, 33, 5, 1, 3};
    const int64_t n = k[static_cast<size_t>(b)].shape()[1];
    const auto* kd = static_cast<const float*>(k[static_cast<size_t>(b)].data());
    const auto* vd = static_cast<const float*>(v[static_cast<size_t>(b)].data());
    for (int64_t t = from, step = 0; t < to; ++step) {
      int64_t T = std::min(kChunks[step % 7], to - t);
      if (c.layout == KvLayout::rolling) T = std::min(T, c.max_append);
      cache.append(seqs[static_cast<size_t>(b)], T);
      const TensorView ks(kd + t * c.dk, DType::f32, {c.hkv, T, c.dk}, {n * c.dk, c.dk, 1});
      const TensorView vs(vd + t * c.dv, DType::f32, {c.hkv, T, c.dv}, {n * c.dv, c.dv, 1});
      // Layer 0 gets other values (the keys' negated halves), so reading the wrong layer shows.
      Tensor k0(DType::f32, {c.hkv, T, c.dk}), v0(DType::f32, {c.hkv, T, c.dv});
      for (int64_t i = 0; i < k0.numel(); ++i) k0.mut().store(i, -0.5 * ks.get(i / (T * c.dk), i / c.dk % T, i % c.dk));
      for (int64_t i = 0; i < v0.numel(); ++i) v0.mut().store(i, -0.5 * vs.get(i / (T * c.dv), i / c.dv % T, i % c.dv));
      cache.store(seqs[static_cast<size_t>(b)], 0, k0.view(), v0.view());
      cache.store(seqs[static_cast<size_t>(b)], kLayer, ks, vs);
      t += T;
    }
  }

  // Tokens sequence b holds: all of them, or on the rolling layout the sinks and the ring.
  int64_t expected_held(int64_t b) const {
    const int64_t n = c.lengths[static_cast<size_t>(b)];
    return c.layout == KvLayout::rolling ? std::min(n, c.sinks + c.window + c.max_append - 1) : n;
  }
};

// The decode mask (window W, sinks S, resolved) as attend()'s pattern.
Pattern decode_pattern(int64_t W, int64_t S) { return W == 0 ? Pattern::causal() : Pattern::window(W - 1, 0, S); }

struct MaskCase {
  std::string name;
  int64_t window = 0, sinks = 0;  // DecodeOptions (0 on a rolling cache: the cache's)
  Variant variant;
};

// Sequence b's gathered K / V as attend() inputs [1, hkv, held, d] (f32 and f64), and its
// queries [1, Hq, Nq, dk] rotated by the positions decode.hpp defines, computed here from
// the history's length: absolute, the token's index in the sequence; in_cache, its
// logical index held - Nq + t.
struct AttendInputs {
  Tensor q32, k32, v32, q64, k64, v64;
};

AttendInputs attend_inputs(const Filled& f, int64_t b, const Tensor& q) {
  const CacheCase& c = f.c;
  const int64_t id = f.seqs[static_cast<size_t>(b)], held = f.cache.sequence(id).held;
  const int64_t hq = q.shape()[1], nq = q.shape()[2];
  AttendInputs in;
  in.k32 = Tensor(DType::f32, {1, c.hkv, held, c.dk});
  in.v32 = Tensor(DType::f32, {1, c.hkv, held, c.dv});
  const MutTensorView kv(in.k32.data(), DType::f32, {c.hkv, held, c.dk});
  const MutTensorView vv(in.v32.data(), DType::f32, {c.hkv, held, c.dv});
  f.cache.gather(id, kLayer, kv, vv);
  in.k64 = in.k32.to(DType::f64);
  in.v64 = in.v32.to(DType::f64);
  in.q64 = Tensor(DType::f64, {1, hq, nq, c.dk});
  for (int64_t h = 0; h < hq; ++h)
    for (int64_t t = 0; t < nq; ++t)
      for (int64_t x = 0; x < c.dk; ++x) in.q64.mut().set(q.view().get(b, h, t, x), 0, h, t, x);
  if (c.rope) {
    std::vector<int64_t> pos(static_cast<size_t>(nq));
    for (int64_t t = 0; t < nq; ++t)
      pos[static_cast<size_t>(t)] =
          c.positions == KvPositions::in_cache ? held - nq + t : c.lengths[static_cast<size_t>(b)] - nq + t;
    rope_reference(*config_of(c).rope, in.q64.mut(), pos.data());
  }
  in.q32 = in.q64.to(DType::f32);
  return in;
}

// Batch b of a [B, ...] f32 tensor as a [1, ...] view.
TensorView batch_of(const Tensor& t, int64_t b) {
  std::vector<int64_t> s = t.shape();
  const int64_t per = t.numel() / s[0];
  s[0] = 1;
  return TensorView(static_cast<const float*>(t.data()) + b * per, DType::f32, s);
}

// ---- the automatic kernel's operand roundings ----
//
// The stored-byte kernels (decode_micro.hpp) round operands by documented rules. Those that
// depend only on the data are applied here exactly, and the attention over the rounded
// operands is evaluated in double (emulate_row):
//   bf16  each query element rounded to bf16 (the keys are bf16 values as stored);
//   int8  each query row rounded to int8 with quantize_q8 (qs = max |q| / 127), against the
//         keys' codes with their scales (k_jc = kscale_j code_jc, as gathered);
//   int4  q'_c = q_c kscale_c rounded to int8 per (row, key group) with quantize_q8, against
//         codes in [0, 15], plus sum_c q_c kzero_c unrounded; the f16 residual tokens are read
//         as they are. A group is G consecutive logical tokens below `quantized`; its scale,
//         zero and codes are recovered exactly from the gathered keys: the channel's minimum
//         is the zero (code 0), the maximum has code 15 (kv_quant.hpp rounds the scale up by
//         at most one f16 ulp), so the scale is the f16 value nearest (max - min) / 15 and
//         code_jc = round((k_jc - zero_c) / scale_c).
// The queries are the f32 rows the kernel rounds (rotated in f32 with rope_angles, as decode
// does, when the cache rotates its keys at append).
//
// The roundings of the P V weights depend on the kernel's tiles (their largest weight sets
// the scale), so they are bounded instead, for the emulated probabilities p_j:
//   bf16  p rounded to bf16:                           |dO_c| <= 2^-8 sum_j p_j |v_jc|
//   int8  w_j = p_j vscale_j rounded to int16 per (row, tile), |dw_j| <= max_tile w / 65534,
//         times codes v_jc / vscale_j (vscale_j = max_c |v_jc| / 127: the row's absmax has
//         code 127);
//   int4  w_jg = p_j vscale_jg rounded to uint8 per (row, tile, channel group g), |dw| <=
//         max_tile w / 510, times codes in [0, 15] recovered as for the keys (vscale_jg =
//         range / 15); the residual tokens' weights are not rounded.
// A tile is at most kTileKeys consecutive logical keys, so its largest weight is at most the
// largest over keys i with |i - j| < kTileKeys; keys a row cannot see weigh exactly 0. The
// kernels' own f32 sums get (kTileKeys + 8) u sum_j p_j (|v_jc| + |zero|) on O, and each
// score e_j = (dk + 8) u scale sum_c |q_c| (|k_jc| + |zero_c|), which moves O by at most
// sum_j p_j (e^{e_j + E} - 1) |v_jc - O_c| (E = max e_j: each probability moves by a factor
// within e^{+-(e_j + E)}, and sum_j (p'_j - p_j) = 0) and LSE by log sum_j p_j e^{e_j}. The
// terms are first order (the weights are rounded from perturbed probabilities); they are
// summed with a 5 % margin.
struct Emulated {
  std::vector<double> o, o_bound;  // [dv]
  double lse = 0, lse_bound = 0;
};

// One query row: q [dk], the f32 query the kernel takes; k [n][dk], v [n][dv], the gathered
// rows of its KV head; visible [n], the exact probabilities (> 0 where the row sees the key);
// h, qi: its query head and logical index (for ALiBi).
Emulated emulate_row(KvStorage st, int64_t dk, int64_t dv, int64_t n, int64_t quantized, const Variant& var,
                     int64_t h, int64_t qi, const float* q, const double* k, const double* v, const double* visible) {
  const double scale = var.softmax_scale(dk);
  std::vector<double> s(static_cast<size_t>(n), -INFINITY), e(static_cast<size_t>(n), 0.0);
  std::vector<double> qe(static_cast<size_t>(dk)), zero(static_cast<size_t>(dk), 0.0), code(static_cast<size_t>(dk));
  std::vector<float> qprime(static_cast<size_t>(dk));
  std::vector<int8_t> q8(static_cast<size_t>(dk));
  float qs = 0;
  if (st == KvStorage::bf16)
    for (int64_t x = 0; x < dk; ++x) qe[x] = bf16_to_float(float_to_bf16(q[x]));
  if (st == KvStorage::int8) {
    decode::quantize_q8(q, 1, dk, q8.data(), &qs);
    for (int64_t x = 0; x < dk; ++x) qe[x] = double{qs} * q8[x];
  }
  std::vector<double> kscale(static_cast<size_t>(dk));
  int64_t group = -1;
  for (int64_t j = 0; j < n; ++j) {
    if (visible[j] == 0) continue;
    const double* kj = k + j * dk;
    double dot = 0, mag = 0;
    if (st == KvStorage::int4 && j >= quantized) {  // an f16 residual key, read as it is
      for (int64_t x = 0; x < dk; ++x) dot += double{q[x]} * kj[x], mag += std::abs(q[x] * kj[x]);
    } else if (st == KvStorage::int4) {
      if (j / kGroup != group) {  // the group's parameters, and q' rounded for them
        group = j / kGroup;
        for (int64_t x = 0; x < dk; ++x) {
          double lo = INFINITY, hi = -INFINITY;
          for (int64_t i = group * kGroup; i < (group + 1) * kGroup; ++i)
            lo = std::min(lo, k[i * dk + x]), hi = std::max(hi, k[i * dk + x]);
          zero[x] = lo;
          kscale[x] = f16_to_float(float_to_f16(static_cast<float>((hi - lo) / 15)));
          qprime[x] = q[x] * static_cast<float>(kscale[x]);
        }
        decode::quantize_q8(qprime.data(), 1, dk, q8.data(), &qs);
      }
      for (int64_t x = 0; x < dk; ++x) {
        const double c = kscale[x] > 0 ? std::round((kj[x] - zero[x]) / kscale[x]) : 0.0;
        dot += double{qs} * q8[x] * c + double{q[x]} * zero[x];
        mag += std::abs(q[x]) * (std::abs(kj[x]) + std::abs(zero[x]));
      }
    } else {
      for (int64_t x = 0; x < dk; ++x) dot += qe[x] * kj[x], mag += std::abs(qe[x] * kj[x]);
    }
    s[static_cast<size_t>(j)] = var.apply(scale * dot, h, qi, j);
    e[static_cast<size_t>(j)] = (dk + 8) * kU * scale * mag;
  }
  double m = -INFINITY, sum = 0, emax = 0, lse_sum = 0;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, s[static_cast<size_t>(j)]);
  std::vector<double> p(static_cast<size_t>(n), 0.0);
  for (int64_t j = 0; j < n; ++j)
    if (visible[j] > 0) p[static_cast<size_t>(j)] = std::exp(s[static_cast<size_t>(j)] - m), sum += p[static_cast<size_t>(j)];
  for (int64_t j = 0; j < n; ++j) {
    p[static_cast<size_t>(j)] /= sum;
    if (visible[j] > 0) emax = std::max(emax, e[static_cast<size_t>(j)]);
    lse_sum += p[static_cast<size_t>(j)] * std::exp(e[static_cast<size_t>(j)]);
  }
  Emulated r;
  r.lse = m + std::log(sum);
  r.lse_bound = 1.05 * std::log(lse_sum);
  r.o.assign(static_cast<size_t>(dv), 0.0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t x = 0; x < dv; ++x) r.o[static_cast<size_t>(x)] += p[static_cast<size_t>(j)] * v[j * dv + x];
  // Per key and value group: the weight w_jg = p_j vscale_jg, its code scale and zero.
  const int64_t groups = st == KvStorage::int4 ? (dv + kGroup - 1) / kGroup : 1;
  const int64_t width = st == KvStorage::int4 ? kGroup : dv;
  std::vector<double> w(static_cast<size_t>(n * groups), 0.0), vscale(w.size(), 0.0), vzero(w.size(), 0.0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t g = 0; g < groups; ++g) {
      double lo = INFINITY, hi = -INFINITY, amax = 0;
      for (int64_t x = g * width; x < std::min(dv, (g + 1) * width); ++x)
        lo = std::min(lo, v[j * dv + x]), hi = std::max(hi, v[j * dv + x]), amax = std::max(amax, std::abs(v[j * dv + x]));
      const size_t at = static_cast<size_t>(j * groups + g);
      if (st == KvStorage::int8) vscale[at] = amax / 127;
      if (st == KvStorage::int4 && j < quantized) vscale[at] = (hi - lo) / 15, vzero[at] = lo;
      w[at] = p[static_cast<size_t>(j)] * vscale[at];
    }
  // The largest weight of any tile that can hold key j: keys i with |i - j| < kTileKeys.
  std::vector<double> tile_max(w.size(), 0.0);
  for (int64_t g = 0; g < groups && st != KvStorage::bf16; ++g)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = std::max<int64_t>(0, j - decode::kTileKeys + 1); i < std::min(n, j + decode::kTileKeys); ++i)
        tile_max[static_cast<size_t>(j * groups + g)] =
            std::max(tile_max[static_cast<size_t>(j * groups + g)], w[static_cast<size_t>(i * groups + g)]);
  r.o_bound.assign(static_cast<size_t>(dv), 0.0);
  for (int64_t x = 0; x < dv; ++x) {
    const int64_t g = x / width;
    double term = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double pj = p[static_cast<size_t>(j)], vj = v[j * dv + x];
      if (pj == 0) continue;
      const size_t at = static_cast<size_t>(j * groups + g);
      term += pj * (std::exp(e[static_cast<size_t>(j)] + emax) - 1) * std::abs(vj - r.o[static_cast<size_t>(x)]);
      term += (decode::kTileKeys + 8) * kU * pj * (std::abs(vj) + std::abs(vzero[at]));
      if (st == KvStorage::bf16) term += 0x1p-8 * pj * std::abs(vj);
      if (vscale[at] > 0)
        term += (st == KvStorage::int8 ? tile_max[at] / 65534 : tile_max[at] / 510) *
                std::round(std::abs(vj - vzero[at]) / vscale[at]);
    }
    r.o_bound[static_cast<size_t>(x)] = 1.05 * term;
  }
  return r;
}

// Whether decode's automatic kernel takes the stored-byte micro-kernels that round operands
// for this cache (f16 tiles are read from their stored halves too, but round nothing, so
// they are held to the plain rule).
bool rounding_kernels(const CacheCase& c) {
  const bool rounds = c.storage == KvStorage::bf16 || c.storage == KvStorage::int8 || c.storage == KvStorage::int4;
  return rounds && decode::avx512_available() &&
         decode::avx512_supports(c.dk, c.dv, c.storage == KvStorage::int4 ? kGroup : 0) &&
         !(c.rope && c.positions == KvPositions::in_cache);  // in_cache keys are rotated as they are read
}

// The largest error of the automatic kernel relative to its bound (the bound's tightness),
// per storage, printed at the end of the sweep.
struct Tightness {
  double worst[5] = {0, 0, 0, 0, 0};
  void note(KvStorage s, double ratio) {
    double& w = worst[static_cast<int>(s)];
    w = std::max(w, ratio);
  }
};

// Runs one (cache, mask, g, Nq) case: decode (generic and automatic) and attend() (flash)
// against the f64 reference of every sequence.
void check_case(const Filled& f, const MaskCase& m, int64_t g, int64_t nq, Tightness* tight = nullptr,
                uint64_t seed = 99) {
  const CacheCase& c = f.c;
  const int64_t B = static_cast<int64_t>(f.seqs.size()), hq = g * c.hkv;
  const std::string what = describe(c) + " " + m.name + " g=" + std::to_string(g) + " nq=" + std::to_string(nq);
  const Tensor q = random_tensor({B, hq, nq, c.dk}, seed, DType::f32, 2.0);
  Variant var = m.variant;
  if (!var.alibi_slopes.empty()) var.alibi_slopes = alibi_slopes(hq);
  DecodeOptions d;
  static_cast<Variant&>(d) = var;
  d.window = m.window;
  d.sinks = m.sinks;
  Tensor out_generic(DType::f32, {B, hq, nq, c.dv}), lse_generic(DType::f32, {B, hq, nq});
  Tensor out_auto(DType::f32, {B, hq, nq, c.dv}), lse_auto(DType::f32, {B, hq, nq});
  d.kernel = DecodeKernel::generic;
  decode_attention(f.cache, kLayer, f.seqs, q.view(), out_generic.mut(), d, lse_generic.mut());
  d.kernel = DecodeKernel::automatic;
  decode_attention(f.cache, kLayer, f.seqs, q.view(), out_auto.mut(), d, lse_auto.mut());

  // The mask decode resolves: a rolling cache's own window and sinks unless given.
  int64_t W = m.window, S = m.sinks;
  if (c.layout == KvLayout::rolling && W == 0) W = c.window, S = c.sinks;
  AttendOptions a;
  static_cast<Variant&>(a) = var;
  a.pattern = decode_pattern(W, S);
  a.kernel = Kernel::flash;
  const bool stored = rounding_kernels(c);
  for (int64_t b = 0; b < B; ++b) {
    const std::string at = what + " seq " + std::to_string(b);
    const int64_t id = f.seqs[static_cast<size_t>(b)];
    const KvSequence& s = f.cache.sequence(id);
    ASSERT_EQ(s.held, f.expected_held(b)) << at;
    ASSERT_EQ(s.length, c.lengths[static_cast<size_t>(b)]) << at;
    const AttendInputs in = attend_inputs(f, b, q);
    const testing::RefResult exact = reference_run(in.q64.view(), in.k64.view(), in.v64.view(), a, RefPrecision::f64, true);
    const testing::RefResult base = reference_run(in.q32.view(), in.k32.view(), in.v32.view(), a, RefPrecision::input);
    const Output flash = attend(in.q32.view(), in.k32.view(), in.v32.view(), a);
    const double bound = two_x_bound(base.o.view(), exact.o.view(), 1e-7);
    const double lse_bound = two_x_bound(base.lse.view(), exact.lse.view(), 1e-6);
    const TensorView og = batch_of(out_generic, b), lg = batch_of(lse_generic, b);
    const TensorView oa = batch_of(out_auto, b), la = batch_of(lse_auto, b);
    EXPECT_LE(max_abs_diff(og, exact.o.view()), bound) << at << " decode generic";
    EXPECT_LE(max_abs_diff(lg, exact.lse.view()), lse_bound) << at << " decode generic lse";
    EXPECT_LE(max_abs_diff(flash.o.view(), exact.o.view()), bound) << at << " attend flash";
    EXPECT_LE(max_abs_diff(flash.lse.view(), exact.lse.view()), lse_bound) << at << " attend flash lse";
    // decode = attend(): each within `bound` of the oracle, so within twice of each other.
    EXPECT_LE(max_abs_diff(og, flash.o.view()), 2 * bound) << at << " decode vs attend";
    if (!stored) {
      EXPECT_LE(max_abs_diff(oa, exact.o.view()), bound) << at << " decode auto";
      EXPECT_LE(max_abs_diff(la, exact.lse.view()), lse_bound) << at << " decode auto lse";
      continue;
    }
    // The automatic kernel against the attention over its rounded operands (see above).
    const int64_t n = s.held;
    const auto* k = static_cast<const double*>(in.k64.data());
    const auto* v = static_cast<const double*>(in.v64.data());
    const auto* p = static_cast<const double*>(exact.probs.data());
    int reported = 0;
    std::vector<float> qrow(static_cast<size_t>(c.dk)), cs(static_cast<size_t>(c.dk));
    for (int64_t h = 0; h < hq; ++h)
      for (int64_t t = 0; t < nq; ++t) {
        const int64_t row = h * nq + t, kh = h / g, qi = n - nq + t;
        for (int64_t x = 0; x < c.dk; ++x) qrow[static_cast<size_t>(x)] = static_cast<float>(q.view().get(b, h, t, x));
        if (c.rope) {  // absolute positions: decode rotates its f32 queries so
          const RopeConfig rope = *config_of(c).rope;
          const int64_t half = rope.resolved_rotary_dim(c.dk) / 2;
          rope_angles(rope, c.dk, c.lengths[static_cast<size_t>(b)] - nq + t, cs.data(), cs.data() + half);
          rope_row_angles(rope, c.dk, cs.data(), cs.data() + half, qrow.data());
        }
        const Emulated em = emulate_row(c.storage, c.dk, c.dv, n, s.quantized, var, h, qi, qrow.data(),
                                        k + kh * n * c.dk, v + kh * n * c.dv, p + row * n);
        const double lse_err = std::abs(la.get(0, h, t) - em.lse);
        EXPECT_LE(lse_err, lse_bound + em.lse_bound) << at << " decode auto lse, head " << h << " t " << t;
        for (int64_t x = 0; x < c.dv; ++x) {
          const double err = std::abs(oa.get(0, h, t, x) - em.o[static_cast<size_t>(x)]);
          const double lim = bound + em.o_bound[static_cast<size_t>(x)];
          if (tight) tight->note(c.storage, err / lim);
          if (err > lim && reported++ < 3)
            ADD_FAILURE() << at << " decode auto: head " << h << " t " << t << " channel " << x << ": error " << err
                          << " > bound " << lim;
        }
      }
  }
}

const KvStorage kStorages[] = {KvStorage::f32, KvStorage::bf16, KvStorage::f16, KvStorage::int8, KvStorage::int4};

std::vector<CacheCase> layouts() {
  std::vector<CacheCase> out;
  CacheCase c;
  c.name = "contiguous";
  out.push_back(c);
  c.name = "paged";
  c.layout = KvLayout::paged;
  out.push_back(c);
  c.name = "paged-fork";
  c.fork = true;
  out.push_back(c);
  c = CacheCase{};
  c.layout = KvLayout::rolling;
  c.window = 140;  // sinks + ring = 147 slots: two tiles of keys, and the ring wrapped
  c.sinks = 4;
  c.lengths = {300, 170};
  c.hkv = 1;  // with g = 3: MQA
  c.name = "rolling";
  out.push_back(c);
  c.rope = true;
  c.name = "rolling-rope-absolute";
  out.push_back(c);
  c.positions = KvPositions::in_cache;
  c.name = "rolling-rope-in_cache";
  out.push_back(c);
  return out;
}

std::vector<MaskCase> masks(const CacheCase& c) {
  Variant softcap, alibi;
  softcap.softcap = 1.5;
  alibi.alibi_slopes = {1};  // replaced by alibi_slopes(Hq)
  alibi.scale = 0.2;
  if (c.layout == KvLayout::rolling)
    return {{"cache's window and sinks", 0, 0, {}},
            {"window 33 sinks 2 softcap", 33, 2, softcap},
            {"window 140 no sinks alibi", 140, 0, alibi}};
  return {{"causal", 0, 0, {}}, {"window 50 softcap", 50, 0, softcap}, {"window 37 sinks 5 alibi", 37, 5, alibi}};
}

TEST(DecodeVsAttend, EveryLayoutStorageMaskAndHeadLayout) {
  Tightness tight;
  for (const CacheCase& layout : layouts())
    for (KvStorage st : kStorages) {
      if (layout.layout == KvLayout::rolling && st == KvStorage::int4) continue;  // refused by the config
      CacheCase c = layout;
      c.storage = st;
      const Filled f(c);
      // (heads per KV head, Nq): MHA and GQA, one query and three, each pair on some mask.
      const std::vector<std::vector<std::pair<int64_t, int64_t>>> shapes = {{{1, 1}, {3, 3}}, {{1, 3}, {3, 1}}};
      int64_t index = 0;
      for (const MaskCase& m : masks(c))
        for (auto [g, nq] : shapes[static_cast<size_t>(index++ % 2)]) {
          check_case(f, m, g, nq, &tight);
          if (HasFatalFailure()) return;
        }
    }
  std::printf("[ decode auto ] largest error / bound:");
  for (KvStorage st : {KvStorage::bf16, KvStorage::int8, KvStorage::int4}) std::printf(" %s %.3g", std::string(kv_storage_name(st)).c_str(), tight.worst[static_cast<int>(st)]);
  std::printf("\n");
}

TEST(DecodeVsAttend, OddWidthsAndLengths) {
  // Widths the stored-byte kernels do not take (the automatic kernel falls back), lengths
  // of one key, under a tile, and one over; a sequence whose every token is a query.
  for (KvStorage st : kStorages)
    for (auto [dk, dv] : {std::pair<int64_t, int64_t>{18, 10}, std::pair<int64_t, int64_t>{34, 96}}) {
      for (KvLayout layout : {KvLayout::contiguous, KvLayout::paged}) {
        CacheCase c;
        c.name = layout == KvLayout::paged ? "paged" : "contiguous";
        c.layout = layout;
        c.storage = st;
        c.dk = dk;
        c.dv = dv;
        c.hkv = 3;
        c.lengths = {1, 129, 3, 17};
        const Filled f(c, 5);
        check_case(f, {"causal", 0, 0, {}}, 2, 1);
        Variant softcap;
        softcap.softcap = 2;
        check_case(f, {"window 2 sinks 1 softcap", 2, 1, softcap}, 1, 1);
        c.lengths = {129, 3, 17};  // Nq = 3: every token of the second sequence is a query
        const Filled g3(c, 6);
        check_case(g3, {"window 16", 16, 0, {}}, 2, 3);
      }
    }
}

// gather() of a rolling cache holds the sinks, then the newest tokens in order, keys
// rotated by their absolute position or (in_cache) by their logical index: the mapping the
// test above gives attend(), checked here against the appended history itself.
TEST(DecodeVsAttend, RollingGatherHoldsTheSinksThenTheNewestTokens) {
  for (KvPositions pos : {KvPositions::absolute, KvPositions::in_cache})
    for (bool rope : {false, true}) {
      CacheCase c;
      c.layout = KvLayout::rolling;
      c.window = 20;
      c.sinks = 3;
      c.max_append = 4;
      c.lengths = {101, 25, 9};
      c.rope = rope;
      c.positions = pos;
      c.name = "rolling";
      const Filled f(c);
      for (int64_t b = 0; b < 3; ++b) {
        const int64_t n = c.lengths[static_cast<size_t>(b)], held = f.expected_held(b);
        Tensor k(DType::f32, {c.hkv, held, c.dk}), v(DType::f32, {c.hkv, held, c.dv});
        f.cache.gather(f.seqs[static_cast<size_t>(b)], kLayer, k.mut(), v.mut());
        for (int64_t i = 0; i < held; ++i) {
          const int64_t token = i < c.sinks ? i : n - (held - i);
          Tensor want(DType::f64, {1, c.hkv, 1, c.dk});
          for (int64_t h = 0; h < c.hkv; ++h)
            for (int64_t x = 0; x < c.dk; ++x) want.mut().set(f.k[static_cast<size_t>(b)].view().get(h, token, x), 0, h, 0, x);
          if (rope) {
            const int64_t p = pos == KvPositions::in_cache ? i : token;
            rope_reference(*config_of(c).rope, want.mut(), &p);
          }
          for (int64_t h = 0; h < c.hkv; ++h) {
            for (int64_t x = 0; x < c.dk; ++x)
              ASSERT_NEAR(k.view().get(h, i, x), want.view().get(0, h, 0, x), 1e-6)
                  << kv_positions_name(pos) << " rope " << rope << " seq " << b << " i " << i << " token " << token;
            for (int64_t x = 0; x < c.dv; ++x)
              ASSERT_EQ(v.view().get(h, i, x), f.v[static_cast<size_t>(b)].view().get(h, token, x)) << i;
          }
        }
      }
    }
}

// The portable path (DecodeKernel::generic) on every SIMD target Highway compiled and this
// CPU runs, down to the baseline, as FlashForward.EverySimdTargetIncludingTheBaseline does.
TEST(DecodeVsAttend, PortablePathOnEverySimdTarget) {
  std::vector<std::string> seen;
  Tensor first;        // decode's output on the first (best) target
  bool differs = false;  // and whether another target's was not bitwise the same
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    seen.push_back(decode::simd_ops().target);
    for (KvStorage st : {KvStorage::f32, KvStorage::bf16, KvStorage::f16, KvStorage::int8}) {
      CacheCase c;
      c.name = "paged";
      c.layout = KvLayout::paged;
      c.storage = st;
      c.dk = 40;  // not a multiple of any vector width: the remainder loops run too
      c.dv = 24;
      c.lengths = {150, 61};
      const Filled f(c, 3);
      Variant softcap;
      softcap.softcap = 2.5;
      check_case(f, {"window 50 sinks 3 softcap", 50, 3, softcap}, 3, 2);
      if (st != KvStorage::f32) continue;
      const Tensor q = random_tensor({2, 6, 2, c.dk}, 99, DType::f32, 2.0);
      Tensor out(DType::f32, {2, 6, 2, c.dv});
      DecodeOptions d;
      d.kernel = DecodeKernel::generic;
      decode_attention(f.cache, kLayer, f.seqs, q.view(), out.mut(), d);
      if (first.numel() == 0)
        first = out;
      else
        differs |= std::memcmp(first.data(), out.data(), out.nbytes()) != 0;
    }
    CacheCase ring;
    ring.name = "rolling-rope-in_cache";
    ring.layout = KvLayout::rolling;
    ring.window = 30;
    ring.sinks = 2;
    ring.lengths = {90, 20};
    ring.rope = true;
    ring.positions = KvPositions::in_cache;
    check_case(Filled(ring, 4), {"cache's window and sinks", 0, 0, {}}, 2, 3);
  }
  hwy::SetSupportedTargetsForTest(0);
  ASSERT_GE(seen.size(), 2u) << "at least the best target and the baseline";
  EXPECT_TRUE(seen.back() == "EMU128" || seen.back() == "SCALAR") << "the last target is the portable baseline";
  // Targets of different vector widths sum in different orders: a decode that ignored the
  // chosen target (e.g. cached its SIMD table once) would give one result for all of them.
  EXPECT_TRUE(differs) << "decode gave bitwise the same result on every SIMD target";
  std::string all;
  for (const std::string& s : seen) all += s + " ";
  std::printf("SIMD targets tested (decode): %s\n", all.c_str());
}

}  // namespace
}  // namespace attnkit
