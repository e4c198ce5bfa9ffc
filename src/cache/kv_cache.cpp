// KvCache metadata and storage management: configuration, block layouts, the block store,
// sequences (add, fork, free), the append step (allocation, eviction, copy-on-write), token
// lookup and accounting. Writing and reading K / V rows is kv_rows.cpp.
#include "attnkit/kv_cache.hpp"

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <functional>
#include <numeric>

#include <sys/mman.h>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/kv_quant.hpp"
#include "attnkit/shape.hpp"
#include "cache/kv_rows.hpp"
#include "core/checked_math.hpp"

namespace attnkit {

using detail::check_range;

std::string_view kv_layout_name(KvLayout l) {
  switch (l) {
    case KvLayout::contiguous: return "contiguous";
    case KvLayout::rolling: return "rolling";
    case KvLayout::paged: return "paged";
  }
  return "?";
}

KvLayout parse_kv_layout(std::string_view name) {
  for (KvLayout l : {KvLayout::contiguous, KvLayout::rolling, KvLayout::paged})
    if (name == kv_layout_name(l)) return l;
  throw Error(fmt::format("cache layout '{}' is not one of contiguous, rolling, paged", name));
}

std::string_view kv_positions_name(KvPositions p) { return p == KvPositions::absolute ? "absolute" : "in_cache"; }

KvPositions parse_kv_positions(std::string_view name) {
  if (name == "absolute") return KvPositions::absolute;
  if (name == "in_cache") return KvPositions::in_cache;
  throw Error(fmt::format("positions '{}' is not one of absolute, in_cache", name));
}

void KvCacheConfig::validate() const {
  check_range(layers, 1, kMaxKvLayers, "layers");
  check_range(kv_heads, 1, kMaxKvHeads, "kv_heads");
  check_range(head_dim, 1, kMaxHeadDim, "head_dim");
  check_range(v_head_dim, 0, kMaxHeadDim, "v_head_dim");
  const detail::KvFormat& f = detail::kv_format(storage);
  if (f.packed())
    check(head_dim % 2 == 0 && v_width() % 2 == 0, [&] {
      return fmt::format("{} storage needs even head widths (head_dim {}, v_head_dim {})", f.name, head_dim,
                         v_width());
    });
  if (f.grouped()) {
    check_range(group, 2, kMaxKvGroup, "group");
    if (f.packed())
      check(group % 2 == 0, [&] { return fmt::format("group ({}) must be even for {} storage", group, f.name); });
  }
  if (f.residual) check_range(residual, 0, kMaxSeqLen, "residual");
  switch (layout) {
    case KvLayout::contiguous: check_range(max_tokens, 0, kMaxSeqLen, "max_tokens"); break;
    case KvLayout::rolling:
      check_range(window, 1, kMaxSeqLen, "window");
      check_range(sinks, 0, kMaxSeqLen, "sinks");
      check_range(max_append, 1, kMaxSeqLen, "max_append");
      check(sinks + ring_slots() <= kMaxSeqLen, [&] {
        return fmt::format("sinks + window + max_append - 1 ({}) must be <= 2^31", sinks + ring_slots());
      });
      check(!f.grouped(), [&] {
        return fmt::format(
            "storage {0} cannot use the rolling layout: {0} keys share scales over groups of tokens, "
            "and a ring evicts one token at a time (use int8, or a paged or contiguous cache)",
            f.name);
      });
      break;
    case KvLayout::paged:
      check_range(page_size, 1, kMaxSeqLen, "page_size");
      // A page is laid out region by region (KvBlockStore): 4 regions per (layer, head).
      check(layers * kv_heads <= kMaxPagedHeads, [&] {
        return fmt::format("layers x kv_heads ({} x {}) must be <= {} for the paged layout", layers, kv_heads,
                           kMaxPagedHeads);
      });
      check_range(max_pages, 0, (int64_t{1} << 31) - 1, "max_pages");
      if (f.grouped())
        check(page_size % group == 0, [&] {
          return fmt::format("page_size ({}) must be a multiple of group ({}) for {} storage", page_size, group,
                             f.name);
        });
      break;
  }
  if (rope) rope->validate(head_dim);
}

KvBlockLayout::KvBlockLayout(KvStorage storage_, int64_t slots_, const KvCacheConfig& cfg)
    : storage(storage_), slots(slots_), heads(cfg.kv_heads), k_width(cfg.head_dim), v_width(cfg.v_width()),
      group(cfg.group), layers(cfg.layers) {
  const detail::KvFormat& f = detail::kv_format(storage);
  k_row_bytes = f.row_bytes(k_width);
  v_row_bytes = f.row_bytes(v_width);
  k_head_bytes = kv_block_bytes(storage, KvStream::key, slots, k_width, group).total();
  v_head_bytes = kv_block_bytes(storage, KvStream::value, slots, v_width, group).total();
  constexpr std::string_view what = "KV block bytes";
  layer_bytes = detail::checked_add(detail::checked_mul(heads, k_head_bytes, what, "kv_heads"),
                                    detail::checked_mul(heads, v_head_bytes, what, "kv_heads"), what, "V");
  block_bytes = detail::checked_mul(layers, layer_bytes, what, "layers");
}

std::vector<int64_t> KvBlockLayout::regions() const {
  std::vector<int64_t> r;
  const int64_t k_codes = slots * k_row_bytes, v_codes = slots * v_row_bytes;
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t h = 0; h < heads; ++h) r.insert(r.end(), {k_codes, k_head_bytes - k_codes});
    for (int64_t h = 0; h < heads; ++h) r.insert(r.end(), {v_codes, v_head_bytes - v_codes});
  }
  return r;
}

