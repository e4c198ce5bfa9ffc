// attnkit/kv_cache.hpp — the KV cache of autoregressive decoding: which tokens of which
// sequences are held (metadata) and where their K / V bytes live (storage), for every
// layer, in three layouts and five storage formats, with byte-exact accounting.
// Not for: attention over the cache (decode.hpp), nor the codecs themselves
// (kv_quant.hpp), nor sizing a cache that does not exist (kv_size.hpp).
//
// Two halves, kept apart:
//   Metadata (KvSequence): per sequence, how many tokens were appended (`length`, the next
//     absolute position), how many are held, how many of those are int4-quantized, and
//     which storage blocks hold them (the block table). Logical index i in [0, held)
//     orders held tokens oldest first; positions are increasing in i.
//   Storage (KvBlockStore): blocks of token slots. A block of P slots holds, for every
//     layer, the K rows and V rows of all KV heads of P tokens in the storage format, laid
//     out [layer][K heads..., V heads...][P slots] (KvBlockLayout gives the offsets). Blocks
//     are reference counted so paged sequences can share them.
//
// Layouts (KvCacheConfig::layout):
//   contiguous  one block per sequence, slot = i. With max_tokens > 0 it is allocated at
//               that size once (appending past it is an Error); with max_tokens = 0 it
//               starts at 16 tokens and doubles (copying) when full, like std::vector.
//   rolling     the sliding-window buffer of Mistral with StreamingLLM's attention sinks:
//               one block of sinks + window + max_append - 1 slots. The first `sinks`
//               tokens stay forever in slots [0, sinks); later tokens go round a ring of
//               window + max_append - 1 slots, evicting the oldest non-sink token. Each query
//               sees `window` keys (itself included) plus the sinks; the extra
//               max_append - 1 slots keep the keys the oldest query of a multi-token append
//               still sees. Memory is constant once sinks + ring slots tokens were appended.
//   paged       per-sequence block tables over a shared pool of pages of page_size slots
//               (any size >= 1; int4 needs a multiple of `group`). Pages are allocated on
//               demand and returned to the pool on free; fork() shares every page of the
//               parent (reference counts) and a shared page is copied before it is written
//               (copy-on-write, on append). max_pages bounds the pool (0: unbounded).
//
// Positions and RoPE (KvCacheConfig::positions, ::rope). With a RoPE config, keys are
// appended before rotation and the cache rotates them:
//   absolute   key i is rotated once, at append, by its absolute position (the token's
//              index in the sequence): Mistral's rolling buffer and every non-windowed
//              cache. Queries are rotated by their absolute positions.
//   in_cache   StreamingLLM: keys are stored unrotated and rotated when read, by their
//              logical index in the cache (sinks 0..S-1, then the window's tokens in order),
//              so the distances the model sees never exceed the cache size however long the
//              stream runs. Queries are rotated by their logical index too.
// Without a RoPE config positions only define masks, and both modes are the same.
//
// Storage formats (KvStorage, kv_size.hpp): f32, bf16, f16 (values), int8 (codes with one
// f16 scale per token per head), int4 (KIVI: keys per channel over groups of `group`
// tokens, values per token over groups of `group` channels, and an f16 residual: at least
// `residual` newest tokens stay f16; tokens are quantized a whole group at a time once
// they are older than that). Layouts of the quantized rows are kv_quant.hpp's.
//
// Accounting. bytes_allocated() is every byte the storage owns (pooled free pages
// included); kv_config(context) describes this cache to kv_size.hpp. For f32 / bf16 / f16 /
// int8, a full cache allocates exactly kv_total_bytes(kv_config(capacity)): contiguous at
// max_tokens, rolling at sinks + ring slots (kv_size's window = ring slots), paged when
// every page is full. int4 allocates its f16 residual for the most it can hold, R + G - 1
// tokens per sequence, so it equals kv_size when the held count leaves R + G - 1 residual
// tokens, and exceeds it by the unused residual slots otherwise (tested exactly).
// bytes_reserved() is what was asked of the system: pages are carved from slabs of whole
// 2 MiB huge pages and blocks of 2 MiB or more are rounded up to them (KvBlockStore), so it
// exceeds bytes_allocated() by the unused pages of the last slab and that rounding.
//
// Appending is two steps, like a model's forward pass: append(seq, T) advances the metadata
// (allocating, evicting, copying shared pages) for T new tokens, then store(seq, layer, k,
// v) writes those T tokens of each layer. A sequence's next append, fork or read needs
// every layer stored. Not thread-safe for writers; concurrent readers (decode) are fine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "attnkit/kv_size.hpp"
#include "attnkit/rope.hpp"
#include "attnkit/tensor.hpp"

