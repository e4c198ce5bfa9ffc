// Validation and planning of a decode call: shapes, the resolved mask, the tiles of keys
// each sequence's queries can see (cost proportional to what the mask visits), and the
// bytes a call reads.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "cache/kv_format.hpp"
#include "kernels/decode_plan.hpp"

namespace attnkit {

std::string_view decode_kernel_name(DecodeKernel k) { return k == DecodeKernel::automatic ? "auto" : "generic"; }

DecodeKernel parse_decode_kernel(std::string_view name) {
  if (name == "auto") return DecodeKernel::automatic;
  if (name == "generic") return DecodeKernel::generic;
  throw Error(fmt::format("decode kernel '{}' is not one of auto, generic", name));
}

namespace decode {
namespace {

// Cuts [lo, hi) into tiles aligned to multiples of kTileKeys, and at `cut` (the int4
// quantized / residual boundary) so that a tile has one storage format.
void add_tiles(int64_t lo, int64_t hi, int64_t cut, std::vector<Tile>& out) {
  for (int64_t t = lo; t < hi;) {
    int64_t end = std::min(hi, (t / kTileKeys + 1) * kTileKeys);
    if (t < cut && cut < end) end = cut;
    out.push_back({t, end});
    t = end;
  }
}

}  // namespace

Plan make_plan(const KvCache& cache, int64_t layer, std::span<const int64_t> seqs, const TensorView& q,
               const MutTensorView& out, const DecodeOptions& opts, const MutTensorView& lse) {
  const KvCacheConfig& cfg = cache.config();
  Plan p;
  check(layer >= 0 && layer < cfg.layers,
        [&] { return fmt::format("layer ({}) must be in [0, {})", layer, cfg.layers); });
  q.expect_rank(4, "q");
  p.B = static_cast<int64_t>(seqs.size());
  p.Hq = q.size(1);
  p.nq = q.size(2);
  p.dk = cfg.head_dim;
  p.dv = cfg.v_width();
  p.Hkv = cfg.kv_heads;
  check(q.size(0) == p.B, [&] {
    return fmt::format("q has batch {} ({}), but {} sequence ids were given", q.size(0), q.shape_string(), p.B);
  });
  check(q.size(3) == p.dk,
        [&] { return fmt::format("q's head dim ({}) must equal the cache's head_dim ({})", q.size(3), p.dk); });
  check(p.Hq >= 1 && p.Hq % p.Hkv == 0, [&] {
    return fmt::format("q's heads ({}) must be a positive multiple of the cache's kv_heads ({})", p.Hq, p.Hkv);
  });
  check(p.nq >= 1, [&] { return fmt::format("q must hold at least one new token per sequence (Nq = {})", p.nq); });
  check(q.data() != nullptr || q.numel() == 0, [] { return std::string("q has no data"); });
  p.g = p.Hq / p.Hkv;
  p.rows = p.g * p.nq;
  check(p.rows <= 4096, [&] {
    return fmt::format("q heads per KV head x new tokens ({} x {}) must be <= 4096 (use attend() for long prefill)",
                       p.g, p.nq);
  });
  out.expect_rank(4, "out");
  check(out.size(0) == p.B && out.size(1) == p.Hq && out.size(2) == p.nq && out.size(3) == p.dv, [&] {
    return fmt::format("out has shape {}, expected [{}, {}, {}, {}]", out.shape_string(), p.B, p.Hq, p.nq, p.dv);
  });
  check(out.mutable_data() != nullptr || out.numel() == 0, [] { return std::string("out has no data"); });
  if (lse.rank() != 0) {
    lse.expect_rank(3, "lse");
    check(lse.size(0) == p.B && lse.size(1) == p.Hq && lse.size(2) == p.nq, [&] {
      return fmt::format("lse has shape {}, expected [{}, {}, {}]", lse.shape_string(), p.B, p.Hq, p.nq);
    });
  }
  check(opts.window >= 0 && opts.sinks >= 0, [&] {
    return fmt::format("window ({}) and sinks ({}) must be >= 0", opts.window, opts.sinks);
  });
  p.window = opts.window;
  p.sinks = opts.sinks;
  if (cfg.layout == KvLayout::rolling) {
    if (p.window == 0) {
      p.window = cfg.window;
      p.sinks = cfg.sinks;
    }
    check(p.window <= cfg.window && p.sinks <= cfg.sinks, [&] {
      return fmt::format("window ({}) and sinks ({}) must be <= the rolling cache's window ({}) and sinks ({}): it "
                         "holds no older keys",
                         p.window, p.sinks, cfg.window, cfg.sinks);
    });
    check(p.nq <= cfg.max_append, [&] {
      return fmt::format("Nq ({}) must be <= the rolling cache's max_append ({})", p.nq, cfg.max_append);
    });
  }
  opts.validate(p.Hq);
  check(!opts.has_sinks(), [] {
    return std::string("sink_logits: decode does not take learned sink logits yet (attend() and its backward do)");
  });
  p.scale = static_cast<float>(opts.softmax_scale(p.dk));
  p.softcap = static_cast<float>(opts.softcap);
  p.alibi = opts.alibi_slopes;

  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t id = seqs[static_cast<size_t>(b)];
    cache.check_readable(id, fmt::format("seqs[{}]", b));
    const KvSequence& s = cache.sequence(id);
    check(s.held >= p.nq, [&] {
      return fmt::format("seqs[{}] (sequence {}) holds {} tokens, fewer than the Nq ({}) queries", b, id, s.held,
                         p.nq);
    });
    p.seqs.push_back(&s);
    std::vector<Tile> tiles;
    // A format with a residual (int4) holds keys [0, quantized) in its own format and the
    // newest ones in the residual's: tiles are cut there.
    const int64_t cut = detail::kv_format(cfg.storage).residual ? s.quantized : s.held;
    const int64_t lo = p.window == 0 ? 0 : std::max<int64_t>(0, s.held - p.nq - p.window + 1);
    if (p.sinks >= lo) {
      add_tiles(0, s.held, cut, tiles);
    } else {
      add_tiles(0, p.sinks, cut, tiles);
      add_tiles(lo, s.held, cut, tiles);
    }
    p.tiles.push_back(std::move(tiles));
  }
  return p;
}

}  // namespace decode