// ---- block store ----

namespace {

constexpr int64_t kHugePage = int64_t{2} << 20;
// Pages per slab are chosen so that the largest region's run through the slab (rows of one
// head) is at least this long: past it, streaming one run then jumping to the next is as
// fast as one stream.
constexpr int64_t kSlabRunBytes = int64_t{64} << 10;

int64_t round_up(int64_t x, int64_t to) {
  return x % to == 0 ? x : detail::checked_add(x - x % to, to, "KV allocation bytes", "rounding");
}

// What allocate_bytes() asks of the system for `bytes`.
int64_t reserved_for(int64_t bytes) {
  const int64_t n = std::max<int64_t>(bytes, 1);
  return n >= kHugePage ? round_up(n, kHugePage) : n;
}

// The smallest page count P for which P * r is a multiple of 64 for every region size r:
// then every region of a slab starts on a cache line, as the slab does.
int64_t line_aligning_pages(const std::vector<int64_t>& regions) {
  int64_t pages = 1;
  for (int64_t r : regions)
    if (r > 0) pages = std::max(pages, 64 / std::gcd<int64_t>(64, r));
  return pages;  // a power of two, so the maximum is also the least common multiple
}

// Bytes (zeroed when `zero`), or null. Blocks of 2 MiB and more are 2 MiB-aligned and asked
// to be backed by transparent huge pages: a decode step streams each head's K and V rows,
// and with 4 KiB pages the hardware prefetchers stop at every page boundary and every page
// costs a TLB miss (measured: bf16 decode at 7 GB/s on one thread with 4 KiB pages).
std::byte* allocate_bytes(int64_t bytes, bool zero) {
  const size_t n = static_cast<size_t>(reserved_for(bytes));
  const bool huge = n >= static_cast<size_t>(kHugePage);
  void* p = huge ? std::aligned_alloc(static_cast<size_t>(kHugePage), n) : std::malloc(n);
  if (!p) return nullptr;
  if (huge) madvise(p, n, MADV_HUGEPAGE);  // advisory: failure is fine
  if (zero) std::memset(p, 0, n);
  return static_cast<std::byte*>(p);
}

}  // namespace

void KvBlockStore::FreeBytes::operator()(std::byte* p) const { std::free(p); }

