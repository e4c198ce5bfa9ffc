// attnkit/pattern_image.hpp — pictures of a bound pattern: which (query, key) pairs it
// allows, drawn like the figures of the Longformer and BigBird papers. Query rows run top to
// bottom, keys left to right, so causal patterns are lower-left triangles.
//
//   render_ascii       one text line per query row, one character per key:
//                      '#' = allowed, '.' = not allowed. Small sizes only (kMaxAsciiSide).
//   write_pattern_png  an RGB PNG of any size. Up to PngOptions::max_side pairs per side,
//                      each pair is a square of `cell` pixels (small n are scaled up to be
//                      readable); beyond it, each pixel covers a square block of pairs and
//                      its shade is the exact fraction of allowed pairs in the block,
//                      computed from keys() intervals (cost ~ intervals + pixels, never
//                      q_len x kv_len), so a 65536 x 65536 causal pattern draws in ~0.05 s.
//                      With tile_classes, the picture shows what a tiled kernel visits:
//                      Full tiles, Partial tiles (allowed and masked pairs) and Empty tiles.
//
// Not for: plots of measurements (scripts/ does those with matplotlib), or reading images.
#pragma once

#include <cstdint>
#include <string>

#include "attnkit/pattern.hpp"

namespace attnkit {

// render_ascii refuses patterns larger than this on either side: a wider line does not fit a
// terminal and the PNG says the same thing better.
constexpr int64_t kMaxAsciiSide = 256;

// q_len lines of kv_len characters, each ending in '\n': '#' allowed, '.' not allowed.
// Throws Error when q_len or kv_len exceeds kMaxAsciiSide.
std::string render_ascii(const BoundPattern& pattern);

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

struct PngOptions {
  // Largest image side in pixels; a pattern longer than this on either side is downsampled
  // by the smallest integer factor that fits. In [1, kMaxPngSide].
  int64_t max_side = 1024;
  // Small patterns are scaled up by an integer cell size until the longer side reaches at
  // least this many pixels, as far as max_side allows. >= 1.
  int64_t min_side = 256;
  // > 0: grid lines at the boundaries of tile x tile blocks, drawn when a tile is at least
  // kMinGridPixels wide in the picture; also the tile size of tile_classes.
  int64_t tile = 0;
  // Shade by what a kernel with tile x tile blocks visits (BoundPattern::tiles): Full tiles
  // `full_tile`, allowed pairs in Partial tiles `partial_allowed`, masked pairs in Partial
  // tiles `partial_masked`, Empty tiles `background`. Needs tile > 0.
  bool tile_classes = false;
  // Thin lines between pairs when a pair is at least kMinGridPixels wide, like the papers'
  // figures; they also frame the picture.
  bool pair_grid = true;

  // A pixel covering a fraction f of allowed pairs is background + f * (allowed - background),
  // rounded to nearest, so shades are monotone in f.
  Rgb background{255, 255, 255};
  Rgb allowed{31, 78, 156};
  Rgb full_tile{31, 78, 156};
  Rgb partial_allowed{230, 120, 30};
  Rgb partial_masked{252, 214, 170};
  Rgb pair_grid_color{214, 214, 214};
  Rgb tile_grid_color{110, 110, 110};
};

constexpr int64_t kMaxPngSide = 8192;  // 8192^2 RGB is 192 MiB of pixels
// Grid lines need this many pixels per cell, or they would cover the picture.
constexpr int64_t kMinGridPixels = 4;

// What write_pattern_png drew: the image size and its scale. At most one of
// pairs_per_pixel and pixels_per_pair is above 1, unless the picture is 1:1.
struct PngInfo {
  int64_t width = 0, height = 0;
  int64_t pairs_per_pixel = 1;  // side of the block of pairs one pixel covers
  int64_t pixels_per_pair = 1;  // side of the square of pixels one pair covers
};

// Writes the picture of `pattern` (q_len, kv_len >= 1) to `path` as an 8-bit RGB PNG,
// beside `path` and renamed over it (attnkit/atomic_file.hpp): a failed write leaves `path`
// as it was, and a `path` that exists but is not a regular file is refused before drawing.
// Throws Error for bad options (naming the field), an empty pattern, or a file that cannot
// be written (naming the path). With tile_classes it also costs one BoundPattern::tiles().
PngInfo write_pattern_png(const BoundPattern& pattern, const std::string& path, const PngOptions& options = {});

}  // namespace attnkit
