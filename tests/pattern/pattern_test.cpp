// Tests for patterns: hand-checked semantics of each kind, and the exhaustive agreement of
// keys(), classify(), tiles() and visited_pairs() with the per-element allow(). Tile lists
// by KV tile and the sinks kind: pattern_tiles_test.cpp.
#include "attnkit/pattern.hpp"

#include <gtest/gtest.h>

#include "attnkit/error.hpp"

namespace attnkit {
namespace {

// Brute-force class of a rectangle from allow() alone: the oracle for classify().
TileClass brute_class(const BoundPattern& b, int64_t q0, int64_t q1, int64_t k0, int64_t k1) {
  int64_t allowed = 0, total = 0;
  for (int64_t q = q0; q < std::min(q1, b.q_len()); ++q)
    for (int64_t k = k0; k < std::min(k1, b.kv_len()); ++k, ++total) allowed += b.allow(q, k);
  if (allowed == 0) return TileClass::Empty;
  return allowed == total ? TileClass::Full : TileClass::Partial;
}

std::vector<std::string> all_pattern_strings() {
  return {"none", "causal", "window:3,0", "window:2,2", "window:0,4", "window:-1,2", "window:5,-1",
          "window:3,0,sinks=2", "window:2,2,sinks=3", "window:0,0,sinks=1", "window:4,-1,sinks=2",
          "window:1,3,sinks=5", "window:0,4,sinks=20", "window:6,0,sinks=9",
          "longformer:w=2,d=1,global=0+5", "longformer:w=2,d=3,global=1", "longformer:w=1,d=2,global=4,causal",
          "longformer:w=3", "bigbird:block=3,window=3,global=1,random=2,seed=7",
          "bigbird:block=4,window=1,global=0,random=1,seed=1", "bigbird:block=2,window=2,global=2,random=5",
          "strided:stride=3", "strided:stride=1", "fixed:stride=4,c=1", "fixed:stride=3,c=3"};
}

// Every (q_len, kv_len) and tile size in a small grid: classify, tiles, keys and pair counts
// all agree with allow().
TEST(Pattern, DerivedQueriesAgreeWithAllowExhaustively) {
  const std::vector<std::pair<int64_t, int64_t>> sizes = {{1, 1}, {7, 7}, {17, 17}, {5, 13}, {13, 5}, {1, 11}, {0, 4}, {4, 0}};
  for (const std::string& text : all_pattern_strings()) {
    const Pattern p = Pattern::parse(text);
    for (auto [nq, nk] : sizes) {
      if (p.kind() == Pattern::Kind::bigbird && nq > nk) continue;
      if (p.kind() == Pattern::Kind::longformer && !p.longformer_spec().global.empty() &&
          p.longformer_spec().global.back() >= nk)
        continue;
      const BoundPattern b = p.bind(nq, nk);
      SCOPED_TRACE(text + " nq=" + std::to_string(nq) + " nk=" + std::to_string(nk));
      // keys() lists exactly the allowed keys, sorted and merged.
      std::vector<KeyInterval> iv;
      int64_t pairs = 0;
      for (int64_t q = 0; q < nq; ++q) {
        b.keys(q, iv);
        std::vector<bool> listed(static_cast<size_t>(nk), false);
        for (size_t i = 0; i < iv.size(); ++i) {
          ASSERT_LT(iv[i].begin, iv[i].end);
          if (i) {
            ASSERT_GT(iv[i].begin, iv[i - 1].end) << "intervals must be disjoint and non-adjacent";
          }
          for (int64_t k = iv[i].begin; k < iv[i].end; ++k) listed[static_cast<size_t>(k)] = true;
        }
        int64_t row = 0;
        for (int64_t k = 0; k < nk; ++k) {
          ASSERT_EQ(listed[static_cast<size_t>(k)], b.allow(q, k)) << "q=" << q << " k=" << k;
          row += b.allow(q, k);
        }
        ASSERT_EQ(b.row_pairs(q), row);
        pairs += row;
      }
      ASSERT_EQ(b.visited_pairs(), pairs);
      // classify() on every rectangle of a few shapes at every offset.
      for (int64_t bq : {1, 2, 3, 5, 8})
        for (int64_t bk : {1, 2, 4, 7}) {
          for (int64_t q0 = 0; q0 < nq; ++q0)
            for (int64_t k0 = 0; k0 < nk; ++k0)
              ASSERT_EQ(b.classify(q0, q0 + bq, k0, k0 + bk), brute_class(b, q0, q0 + bq, k0, k0 + bk))
                  << "tile q=[" << q0 << "," << q0 + bq << ") k=[" << k0 << "," << k0 + bk << ")";
          // tiles() lists exactly the non-empty aligned tiles with their class.
          const TileList t = b.tiles(bq, bk);
          ASSERT_EQ(t.q_tiles, (nq + bq - 1) / bq);
          for (int64_t qt = 0; qt < t.q_tiles; ++qt) {
            size_t next = 0;
            const auto row = t.row(qt);
            for (int64_t kt = 0; kt < t.kv_tiles; ++kt) {
              const TileClass want = brute_class(b, qt * bq, (qt + 1) * bq, kt * bk, (kt + 1) * bk);
              if (want == TileClass::Empty) continue;
              ASSERT_LT(next, row.size()) << "missing tile " << kt;
              ASSERT_EQ(row[next].kv_tile, kt);
              ASSERT_EQ(row[next].cls, want);
              ++next;
            }
            ASSERT_EQ(next, row.size()) << "tiles() lists an empty tile";
          }
        }
    }
  }
}

TEST(Pattern, CausalIsBottomRightAligned) {
  const BoundPattern b = Pattern::causal().bind(2, 5);  // queries at positions 3 and 4
  EXPECT_TRUE(b.allow(0, 3));
  EXPECT_FALSE(b.allow(0, 4));
  EXPECT_TRUE(b.allow(1, 4));
  const BoundPattern tall = Pattern::causal().bind(5, 2);  // first three rows see nothing
  EXPECT_EQ(tall.row_pairs(0), 0);
  EXPECT_EQ(tall.row_pairs(2), 0);
  EXPECT_EQ(tall.row_pairs(3), 1);
  EXPECT_EQ(Pattern::causal().bind(4, 4).visited_pairs(), 10);
}

TEST(Pattern, WindowFollowsFlashAttentionConvention) {
  const BoundPattern sliding = Pattern::window(2, 0).bind(6, 6);  // key in [i-2, i]
  EXPECT_EQ(sliding.row_pairs(5), 3);
  EXPECT_FALSE(sliding.allow(5, 2));
  EXPECT_TRUE(sliding.allow(5, 3));
  const BoundPattern sym = Pattern::window(1, 1).bind(6, 6);
  EXPECT_EQ(sym.row_pairs(0), 2);
  EXPECT_EQ(sym.row_pairs(3), 3);
  EXPECT_EQ(Pattern::window(-1, -1).kind(), Pattern::Kind::none);
  EXPECT_EQ(Pattern::window(-1, 0).kind(), Pattern::Kind::causal);
  // Work is O(n * w): only the band's tiles are listed.
  const TileList t = Pattern::window(512, 0).bind(16384, 16384).tiles(64, 64);
  EXPECT_EQ(t.entries.size(), static_cast<size_t>(256 * 9 - 36));
}

TEST(Pattern, LongformerGlobalsSeeAndAreSeenByAll) {
  const Pattern p = Pattern::parse("longformer:w=1,d=2,global=3");
  const BoundPattern b = p.bind(10, 10);
  for (int64_t k = 0; k < 10; ++k) EXPECT_TRUE(b.allow(3, k));
  for (int64_t q = 0; q < 10; ++q) EXPECT_TRUE(b.allow(q, 3));
  EXPECT_TRUE(b.allow(6, 4));   // 6 - 2
  EXPECT_TRUE(b.allow(6, 8));   // 6 + 2
  EXPECT_FALSE(b.allow(6, 5));  // not on the dilation grid
  EXPECT_FALSE(b.allow(6, 2));  // beyond w * d
  const BoundPattern c = Pattern::parse("longformer:w=1,d=2,global=3,causal").bind(10, 10);
  EXPECT_FALSE(c.allow(3, 4));  // causal global rows stop at themselves
  EXPECT_TRUE(c.allow(9, 3));
  EXPECT_FALSE(c.allow(6, 8));
  EXPECT_THROW(p.bind(10, 3), Error);  // global 3 >= kv_len
}

TEST(Pattern, BigBirdIsDeterministicAndHasTheRightBlocks) {
  const Pattern p = Pattern::parse("bigbird:block=4,window=3,global=1,random=2,seed=7");
  const BoundPattern a = p.bind(64, 64), b = p.bind(64, 64);
  const BoundPattern other = Pattern::parse("bigbird:block=4,window=3,global=1,random=2,seed=8").bind(64, 64);
  bool differs = false;
  for (int64_t q = 0; q < 64; ++q)
    for (int64_t k = 0; k < 64; ++k) {
      ASSERT_EQ(a.allow(q, k), b.allow(q, k));
      differs |= a.allow(q, k) != other.allow(q, k);
    }
  EXPECT_TRUE(differs) << "the seed must change the random blocks";
  // Block-row 8 (rows 32..35): global block 0, window blocks 7..9, and 2 random blocks.
  EXPECT_EQ(a.row_pairs(33), 4 * (1 + 3 + 2));
  EXPECT_EQ(a.row_pairs(1), 64);  // global row
  for (int64_t q = 0; q < 64; ++q) EXPECT_TRUE(a.allow(q, 2));  // global column
}

TEST(Pattern, SparseTransformerStridedAndFixed) {
  const BoundPattern s = Pattern::strided(4).bind(16, 16);
  std::vector<KeyInterval> iv;
  s.keys(13, iv);  // band 10..13, strided 9, 5, 1
  EXPECT_EQ(iv, (std::vector<KeyInterval>{{1, 2}, {5, 6}, {9, 14}}));
  const BoundPattern f = Pattern::fixed(4, 1).bind(16, 16);
  f.keys(13, iv);  // summaries 3, 7, 11; own block 12..13
  EXPECT_EQ(iv, (std::vector<KeyInterval>{{3, 4}, {7, 8}, {11, 14}}));
  EXPECT_TRUE(s.pattern().is_causal());
}

TEST(Pattern, BlockMaskCoversTheGridExactly) {
  const Pattern p = Pattern::parse("blocks:bq=2,bk=3,mask=10/01");
  const BoundPattern b = p.bind(4, 6);
  EXPECT_TRUE(b.allow(1, 2));
  EXPECT_FALSE(b.allow(1, 3));
  EXPECT_TRUE(b.allow(2, 5));
  EXPECT_THROW(p.bind(6, 6), Error);
}

TEST(Pattern, PredicateAndTileCounts) {
  const Pattern p = Pattern::predicate([](int64_t q, int64_t k) { return (q + k) % 3 == 0; }, "mod3");
  const BoundPattern b = p.bind(9, 9);
  EXPECT_EQ(b.visited_pairs(), 27);
  EXPECT_EQ(p.to_string(), "mod3");
  const TileList t = Pattern::causal().bind(8, 8).tiles(4, 4);
  EXPECT_EQ(t.count(TileClass::Full), 1);
  EXPECT_EQ(t.count(TileClass::Partial), 2);
}

TEST(PatternParse, RoundTripsCanonicalStrings) {
  for (const std::string& text : all_pattern_strings()) {
    const Pattern p = Pattern::parse(text);
    EXPECT_EQ(Pattern::parse(p.to_string()).to_string(), p.to_string()) << text;
  }
  EXPECT_EQ(Pattern::parse("window:4").to_string(), "window:4,4");
  EXPECT_EQ(Pattern::parse("longformer:w=2,global=9+1+9").to_string(), "longformer:w=2,d=1,global=1+9");
}

TEST(PatternParse, BadSyntaxNamesThePatternAndTheProblem) {
  auto message = [](const std::string& text) {
    try {
      Pattern::parse(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("diagonal").find("unknown pattern kind 'diagonal'"), std::string::npos);
  EXPECT_NE(message("window:-5,0").find("window left (-5) must be >= 0"), std::string::npos);
  EXPECT_NE(message("window:a").find("is not an integer"), std::string::npos);
  EXPECT_NE(message("window:1,2,3").find("window takes"), std::string::npos);
  EXPECT_NE(message("longformer:d=2").find("missing 'w='"), std::string::npos);
  EXPECT_NE(message("longformer:w=2,x=1").find("unknown key 'x'"), std::string::npos);
  EXPECT_NE(message("longformer:w=2,w=3").find("given twice"), std::string::npos);
  EXPECT_NE(message("longformer:w=2,d=0").find("dilation"), std::string::npos);
  EXPECT_NE(message("bigbird:block=0").find("block (0)"), std::string::npos);
  EXPECT_NE(message("fixed:stride=4,c=5").find("c (5)"), std::string::npos);
  EXPECT_NE(message("causal:1").find("takes no arguments"), std::string::npos);
  EXPECT_NE(message("blocks:bq=1,bk=1,mask=10/1").find("different lengths"), std::string::npos);
  EXPECT_NE(message("window:99999999999999999999").find("out of range"), std::string::npos);
  EXPECT_NE(message("window:9999999999999,0").find("must be in"), std::string::npos);
}

}  // namespace
}  // namespace attnkit