int64_t decode_bytes_read(const KvCache& cache, std::span<const int64_t> seqs, int64_t nq, const DecodeOptions& opts) {
  const KvCacheConfig& cfg = cache.config();
  const std::vector<float> qdata(static_cast<size_t>(seqs.size() * cfg.kv_heads * nq * cfg.head_dim));
  std::vector<float> odata(static_cast<size_t>(seqs.size() * cfg.kv_heads * nq * cfg.v_width()));
  const TensorView q(qdata.data(), DType::f32,
                     {static_cast<int64_t>(seqs.size()), cfg.kv_heads, nq, cfg.head_dim});
  const MutTensorView o(odata.data(), DType::f32,
                        {static_cast<int64_t>(seqs.size()), cfg.kv_heads, nq, cfg.v_width()});
  const decode::Plan p = decode::make_plan(cache, 0, seqs, q, o, opts, {});
  const KvBlockLayout res = cache.residual_layout();
  const bool with_residual = detail::kv_format(cfg.storage).residual;
  int64_t bytes = 0;
  for (size_t b = 0; b < p.tiles.size(); ++b) {
    const KvBlockLayout main = cache.layout(*p.seqs[b]);
    int64_t last_group = -1;
    for (const decode::Tile& t : p.tiles[b]) {
      // A tile lies wholly in the main block or in the residual (make_plan cuts it there).
      const KvBlockLayout& lay = with_residual && t.lo >= p.seqs[b]->quantized ? res : main;
      const detail::KvFormat& f = detail::kv_format(lay.storage);
      // A key's K and V rows as stored: codes, and the parameters each row has alone
      // (int8 scales, int4 value groups' scales and zeros).
      const int64_t per_token = lay.k_row_bytes + lay.v_row_bytes +
                                f.row_params(KvStream::key, lay.k_width, lay.group) +
                                f.row_params(KvStream::value, lay.v_width, lay.group);
      bytes += (t.hi - t.lo) * per_token * cfg.kv_heads;
      // Parameters shared by a key group (int4 keys), once per group touched.
      if (const int64_t per_group = f.key_group_params(lay.k_width); per_group > 0)
        for (int64_t i = t.lo; i < t.hi; ++i)
          if (i / lay.group != last_group) {
            last_group = i / lay.group;
            bytes += per_group * cfg.kv_heads;
          }
    }
  }
  return bytes;
}

}  // namespace attnkit