namespace attnkit {

enum class KvLayout : uint8_t { contiguous, rolling, paged };
std::string_view kv_layout_name(KvLayout l);
KvLayout parse_kv_layout(std::string_view name);  // "contiguous", "rolling", "paged"; throws Error

enum class KvPositions : uint8_t { absolute, in_cache };
std::string_view kv_positions_name(KvPositions p);
KvPositions parse_kv_positions(std::string_view name);  // "absolute", "in_cache"; throws Error

constexpr int64_t kKvInitialTokens = 16;  // first capacity of a growing contiguous cache
constexpr int64_t kMaxPagedHeads = int64_t{1} << 16;  // layers x kv_heads of a paged cache

struct KvCacheConfig {
  KvLayout layout = KvLayout::contiguous;
  KvStorage storage = KvStorage::f32;
  int64_t layers = 1;
  int64_t kv_heads = 1;
  int64_t head_dim = 0;    // K width (d_qk)
  int64_t v_head_dim = 0;  // V width; 0 means head_dim
  // contiguous
  int64_t max_tokens = 0;  // per sequence; 0 grows by doubling
  // rolling
  int64_t window = 0;      // keys each query sees, itself included
  int64_t sinks = 0;       // first tokens kept forever
  int64_t max_append = 1;  // most tokens appended between two attention calls
  KvPositions positions = KvPositions::absolute;
  // paged
  int64_t page_size = 16;
  int64_t max_pages = 0;  // 0: unbounded
  // int4
  int64_t group = 32;
  int64_t residual = 128;
  std::optional<RopeConfig> rope;  // rotate keys (and decode's queries); see above

  // Throws Error naming the first field that breaks a constraint.
  void validate() const;
  int64_t v_width() const { return v_head_dim > 0 ? v_head_dim : head_dim; }
  int64_t ring_slots() const { return window + max_append - 1; }  // rolling
  int64_t residual_slots() const { return residual + group - 1; }  // int4
};

// ---- storage ----

// Byte offsets inside one block of `slots` token slots. A head's K (or V) region is its
// codes [slots][row_bytes] followed by its parameters (int8: [slots] f16 scales; int4 K:
// per group of G slots, scales [w] then zeros [w]; int4 V: scales [slots][ng] then zeros
// [slots][ng], ng = ceil(w / G)), exactly kv_block_bytes() long.
struct KvBlockLayout {
  KvStorage storage = KvStorage::f32;
  int64_t slots = 0;
  int64_t heads = 0, k_width = 0, v_width = 0, group = 0, layers = 0;
  int64_t k_row_bytes = 0, v_row_bytes = 0;    // codes of one token of one head
  int64_t k_head_bytes = 0, v_head_bytes = 0;  // one head's region (codes + params)
  int64_t layer_bytes = 0, block_bytes = 0;

