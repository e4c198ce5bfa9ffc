// Tests for the KV cache (kv_cache.hpp): every layout holds the same history (paged =
// contiguous = ring on the window the ring holds), eviction order and positions across
// wrap-around, RoPE at append (absolute) and at read (in_cache), fork and copy-on-write
// isolation, prefix adoption, quantized storage within the codecs' bounds, accounting =
// allocation = kv_size.hpp, and clear errors for capacity overflow, bad page tables and
// misuse of the append / store protocol.
#include "attnkit/kv_cache.hpp"

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/error.hpp"
#include "attnkit/kv_quant.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

using testing::random_tensor;

KvCacheConfig base_config(KvLayout layout, KvStorage storage = KvStorage::f32) {
  KvCacheConfig c;
  c.layout = layout;
  c.storage = storage;
  c.layers = 2;
  c.kv_heads = 2;
  c.head_dim = 8;
  c.v_head_dim = 6;
  c.window = 5;
  c.sinks = 2;
  c.page_size = 3;
  c.group = 4;
  c.residual = 3;
  return c;
}

// The history every test appends: token t of layer l has keys k[l][h][t][:] (pre-RoPE).
struct History {
  int64_t tokens;
  std::vector<Tensor> k, v;  // [layers] of [H, tokens, d]
  History(const KvCacheConfig& c, int64_t n, uint64_t seed) : tokens(n) {
    for (int64_t l = 0; l < c.layers; ++l) {
      k.push_back(random_tensor({c.kv_heads, n, c.head_dim}, seed + 2 * l));
      v.push_back(random_tensor({c.kv_heads, n, c.v_width()}, seed + 2 * l + 1));
    }
  }
  // Appends tokens [t0, t0 + T) of the history to seq in every layer.
  void append(KvCache& cache, int64_t seq, int64_t t0, int64_t T) const {
    cache.append(seq, T);
    for (size_t l = 0; l < k.size(); ++l) {
      const TensorView kv = k[l].view(), vv = v[l].view();
      const TensorView ks(static_cast<const float*>(kv.data()) + kv.offset(0, t0, 0), DType::f32,
                          {kv.size(0), T, kv.size(2)}, {kv.stride(0), kv.stride(1), kv.stride(2)});
      const TensorView vs(static_cast<const float*>(vv.data()) + vv.offset(0, t0, 0), DType::f32,
                          {vv.size(0), T, vv.size(2)}, {vv.stride(0), vv.stride(1), vv.stride(2)});
      cache.store(seq, static_cast<int64_t>(l), ks, vs);
    }
  }
};

struct Gathered {
  Tensor k, v;
};

Gathered gather(const KvCache& cache, int64_t seq, int64_t layer) {
  const KvCacheConfig& c = cache.config();
  const int64_t n = cache.sequence(seq).held;
  Gathered g{Tensor(DType::f32, {c.kv_heads, n, c.head_dim}), Tensor(DType::f32, {c.kv_heads, n, c.v_width()})};
  cache.gather(seq, layer, g.k.mut(), g.v.mut());
  return g;
}

// Row i of a gathered [H, n, d] tensor equals token t of the history, bitwise.
void expect_row(const Tensor& got, int64_t i, const Tensor& want, int64_t t) {
  for (int64_t h = 0; h < got.shape()[0]; ++h)
    for (int64_t c = 0; c < got.shape()[2]; ++c)
      ASSERT_EQ(got.view().get(h, i, c), want.view().get(h, t, c)) << "h=" << h << " i=" << i << " t=" << t;
}

TEST(KvCache, ContiguousGrowsAndHoldsTheHistory) {
  KvCacheConfig c = base_config(KvLayout::contiguous);
  KvCache cache(c);
  const History hist(c, 50, 1);
  const int64_t s = cache.add_sequence();
  for (int64_t t = 0; t < 50; t += 7) hist.append(cache, s, t, std::min<int64_t>(7, 50 - t));
  EXPECT_EQ(cache.sequence(s).held, 50);
  EXPECT_EQ(cache.sequence(s).capacity, 64);  // 16 -> 32 -> 64
  for (int64_t l = 0; l < 2; ++l) {
    const Gathered g = gather(cache, s, l);
    for (int64_t i = 0; i < 50; ++i) {
      expect_row(g.k, i, hist.k[static_cast<size_t>(l)], i);
      expect_row(g.v, i, hist.v[static_cast<size_t>(l)], i);
    }
  }
}

