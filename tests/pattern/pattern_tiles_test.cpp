// Tests for the tile lists in both orders and for the sinks pattern: for every kind at odd
// sizes (q_len != kv_len too), the by-KV list is the by-query list transposed, each class
// agrees with a brute-force classification from allow(), and the rows and columns a kernel
// walks (TileRows, TileColumns, tile_row, kv_tile_column) are those lists. Sinks: the
// decode convention, the string syntax, and prefill with sinks equal to full attention over
// the keys each row keeps.
#include <gtest/gtest.h>

#include <random>

#include <fmt/format.h>

#include "attnkit/attention.hpp"
#include "attnkit/error.hpp"
#include "attnkit/pattern.hpp"
#include "attnkit/reference.hpp"
#include "test_util.hpp"

namespace attnkit {
namespace {

// Every kind, made to fit the sizes (Longformer globals < kv_len, BigBird q_len <= kv_len,
// block-mask grids covering the sizes).
std::vector<Pattern> patterns_for(int64_t nq, int64_t nk) {
  std::vector<Pattern> out;
  for (const char* text : {"none", "causal", "window:3,0", "window:2,2", "window:0,4", "window:-1,2", "window:5,-1",
                           "window:0,0", "window:40,0", "window:3,0,sinks=2", "window:2,2,sinks=3",
                           "window:0,0,sinks=1", "window:4,-1,sinks=2", "window:1,3,sinks=5", "window:0,4,sinks=20",
                           "window:100,0,sinks=4", "window:16,0,sinks=70", "strided:stride=3", "strided:stride=32",
                           "fixed:stride=4,c=1", "fixed:stride=16,c=3", "longformer:w=3,d=3",
                           "longformer:w=2,d=1,causal"})
    out.push_back(Pattern::parse(text));
  if (nk > 5) {
    out.push_back(Pattern::parse("longformer:w=2,d=1,global=0+5"));
    out.push_back(Pattern::parse("longformer:w=1,d=2,global=4,causal"));
  }
  if (nq <= nk) {
    out.push_back(Pattern::parse("bigbird:block=3,window=3,global=1,random=2,seed=7"));
    out.push_back(Pattern::parse("bigbird:block=16,window=1,global=0,random=2,seed=1"));
  }
  BlockMaskSpec bm{5, 3, (nq + 4) / 5, (nk + 2) / 3, {}};
  std::mt19937_64 rng(static_cast<uint64_t>(nq * 7919 + nk));
  for (int64_t i = 0; i < bm.rows * bm.cols; ++i) bm.mask.push_back(rng() % 3 != 0);
  out.push_back(Pattern::block_mask(bm));
  out.push_back(Pattern::predicate([](int64_t q, int64_t k) { return (q * 7 + k * 3) % 5 != 0; }, "mod5"));
  out.push_back(Pattern::predicate([](int64_t q, int64_t k) { return ((q ^ k) & 12) == 0; }, "xor12"));
  return out;
}

// The allowed pairs of every tile, from allow() alone (2-D prefix sums over the pair grid).
class BruteTiles {
 public:
  explicit BruteTiles(const BoundPattern& b) : nq_(b.q_len()), nk_(b.kv_len()) {
    sum_.assign(static_cast<size_t>((nq_ + 1) * (nk_ + 1)), 0);
    for (int64_t q = 0; q < nq_; ++q)
      for (int64_t k = 0; k < nk_; ++k)
        at(q + 1, k + 1) = at(q, k + 1) + at(q + 1, k) - at(q, k) + (b.allow(q, k) ? 1 : 0);
  }
  TileClass cls(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
    q1 = std::min(q1, nq_), k1 = std::min(k1, nk_);
    const int64_t n = at(q1, k1) - at(q0, k1) - at(q1, k0) + at(q0, k0);
    return n == 0 ? TileClass::Empty : n == (q1 - q0) * (k1 - k0) ? TileClass::Full : TileClass::Partial;
  }