  KvBlockLayout() = default;
  KvBlockLayout(KvStorage storage, int64_t slots, const KvCacheConfig& cfg);
  int64_t k_offset(int64_t layer, int64_t head) const { return layer * layer_bytes + head * k_head_bytes; }
  int64_t v_offset(int64_t layer, int64_t head) const {
    return layer * layer_bytes + heads * k_head_bytes + head * v_head_bytes;
  }
  int64_t k_params(int64_t layer, int64_t head) const { return k_offset(layer, head) + slots * k_row_bytes; }
  int64_t v_params(int64_t layer, int64_t head) const { return v_offset(layer, head) + slots * v_row_bytes; }
  // The sizes of the block's regions, in order: per layer, per head, K codes then K
  // parameters (0 bytes for f32 / bf16 / f16), then the same for V.
  std::vector<int64_t> regions() const;
};

using KvBlockId = int32_t;

// Reference-counted blocks of bytes. A block is a sequence of regions (KvBlockLayout: the
// codes and the parameters of one layer's K or V rows of one head), and every access goes
// through region(): the store decides where a region lies. Pages (the paged layout's blocks, all of one layout) are pooled:
// release() of the last reference returns a page to a free list, other blocks are freed
// at once.
//
// Pages are carved from slabs that hold several of them REGION-MAJOR: region r of the
// slab's P pages lies at slab + P * offset(r) + i * bytes(r) for page i. A sequence's
// consecutive pages are usually consecutive in a slab, so each head's K (or V) rows of a
// decode step stream through long runs of memory as in a contiguous cache, instead of one
// short region per page (4 KiB at page 16, d = 128, bf16) followed by a jump over every
// other head's. Codes and parameters (int8 scales) are separate regions, and the pages per
// slab a multiple that keeps every region on a cache line. Slabs hold enough pages for runs
// of the largest region of >= 64 KiB, rounded up to whole 2 MiB huge pages; with max_pages
// the last slab holds only the pages still allowed. Since a page has a piece in every run,
// the first page of a slab makes the whole slab resident (with huge pages). bytes_reserved()
// counts the slabs whole, bytes_allocated() the pages.
class KvBlockStore {
 public:
  // page_regions: the sizes, in order, of the regions a page is made of (empty: no pages);
  // max_pages: their limit (0: none).
  KvBlockStore(std::vector<int64_t> page_regions, int64_t max_pages);
  KvBlockId allocate_page();           // refcount 1, zero-filled; throws Error when the pool is full
  KvBlockId allocate(int64_t bytes);  // a block of its own (not a page); refcount 1, zero-filled
  void retain(KvBlockId b);
  void release(KvBlockId b);
  // Copies block `from` into `to` (blocks of one layout: both pages, or both `bytes` long).
  void copy(KvBlockId to, KvBlockId from);
  // The region of block b that starts at `offset` of its layout and is `bytes` long (a
  // page's regions must be addressed exactly as page_regions lists them).
  std::byte* region(KvBlockId b, int64_t offset, int64_t bytes) {
    return data_[b] + stride_[b] * offset + slot_[b] * bytes;  // blocks of their own: stride 1, slot 0
  }
  const std::byte* region(KvBlockId b, int64_t offset, int64_t bytes) const {
    return const_cast<KvBlockStore*>(this)->region(b, offset, bytes);
  }
  int32_t refcount(KvBlockId b) const { return refs_[b]; }
  int64_t block_count() const { return static_cast<int64_t>(data_.size()); }  // ids are < this
  bool is_page(KvBlockId b) const { return page_[b] != 0; }
  int64_t bytes(KvBlockId b) const { return sizes_[b]; }
  int64_t slab_pages() const { return slab_pages_; }  // pages per slab (the last may hold fewer)
  // Bytes of the blocks that exist (in use, or pooled and free): the KV state itself.
  int64_t bytes_allocated() const { return allocated_; }
  // Bytes asked of the system: bytes_allocated() plus the pages of the last slab not
  // handed out yet and the rounding of slabs and of blocks of 2 MiB or more to whole huge
  // pages.
  int64_t bytes_reserved() const { return reserved_; }
  int64_t pooled_in_use() const { return pooled_in_use_; }
  int64_t pooled_free() const { return static_cast<int64_t>(free_.size()); }

 private:
  struct FreeBytes {
    void operator()(std::byte* p) const;
  };
  using Bytes = std::unique_ptr<std::byte[], FreeBytes>;
  KvBlockId add_block(std::byte* at, Bytes mem, bool page, int64_t stride, int64_t slot, int64_t bytes);
  void zero(KvBlockId b);

  std::vector<int64_t> page_regions_;
  int64_t page_bytes_ = 0, max_pages_;
  int64_t slab_pages_ = 0;  // pages per slab
  int64_t slab_capacity_ = 0, slab_used_ = 0, pages_made_ = 0;  // pages of the last slab, carved; in all
  std::vector<Bytes> slabs_;
  std::vector<std::byte*> data_;  // [block]: its memory, or its slab's
  std::vector<uint8_t> page_;     // [block]: a page (else a block of its own)
  std::vector<int64_t> stride_;   // [block]: pages of its slab (1 for blocks of their own)
  std::vector<int64_t> slot_;     // [block]: its index in the slab (0 for blocks of their own)
  std::vector<Bytes> owned_;      // [block]: the memory of a block of its own
  std::vector<int64_t> sizes_;
  std::vector<int32_t> refs_;
  std::vector<KvBlockId> free_;     // pages with no reference, kept allocated (a min-heap)
  std::vector<KvBlockId> retired_;  // ids of freed blocks of their own, reused by allocate()
  int64_t allocated_ = 0, reserved_ = 0, pooled_in_use_ = 0;
};

// ---- metadata ----

struct KvSequence {
  bool live = false;
  int64_t length = 0;     // tokens appended in total: the next token's absolute position
  int64_t held = 0;       // tokens in the cache (rolling: at most sinks + ring slots)
  int64_t quantized = 0;  // int4: tokens [0, quantized) are int4, the rest f16 residual
  // The last append: tokens [held - pending, held), and int4 tokens [quantized_before,
  // quantized) quantized by it. `stored` counts the layers written since.
  int64_t pending = 0;
  int64_t quantized_before = 0;
  int64_t stored_layers = 0;
  std::vector<uint8_t> layer_stored;  // [layers]
  std::vector<KvBlockId> blocks;      // paged: the block table; contiguous / rolling: one block
  int64_t capacity = 0;               // slots of blocks (contiguous: its one block)
  KvBlockId residual_block = -1;      // int4: f16 ring of residual_slots() tokens
};

// Where logical token i of a sequence lives.
struct KvSlot {
  KvBlockId block;
  int64_t slot;
  bool residual;  // int4: in the f16 residual block (its layout is residual_layout())
};

class KvCache {
 public:
  explicit KvCache(const KvCacheConfig& config);  // validates

