// Tests for KvBlockStore (kv_cache.hpp): pages carved from slabs region-major (region r of
// consecutive pages adjacent), zero-filled on every allocation, copies that move every
// region of a page and nothing else, the max_pages limit, blocks of their own, and the
// accounting of allocated and reserved bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/error.hpp"
#include "attnkit/kv_cache.hpp"

namespace attnkit {
namespace {

const std::vector<int64_t> kRegions = {96, 0, 320, 96, 40};  // a page of 552 bytes; 0: bf16 parameters
constexpr int64_t kPageBytes = 552;

int64_t region_offset(size_t r) {
  int64_t o = 0;
  for (size_t i = 0; i < r; ++i) o += kRegions[i];
  return o;
}

std::byte* region(KvBlockStore& st, KvBlockId b, size_t r) { return st.region(b, region_offset(r), kRegions[r]); }

// Fills every region of page b with bytes seed, seed + 1, ...
void fill(KvBlockStore& st, KvBlockId b, int seed) {
  for (size_t r = 0; r < kRegions.size(); ++r)
    for (int64_t i = 0; i < kRegions[r]; ++i) region(st, b, r)[i] = static_cast<std::byte>(seed + 7 * r + i);
}

bool holds(KvBlockStore& st, KvBlockId b, int seed) {
  for (size_t r = 0; r < kRegions.size(); ++r)
    for (int64_t i = 0; i < kRegions[r]; ++i)
      if (region(st, b, r)[i] != static_cast<std::byte>(seed + 7 * r + i)) return false;
  return true;
}

bool all_zero(KvBlockStore& st, KvBlockId b) {
  for (size_t r = 0; r < kRegions.size(); ++r)
    for (int64_t i = 0; i < kRegions[r]; ++i)
      if (region(st, b, r)[i] != std::byte{0}) return false;
  return true;
}

TEST(KvBlockStore, PagesOfASlabAreRegionMajor) {
  KvBlockStore st(kRegions, 0);
  // Runs of >= 64 KiB for the largest region (320 bytes) need 205 pages; the slab is then
  // rounded up to a whole 2 MiB and filled with as many pages as fit, a multiple of 8 so
  // that every region (40 bytes: 8 x 40 = 5 lines) starts on a cache line.
  EXPECT_EQ(st.slab_pages(), (int64_t{2} << 20) / kPageBytes / 8 * 8);
  const KvBlockId a = st.allocate_page(), b = st.allocate_page(), c = st.allocate_page();
  for (size_t r = 0; r < kRegions.size(); ++r) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(region(st, a, r)) % 64, 0u) << "region " << r;
    EXPECT_EQ(region(st, b, r), region(st, a, r) + kRegions[r]) << "region " << r;
    EXPECT_EQ(region(st, c, r), region(st, b, r) + kRegions[r]) << "region " << r;
    if (r > 0) {  // region r of every page of the slab comes after region r - 1 of all of them
      EXPECT_EQ(region(st, a, r), region(st, a, r - 1) + st.slab_pages() * kRegions[r - 1]);
    }
  }
  EXPECT_TRUE(st.is_page(a));
  EXPECT_EQ(st.bytes_allocated(), 3 * kPageBytes);
  EXPECT_EQ(st.bytes_reserved(), int64_t{2} << 20);
}

TEST(KvBlockStore, PagesAreZeroedAndCopiedRegionByRegion) {
  KvBlockStore st(kRegions, 0);
  const KvBlockId a = st.allocate_page(), b = st.allocate_page(), c = st.allocate_page();
  EXPECT_TRUE(all_zero(st, a) && all_zero(st, b) && all_zero(st, c));
  fill(st, a, 1);
  fill(st, b, 50);
  fill(st, c, 100);
  st.copy(b, a);
  EXPECT_TRUE(holds(st, b, 1));
  EXPECT_TRUE(holds(st, a, 1));
  EXPECT_TRUE(holds(st, c, 100)) << "a copy into b must not touch its neighbours";
  // A released page is reused, zeroed.
  st.release(b);
  EXPECT_EQ(st.pooled_free(), 1);
  const KvBlockId d = st.allocate_page();
  EXPECT_EQ(d, b);
  EXPECT_TRUE(all_zero(st, d));
  EXPECT_TRUE(holds(st, a, 1) && holds(st, c, 100));
}

TEST(KvBlockStore, PagesSpanSlabs) {
  KvBlockStore st(kRegions, 0);
  std::vector<KvBlockId> pages;
  for (int64_t i = 0; i <= st.slab_pages(); ++i) pages.push_back(st.allocate_page());
  EXPECT_EQ(st.bytes_reserved(), int64_t{4} << 20);
  fill(st, pages.back(), 3);
  fill(st, pages.front(), 9);
  EXPECT_TRUE(holds(st, pages.back(), 3) && holds(st, pages.front(), 9));
  EXPECT_TRUE(all_zero(st, pages[pages.size() - 2]));
}

TEST(KvBlockStore, MaxPagesLimitsThePoolAndItsSlab) {
  KvBlockStore st(kRegions, 2);
  const KvBlockId a = st.allocate_page();
  st.allocate_page();
  try {
    st.allocate_page();
    FAIL() << "a third page must not fit";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_pages (2)"), std::string::npos) << e.what();
  }
  st.release(a);
  EXPECT_NO_THROW(st.allocate_page());
  EXPECT_EQ(st.bytes_reserved(), 2 * kPageBytes);  // the only slab holds the 2 pages allowed
  // One page more than a slab: the second slab holds that one page only, still region-major.
  const int64_t full = KvBlockStore(kRegions, 0).slab_pages();
  KvBlockStore big(kRegions, full + 1);
  std::vector<KvBlockId> pages;
  for (int64_t i = 0; i <= full; ++i) pages.push_back(big.allocate_page());
  EXPECT_THROW(big.allocate_page(), Error);
  EXPECT_EQ(big.bytes_reserved(), (int64_t{2} << 20) + kPageBytes);
  fill(big, pages.back(), 5);
  fill(big, pages[0], 6);
  EXPECT_TRUE(holds(big, pages.back(), 5) && holds(big, pages[0], 6));
}

// Freed pages come back lowest id first, so a sequence that takes them gets them in the
// order of their slab, as it would fresh ones.
TEST(KvBlockStore, FreedPagesAreReusedInSlabOrder) {
  KvBlockStore st(kRegions, 0);
  std::vector<KvBlockId> p;
  for (int i = 0; i < 5; ++i) p.push_back(st.allocate_page());
  for (int i : {3, 1, 4, 2}) st.release(p[i]);
  for (int i : {1, 2, 3, 4}) EXPECT_EQ(st.allocate_page(), p[i]);
}

TEST(KvBlockStore, BlocksOfTheirOwn) {
  KvBlockStore st({}, 0);
  EXPECT_THROW(st.allocate_page(), Error);
  const KvBlockId a = st.allocate(1000), b = st.allocate(1000);
  EXPECT_FALSE(st.is_page(a));
  std::memset(st.region(a, 0, 1000), 0x5A, 1000);
  st.copy(b, a);
  EXPECT_EQ(std::memcmp(st.region(a, 0, 1000), st.region(b, 0, 1000), 1000), 0);
  EXPECT_EQ(st.region(a, 200, 10), st.region(a, 0, 1000) + 200);
  EXPECT_EQ(st.bytes_allocated(), 2000);
  st.release(a);
  EXPECT_EQ(st.bytes_allocated(), 1000);
  EXPECT_EQ(st.bytes_reserved(), 1000);
}

}  // namespace
}  // namespace attnkit
