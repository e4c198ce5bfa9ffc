// `attnkit pattern`: draws which (query, key) pairs a pattern allows (ASCII, PNG) and reports
// how much of full attention's work it leaves: allowed pairs, FLOP saving, and with --tile
// the Full / Partial / Empty tiles a tiled kernel would see. Not for: running attention.
#include <algorithm>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "attnkit/error.hpp"
#include "attnkit/flops.hpp"
#include "attnkit/pattern.hpp"
#include "attnkit/pattern_image.hpp"
#include "attnkit/shape.hpp"
#include "command.hpp"

namespace attnkit::cli {
namespace {

// ASCII is shown without being asked up to this size: 64 characters still fit a terminal.
constexpr int64_t kAutoAsciiSide = 64;
// tiles() keeps one entry per visited tile; more than this many tiles means a --tile far
// too small for the length (e.g. --tile 1 at n = 65536), not a useful picture.
constexpr int64_t kMaxTiles = int64_t{1} << 22;

struct Args {
  std::string pattern;
  int64_t n = 0, kv_n = 0;
  std::string png;
  bool ascii = false, json = false;
  int64_t tile = 0, tiles = 0;
  int64_t size = PngOptions{}.max_side;
  CLI::Option *kv_n_opt = nullptr, *ascii_opt = nullptr, *tile_opt = nullptr, *tiles_opt = nullptr;
};

void check_length(int64_t v, const char* flag) {
  check(v >= 1 && v <= kMaxSeqLen, [&] { return fmt::format("{} ({}) must be in [1, {}]", flag, v, kMaxSeqLen); });
}

struct TileCounts {
  int64_t block = 0, q_tiles = 0, kv_tiles = 0, full = 0, partial = 0;
  int64_t total() const { return q_tiles * kv_tiles; }
  int64_t empty() const { return total() - full - partial; }
  double visited_fraction() const { return double(full + partial) / double(total()); }
};

TileCounts count_tiles(const BoundPattern& b, int64_t block, const char* flag) {
  check(block >= 1 && block <= kMaxSeqLen,
        [&] { return fmt::format("{} ({}) must be in [1, {}]", flag, block, kMaxSeqLen); });
  TileCounts c;
  c.block = block;
  c.q_tiles = (b.q_len() + block - 1) / block;
  c.kv_tiles = (b.kv_len() + block - 1) / block;
  check(c.q_tiles <= kMaxTiles / c.kv_tiles, [&] {
    return fmt::format("{} {} splits {} x {} into {} x {} tiles; at most {} are counted (use a larger tile)", flag,
                       block, b.q_len(), b.kv_len(), c.q_tiles, c.kv_tiles, kMaxTiles);
  });
  const TileList list = b.tiles(block, block);
  c.full = list.count(TileClass::Full);
  c.partial = list.count(TileClass::Partial);
  return c;
}

int run(Args& a) {
  check_length(a.n, "--n");
  if (a.kv_n_opt->count() == 0) a.kv_n = a.n;
  check_length(a.kv_n, "--kv-n");
  check(a.size >= 16 && a.size <= kMaxPngSide,
        [&] { return fmt::format("--size ({}) must be in [16, {}] pixels", a.size, kMaxPngSide); });
  const bool tile_classes = a.tiles_opt->count() > 0;
  const int64_t block = tile_classes ? a.tiles : a.tile;
  const char* tile_flag = tile_classes ? "--tiles" : "--tile";
  const bool have_tiles = tile_classes || a.tile_opt->count() > 0;

  const BoundPattern b = Pattern::parse(a.pattern).bind(a.n, a.kv_n);
  // Everything that can fail runs before anything is printed.
  TileCounts tiles;
  if (have_tiles) tiles = count_tiles(b, block, tile_flag);
  const bool show_ascii = a.ascii_opt->count() > 0 || (!a.json && a.png.empty() && std::max(a.n, a.kv_n) <= kAutoAsciiSide);
  const std::string ascii = show_ascii ? render_ascii(b) : std::string();
  PngInfo png;
  if (!a.png.empty()) {
    PngOptions o;
    o.max_side = a.size;
    o.tile = have_tiles ? block : 0;
    o.tile_classes = tile_classes;
    png = write_pattern_png(b, a.png, o);
  }
  // d = 64 is nominal: the saving dense / allowed does not depend on the head dimension.
  AttnShape shape;
  shape.q_len = a.n, shape.kv_len = a.kv_n, shape.d_qk = 64, shape.d_v = 64;
  const AttnWork work = count_work(shape, b);
  const bool any_pairs = work.pairs > 0;
  const double saving = any_pairs ? work.dense_flops / work.flops : 0.0;

  if (a.json) {
    nlohmann::json j = {{"pattern", b.pattern().to_string()},
                        {"q_len", b.q_len()},
                        {"kv_len", b.kv_len()},
                        {"allowed_pairs", work.pairs},
                        {"dense_pairs", work.dense_pairs},
                        {"visited_fraction", work.visited_fraction()},
                        {"flop_saving", any_pairs ? nlohmann::json(saving) : nlohmann::json(nullptr)}};
    if (have_tiles)
      j["tiles"] = {{"block", tiles.block},     {"q_tiles", tiles.q_tiles}, {"kv_tiles", tiles.kv_tiles},
                    {"full", tiles.full},       {"partial", tiles.partial}, {"empty", tiles.empty()},
                    {"visited_fraction", tiles.visited_fraction()}};
    if (!a.png.empty())
      j["png"] = {{"path", a.png},
                  {"width", png.width},
                  {"height", png.height},
                  {"pairs_per_pixel", png.pairs_per_pixel},
                  {"pixels_per_pair", png.pixels_per_pair}};
    if (show_ascii) j["ascii"] = ascii;
    fmt::print("{}\n", j.dump(2));
    return 0;
  }

  fmt::print("pattern   {}\n", b.pattern().to_string());
  fmt::print("size      {} x {} (q_len x kv_len)\n", b.q_len(), b.kv_len());
  fmt::print("allowed   {} of {} pairs ({:.4g}% visited)\n", work.pairs, work.dense_pairs,
             100.0 * work.visited_fraction());
  if (any_pairs)
    fmt::print("saving    {:.3g}x fewer FLOPs than full attention\n", saving);
  else
    fmt::print("saving    none: no pair is allowed\n");
  if (have_tiles)
    fmt::print("tiles     {}x{}: {} full, {} partial, {} empty of {} ({:.4g}% visited)\n", block, block, tiles.full,
               tiles.partial, tiles.empty(), tiles.total(), 100.0 * tiles.visited_fraction());
  if (!a.png.empty()) {
    const std::string scale = png.pairs_per_pixel > 1 ? fmt::format("{}x{} pairs per pixel", png.pairs_per_pixel,
                                                                    png.pairs_per_pixel)
                                                      : fmt::format("{} px per pair", png.pixels_per_pair);
    fmt::print("png       {} ({} x {} px, {})\n", a.png, png.width, png.height, scale);
  }
  if (show_ascii) fmt::print("\nqueries top to bottom, keys left to right; # allowed, . not allowed\n{}", ascii);
  return 0;
}

auto setup(CLI::App& sub) {
  auto a = std::make_shared<Args>();
  sub.add_option("--pattern,-p", a->pattern, "pattern string, e.g. causal, window:128,0, longformer:w=4,global=0 "
                                             "(see docs/patterns.md)")
      ->required();
  sub.add_option("--n,-n", a->n, "query length (and key length unless --kv-n)")->required();
  a->kv_n_opt = sub.add_option("--kv-n", a->kv_n, "key length (default: --n); causal alignment is bottom-right");
  sub.add_option("--png", a->png, "write the picture to this PNG file");
  a->ascii_opt = sub.add_flag("--ascii", a->ascii, "print the ASCII picture (default when n <= 64 and no --png)");
  a->tile_opt = sub.add_option("--tile", a->tile, "count B x B tiles (Full/Partial/Empty); grid lines in the PNG");
  a->tiles_opt = sub.add_option("--tiles", a->tiles, "like --tile, and shade the PNG by tile class");
  a->tile_opt->excludes(a->tiles_opt);
  sub.add_option("--size", a->size, "largest PNG side in pixels; longer patterns are downsampled")
      ->default_val(a->size);
  sub.add_flag("--json", a->json, "print the numbers as JSON");
  return [a] { return run(*a); };
}

ATTNKIT_COMMAND("pattern", "draw which (query, key) pairs a pattern allows (ASCII, PNG) and count its work", setup);

}  // namespace
}  // namespace attnkit::cli
