// Pictures of a bound pattern (see pattern_image.hpp): ASCII for small sizes, PNG through
// libpng's simplified API for any size, written with an AtomicFile. Not for: anything a kernel runs.
//
// The PNG is drawn one row of pixel blocks at a time. A block is f x f pairs (f >= 1, the
// downsampling factor); its shade needs the number of allowed pairs in it, which comes from
// the rows' keys() intervals added into a per-block counter with a difference array, so each
// interval costs O(1) however many blocks it spans. That keeps a 65536^2 causal pattern at
// ~65536 intervals instead of 2^32 allow() calls.
#include "attnkit/pattern_image.hpp"

#include <png.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cstring>
#include <span>
#include <vector>

#include <fmt/format.h>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"
#include "attnkit/shape.hpp"

namespace attnkit {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string too_large_for_ascii(const BoundPattern& p) {
  return fmt::format("ascii: pattern is {} x {} (q_len x kv_len); the ASCII picture is limited to {} x {} "
                     "(draw larger sizes as a PNG: attnkit pattern --png FILE)",
                     p.q_len(), p.kv_len(), kMaxAsciiSide, kMaxAsciiSide);
}

// How pairs map to pixels: blocks of f x f pairs, each painted as cell x cell pixels.
// One of f and cell is 1.
struct Geometry {
  int64_t f = 1, cell = 1;
  int64_t blocks_h = 0, blocks_w = 0;
  int64_t width() const { return blocks_w * cell; }
  int64_t height() const { return blocks_h * cell; }
};

Geometry geometry(int64_t q_len, int64_t kv_len, const PngOptions& o) {
  Geometry g;
  const int64_t longest = std::max(q_len, kv_len);
  g.f = ceil_div(longest, o.max_side);
  if (g.f == 1) g.cell = std::clamp(ceil_div(o.min_side, longest), int64_t{1}, o.max_side / longest);
  g.blocks_h = ceil_div(q_len, g.f);
  g.blocks_w = ceil_div(kv_len, g.f);
  return g;
}

void validate(const BoundPattern& p, const PngOptions& o) {
  check(p.q_len() >= 1 && p.kv_len() >= 1, [&] {
    return fmt::format("png: cannot draw an empty pattern (q_len={}, kv_len={})", p.q_len(), p.kv_len());
  });
  check(o.max_side >= 1 && o.max_side <= kMaxPngSide,
        [&] { return fmt::format("png: max_side ({}) must be in [1, {}]", o.max_side, kMaxPngSide); });
  check(o.min_side >= 1, [&] { return fmt::format("png: min_side ({}) must be >= 1", o.min_side); });
  check(o.tile >= 0 && o.tile <= kMaxSeqLen,
        [&] { return fmt::format("png: tile ({}) must be in [0, {}]", o.tile, kMaxSeqLen); });
  check(!o.tile_classes || o.tile > 0, [] { return std::string("png: tile_classes needs a tile size > 0"); });
}

// Counts, for one row of blocks, how many pairs of some set fall in each block.
class BlockRowCounter {
 public:
  BlockRowCounter(int64_t blocks, int64_t f)
      : f_(f), edge_(static_cast<size_t>(blocks), 0), inner_(static_cast<size_t>(blocks) + 1, 0),
        counts_(static_cast<size_t>(blocks), 0) {}

  // Adds keys [begin, end) of `weight` rows. The two end blocks may be cut; the blocks
  // strictly between are covered whole (f keys each) and go through the difference array.
  void add(int64_t begin, int64_t end, int64_t weight) {
    if (begin >= end) return;
    const int64_t first = begin / f_, last = (end - 1) / f_;
    if (first == last) {
      edge_[static_cast<size_t>(first)] += (end - begin) * weight;
      return;
    }
    edge_[static_cast<size_t>(first)] += ((first + 1) * f_ - begin) * weight;
    edge_[static_cast<size_t>(last)] += (end - last * f_) * weight;
    inner_[static_cast<size_t>(first) + 1] += f_ * weight;
    inner_[static_cast<size_t>(last)] -= f_ * weight;
  }

  // The per-block counts of everything added since the last call; resets the counter.
  std::span<const int64_t> take() {
    int64_t running = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      running += inner_[i];
      counts_[i] = edge_[i] + running;
    }
    std::fill(edge_.begin(), edge_.end(), 0);
    std::fill(inner_.begin(), inner_.end(), 0);
    return counts_;
  }

 private:
  int64_t f_;
  std::vector<int64_t> edge_, inner_, counts_;
};

// The weighted average of colours, weights summing to `total`, rounded to nearest.
template <size_t N>
Rgb mix(const std::array<std::pair<int64_t, Rgb>, N>& parts, int64_t total) {
  int64_t r = 0, g = 0, b = 0;
  for (const auto& [w, c] : parts) {
    assert(w >= 0);
    r += w * c.r, g += w * c.g, b += w * c.b;
  }
  auto channel = [&](int64_t v) { return static_cast<uint8_t>((v + total / 2) / total); };
  return {channel(r), channel(g), channel(b)};
}