TEST(KvCache, PagedEqualsContiguousForEveryPageSize) {
  for (KvStorage st : {KvStorage::f32, KvStorage::bf16, KvStorage::f16, KvStorage::int8, KvStorage::int4}) {
    KvCacheConfig cc = base_config(KvLayout::contiguous, st);
    KvCache contiguous(cc);
    const History hist(cc, 41, 2);
    const int64_t a = contiguous.add_sequence();
    for (int64_t t = 0; t < 41; t += 5) hist.append(contiguous, a, t, std::min<int64_t>(5, 41 - t));
    for (int64_t page : {1, 3, 16}) {
      if (st == KvStorage::int4 && page % cc.group) continue;
      KvCacheConfig pc = base_config(KvLayout::paged, st);
      pc.page_size = page == 3 && st == KvStorage::int4 ? 4 : page;
      KvCache paged(pc);
      const int64_t b = paged.add_sequence();
      for (int64_t t = 0; t < 41; t += 5) hist.append(paged, b, t, std::min<int64_t>(5, 41 - t));
      for (int64_t l = 0; l < 2; ++l) {
        const Gathered x = gather(contiguous, a, l), y = gather(paged, b, l);
        EXPECT_EQ(testing::max_abs_diff(x.k.view(), y.k.view()), 0.0) << kv_storage_name(st) << " page " << page;
        EXPECT_EQ(testing::max_abs_diff(x.v.view(), y.v.view()), 0.0) << kv_storage_name(st) << " page " << page;
      }
    }
  }
}

TEST(KvCache, RingEvictsOldestNonSinkAndKeepsPositions) {
  KvCacheConfig c = base_config(KvLayout::rolling);
  c.max_append = 2;  // ring of window + 1 = 6 slots, plus 2 sinks
  KvCache cache(c);
  const History hist(c, 40, 3);
  const int64_t s = cache.add_sequence();
  for (int64_t t = 0; t < 40;) {
    const int64_t T = std::min<int64_t>(t % 3 == 0 ? 2 : 1, 40 - t);  // wraps at every phase
    hist.append(cache, s, t, T);
    t += T;
    const KvSequence& q = cache.sequence(s);
    ASSERT_EQ(q.length, t);
    ASSERT_EQ(q.held, std::min<int64_t>(t, 8));
    // Logical order: sinks 0, 1, then the newest tokens in order.
    std::vector<int64_t> want;
    for (int64_t p = 0; p < std::min<int64_t>(t, 2); ++p) want.push_back(p);
    for (int64_t p = std::max<int64_t>(2, t - 6); p < t; ++p) want.push_back(p);
    ASSERT_EQ(static_cast<int64_t>(want.size()), q.held);
    const Gathered g = gather(cache, s, 1);
    for (int64_t i = 0; i < q.held; ++i) {
      ASSERT_EQ(cache.position(q, i), want[static_cast<size_t>(i)]) << "t=" << t << " i=" << i;
      expect_row(g.k, i, hist.k[1], want[static_cast<size_t>(i)]);
      expect_row(g.v, i, hist.v[1], want[static_cast<size_t>(i)]);
    }
  }
}

