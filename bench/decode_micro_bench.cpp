// Google Benchmark suite for the decode tile micro-kernels (decode_micro.hpp): one tile,
// scores then pv, of n = kTileKeys (128) keys of one KV head against rows = 4 query rows (g = 4 query
// heads per KV head, one new token), dk = dv = 128, the shape the decode kernel calls them
// with. int4 uses groups of 32 (tokens for keys, channels for values). Two sources: one
// tile over and over (ring_MiB = 0: hot in L1/L2), and a ring of tiles holding 256 MiB of
// stored K and V, walked in order, which streams from DRAM like a long-context decode step.
// Counters: items_per_second = keys; bytes_per_second = stored bytes read (codes and f16
// scales / zeros; int8 scales are passed to the kernels as f32, as the driver converts
// them); cycles_per_key at the core clock, measured once by a chain of dependent adds
// (the TSC does not tick at the boosted core clock). All from CPU time. Reference against
// AVX-512.
// Run: build/attnkit_bench --benchmark_filter=DecodeMicro
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>
#include <vector>

#include "attnkit/kv_quant.hpp"
#include "attnkit/tensor.hpp"
#include "kernels/decode_micro.hpp"

namespace attnkit::decode {
namespace {

constexpr int64_t kRows = 4, kD = 128, kN = kTileKeys, kG = 32;
constexpr int64_t kVGroups = kD / kG;

enum class Format { bf16, f16, int8, int4 };

// CPU time of this thread: like the rates Google Benchmark reports (CPU time by default), it
// leaves out the time the thread waits while other processes run on a shared machine.
double thread_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Cycles per second of one core: 8 dependent adds per loop trip, 1 cycle each.
double core_hz() {
  static const double hz = [] {
    double best = 0;
    for (int attempt = 0; attempt < 3; ++attempt) {
      constexpr int64_t kTrips = 25'000'000;
      uint64_t x = 0;
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < kTrips; ++i) {
#if defined(__x86_64__)
        asm volatile(
            "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
            "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
            : "+r"(x));
#else
        asm volatile("" : "+r"(x));
#endif
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, 8.0 * kTrips / s);
    }
    return best;
  }();
  return hz;
}

// The stored K and V of `tiles` tiles, each holding kN consecutive tokens of one head.
struct Ring {
  Format format;
  int64_t tiles = 0;
  int64_t stored_bytes_per_tile = 0;
  std::vector<uint16_t> kb, vb;  // bf16 or f16 rows [tile][key][kD]
  std::vector<int8_t> k8, v8;    // int8 codes [tile][key][kD]
  std::vector<float> k8s, v8s;   // int8 scales [tile][key] (f32, as the driver passes them)
  std::vector<uint8_t> k4, v4;   // int4 codes [tile][key][kD / 2]
  std::vector<uint16_t> k4p;     // int4 key groups [tile][kN / kG][scale kD, zero kD]
  std::vector<uint16_t> v4p;     // int4 value params [tile][key][scale kVGroups, zero kVGroups]
};

int64_t stored_bytes_per_tile(Format f) {
  switch (f) {
    case Format::bf16:
    case Format::f16:
      return 2 * kN * kD * 2;
    case Format::int8:
      return 2 * (kN * kD + kN * 2);
    case Format::int4:
      return 2 * kN * kD / 2 + (kN / kG) * 2 * kD * 2 + kN * 2 * kVGroups * 2;
  }
  return 0;
}

// Quantizes 16 distinct tiles from normal data and repeats them around the ring (speed does
// not depend on the values; quantizing 256 MiB would dominate the run).
std::unique_ptr<Ring> make_ring(Format f, int64_t ring_mib) {
  auto ring = std::make_unique<Ring>();
  ring->format = f;
  ring->stored_bytes_per_tile = stored_bytes_per_tile(f);
  ring->tiles = std::max<int64_t>(1, (ring_mib << 20) / ring->stored_bytes_per_tile);
  const int64_t T = ring->tiles;
  switch (f) {
    case Format::bf16:
    case Format::f16:
      ring->kb.resize(T * kN * kD), ring->vb.resize(T * kN * kD);
      break;
    case Format::int8:
      ring->k8.resize(T * kN * kD), ring->v8.resize(T * kN * kD), ring->k8s.resize(T * kN), ring->v8s.resize(T * kN);
      break;
    case Format::int4:
      ring->k4.resize(T * kN * kD / 2), ring->v4.resize(T * kN * kD / 2);
      ring->k4p.resize(T * (kN / kG) * 2 * kD), ring->v4p.resize(T * kN * 2 * kVGroups);
      break;
  }
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> x(kN * kD);
  const int64_t distinct = std::min<int64_t>(T, 16);
  for (int64_t t = 0; t < distinct; ++t)
    for (int kv = 0; kv < 2; ++kv) {
      for (float& v : x) v = nd(rng);
      for (int64_t j = 0; j < kN; ++j) {
        const float* xr = &x[j * kD];
        const int64_t row = t * kN + j;
        if (f == Format::bf16 || f == Format::f16)
          for (int64_t c = 0; c < kD; ++c)
            (kv ? ring->vb : ring->kb)[row * kD + c] = f == Format::f16 ? float_to_f16(xr[c]) : float_to_bf16(xr[c]);
        if (f == Format::int8) {
          uint16_t s16;
          quantize_int8_row(xr, kD, &(kv ? ring->v8 : ring->k8)[row * kD], &s16);
          (kv ? ring->v8s : ring->k8s)[row] = f16_to_float(s16);
        }
        if (f == Format::int4 && kv) {
          uint16_t* prm = &ring->v4p[row * 2 * kVGroups];
          quantize_int4_value_row(xr, kD, kG, &ring->v4[row * kD / 2], prm, prm + kVGroups);
        }
      }
      if (f == Format::int4 && !kv)
        for (int64_t g = 0; g < kN / kG; ++g) {
          uint16_t* prm = &ring->k4p[(t * (kN / kG) + g) * 2 * kD];
          quantize_int4_key_group(&x[g * kG * kD], kD, kG, kD, &ring->k4[(t * kN + g * kG) * kD / 2], prm, prm + kD);
        }
    }
  auto repeat = [&](auto& v) {
    const size_t per_tile = v.size() / static_cast<size_t>(T);
    for (int64_t t = distinct; t < T; ++t)
      std::memcpy(&v[t * per_tile], &v[(t % distinct) * per_tile], per_tile * sizeof(v[0]));
  };
  repeat(ring->kb), repeat(ring->vb), repeat(ring->k8), repeat(ring->v8), repeat(ring->k8s), repeat(ring->v8s);
  repeat(ring->k4), repeat(ring->v4), repeat(ring->k4p), repeat(ring->v4p);
  return ring;
}

// One ring at a time (256 MiB each), rebuilt when the benchmark asks for another.
const Ring& ring_for(Format f, int64_t ring_mib) {
  static std::unique_ptr<Ring> ring;
  static int64_t mib = -1;
  if (!ring || ring->format != f || mib != ring_mib) {
    ring.reset();
    ring = make_ring(f, ring_mib);
    mib = ring_mib;
  }
  return *ring;
}

// Query-side operands, prepared once per call in the decode kernel, so outside the timing.
struct Operands {
  std::vector<uint16_t> qb = std::vector<uint16_t>(kRows * kD);
  std::vector<float> q = std::vector<float>(kRows * kD);
  std::vector<int8_t> q8 = std::vector<int8_t>(kRows * kD);
  std::vector<float> qs = std::vector<float>(kRows);
  std::vector<float> p = std::vector<float>(kRows * kN);
  std::vector<float> s = std::vector<float>(kRows * kN);
  std::vector<float> acc = std::vector<float>(kRows * kD);
  Operands() {
    std::mt19937_64 rng(2);
    std::normal_distribution<float> nd;
    std::uniform_real_distribution<float> ud(0, 1);
    for (size_t i = 0; i < q.size(); ++i) q[i] = nd(rng), qb[i] = float_to_bf16(q[i]);
    quantize_q8(q.data(), kRows, kD, q8.data(), qs.data());
    for (float& v : p) v = ud(rng);
  }
};

// Scores and pv of tile t, the row pointers resolved first as the decode driver does, with
// the next tile's rows handed to the AVX-512 kernels to prefetch (as the driver does).
void run_tile(const Ring& ring, int64_t t, Operands& o, bool simd) {
  const int64_t next = (t + 1) % ring.tiles;
  const void *kn[kN], *vn[kN];
  for (int64_t j = 0; j < kN; ++j) {
    const int64_t row = next * kN + j;
    switch (ring.format) {
      case Format::bf16:
      case Format::f16: kn[j] = &ring.kb[row * kD], vn[j] = &ring.vb[row * kD]; break;
      case Format::int8: kn[j] = &ring.k8[row * kD], vn[j] = &ring.v8[row * kD]; break;
      case Format::int4: kn[j] = &ring.k4[row * kD / 2], vn[j] = &ring.v4[row * kD / 2]; break;
    }
  }
  const Ahead ka{kn, kN}, va{vn, kN};
  switch (ring.format) {
    case Format::bf16: {
      const uint16_t *k[kN], *v[kN];
      for (int64_t j = 0; j < kN; ++j) k[j] = &ring.kb[(t * kN + j) * kD], v[j] = &ring.vb[(t * kN + j) * kD];
      if (simd) {
        scores_bf16_avx512(o.qb.data(), kRows, kD, k, kN, o.s.data(), ka);
        pv_bf16_avx512(o.p.data(), kRows, v, kN, kD, o.acc.data(), va);
      } else {
        scores_bf16_ref(o.qb.data(), kRows, kD, k, kN, o.s.data());
        pv_bf16_ref(o.p.data(), kRows, v, kN, kD, o.acc.data());
      }
      break;
    }
    case Format::f16: {
      const uint16_t *k[kN], *v[kN];
      for (int64_t j = 0; j < kN; ++j) k[j] = &ring.kb[(t * kN + j) * kD], v[j] = &ring.vb[(t * kN + j) * kD];
      if (simd) {
        scores_f16_avx512(o.q.data(), kRows, kD, k, kN, o.s.data(), ka);
        pv_f16_avx512(o.p.data(), kRows, v, kN, kD, o.acc.data(), va);
      } else {
        scores_f16_ref(o.q.data(), kRows, kD, k, kN, o.s.data());
        pv_f16_ref(o.p.data(), kRows, v, kN, kD, o.acc.data());
      }
      break;
    }
    case Format::int8: {
      const int8_t *k[kN], *v[kN];
      for (int64_t j = 0; j < kN; ++j) k[j] = &ring.k8[(t * kN + j) * kD], v[j] = &ring.v8[(t * kN + j) * kD];
      const float* ks = &ring.k8s[t * kN];
      const float* vs = &ring.v8s[t * kN];
      if (simd) {
        scores_int8_avx512(o.q8.data(), o.qs.data(), kRows, kD, k, ks, kN, o.s.data(), ka);
        pv_int8_avx512(o.p.data(), kRows, v, vs, kN, kD, o.acc.data(), va);
      } else {
        scores_int8_ref(o.q8.data(), o.qs.data(), kRows, kD, k, ks, kN, o.s.data());
        pv_int8_ref(o.p.data(), kRows, v, vs, kN, kD, o.acc.data());
      }
      break;
    }
    case Format::int4: {
      const uint8_t *k[kN], *v[kN];
      const uint16_t *ks[kN], *kz[kN], *vs[kN], *vz[kN];
      for (int64_t j = 0; j < kN; ++j) {
        k[j] = &ring.k4[(t * kN + j) * kD / 2];
        v[j] = &ring.v4[(t * kN + j) * kD / 2];
        ks[j] = &ring.k4p[(t * (kN / kG) + j / kG) * 2 * kD];
        kz[j] = ks[j] + kD;
        vs[j] = &ring.v4p[(t * kN + j) * 2 * kVGroups];
        vz[j] = vs[j] + kVGroups;
      }
      if (simd) {
        scores_int4_avx512(o.q.data(), kRows, kD, k, ks, kz, kN, o.s.data(), ka);
        pv_int4_avx512(o.p.data(), kRows, v, vs, vz, kG, kN, kD, o.acc.data(), va);
      } else {
        scores_int4_ref(o.q.data(), kRows, kD, k, ks, kz, kN, o.s.data());
        pv_int4_ref(o.p.data(), kRows, v, vs, vz, kG, kN, kD, o.acc.data());
      }
      break;
    }
  }
}

void BM_DecodeMicro(benchmark::State& state, Format f, bool simd) {
  if (simd && !avx512_available()) {
    state.SkipWithError("AVX-512 BF16 / VNNI not available");
    return;
  }
  const Ring& ring = ring_for(f, state.range(0));
  Operands o;
  const double hz = core_hz();
  int64_t t = 0;
  const double start = thread_seconds();
  for (auto _ : state) {
    run_tile(ring, t, o, simd);
    benchmark::DoNotOptimize(o.s.data());
    benchmark::DoNotOptimize(o.acc.data());
    benchmark::ClobberMemory();
    if (++t == ring.tiles) t = 0;
    // The accumulators would grow without bound over millions of tiles.
    if (t % 1024 == 0) std::fill(o.acc.begin(), o.acc.end(), 0.0f);
  }
  const double seconds = thread_seconds() - start;
  const double keys = static_cast<double>(state.iterations()) * kN;
  state.SetItemsProcessed(state.iterations() * kN);
  state.SetBytesProcessed(state.iterations() * ring.stored_bytes_per_tile);
  state.counters["cycles_per_key"] = seconds * hz / keys;
}

#define DECODE_MICRO_CASE(name, format, simd)           \
  BENCHMARK_CAPTURE(BM_DecodeMicro, name, format, simd) \
      ->ArgName("ring_MiB")                             \
      ->Arg(0)                                          \
      ->Arg(256)                                        \
      ->Unit(benchmark::kNanosecond)
DECODE_MICRO_CASE(bf16_reference, Format::bf16, false);
DECODE_MICRO_CASE(bf16_avx512, Format::bf16, true);
DECODE_MICRO_CASE(f16_reference, Format::f16, false);
DECODE_MICRO_CASE(f16_avx512, Format::f16, true);
DECODE_MICRO_CASE(int8_reference, Format::int8, false);
DECODE_MICRO_CASE(int8_avx512, Format::int8, true);
DECODE_MICRO_CASE(int4_reference, Format::int4, false);
DECODE_MICRO_CASE(int4_avx512, Format::int4, true);

}  // namespace
}  // namespace attnkit::decode