KvBlockStore::KvBlockStore(std::vector<int64_t> page_regions, int64_t max_pages)
    : page_regions_(std::move(page_regions)), max_pages_(max_pages) {
  int64_t largest = 0;
  for (int64_t r : page_regions_) {
    page_bytes_ = detail::checked_add(page_bytes_, r, "KV page bytes", "region");
    largest = std::max(largest, r);
  }
  if (page_regions_.empty()) return;
  if (largest == 0) {
    slab_pages_ = 1;
    return;
  }
  // Runs of >= kSlabRunBytes, in whole cache lines, then as many more pages as the slab's
  // last huge page holds.
  const int64_t align = line_aligning_pages(page_regions_);
  const int64_t runs = round_up((kSlabRunBytes + largest - 1) / largest, align);
  const int64_t slab = round_up(detail::checked_mul(runs, page_bytes_, "KV slab bytes", "page bytes"), kHugePage);
  slab_pages_ = slab / page_bytes_ / align * align;
}

KvBlockId KvBlockStore::add_block(std::byte* at, Bytes mem, bool page, int64_t stride, int64_t slot,
                                  int64_t bytes) {
  KvBlockId b;
  if (!retired_.empty()) {
    b = retired_.back();
    data_[b] = at;
    page_[b] = page;
    stride_[b] = stride;
    slot_[b] = slot;
    owned_[b] = std::move(mem);
    sizes_[b] = bytes;
    refs_[b] = 1;
    retired_.pop_back();
  } else {
    check(data_.size() < size_t{1} << 31, [] { return std::string("too many KV blocks (2^31)"); });
    const size_t n = data_.size() + 1;  // room first, so that the pushes cannot throw midway
    for (auto* v : {&stride_, &slot_, &sizes_}) v->reserve(n);
    data_.reserve(n), page_.reserve(n), owned_.reserve(n), refs_.reserve(n);
    b = static_cast<KvBlockId>(data_.size());
    data_.push_back(at);
    page_.push_back(page);
    stride_.push_back(stride);
    slot_.push_back(slot);
    owned_.push_back(std::move(mem));
    sizes_.push_back(bytes);
    refs_.push_back(1);
  }
  allocated_ += bytes;
  return b;
}

void KvBlockStore::zero(KvBlockId b) {
  if (!page_[b]) {
    std::memset(data_[b], 0, static_cast<size_t>(sizes_[b]));
    return;
  }
  int64_t offset = 0;
  for (int64_t r : page_regions_) {
    std::memset(region(b, offset, r), 0, static_cast<size_t>(r));
    offset += r;
  }
}

KvBlockId KvBlockStore::allocate_page() {
  check(!page_regions_.empty(), [] { return std::string("this KV store has no pages"); });
  if (!free_.empty()) {
    // The lowest id first: ids follow slab order, so a sequence that takes freed pages
    // gets them in address order, as it does fresh ones.
    std::pop_heap(free_.begin(), free_.end(), std::greater<>());
    const KvBlockId b = free_.back();
    free_.pop_back();
    zero(b);
    refs_[b] = 1;
    ++pooled_in_use_;
    return b;
  }
  if (max_pages_ > 0 && pooled_in_use_ >= max_pages_)
    throw Error(fmt::format("the paged cache is full: all max_pages ({}) pages are in use", max_pages_));
  if (slab_used_ == slab_capacity_) {
    // The last slab under max_pages holds only the pages still allowed.
    const int64_t pages = max_pages_ > 0 ? std::min(slab_pages_, max_pages_ - pages_made_) : slab_pages_;
    const int64_t bytes = pages == slab_pages_ ? round_up(pages * page_bytes_, kHugePage) : pages * page_bytes_;
    Bytes slab(allocate_bytes(bytes, false));
    if (!slab) throw Error(fmt::format("cannot allocate a slab of KV pages ({})", format_bytes(double(bytes))));
    slabs_.push_back(std::move(slab));
    reserved_ += reserved_for(bytes);
    slab_used_ = 0;
    slab_capacity_ = pages;
  }
  const KvBlockId b = add_block(slabs_.back().get(), nullptr, true, slab_capacity_, slab_used_, page_bytes_);
  ++slab_used_, ++pages_made_;
  zero(b);
  ++pooled_in_use_;
  return b;
}