TEST(KvCache, RopeAbsoluteRotatesAtAppendInCacheAtRead) {
  for (KvLayout layout : {KvLayout::contiguous, KvLayout::rolling}) {
    KvCacheConfig c = base_config(layout);
    c.rope = RopeConfig{};
    KvCache absolute(c);
    c.positions = KvPositions::in_cache;
    KvCache in_cache(c);
    const History hist(c, 23, 4);
    const int64_t a = absolute.add_sequence(), b = in_cache.add_sequence();
    for (int64_t t = 0; t < 23; ++t) {
      hist.append(absolute, a, t, 1);
      hist.append(in_cache, b, t, 1);
    }
    const KvSequence& s = absolute.sequence(a);
    const Gathered x = gather(absolute, a, 0), y = gather(in_cache, b, 0);
    // Expected: the history's key of token position(i) rotated by its absolute position
    // (absolute), or by its logical index i (in_cache).
    RopeCache table(*c.rope, c.head_dim, 64);
    for (int64_t i = 0; i < s.held; ++i)
      for (int64_t h = 0; h < c.kv_heads; ++h) {
        std::vector<float> ra(static_cast<size_t>(c.head_dim)), rb(ra.size());
        for (int64_t ch = 0; ch < c.head_dim; ++ch)
          ra[static_cast<size_t>(ch)] = rb[static_cast<size_t>(ch)] =
              static_cast<float>(hist.k[0].view().get(h, absolute.position(s, i), ch));
        rope_row(table, ra.data(), c.head_dim, absolute.position(s, i));
        rope_row(table, rb.data(), c.head_dim, i);
        for (int64_t ch = 0; ch < c.head_dim; ++ch) {
          ASSERT_EQ(x.k.view().get(h, i, ch), ra[static_cast<size_t>(ch)]) << kv_layout_name(layout) << " i=" << i;
          ASSERT_EQ(y.k.view().get(h, i, ch), rb[static_cast<size_t>(ch)]) << kv_layout_name(layout) << " i=" << i;
        }
      }
    EXPECT_EQ(testing::max_abs_diff(x.v.view(), y.v.view()), 0.0);
  }
}

TEST(KvCache, ForkSharesPagesAndCopiesOnWrite) {
  KvCacheConfig c = base_config(KvLayout::paged);
  KvCache cache(c);
  const History h1(c, 30, 5), h2(c, 30, 6);
  const int64_t a = cache.add_sequence();
  h1.append(cache, a, 0, 10);  // pages of 3: 4 pages, the last holding 1 token
  const int64_t pages_before = cache.storage().pooled_in_use();
  const int64_t b = cache.fork(a);
  EXPECT_EQ(cache.storage().pooled_in_use(), pages_before);  // shared, nothing copied
  EXPECT_EQ(cache.sequence(b).blocks, cache.sequence(a).blocks);
  h2.append(cache, b, 10, 4);  // b writes into the shared last page: copied first
  EXPECT_EQ(cache.storage().pooled_in_use(), pages_before + 2);  // the copy + one new page
  EXPECT_NE(cache.sequence(b).blocks[3], cache.sequence(a).blocks[3]);
  EXPECT_EQ(cache.sequence(b).blocks[2], cache.sequence(a).blocks[2]);  // full pages stay shared
  h1.append(cache, a, 10, 2);  // a's last page is its own again (refcount 1): no copy
  EXPECT_EQ(cache.storage().pooled_in_use(), pages_before + 2);
  for (int64_t l = 0; l < 2; ++l) {
    const Gathered ga = gather(cache, a, l), gb = gather(cache, b, l);
    for (int64_t i = 0; i < 12; ++i) expect_row(ga.k, i, h1.k[static_cast<size_t>(l)], i);
    for (int64_t i = 0; i < 10; ++i) expect_row(gb.k, i, h1.k[static_cast<size_t>(l)], i);
    for (int64_t i = 10; i < 14; ++i) expect_row(gb.v, i, h2.v[static_cast<size_t>(l)], i);
  }
  cache.free_sequence(a);
  const Gathered gb = gather(cache, b, 0);  // still intact after the parent is freed
  for (int64_t i = 0; i < 10; ++i) expect_row(gb.k, i, h1.k[0], i);
  EXPECT_EQ(cache.storage().pooled_in_use(), 5);  // b's 5 pages; the rest pooled
  cache.free_sequence(b);
  EXPECT_EQ(cache.storage().pooled_in_use(), 0);
  EXPECT_EQ(cache.bytes_allocated(), cache.storage().pooled_free() * cache.layout(KvSequence{}).block_bytes);
}