class Canvas {
 public:
  Canvas(int64_t width, int64_t height)
      : width_(width), height_(height), rgb_(static_cast<size_t>(width * height * 3), 0) {}
  void fill(int64_t x0, int64_t y0, int64_t w, int64_t h, Rgb c) {
    for (int64_t y = y0; y < y0 + h; ++y)
      for (int64_t x = x0; x < x0 + w; ++x) {
        uint8_t* px = &rgb_[static_cast<size_t>((y * width_ + x) * 3)];
        px[0] = c.r, px[1] = c.g, px[2] = c.b;
      }
  }
  // Lines at pixel offsets `step * i / per` (i = 0, 1, ...) on both axes, plus the last
  // row and column so the lines also frame the picture.
  void grid(int64_t step, int64_t per, Rgb c) {
    for (int64_t i = 0; step * i / per < width_; ++i) fill(step * i / per, 0, 1, height_, c);
    for (int64_t i = 0; step * i / per < height_; ++i) fill(0, step * i / per, width_, 1, c);
    fill(width_ - 1, 0, 1, height_, c);
    fill(0, height_ - 1, width_, 1, c);
  }
  // Through an AtomicFile: libpng writes the temporary file, which is renamed over `path`
  // only when complete, so a failed write leaves `path` as it was.
  void write(AtomicFile& out) const {
    png_image image;
    std::memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = static_cast<png_uint_32>(width_);
    image.height = static_cast<png_uint_32>(height_);
    image.format = PNG_FORMAT_RGB;
    if (!png_image_write_to_stdio(&image, out.stream(), 0, rgb_.data(), 0, nullptr))
      throw Error(fmt::format("png ({}): cannot write: {}", printable(out.target(), 240), image.message));
    out.commit();
  }

 private:
  int64_t width_, height_;
  std::vector<uint8_t> rgb_;
};

}  // namespace

std::string render_ascii(const BoundPattern& p) {
  check(p.q_len() <= kMaxAsciiSide && p.kv_len() <= kMaxAsciiSide, [&] { return too_large_for_ascii(p); });
  std::string out;
  out.reserve(static_cast<size_t>(p.q_len() * (p.kv_len() + 1)));
  std::vector<KeyInterval> iv;
  for (int64_t q = 0; q < p.q_len(); ++q) {
    std::string row(static_cast<size_t>(p.kv_len()), '.');
    p.keys(q, iv);
    for (const KeyInterval& i : iv) std::fill(row.begin() + i.begin, row.begin() + i.end, '#');
    out += row;
    out += '\n';
  }
  return out;
}

PngInfo write_pattern_png(const BoundPattern& p, const std::string& path, const PngOptions& o) {
  validate(p, o);
  // Created before the drawing so that an unusable path fails before the work.
  AtomicFile out(path, fmt::format("png ({})", printable(path, 240)));
  const int64_t q_len = p.q_len(), kv_len = p.kv_len();
  const Geometry g = geometry(q_len, kv_len, o);
  Canvas canvas(g.width(), g.height());

  TileList tiles;
  if (o.tile_classes) tiles = p.tiles(o.tile, o.tile);
  BlockRowCounter allowed(g.blocks_w, g.f), full(g.blocks_w, g.f), partial(g.blocks_w, g.f);
  std::vector<KeyInterval> iv;
  for (int64_t by = 0; by < g.blocks_h; ++by) {
    const int64_t q0 = by * g.f, q1 = std::min(q_len, q0 + g.f);
    for (int64_t q = q0; q < q1; ++q) {
      p.keys(q, iv);
      for (const KeyInterval& i : iv) allowed.add(i.begin, i.end, 1);
    }
    if (o.tile_classes) {
      // Each query tile overlapping these rows adds its tiles, weighted by the rows shared.
      for (int64_t qt = q0 / o.tile; qt * o.tile < q1; ++qt) {
        const int64_t rows = std::min(q1, (qt + 1) * o.tile) - std::max(q0, qt * o.tile);
        for (const TileRef& t : tiles.row(qt))
          (t.cls == TileClass::Full ? full : partial)
              .add(t.kv_tile * o.tile, std::min(kv_len, (t.kv_tile + 1) * o.tile), rows);
      }
    }
    const std::span<const int64_t> n_allowed = allowed.take();
    const std::span<const int64_t> n_full = full.take(), n_partial = partial.take();
    for (int64_t bx = 0; bx < g.blocks_w; ++bx) {
      const size_t i = static_cast<size_t>(bx);
      const int64_t total = (q1 - q0) * (std::min(kv_len, (bx + 1) * g.f) - bx * g.f);
      Rgb c;
      if (o.tile_classes) {
        // Full tiles hold allowed pairs only, so the allowed pairs of Partial tiles are the
        // rest of the allowed count; what Partial tiles hold beyond that is masked work.
        const int64_t partial_allowed = n_allowed[i] - n_full[i];
        c = mix(std::array{std::pair{n_full[i], o.full_tile}, std::pair{partial_allowed, o.partial_allowed},
                           std::pair{n_partial[i] - partial_allowed, o.partial_masked},
                           std::pair{total - n_full[i] - n_partial[i], o.background}},
                total);
      } else {
        c = mix(std::array{std::pair{n_allowed[i], o.allowed}, std::pair{total - n_allowed[i], o.background}}, total);
      }
      canvas.fill(bx * g.cell, by * g.cell, g.cell, g.cell, c);
    }
  }

  if (o.pair_grid && g.cell >= kMinGridPixels) canvas.grid(g.cell, 1, o.pair_grid_color);
  if (o.tile > 0 && o.tile * g.cell >= kMinGridPixels * g.f) canvas.grid(o.tile * g.cell, g.f, o.tile_grid_color);
  canvas.write(out);
  return {g.width(), g.height(), g.f, g.cell};
}

}  // namespace attnkit
