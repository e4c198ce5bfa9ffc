// Tests for the tables of storage formats (src/cache/kv_format.cpp and the decode kernel's
// src/kernels/decode_formats.cpp): the sizes each row of the cache's table states, and
// kv_block_bytes() built on them, agree with kv_size.hpp's formulas, names round-trip, every
// format's row codec inverts its encoder within its rounding, and the decode table has
// stored-byte kernels exactly for the formats that are not f32.
#include "cache/kv_format.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/kv_quant.hpp"
#include "cache/kv_rows.hpp"
#include "kernels/decode_formats.hpp"

namespace attnkit {
namespace {

using detail::KvFormat;

TEST(KvFormat, TableIsIndexedByStorageAndNamesRoundTrip) {
  ASSERT_EQ(detail::kv_formats().size(), detail::kKvFormatCount);
  for (const KvFormat& f : detail::kv_formats()) {
    EXPECT_EQ(&detail::kv_format(f.storage), &f);
    EXPECT_EQ(kv_storage_name(f.storage), f.name);
    EXPECT_EQ(parse_kv_storage(f.name), f.storage);
  }
  EXPECT_FALSE(detail::kv_format(detail::kKvResidualStorage).quantized());
}

// kv_size.hpp's formulas, written out per format: the bytes of `tokens` rows of one head
// of width w, {codes, f16 parameters}.
KvBlockBytes documented_bytes(KvStorage s, KvStream stream, int64_t tokens, int64_t w, int64_t G) {
  switch (s) {
    case KvStorage::f32: return {tokens * w * 4, 0};
    case KvStorage::bf16:
    case KvStorage::f16: return {tokens * w * 2, 0};
    case KvStorage::int8: return {tokens * w, tokens * 2};
    case KvStorage::int4:
      return {tokens * w / 2, stream == KvStream::key ? tokens / G * w * 4 : tokens * ((w + G - 1) / G) * 4};
  }
  return {};
}

// The table's sizes, through kv_block_bytes() and as a decode sums them per row and per
// key group, equal the documented formulas.
TEST(KvFormat, SizesMatchTheDocumentedFormulas) {
  for (const KvFormat& f : detail::kv_formats())
    for (const int64_t w : {2, 32, 96, 128, 130})
      for (const int64_t G : {2, 32, 64}) {
        const int64_t tokens = 4 * G;  // whole key groups
        SCOPED_TRACE(testing::Message() << f.name << " w=" << w << " G=" << G);
        for (const KvStream stream : {KvStream::key, KvStream::value}) {
          const KvBlockBytes want = documented_bytes(f.storage, stream, tokens, w, G);
          const KvBlockBytes b = kv_block_bytes(f.storage, stream, tokens, w, G);
          EXPECT_EQ(b.codes, want.codes);
          EXPECT_EQ(b.params, want.params);
          EXPECT_EQ(tokens * f.row_bytes(w), want.codes);
          const int64_t groups = stream == KvStream::key ? tokens / G * f.key_group_params(w) : 0;
          EXPECT_EQ(tokens * f.row_params(stream, w, G) + groups, want.params);
        }
        EXPECT_EQ(f.quantized(), f.value_bytes() == 0);
        if (!f.quantized()) {
          EXPECT_EQ(f.row_bytes(w), w * f.value_bytes());
        }
      }
}

// Encode then decode one row of every format, through the table, over a region of its own.
TEST(KvFormat, RowCodecsRoundTrip) {
  const int64_t w = 64, G = 16, slots = 2 * G;
  std::vector<float> x(static_cast<size_t>(G * w));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
  for (const KvFormat& f : detail::kv_formats())
    for (const bool key : {true, false}) {
      SCOPED_TRACE(testing::Message() << f.name << (key ? " K" : " V"));
      const KvBlockBytes b =
          kv_block_bytes(f.storage, key ? KvStream::key : KvStream::value, slots, w, G);
      std::vector<std::byte> mem(static_cast<size_t>(b.total()));
      detail::KvRegion g{f.storage, key, mem.data(), mem.data() + b.codes, f.row_bytes(w), w, slots, G};
      const int64_t r0 = G;  // the second key group
      if (key && f.encode_key_group)
        f.encode_key_group(g, r0, x.data());
      else
        for (int64_t j = 0; j < G; ++j) f.encode_row(g, r0 + j, x.data() + j * w);
      // Within the format's rounding: exact for f32, a half ulp for bf16 / f16, the
      // codes' bounds for int8 / int4 (loosely: this checks the plumbing, kv_quant_test
      // the bounds).
      const double tol = f.storage == KvStorage::f32    ? 0
                         : f.storage == KvStorage::bf16 ? 3.0 / 256
                         : f.storage == KvStorage::f16  ? 3.0 / 2048
                         : f.storage == KvStorage::int8 ? 3.0 / 127
                                                        : 6.0 / 15;
      std::vector<float> out(static_cast<size_t>(w));
      for (int64_t j = 0; j < G; ++j) {
        f.decode_row(g, r0 + j, out.data());
        for (int64_t c = 0; c < w; ++c) EXPECT_NEAR(out[c], x[j * w + c], tol) << "row " << j << " col " << c;
      }
    }
}

TEST(DecodeFormat, StoredKernelsForEveryFormatButF32) {
  for (const KvFormat& f : detail::kv_formats()) {
    const decode::DecodeFormat& d = decode::decode_format(f.storage);
    SCOPED_TRACE(f.name);
    EXPECT_EQ(d.storage, f.storage);
    const bool stored = f.storage != KvStorage::f32;
    EXPECT_EQ(d.scores != nullptr, stored);
    EXPECT_EQ(d.pv != nullptr, stored);
    EXPECT_EQ(d.to_f32 != nullptr, stored);  // f32 rows are read where they lie
    EXPECT_EQ(d.locate_params != nullptr, f.quantized());
    if (d.prepare_params) {
      EXPECT_NE(d.locate_params, nullptr);  // it finishes what locate_params began
    }
  }
  EXPECT_EQ(&decode::generic_format(), &decode::decode_format(KvStorage::f32));
}

}  // namespace
}  // namespace attnkit