  const KvCacheConfig& config() const { return config_; }

  // -- sequences --
  int64_t add_sequence();           // a new empty sequence's id
  int64_t fork(int64_t parent);     // a new sequence holding the parent's tokens
  void free_sequence(int64_t seq);  // drops its tokens and storage references
  // Paged: a new sequence whose first `tokens` tokens are those stored in `pages` (page ids
  // from another sequence's block table, e.g. a cached prompt prefix), shared with
  // reference counts. Throws Error naming the entry unless every page is a page in use,
  // none repeats, and tokens fills all pages but the last partly (tokens in
  // ((n - 1) * page_size, n * page_size]). Not for int4 (its residual is per sequence).
  int64_t adopt_pages(std::span<const KvBlockId> pages, int64_t tokens);
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }
  const KvSequence& sequence(int64_t seq) const;  // throws Error on a bad or freed id

  // -- appending --
  void append(int64_t seq, int64_t tokens);
  // k: [kv_heads, T, head_dim], v: [kv_heads, T, v_width], T = the last append's tokens,
  // any dtype and strides; keys before RoPE when the config has one.
  void store(int64_t seq, int64_t layer, const TensorView& k, const TensorView& v);

  // -- reading --
  KvSlot locate(const KvSequence& s, int64_t i) const;
  // Tokens i, i+1, ... (at most n) that sit in consecutive slots of one block, starting at
  // locate(s, i): what a tile reader resolves once per run instead of once per token.
  int64_t run_length(const KvSequence& s, int64_t i, int64_t n) const;
  int64_t position(const KvSequence& s, int64_t i) const;        // absolute position of token i
  int64_t rope_position(const KvSequence& s, int64_t i) const;   // the position its RoPE uses
  // Offsets inside the sequence's main blocks (contiguous blocks differ in size) and
  // inside its int4 residual block.
  KvBlockLayout layout(const KvSequence& s) const;
  const KvBlockLayout& residual_layout() const { return residual_layout_; }
  const KvBlockStore& storage() const { return store_; }
  const RopeCache* rope() const { return rope_.get(); }
  // Dequantised, rotated K and V of every held token: k: [kv_heads, held, head_dim],
  // v: [kv_heads, held, v_width], f32 or f64 views of the right shape. What decode attends to.
  void gather(int64_t seq, int64_t layer, const MutTensorView& k, const MutTensorView& v) const;
  // Throws Error naming seq unless every layer stored its last append.
  void check_readable(int64_t seq, std::string_view what) const;

  // -- accounting --
  int64_t bytes_allocated() const { return store_.bytes_allocated(); }
  int64_t bytes_reserved() const { return store_.bytes_reserved(); }
  // kv_size.hpp's description of this cache holding `context` tokens per sequence for
  // `batch` sequences (rolling: window = ring slots).
  KvConfig kv_config(int64_t context, int64_t batch = 1) const;

 private:
  KvSequence& live(int64_t seq, std::string_view what);
  void reserve_slots(KvSequence& s, int64_t new_held);
  void make_writable(KvSequence& s, int64_t first, int64_t last);
  KvBlockId new_block(const KvBlockLayout& layout);  // a block of its own
  KvBlockId new_page();

  KvCacheConfig config_;
  KvBlockLayout layout_, residual_layout_;
  KvBlockStore store_;
  std::unique_ptr<RopeCache> rope_;
  std::vector<KvSequence> seqs_;
};

}  // namespace attnkit