KvBlockId KvBlockStore::allocate(int64_t bytes) {
  Bytes mem(allocate_bytes(bytes, true));
  if (!mem)
    throw Error(fmt::format("cannot allocate a KV block of {} bytes ({})", bytes, format_bytes(double(bytes))));
  std::byte* at = mem.get();
  const KvBlockId b = add_block(at, std::move(mem), false, 1, 0, bytes);
  reserved_ += reserved_for(bytes);
  return b;
}

void KvBlockStore::copy(KvBlockId to, KvBlockId from) {
  if (!page_[from]) {
    std::memcpy(data_[to], data_[from], static_cast<size_t>(sizes_[from]));
    return;
  }
  int64_t offset = 0;
  for (int64_t r : page_regions_) {
    std::memcpy(region(to, offset, r), region(from, offset, r), static_cast<size_t>(r));
    offset += r;
  }
}

void KvBlockStore::retain(KvBlockId b) { ++refs_[b]; }

void KvBlockStore::release(KvBlockId b) {
  if (--refs_[b] > 0) return;
  if (page_[b]) {
    free_.push_back(b);  // kept allocated: the pool's memory is reused, not returned
    std::push_heap(free_.begin(), free_.end(), std::greater<>());
    --pooled_in_use_;
    return;
  }
  allocated_ -= sizes_[b];
  reserved_ -= reserved_for(sizes_[b]);
  owned_[b].reset();
  data_[b] = nullptr;
  sizes_[b] = 0;
  retired_.push_back(b);
}

// ---- the cache ----

namespace {

// The format keeps its newest tokens in a residual block (int4's f16 residual).
bool has_residual(const KvCacheConfig& c) { return detail::kv_format(c.storage).residual; }

int64_t main_slots(const KvCacheConfig& c) {
  switch (c.layout) {
    case KvLayout::contiguous: return c.max_tokens;  // 0 when growing: per sequence
    case KvLayout::rolling: return c.sinks + c.ring_slots();
    case KvLayout::paged: return c.page_size;
  }
  return 0;
}

}  // namespace

KvCache::KvCache(const KvCacheConfig& config)
    : config_((config.validate(), config)),
      layout_(config.storage, has_residual(config) && config.layout == KvLayout::contiguous ? 0 : main_slots(config),
              config),
      residual_layout_(detail::kKvResidualStorage, has_residual(config) ? config.residual_slots() : 0, config),
      store_(config.layout == KvLayout::paged ? layout_.regions() : std::vector<int64_t>{}, config.max_pages) {
  if (config_.rope && config_.positions == KvPositions::in_cache) {
    // Positions inside the cache are bounded by what it holds; a growing cache grows this.
    const int64_t bound = config_.layout == KvLayout::rolling ? config_.sinks + config_.ring_slots()
                                                              : std::max<int64_t>(config_.max_tokens, 1);
    rope_ = std::make_unique<RopeCache>(*config_.rope, config_.head_dim, bound);
  }
}

KvBlockLayout KvCache::layout(const KvSequence& s) const {
  if (config_.layout != KvLayout::contiguous) return layout_;
  return KvBlockLayout(config_.storage, s.capacity, config_);
}

KvBlockId KvCache::new_block(const KvBlockLayout& layout) { return store_.allocate(layout.block_bytes); }
KvBlockId KvCache::new_page() { return store_.allocate_page(); }

int64_t KvCache::add_sequence() {
  KvSequence s;
  s.live = true;
  s.layer_stored.assign(static_cast<size_t>(config_.layers), 1);
  s.stored_layers = config_.layers;
  if (config_.layout == KvLayout::rolling) {
    s.capacity = layout_.slots;
    s.blocks.push_back(new_block(layout_));
  } else if (config_.layout == KvLayout::contiguous && config_.max_tokens > 0) {
    // int4 keeps at most R + G - 1 tokens in the residual, so the quantized part of a cache
    // of max_tokens needs G * floor((max_tokens - R) / G) slots.
    s.capacity = has_residual(config_)
                     ? config_.group * (std::max<int64_t>(config_.max_tokens - config_.residual, 0) / config_.group)
                     : config_.max_tokens;
    if (s.capacity > 0) s.blocks.push_back(new_block(layout(s)));
  }
  if (has_residual(config_)) s.residual_block = new_block(residual_layout_);
  check(seqs_.size() < size_t{1} << 40, [] { return std::string("too many sequences"); });
  seqs_.push_back(std::move(s));
  return num_sequences() - 1;
}