TEST(KvCache, ForkOfContiguousAndInt4Copies) {
  for (KvLayout layout : {KvLayout::contiguous, KvLayout::paged}) {
    KvCacheConfig c = base_config(layout, KvStorage::int4);
    c.page_size = 4;
    KvCache cache(c);
    const History h1(c, 30, 7), h2(c, 30, 8);
    const int64_t a = cache.add_sequence();
    h1.append(cache, a, 0, 13);
    const int64_t b = cache.fork(a);
    for (int64_t t = 13; t < 30; ++t) h2.append(cache, b, t, 1);
    h1.append(cache, a, 13, 1);
    const Gathered ga = gather(cache, a, 1);
    KvCache fresh(c);
    const int64_t f = fresh.add_sequence();
    h1.append(fresh, f, 0, 13);
    h1.append(fresh, f, 13, 1);
    const Gathered gf = gather(fresh, f, 1);
    EXPECT_EQ(testing::max_abs_diff(ga.k.view(), gf.k.view()), 0.0) << kv_layout_name(layout);
    EXPECT_EQ(testing::max_abs_diff(ga.v.view(), gf.v.view()), 0.0) << kv_layout_name(layout);
  }
}

TEST(KvCache, AdoptPagesSharesAPrefixAndRefusesBadTables) {
  KvCacheConfig c = base_config(KvLayout::paged);
  KvCache cache(c);
  const History hist(c, 20, 9);
  const int64_t a = cache.add_sequence();
  hist.append(cache, a, 0, 9);
  const std::vector<KvBlockId> pages = cache.sequence(a).blocks;  // 3 full pages
  const int64_t b = cache.adopt_pages(std::span(pages).first(2), 6);
  EXPECT_EQ(cache.sequence(b).held, 6);
  hist.append(cache, b, 6, 2);
  const Gathered g = gather(cache, b, 0);
  for (int64_t i = 0; i < 8; ++i) expect_row(g.k, i, hist.k[0], i);
  const auto message = [&](std::vector<KvBlockId> table, int64_t tokens) {
    try {
      cache.adopt_pages(table, tokens);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({pages[0], 12345}, 5).find("pages[1] (12345) is not a page in use"), std::string::npos);
  EXPECT_NE(message({pages[0], pages[0]}, 5).find("pages[1]"), std::string::npos);
  EXPECT_NE(message({pages[0], pages[1]}, 3).find("tokens (3) must be in (3, 6]"), std::string::npos);
  EXPECT_NE(message({}, 1).find("tokens (1)"), std::string::npos);
  cache.free_sequence(a);
  cache.free_sequence(b);
  EXPECT_NE(message({pages[0]}, 2).find("pages[0]"), std::string::npos);  // freed: back in the pool
}

// |x - deq| within kv_quant.hpp's bounds, from the row's (int8) or group's (int4) range.
TEST(KvCache, QuantizedStorageWithinTheCodecBounds) {
  for (KvStorage st : {KvStorage::int8, KvStorage::int4}) {
    KvCacheConfig c = base_config(KvLayout::paged, st);
    c.page_size = 4;
    KvCache cache(c);
    const History hist(c, 37, 10);
    const int64_t s = cache.add_sequence();
    for (int64_t t = 0; t < 37; ++t) hist.append(cache, s, t, 1);
    const KvSequence& q = cache.sequence(s);
    if (st == KvStorage::int4) {
      EXPECT_EQ(q.quantized, 32);  // 4 * floor((37 - 3) / 4)
    }
    const Gathered g = gather(cache, s, 0);
    for (int64_t h = 0; h < c.kv_heads; ++h) {
      for (int64_t i = 0; i < 37; ++i) {
        for (int key = 0; key < 2; ++key) {
          const Tensor& want = key ? hist.k[0] : hist.v[0];
          const Tensor& got = key ? g.k : g.v;
          const int64_t w = want.shape()[2];
          double bound;
          if (st == KvStorage::int8) {
            double mx = 0;
            for (int64_t ch = 0; ch < w; ++ch) mx = std::max(mx, std::abs(want.view().get(h, i, ch)));
            bound = mx / 127 * (1 + 0x1p-10) / 2 + 0x1p-24;
          } else if (i >= q.quantized) {
            bound = 0x1p-11;  // f16 residual: half an f16 ulp of values below 1
          } else {
            // int4: (max - min) / 15 / 2 over the key's group of tokens (keys, per channel)
            // or the value's group of channels, with the f16 rounding slack.
            bound = 0;
            for (int64_t ch = 0; ch < w; ++ch) {
              double lo = 1e9, hi = -1e9;
              const int64_t t0 = key ? i / c.group * c.group : i, t1 = key ? t0 + c.group : i + 1;
              const int64_t c0 = key ? ch : ch / c.group * c.group, c1 = key ? ch + 1 : std::min(w, c0 + c.group);
              for (int64_t t = t0; t < t1; ++t)
                for (int64_t cc = c0; cc < c1; ++cc) {
                  lo = std::min(lo, want.view().get(h, t, cc));
                  hi = std::max(hi, want.view().get(h, t, cc));
                }
              bound = std::max(bound, ((hi - lo) + 0x1p-10) / 15 * (1 + 0x1p-10) / 2 + 0x1p-22);
            }
          }
          for (int64_t ch = 0; ch < w; ++ch)
            ASSERT_LE(std::abs(got.view().get(h, i, ch) - want.view().get(h, i, ch)), bound)
                << kv_storage_name(st) << " key=" << key << " i=" << i << " ch=" << ch;
        }
      }
    }
  }
}

// An int4 sequence's f16 residual block is a block of its own even when it is exactly as
// large as a page: it must neither count against max_pages nor be laid out region-major.
TEST(KvCache, Int4ResidualOfPageSizeIsNotAPage) {
  KvCacheConfig c = base_config(KvLayout::paged, KvStorage::int4);
  c.layers = 1, c.kv_heads = 1, c.head_dim = 8, c.v_head_dim = 0;
  c.page_size = 4, c.group = 2, c.residual = 4;  // page: 2 x 80 bytes; residual: 5 f16 slots
  c.max_pages = 2;
  KvCache paged(c);
  ASSERT_EQ(paged.residual_layout().block_bytes, paged.layout(KvSequence{}).block_bytes);
  KvCacheConfig cc = c;
  cc.layout = KvLayout::contiguous;
  KvCache contiguous(cc);
  const History hist(c, 12, 21);
  const int64_t a = paged.add_sequence(), b = contiguous.add_sequence();
  for (int64_t t = 0; t < 12; t += 3) hist.append(paged, a, t, 3), hist.append(contiguous, b, t, 3);
  EXPECT_EQ(paged.storage().pooled_in_use(), 2);  // 8 int4 tokens; the residual is not a page
  const Gathered x = gather(paged, a, 0), y = gather(contiguous, b, 0);
  EXPECT_EQ(testing::max_abs_diff(x.k.view(), y.k.view()), 0.0);
  EXPECT_EQ(testing::max_abs_diff(x.v.view(), y.v.view()), 0.0);
}

TEST(KvCache, AllocationEqualsKvSize) {
  for (KvStorage st : {KvStorage::f32, KvStorage::bf16, KvStorage::f16, KvStorage::int8}) {
    {
      KvCacheConfig c = base_config(KvLayout::contiguous, st);
      c.max_tokens = 100;
      KvCache cache(c);
      for (int i = 0; i < 3; ++i) cache.add_sequence();
      EXPECT_EQ(cache.bytes_allocated(), kv_total_bytes(cache.kv_config(100, 3))) << kv_storage_name(st);
    }
    {
      KvCache cache(base_config(KvLayout::rolling, st));
      const int64_t s = cache.add_sequence();
      const History hist(cache.config(), 30, 11);
      for (int64_t t = 0; t < 30; ++t) hist.append(cache, s, t, 1);
      EXPECT_EQ(cache.bytes_allocated(), kv_total_bytes(cache.kv_config(30)));  // 2 sinks + 5 ring slots held
    }
    {
      KvCache cache(base_config(KvLayout::paged, st));
      const History hist(cache.config(), 12, 12);
      for (int i = 0; i < 2; ++i) hist.append(cache, cache.add_sequence(), 0, 12);  // 4 full pages each
      EXPECT_EQ(cache.bytes_allocated(), kv_total_bytes(cache.kv_config(12, 2))) << kv_storage_name(st);
      EXPECT_EQ(cache.bytes_reserved(), int64_t{2} << 20) << "8 small pages share one 2 MiB slab";
    }
  }
  // int4: the quantized pages plus a residual sized for R + G - 1 = 6 tokens per sequence.
  KvCacheConfig c = base_config(KvLayout::paged, KvStorage::int4);
  c.page_size = 4;
  KvCache cache(c);
  const History hist(c, 40, 13);
  const int64_t s = cache.add_sequence();
  for (int64_t t = 0; t < 40; ++t) {
    hist.append(cache, s, t, 1);
    const KvSequence& q = cache.sequence(s);
    const KvSize size = kv_size(cache.kv_config(t + 1));
    ASSERT_EQ(size.quantized_tokens, q.quantized);
    const int64_t unused_residual = c.residual_slots() - size.residual_tokens;
    const int64_t f16_token_bytes = c.layers * c.kv_heads * (c.head_dim + c.v_width()) * 2;
    ASSERT_EQ(cache.bytes_allocated(), size.all.total() + unused_residual * f16_token_bytes) << "t=" << t + 1;
    if (unused_residual == 0) {
      ASSERT_EQ(cache.bytes_allocated(), size.all.total());
    }
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(KvCache, ClearErrors) {
  const auto has = [](const std::string& msg, const std::string& part) {
    EXPECT_NE(msg.find(part), std::string::npos) << msg;
  };
  KvCacheConfig c = base_config(KvLayout::rolling, KvStorage::int4);
  has(error_of([&] { KvCache x(c); }), "int4 cannot use the rolling layout");
  c = base_config(KvLayout::paged, KvStorage::int4);
  has(error_of([&] { KvCache x(c); }), "page_size (3) must be a multiple of group (4)");
  c = base_config(KvLayout::rolling);
  c.window = 0;
  has(error_of([&] { KvCache x(c); }), "window (0)");
  c = base_config(KvLayout::paged);
  c.layers = 1 << 9, c.kv_heads = 1 << 8;  // 2^17 (layer, head) regions per page
  has(error_of([&] { KvCache x(c); }), "layers x kv_heads (512 x 256) must be <= 65536 for the paged layout");
  c = base_config(KvLayout::contiguous);
  c.max_tokens = 4;
  KvCache full(c);
  const History hist(c, 8, 14);
  const int64_t s = full.add_sequence();
  hist.append(full, s, 0, 4);
  has(error_of([&] { full.append(s, 1); }), "the contiguous cache is full");
  c = base_config(KvLayout::paged);
  c.max_pages = 2;
  KvCache pool(c);
  const int64_t p = pool.add_sequence();
  has(error_of([&] { pool.append(p, 7); }), "all max_pages (2) pages are in use");
  EXPECT_EQ(pool.storage().pooled_in_use(), 0);  // the failed append left nothing behind
  pool.append(p, 6);
  has(error_of([&] { pool.append(p, 1); }), "layer 0 is missing");
  has(error_of([&] { pool.store(p, 0, hist.k[0].view(), hist.v[0].view()); }), "expected [kv_heads=2, tokens=6");
  has(error_of([&] { pool.store(p, 5, hist.k[0].view(), hist.v[0].view()); }), "layer (5) must be in [0, 2)");
  has(error_of([&] { pool.sequence(99); }), "sequence (99) is not a live sequence");
  c = base_config(KvLayout::rolling);
  KvCache ring(c);
  has(error_of([&] { ring.append(ring.add_sequence(), 2); }), "tokens (2) must be <= max_append (1)");
}

}  // namespace
}  // namespace attnkit
