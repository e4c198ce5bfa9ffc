// Writing and reading K / V rows of a KvCache: store() (RoPE on append, encoding, the int4
// residual's group-at-a-time quantization) and gather(). The row codecs of every format
// are kv_format.cpp's.
#include <algorithm>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "cache/kv_rows.hpp"

namespace attnkit {
namespace detail {

KvRegionPlace kv_region_place(const KvBlockLayout& layout, int64_t layer, int64_t head, bool key) {
  KvRegionPlace p;
  KvRegion& r = p.shape;
  r.storage = layout.storage;
  r.key = key;
  r.codes = r.params = nullptr;
  r.row_bytes = key ? layout.k_row_bytes : layout.v_row_bytes;
  r.width = key ? layout.k_width : layout.v_width;
  r.slots = layout.slots;
  r.group = layout.group;
  p.codes_offset = key ? layout.k_offset(layer, head) : layout.v_offset(layer, head);
  p.params_offset = key ? layout.k_params(layer, head) : layout.v_params(layer, head);
  p.codes_bytes = p.params_offset - p.codes_offset;
  p.params_bytes = p.codes_offset + (key ? layout.k_head_bytes : layout.v_head_bytes) - p.params_offset;
  return p;
}

void copy_kv_rows(const KvRegion& from, const KvRegion& to, int64_t rows) {
  std::memcpy(to.codes, from.codes, static_cast<size_t>(rows * from.row_bytes));
  if (const auto copy = kv_format(from.storage).copy_params) copy(from, to, rows);
}

}  // namespace detail

namespace {

// Row (head h, token t) of a [H, T, W] view, converted to f32.
void load_row(const TensorView& x, int64_t h, int64_t t, float* out) {
  const int64_t w = x.size(2);
  const int64_t base = x.offset(h, t, 0);
  if (x.dtype() == DType::f32 && x.stride(2) == 1) {
    std::memcpy(out, static_cast<const float*>(x.data()) + base, static_cast<size_t>(w) * 4);
    return;
  }
  for (int64_t c = 0; c < w; ++c) out[c] = static_cast<float>(x.load(base + c * x.stride(2)));
}

void check_kv_input(const TensorView& x, std::string_view arg, int64_t heads, int64_t tokens, int64_t width) {
  x.expect_rank(3, arg);
  check(x.size(0) == heads && x.size(1) == tokens && x.size(2) == width, [&] {
    return fmt::format("{} has shape {}, expected [kv_heads={}, tokens={}, width={}] (the last append's tokens)", arg,
                       x.shape_string(), heads, tokens, width);
  });
  check(x.data() != nullptr || x.numel() == 0, [&] { return fmt::format("{} has no data", arg); });
}

}  // namespace

void KvCache::store(int64_t seq, int64_t layer, const TensorView& k, const TensorView& v) {
  KvSequence& s = live(seq, "store");
  check(layer >= 0 && layer < config_.layers,
        [&] { return fmt::format("layer ({}) must be in [0, {})", layer, config_.layers); });
  check(s.pending > 0 && !s.layer_stored[static_cast<size_t>(layer)], [&] {
    return fmt::format("store: layer {} of sequence {} has nothing to store (append() first; each layer stores an "
                       "append once)",
                       layer, seq);
  });
  const int64_t H = config_.kv_heads, T = s.pending, dk = config_.head_dim, dv = config_.v_width();
  check_kv_input(k, "k", H, T, dk);
  check_kv_input(v, "v", H, T, dv);

  // int4: the newest tokens in the f16 residual, older ones quantized a key group at a time.
  const bool with_residual = detail::kv_format(config_.storage).residual;
  const bool rotate = config_.rope && config_.positions == KvPositions::absolute;
  const int64_t h0 = s.held - T;  // logical index of the first new token
  const int64_t half = rotate ? config_.rope->resolved_rotary_dim(dk) / 2 : 0;
  std::vector<float> cs(static_cast<size_t>(2 * half)), row(static_cast<size_t>(std::max(dk, dv)));
  const KvBlockLayout main = layout(s);

  // Input row of new token t, head h, as stored: f32, keys rotated by absolute position.
  const auto input_key = [&](int64_t h, int64_t t, float* out, bool angles_ready) {
    load_row(k, h, t, out);
    if (!rotate) return;
    if (!angles_ready) rope_angles(*config_.rope, dk, position(s, h0 + t), cs.data(), cs.data() + half);
    rope_row_angles(*config_.rope, dk, cs.data(), cs.data() + half, out);
  };
  const auto region = [&](KvSlot at, int64_t h, bool key) {
    return detail::kv_region(at.residual ? residual_layout_ : main, store_, at.block, layer, h, key);
  };

  if (with_residual) {
    // Groups that became old enough: [quantized_before, quantized), from the residual ring
    // (tokens held before this append) or straight from the input.
    const int64_t G = config_.group;
    std::vector<float> group(static_cast<size_t>(G * std::max(dk, dv)));
    for (int64_t g0 = s.quantized_before; g0 < s.quantized; g0 += G) {
      const KvSlot dst = locate(s, g0);
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t j = 0; j < G; ++j) {
          const int64_t i = g0 + j;
          float* out = group.data() + j * dk;
          if (i < h0)
            detail::decode_kv_row(region({s.residual_block, i % config_.residual_slots(), true}, h, true),
                                  i % config_.residual_slots(), out);
          else
            input_key(h, i - h0, out, false);
        }
        detail::encode_kv_key_group(region(dst, h, true), dst.slot, group.data());
        for (int64_t j = 0; j < G; ++j) {
          const int64_t i = g0 + j;
          float* out = group.data() + j * dv;
          if (i < h0)
            detail::decode_kv_row(region({s.residual_block, i % config_.residual_slots(), true}, h, false),
                                  i % config_.residual_slots(), out);
          else
            load_row(v, h, i - h0, out);
          detail::encode_kv_row(region(locate(s, i), h, false), locate(s, i).slot, out);
        }
      }
    }
  }
  // Every new token not quantized above goes to its slot (int4: the f16 residual).
  for (int64_t t = std::max<int64_t>(0, (with_residual ? s.quantized : 0) - h0); t < T; ++t) {
    const KvSlot at = locate(s, h0 + t);
    if (rotate) rope_angles(*config_.rope, dk, position(s, h0 + t), cs.data(), cs.data() + half);
    for (int64_t h = 0; h < H; ++h) {
      input_key(h, t, row.data(), true);
      detail::encode_kv_row(region(at, h, true), at.slot, row.data());
      load_row(v, h, t, row.data());
      detail::encode_kv_row(region(at, h, false), at.slot, row.data());
    }
  }
  s.layer_stored[static_cast<size_t>(layer)] = 1;
  if (++s.stored_layers == config_.layers) s.pending = 0;
}