const KvSequence& KvCache::sequence(int64_t seq) const {
  check(seq >= 0 && seq < num_sequences() && seqs_[static_cast<size_t>(seq)].live, [&] {
    return fmt::format("sequence ({}) is not a live sequence of this cache ({} ids issued)", seq, num_sequences());
  });
  return seqs_[static_cast<size_t>(seq)];
}

KvSequence& KvCache::live(int64_t seq, std::string_view) { return const_cast<KvSequence&>(sequence(seq)); }

void KvCache::check_readable(int64_t seq, std::string_view what) const {
  const KvSequence& s = sequence(seq);
  if (s.stored_layers == config_.layers) return;
  int64_t missing = 0;
  while (s.layer_stored[static_cast<size_t>(missing)]) ++missing;
  throw Error(fmt::format("{}: sequence {} has layers not stored since its last append (layer {} is missing)", what,
                          seq, missing));
}

int64_t KvCache::fork(int64_t parent) {
  check_readable(parent, "fork");
  const int64_t child = add_sequence();  // may reallocate seqs_: look the parent up after
  KvSequence& c = seqs_[static_cast<size_t>(child)];
  const KvSequence& p = seqs_[static_cast<size_t>(parent)];
  for (KvBlockId b : c.blocks) store_.release(b);
  c.blocks.clear();
  c.length = p.length;
  c.held = p.held;
  c.quantized = p.quantized;
  c.quantized_before = p.quantized;
  c.capacity = p.capacity;
  if (config_.layout == KvLayout::paged) {
    c.blocks = p.blocks;  // shared: copy-on-write when either side appends into one
    for (KvBlockId b : c.blocks) store_.retain(b);
  } else {
    for (KvBlockId b : p.blocks) {
      const KvBlockId nb = store_.allocate(store_.bytes(b));
      store_.copy(nb, b);
      c.blocks.push_back(nb);
    }
  }
  if (p.residual_block >= 0) store_.copy(c.residual_block, p.residual_block);
  return child;
}

int64_t KvCache::adopt_pages(std::span<const KvBlockId> pages, int64_t tokens) {
  check(config_.layout == KvLayout::paged, [] { return std::string("adopt_pages needs the paged layout"); });
  check(!has_residual(config_), [&] {
    return fmt::format("adopt_pages cannot share {} pages: the f16 residual of the newest tokens is per sequence",
                       detail::kv_format(config_.storage).name);
  });
  const int64_t n = static_cast<int64_t>(pages.size()), P = config_.page_size;
  check(n >= 1 && tokens > (n - 1) * P && tokens <= n * P, [&] {
    return fmt::format("tokens ({}) must be in ({}, {}]: {} pages of {} tokens, the last one not empty", tokens,
                       (n - 1) * P, n * P, n, P);
  });
  const int64_t known = static_cast<int64_t>(store_.pooled_in_use() + store_.pooled_free());
  for (int64_t i = 0; i < n; ++i) {
    const KvBlockId b = pages[static_cast<size_t>(i)];
    check(b >= 0 && b < store_.block_count() && store_.is_page(b) && store_.refcount(b) > 0,
          [&] {
            return fmt::format("pages[{}] ({}) is not a page in use in this cache ({} pages allocated)", i, b, known);
          });
    for (int64_t j = 0; j < i; ++j)
      check(pages[static_cast<size_t>(j)] != b,
            [&] { return fmt::format("pages[{}] ({}) repeats pages[{}]: a token has one slot", i, b, j); });
  }
  const int64_t seq = add_sequence();
  KvSequence& s = seqs_[static_cast<size_t>(seq)];
  s.blocks.assign(pages.begin(), pages.end());
  for (KvBlockId b : s.blocks) store_.retain(b);
  s.length = s.held = tokens;
  s.capacity = n * P;
  return seq;
}

