// Google Benchmark suite for the quantized KV decoders (kv_quant.hpp): dequantising one
// 64 x 128 tile (64 token rows of one head, w = 128) into an f32 scratch tile, as the
// decode kernel does per KV tile. Counters: GB/s of quantized bytes read (codes + f16
// scales / zeros) and of f32 written. Two source sizes: the tile itself (hot in L1/L2),
// and a ring of 8192 tiles (512K tokens, 42-68 MB of codes, beyond the 32 MiB L3) walked in
// order, which streams from DRAM like a long-context decode step. SIMD against the
// plain-loop reference.
// Run: build/attnkit_bench --benchmark_filter=KvDequant
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "attnkit/kv_quant.hpp"

namespace attnkit {
namespace {

constexpr int64_t kRows = 64, kW = 128, kG = 32;

enum class Format { int8, int4_key, int4_value };

// Quantized tiles, filled by the real quantizers from normal data.
struct Tiles {
  std::vector<int8_t> q8;
  std::vector<uint8_t> q4;
  std::vector<uint16_t> scales, zeros;
  int64_t params_per_tile = 0;   // f16 values per tile, per array
  int64_t bytes_read_per_tile = 0;
};

// Quantizes up to 16 distinct tiles and repeats them to fill the ring (the decoders'
// speed does not depend on the values, and quantizing 8192 tiles would dominate the run).
Tiles make_tiles(Format f, int64_t tiles) {
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> x(kRows * kW);
  Tiles t;
  const int64_t vg = int4_value_groups(kW, kG);
  const int64_t code_bytes = f == Format::int8 ? kRows * kW : kRows * kW / 2;
  t.params_per_tile = f == Format::int8 ? kRows : f == Format::int4_key ? (kRows / kG) * kW : kRows * vg;
  t.scales.resize(tiles * t.params_per_tile);
  if (f != Format::int8) t.zeros.resize(tiles * t.params_per_tile);
  if (f == Format::int8) t.q8.resize(tiles * code_bytes);
  else t.q4.resize(tiles * code_bytes);
  constexpr int64_t kDistinct = 16;
  for (int64_t i = 0; i < std::min(tiles, kDistinct); ++i) {
    for (float& v : x) v = nd(rng);
    uint16_t* s = t.scales.data() + i * t.params_per_tile;
    uint16_t* z = f == Format::int8 ? nullptr : t.zeros.data() + i * t.params_per_tile;
    for (int64_t r = 0; r < kRows; ++r) {
      if (f == Format::int8) quantize_int8_row(&x[r * kW], kW, &t.q8[(i * kRows + r) * kW], &s[r]);
      if (f == Format::int4_value)
        quantize_int4_value_row(&x[r * kW], kW, kG, &t.q4[(i * kRows + r) * kW / 2], &s[r * vg], &z[r * vg]);
    }
    if (f == Format::int4_key)
      for (int64_t g = 0; g < kRows / kG; ++g)
        quantize_int4_key_group(&x[g * kG * kW], kW, kG, kW, &t.q4[(i * kRows + g * kG) * kW / 2], &s[g * kW],
                                &z[g * kW]);
  }
  for (int64_t i = kDistinct; i < tiles; ++i) {
    const int64_t src = i % kDistinct;
    auto copy = [&](auto& v, int64_t per_tile) {
      std::copy_n(v.begin() + src * per_tile, per_tile, v.begin() + i * per_tile);
    };
    copy(t.scales, t.params_per_tile);
    if (f != Format::int8) copy(t.zeros, t.params_per_tile);
    if (f == Format::int8) copy(t.q8, code_bytes);
    else copy(t.q4, code_bytes);
  }
  t.bytes_read_per_tile = code_bytes + t.params_per_tile * 2 * (f == Format::int8 ? 1 : 2);
  return t;
}

// One ring per (format, size), built on first use: Google Benchmark calls a benchmark
// function several times (iteration estimate, repetitions).
const Tiles& tiles_for(Format f, int64_t tiles) {
  static std::map<std::pair<Format, int64_t>, Tiles> cache;
  auto it = cache.find({f, tiles});
  if (it == cache.end()) it = cache.emplace(std::pair{f, tiles}, make_tiles(f, tiles)).first;
  return it->second;
}

// Decodes tile i of `t` into out [64][128].
void decode(Format f, bool reference, const Tiles& t, int64_t i, float* out) {
  const uint16_t* s = t.scales.data() + i * t.params_per_tile;
  const uint16_t* z = f == Format::int8 ? nullptr : t.zeros.data() + i * t.params_per_tile;
  switch (f) {
    case Format::int8: {
      const int8_t* q = t.q8.data() + i * kRows * kW;
      if (reference) dequantize_int8_rows_reference(q, s, kRows, kW, out, kW);
      else dequantize_int8_rows(q, s, kRows, kW, out, kW);
      break;
    }
    case Format::int4_key: {
      // The tile spans kRows / G groups, one call each (as the decode kernel would).
      for (int64_t g = 0; g < kRows / kG; ++g) {
        const uint8_t* c = t.q4.data() + (i * kRows + g * kG) * kW / 2;
        if (reference) dequantize_int4_key_group_reference(c, s + g * kW, z + g * kW, kG, kW, out + g * kG * kW, kW);
        else dequantize_int4_key_group(c, s + g * kW, z + g * kW, kG, kW, out + g * kG * kW, kW);
      }
      break;
    }
    case Format::int4_value: {
      const uint8_t* c = t.q4.data() + i * kRows * kW / 2;
      if (reference) dequantize_int4_value_rows_reference(c, s, z, kRows, kW, kG, out, kW);
      else dequantize_int4_value_rows(c, s, z, kRows, kW, kG, out, kW);
      break;
    }
  }
}

void BM_KvDequant(benchmark::State& state, Format f, bool reference) {
  const int64_t tiles = state.range(0);
  const Tiles& t = tiles_for(f, tiles);
  alignas(64) static float out[kRows * kW];
  int64_t i = 0;
  for (auto _ : state) {
    decode(f, reference, t, i, out);
    benchmark::DoNotOptimize(out);
    benchmark::ClobberMemory();
    if (++i == tiles) i = 0;
  }
  using benchmark::Counter;
  const double read = static_cast<double>(t.bytes_read_per_tile), written = static_cast<double>(kRows * kW * 4);
  state.counters["read_GB/s"] = Counter(read * 1e-9, Counter::kIsIterationInvariantRate);
  state.counters["write_GB/s"] = Counter(written * 1e-9, Counter::kIsIterationInvariantRate);
}

#define KV_DEQUANT_CASE(name, format, reference)                                                \
  BENCHMARK_CAPTURE(BM_KvDequant, name, format, reference)->ArgName("tiles")->Arg(1)->Arg(8192) \
      ->Unit(benchmark::kNanosecond)                                                            \
      ->UseRealTime()
KV_DEQUANT_CASE(int8, Format::int8, false);
KV_DEQUANT_CASE(int8_reference, Format::int8, true);
KV_DEQUANT_CASE(int4_key, Format::int4_key, false);
KV_DEQUANT_CASE(int4_key_reference, Format::int4_key, true);
KV_DEQUANT_CASE(int4_value, Format::int4_value, false);
KV_DEQUANT_CASE(int4_value_reference, Format::int4_value, true);

}  // namespace
}  // namespace attnkit