void KvCache::gather(int64_t seq, int64_t layer, const MutTensorView& k, const MutTensorView& v) const {
  check_readable(seq, "gather");
  const KvSequence& s = sequence(seq);
  check(layer >= 0 && layer < config_.layers,
        [&] { return fmt::format("layer ({}) must be in [0, {})", layer, config_.layers); });
  const int64_t H = config_.kv_heads, dk = config_.head_dim, dv = config_.v_width();
  check_kv_input(k, "k", H, s.held, dk);
  check_kv_input(v, "v", H, s.held, dv);
  const KvBlockLayout main = layout(s);
  std::vector<float> row(static_cast<size_t>(std::max(dk, dv)));
  for (int64_t i = 0; i < s.held; ++i) {
    const KvSlot at = locate(s, i);
    const KvBlockLayout& lay = at.residual ? residual_layout_ : main;
    for (int64_t h = 0; h < H; ++h) {
      detail::decode_kv_row(detail::kv_region(lay, store_, at.block, layer, h, true), at.slot, row.data());
      if (rope_) rope_row(*rope_, row.data(), dk, rope_position(s, i));
      for (int64_t c = 0; c < dk; ++c) k.set(row[static_cast<size_t>(c)], h, i, c);
      detail::decode_kv_row(detail::kv_region(lay, store_, at.block, layer, h, false), at.slot, row.data());
      for (int64_t c = 0; c < dv; ++c) v.set(row[static_cast<size_t>(c)], h, i, c);
    }
  }
}

}  // namespace attnkit