 private:
  int64_t& at(int64_t q, int64_t k) { return sum_[static_cast<size_t>(q * (nk_ + 1) + k)]; }
  int64_t at(int64_t q, int64_t k) const { return sum_[static_cast<size_t>(q * (nk_ + 1) + k)]; }
  int64_t nq_, nk_;
  std::vector<int64_t> sum_;
};

template <class Ref>
std::vector<Ref> as_vector(std::span<const Ref> s) {
  return {s.begin(), s.end()};
}

void check_both_orders(const BoundPattern& b, const BruteTiles& brute, int64_t bq, int64_t bk) {
  const TileList rows = b.tiles(bq, bk);
  const KvTileList cols = b.tiles_by_kv(bq, bk);
  ASSERT_EQ(cols.q_tiles, rows.q_tiles);
  ASSERT_EQ(cols.kv_tiles, rows.kv_tiles);
  ASSERT_EQ(cols.block_q, bq);
  ASSERT_EQ(cols.block_k, bk);
  ASSERT_EQ(cols.offsets.size(), static_cast<size_t>(cols.kv_tiles) + 1);
  ASSERT_EQ(rows.entries.size(), cols.entries.size());

  // By query: exactly the non-empty tiles, increasing, with the brute-force class.
  for (int64_t qt = 0; qt < rows.q_tiles; ++qt) {
    size_t next = 0;
    const auto row = rows.row(qt);
    for (int64_t kt = 0; kt < rows.kv_tiles; ++kt) {
      const TileClass want = brute.cls(qt * bq, (qt + 1) * bq, kt * bk, (kt + 1) * bk);
      if (want == TileClass::Empty) continue;
      ASSERT_LT(next, row.size()) << "q tile " << qt << " misses kv tile " << kt;
      ASSERT_EQ(row[next], (TileRef{kt, want})) << "q tile " << qt;
      ++next;
    }
    ASSERT_EQ(next, row.size()) << "q tile " << qt << " lists an empty tile";
  }
  // By KV: the transpose, entry for entry, in increasing query-tile order.
  std::vector<std::vector<QTileRef>> transposed(static_cast<size_t>(rows.kv_tiles));
  for (int64_t qt = 0; qt < rows.q_tiles; ++qt)
    for (const TileRef& r : rows.row(qt)) transposed[static_cast<size_t>(r.kv_tile)].push_back({qt, r.cls});
  for (int64_t kt = 0; kt < cols.kv_tiles; ++kt)
    ASSERT_EQ(as_vector(cols.column(kt)), transposed[static_cast<size_t>(kt)]) << "kv tile " << kt;
  EXPECT_EQ(cols.count(TileClass::Full), rows.count(TileClass::Full));
  EXPECT_EQ(cols.count(TileClass::Partial), rows.count(TileClass::Partial));

  // What a kernel walks is the same, built on the fly or compiled.
  const TileRows walk_rows = b.tile_rows(bq, bk);
  const TileColumns walk_cols = b.tile_columns(bq, bk);
  EXPECT_EQ(walk_rows.on_the_fly(), b.analytic());
  EXPECT_EQ(walk_cols.on_the_fly(), b.analytic());
  ASSERT_EQ(walk_rows.size(), rows.q_tiles);
  ASSERT_EQ(walk_cols.size(), cols.kv_tiles);
  std::vector<TileRef> row_scratch;
  std::vector<QTileRef> col_scratch;
  for (int64_t qt = 0; qt < rows.q_tiles; ++qt) {
    ASSERT_EQ(as_vector(walk_rows.line(qt, row_scratch)), as_vector(rows.row(qt)));
    b.tile_row(qt, bq, bk, row_scratch);
    ASSERT_EQ(row_scratch, as_vector(rows.row(qt)));
  }
  for (int64_t kt = 0; kt < cols.kv_tiles; ++kt) {
    ASSERT_EQ(as_vector(walk_cols.line(kt, col_scratch)), as_vector(cols.column(kt)));
    // A column of a non-analytic kind scans every row: check a few, not all.
    if (!b.analytic() && kt != 0 && kt != cols.kv_tiles / 2 && kt != cols.kv_tiles - 1) continue;
    b.kv_tile_column(kt, bq, bk, col_scratch);
    ASSERT_EQ(col_scratch, as_vector(cols.column(kt))) << "kv_tile_column " << kt;
  }
}

TEST(PatternTiles, ByKvIsTheTransposeOfByQueryForEveryKind) {
  const std::vector<std::pair<int64_t, int64_t>> sizes = {{1, 1},  {3, 3},    {17, 17},  {97, 97},   {1025, 1025},
                                                          {3, 17}, {17, 3},   {17, 97},  {97, 1025}, {1025, 97},
                                                          {1, 1025}, {1025, 1}, {97, 3}};
  for (auto [nq, nk] : sizes)
    for (const Pattern& p : patterns_for(nq, nk)) {
      const BoundPattern b = p.bind(nq, nk);
      SCOPED_TRACE(fmt::format("{} nq={} nk={}", p.to_string(), nq, nk));
      const BruteTiles brute(b);
      std::vector<std::pair<int64_t, int64_t>> blocks = {{16, 7}, {64, 128}};
      if (nq * nk <= 97 * 1025) blocks.insert(blocks.end(), {{2, 3}, {5, 5}, {3, 64}});
      if (nq * nk <= 97 * 97) blocks.push_back({1, 1});
      for (auto [bq, bk] : blocks) {
        SCOPED_TRACE(fmt::format("blocks {}x{}", bq, bk));
        check_both_orders(b, brute, bq, bk);
        if (HasFatalFailure()) return;
      }
    }
}

TEST(PatternTiles, AnalyticKindsBuildLinesOnTheFly) {
  for (const char* text : {"none", "causal", "window:5,0", "window:3,3,sinks=4"})
    EXPECT_TRUE(Pattern::parse(text).bind(9, 9).analytic()) << text;
  for (const char* text : {"strided:stride=4", "fixed:stride=4,c=1", "longformer:w=2", "bigbird:block=2"})
    EXPECT_FALSE(Pattern::parse(text).bind(9, 9).analytic()) << text;
  // At 2^30 positions nothing proportional to the length is built: a row and a column of a
  // sliding window with sinks list a handful of tiles (the sink tile and the band).
  const int64_t n = int64_t{1} << 30;
  const BoundPattern b = Pattern::window(127, 0, 4).bind(n, n);
  const TileRows rows = b.tile_rows(64, 64);
  ASSERT_TRUE(rows.on_the_fly());
  std::vector<TileRef> row;
  EXPECT_EQ(as_vector(rows.line(n / 128, row)),
            (std::vector<TileRef>{{0, TileClass::Partial}, {n / 128 - 2, TileClass::Partial},
                                  {n / 128 - 1, TileClass::Full}, {n / 128, TileClass::Partial}}));
  std::vector<QTileRef> col;
  b.kv_tile_column(n / 128, 64, 64, col);
  EXPECT_EQ(col, (std::vector<QTileRef>{{n / 128, TileClass::Partial}, {n / 128 + 1, TileClass::Full},
                                        {n / 128 + 2, TileClass::Partial}}));
  EXPECT_EQ(b.row_pairs(n - 1), 128 + 4);
}

TEST(PatternSinks, MatchesTheDecodeConvention) {
  // Decode: query at position p sees key i when i <= p and (W == 0 or p - i < W or i < S).
  // As a pattern: window:W-1,0,sinks=S (W = 0: causal).
  for (int64_t window : {0, 1, 2, 5})
    for (int64_t sinks : {0, 1, 3, 9})
      for (auto [nq, nk] : {std::pair<int64_t, int64_t>{12, 12}, {1, 12}, {4, 12}, {12, 4}}) {
        const Pattern p = window == 0 ? Pattern::causal() : Pattern::window(window - 1, 0, sinks);
        const BoundPattern b = p.bind(nq, nk);
        EXPECT_TRUE(p.is_causal());
        for (int64_t q = 0; q < nq; ++q)
          for (int64_t i = 0; i < nk; ++i) {
            const int64_t pos = q + nk - nq;
            const bool decode = i <= pos && (window == 0 || pos - i < window || i < sinks);
            ASSERT_EQ(b.allow(q, i), decode) << p.to_string() << " q=" << q << " i=" << i;
          }
      }
}

TEST(PatternSinks, SyntaxKindAndCanonicalForm) {
  const Pattern p = Pattern::parse("window:4,0,sinks=2");
  EXPECT_EQ(p.kind(), Pattern::Kind::sinks);
  EXPECT_EQ(p.sinks(), 2);
  EXPECT_EQ(p.window_left(), 4);
  EXPECT_EQ(p.window_right(), 0);
  EXPECT_TRUE(p.is_causal());
  EXPECT_EQ(p.to_string(), "window:4,0,sinks=2");
  EXPECT_EQ(Pattern::parse(p.to_string()).to_string(), p.to_string());
  EXPECT_EQ(Pattern::parse("window:3,sinks=1").to_string(), "window:3,3,sinks=1");
  EXPECT_FALSE(Pattern::parse("window:3,sinks=1").is_causal());
  // No sinks, or a window that already sees every sink: the plain kinds.
  EXPECT_EQ(Pattern::parse("window:3,0,sinks=0").to_string(), "window:3,0");
  EXPECT_EQ(Pattern::parse("window:-1,0,sinks=4").to_string(), "causal");
  EXPECT_EQ(Pattern::window(-1, -1, 4).kind(), Pattern::Kind::none);
  EXPECT_EQ(Pattern::window(-1, 2, 4).to_string(), "window:-1,2");
  auto message = [](const std::string& text) {
    try {
      Pattern::parse(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("window:4,0,sinks=-1").find("window sinks (-1)"), std::string::npos);
  EXPECT_NE(message("window:4,0,sinks=x").find("not an integer"), std::string::npos);
  EXPECT_NE(message("window:4,0,sinks=").find("not an integer"), std::string::npos);
  EXPECT_NE(message("window:4,0,1,sinks=2").find("window takes"), std::string::npos);
  EXPECT_NE(message("window:sinks=2").find("not an integer"), std::string::npos);
}

TEST(PatternSinks, RowsAreTwoIntervals) {
  const BoundPattern b = Pattern::window(2, 0, 3).bind(10, 10);
  std::vector<KeyInterval> iv;
  b.keys(9, iv);
  EXPECT_EQ(iv, (std::vector<KeyInterval>{{0, 3}, {7, 10}}));
  b.keys(5, iv);  // window 3..5 touches the sinks: one interval
  EXPECT_EQ(iv, (std::vector<KeyInterval>{{0, 6}}));
  b.keys(1, iv);  // sinks only up to the query's own position
  EXPECT_EQ(iv, (std::vector<KeyInterval>{{0, 2}}));
  EXPECT_EQ(b.row_pairs(9), 6);
  EXPECT_EQ(b.row_pairs(1), 2);
  // With a right reach, sinks are seen up to p + right.
  const BoundPattern r = Pattern::window(0, 1, 4).bind(8, 8);
  r.keys(1, iv);
  EXPECT_EQ(iv, (std::vector<KeyInterval>{{0, 3}}));
  r.keys(6, iv);
  EXPECT_EQ(iv, (std::vector<KeyInterval>{{0, 4}, {6, 8}}));
}

// Prefill with sinks equals full attention over the keys each row keeps, gathered: the
// pattern's meaning checked through the kernel, without its own allow().
TEST(PatternSinks, AttendEqualsFullAttentionOverTheKeptKeys) {
  const int64_t n = 300, d = 16, window = 40, sinks = 5;
  const Tensor q = testing::random_tensor({1, 2, n, d}, 1, DType::f32, 2.0);
  const Tensor k = testing::random_tensor({1, 1, n, d}, 2, DType::f32, 2.0);
  const Tensor v = testing::random_tensor({1, 1, n, d}, 3);
  AttendOptions opts;
  opts.pattern = Pattern::window(window - 1, 0, sinks);  // decode's window 40 with 5 sinks
  opts.kernel = Kernel::flash;
  const Output got = attend(q.view(), k.view(), v.view(), opts);
  for (int64_t row : {0, 3, 4, 5, 39, 44, 45, 46, 128, 299}) {
    const int64_t kept_sinks = std::min(sinks, std::max<int64_t>(row - window + 1, 0));
    const int64_t lo = std::max<int64_t>(row - window + 1, 0);
    Tensor kk(DType::f32, {1, 1, kept_sinks + row + 1 - lo, d}), vv(DType::f32, {1, 1, kept_sinks + row + 1 - lo, d});
    int64_t j = 0;
    auto take = [&](int64_t key) {
      for (int64_t c = 0; c < d; ++c) {
        kk.mut().set(k.view().get(0, 0, key, c), 0, 0, j, c);
        vv.mut().set(v.view().get(0, 0, key, c), 0, 0, j, c);
      }
      ++j;
    };
    for (int64_t key = 0; key < kept_sinks; ++key) take(key);
    for (int64_t key = lo; key <= row; ++key) take(key);
    const Tensor qq = testing::slice_keys(q, row, row + 1);  // one query row, [1, 2, 1, d]
    AttendOptions full;
    full.kernel = Kernel::ref;
    const Output want = attend(qq.view(), kk.view(), vv.view(), full);
    for (int64_t h = 0; h < 2; ++h) {
      for (int64_t c = 0; c < d; ++c)
        EXPECT_NEAR(got.o.view().get(0, h, row, c), want.o.view().get(0, h, 0, c), 1e-5) << "row " << row;
      EXPECT_NEAR(got.lse.view().get(0, h, row), want.lse.view().get(0, h, 0), 1e-5) << "row " << row;
    }
  }
}

// The flash kernel walks a sinks pattern's rows on the fly; at odd sizes (q_len != kv_len
// too, GQA) it must meet the reference within the tolerance rule: at most twice the error
// of the reference run in the input precision.
TEST(PatternSinks, FlashEqualsTheReferenceAtOddSizes) {
  const std::vector<int64_t> lens = {1, 3, 17, 97, 300};
  for (const char* text : {"window:15,0,sinks=4", "window:0,0,sinks=1", "window:40,0,sinks=70", "window:5,3,sinks=2"})
    for (int64_t nq : lens)
      for (int64_t nk : lens) {
        const Tensor q = testing::random_tensor({1, 4, nq, 24}, 11, DType::f32, 2.0);
        const Tensor k = testing::random_tensor({1, 2, nk, 24}, 12, DType::f32, 2.0);
        const Tensor v = testing::random_tensor({1, 2, nk, 24}, 13);
        AttendOptions opts;
        opts.pattern = Pattern::parse(text);
        auto reference = [&](RefPrecision precision) {
          Output r{Tensor(DType::f64, {1, 4, nq, 24}), Tensor(DType::f64, {1, 4, nq})};
          RefOptions ro;
          ro.precision = precision;
          attention_reference(q.view(), k.view(), v.view(), opts, r.o.mut(), r.lse.mut(), ro);
          return r;
        };
        const Output exact = reference(RefPrecision::f64), base = reference(RefPrecision::input);
        opts.kernel = Kernel::flash;
        const Output got = attend(q.view(), k.view(), v.view(), opts);
        const std::string where = fmt::format("{} nq={} nk={}", text, nq, nk);
        EXPECT_LE(testing::max_abs_diff(got.o.view(), exact.o.view()),
                  2 * testing::max_abs_diff(base.o.view(), exact.o.view()) + 1e-7)
            << where;
        EXPECT_LE(testing::max_abs_diff(got.lse.view(), exact.lse.view()),
                  2 * testing::max_abs_diff(base.lse.view(), exact.lse.view()) + 1e-6)
            << where;
      }
}

}  // namespace
}  // namespace attnkit