void KvCache::free_sequence(int64_t seq) {
  KvSequence& s = live(seq, "free_sequence");
  for (KvBlockId b : s.blocks) store_.release(b);
  if (s.residual_block >= 0) store_.release(s.residual_block);
  s = KvSequence{};
}

// Grows a contiguous sequence's block (by doubling) so that `main` slots exist.
void KvCache::reserve_slots(KvSequence& s, int64_t main) {
  if (main <= s.capacity) return;
  check(config_.max_tokens == 0, [&] {
    return fmt::format("the contiguous cache is full: a sequence holds at most max_tokens ({}) tokens",
                       config_.max_tokens);
  });
  int64_t cap = std::max(s.capacity, kKvInitialTokens);
  if (detail::kv_format(config_.storage).grouped()) cap = (cap + config_.group - 1) / config_.group * config_.group;
  while (cap < main) cap *= 2;
  KvSequence grown;
  grown.capacity = cap;
  const KvBlockLayout from = layout(s), to = layout(grown);
  const KvBlockId b = new_block(to);
  if (!s.blocks.empty()) {
    // Blocks of their own: the main block's rows (int4: the quantized ones).
    const int64_t rows = has_residual(config_) ? s.quantized : s.held;
    for (int64_t l = 0; l < config_.layers; ++l)
      for (int64_t h = 0; h < config_.kv_heads; ++h)
        for (const bool key : {true, false})
          detail::copy_kv_rows(detail::kv_region(from, store_, s.blocks[0], l, h, key),
                               detail::kv_region(to, store_, b, l, h, key), rows);
    store_.release(s.blocks[0]);
    s.blocks[0] = b;
  } else {
    s.blocks.push_back(b);
  }
  s.capacity = cap;
}

// Paged: gives the sequence its own copy of every shared page holding slots [first, last).
void KvCache::make_writable(KvSequence& s, int64_t first, int64_t last) {
  if (config_.layout != KvLayout::paged || first >= last) return;
  const int64_t P = config_.page_size;
  for (int64_t p = first / P; p <= (last - 1) / P && p < static_cast<int64_t>(s.blocks.size()); ++p) {
    KvBlockId& b = s.blocks[static_cast<size_t>(p)];
    if (store_.refcount(b) == 1) continue;
    const KvBlockId copy = store_.allocate_page();
    store_.copy(copy, b);
    store_.release(b);
    b = copy;
  }
}

void KvCache::append(int64_t seq, int64_t tokens) {
  check_readable(seq, "append");
  KvSequence& s = live(seq, "append");
  check_range(tokens, 1, kMaxSeqLen, "tokens");
  if (config_.layout == KvLayout::rolling)
    check(tokens <= config_.max_append, [&] {
      return fmt::format("tokens ({}) must be <= max_append ({}) for a rolling cache: the ring keeps window + "
                         "max_append - 1 tokens",
                         tokens, config_.max_append);
    });
  const int64_t new_length = detail::checked_add(s.length, tokens, "sequence length", "tokens");
  const bool rolling = config_.layout == KvLayout::rolling;
  check(rolling || new_length <= kMaxSeqLen,
        [&] { return fmt::format("sequence {} would hold {} tokens, more than 2^31", seq, new_length); });
  check(!(config_.rope && config_.positions == KvPositions::absolute) || new_length <= kMaxRopePosition, [&] {
    return fmt::format("sequence {}: RoPE positions must stay below 2^31 (length would be {})", seq, new_length);
  });
  const int64_t new_held = rolling ? std::min(new_length, s.capacity) : s.held + tokens;
  int64_t new_quantized = s.quantized;
  const bool residual = has_residual(config_);
  if (residual) {
    const int64_t G = config_.group, R = config_.residual;
    new_quantized = G * (std::max<int64_t>(new_held - R, 0) / G);
  }
  const int64_t main_tokens = residual ? new_quantized : new_held;
  const int64_t first_written = residual ? s.quantized : s.held;
  if (config_.layout == KvLayout::contiguous) {
    if (config_.max_tokens > 0)
      check(new_held <= config_.max_tokens, [&] {
        return fmt::format("the contiguous cache is full: sequence {} holds {} tokens, appending {} exceeds "
                           "max_tokens ({})",
                           seq, s.held, tokens, config_.max_tokens);
      });
    reserve_slots(s, main_tokens);
  } else if (config_.layout == KvLayout::paged) {
    const int64_t P = config_.page_size;
    const int64_t pages = (main_tokens + P - 1) / P;
    make_writable(s, first_written, main_tokens);
    const size_t before = s.blocks.size();
    try {
      while (static_cast<int64_t>(s.blocks.size()) < pages) s.blocks.push_back(new_page());
    } catch (const Error&) {
      for (size_t i = before; i < s.blocks.size(); ++i) store_.release(s.blocks[i]);
      s.blocks.resize(before);
      throw;
    }
    s.capacity = static_cast<int64_t>(s.blocks.size()) * P;
  }
  if (config_.rope && config_.positions == KvPositions::in_cache && config_.layout != KvLayout::rolling)
    rope_->reserve(std::min(new_held, kMaxRopePosition));
  s.pending = tokens;
  s.quantized_before = s.quantized;
  s.quantized = new_quantized;
  s.length = new_length;
  s.held = new_held;
  std::fill(s.layer_stored.begin(), s.layer_stored.end(), uint8_t{0});
  s.stored_layers = 0;
}

// locate() and run_length() run once per run of slots of every decode tile: they ask the
// residual layout (slots > 0 exactly when the format has a residual) rather than the
// format's table, one load fewer.
KvSlot KvCache::locate(const KvSequence& s, int64_t i) const {
  if (residual_layout_.slots > 0 && i >= s.quantized)
    return {s.residual_block, i % config_.residual_slots(), true};
  switch (config_.layout) {
    case KvLayout::contiguous: return {s.blocks[0], i, false};
    case KvLayout::paged:
      return {s.blocks[static_cast<size_t>(i / config_.page_size)], i % config_.page_size, false};
    case KvLayout::rolling: {
      const int64_t S = config_.sinks;
      if (i < S) return {s.blocks[0], i, false};
      return {s.blocks[0], S + (position(s, i) - S) % config_.ring_slots(), false};
    }
  }
  return {-1, 0, false};
}

int64_t KvCache::run_length(const KvSequence& s, int64_t i, int64_t n) const {
  int64_t run = n;
  if (residual_layout_.slots > 0) {
    if (i >= s.quantized) return std::min(run, config_.residual_slots() - i % config_.residual_slots());
    run = std::min(run, s.quantized - i);
  }
  switch (config_.layout) {
    case KvLayout::contiguous: return run;
    case KvLayout::paged: return std::min(run, config_.page_size - i % config_.page_size);
    case KvLayout::rolling: {
      const int64_t S = config_.sinks;
      if (i < S) return std::min(run, S - i);
      return std::min(run, S + config_.ring_slots() - locate(s, i).slot);
    }
  }
  return run;
}

int64_t KvCache::position(const KvSequence& s, int64_t i) const {
  if (config_.layout != KvLayout::rolling || i < config_.sinks) return i;
  return s.length - (s.held - i);  // the ring holds the newest tokens, consecutive
}

int64_t KvCache::rope_position(const KvSequence& s, int64_t i) const {
  return config_.positions == KvPositions::in_cache ? i : position(s, i);
}

KvConfig KvCache::kv_config(int64_t context, int64_t batch) const {
  KvConfig k;
  k.name = "cache";
  k.layers = config_.layers;
  k.q_heads = config_.kv_heads;
  k.kv_heads = config_.kv_heads;
  k.head_dim = config_.head_dim;
  k.v_head_dim = config_.v_head_dim;
  k.context = context;
  k.batch = batch;
  k.storage = config_.storage;
  if (config_.layout == KvLayout::rolling) {
    k.window = config_.ring_slots();
    k.sinks = config_.sinks;
  }
  k.group = config_.group;
  k.residual = config_.residual;
  return k;
}

}  // namespace attnkit
