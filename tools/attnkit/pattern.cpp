// `attnkit pattern`: draws which (query, key) pairs a pattern allows (ASCII, PNG) and reports
// how much of full attention's work it leaves: allowed pairs, FLOP saving, and with --tile
// the Full / Partial / Empty tiles a tiled kernel would see. Every walk over the rows is
// bounded before it starts (kMaxPatternSteps). Not for: running attention.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"
#include "attnkit/flops.hpp"
#include "attnkit/pattern.hpp"
#include "attnkit/pattern_image.hpp"
#include "attnkit/shape.hpp"
#include "command.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

// ASCII is shown without being asked up to this size: 64 characters still fit a terminal.
constexpr int64_t kAutoAsciiSide = 64;
// tiles() keeps one entry per visited tile; more than this many tiles means a --tile far
// too small for the length (e.g. --tile 1 at n = 65536), not a useful picture.
constexpr int64_t kMaxTiles = int64_t{1} << 22;

// Each walk over the rows (counting pairs, drawing, classifying tiles, BigBird's random
// blocks) is refused beyond this many steps. A step is a row counted in O(1) (5-10 ns
// measured) and a key interval from keys() two steps (10-20 ns: it is built, sorted and
// visited), so a walk at the limit takes 10-20 s on a quiet or a busy 2-core machine, and
// counting an analytic pattern (causal, window) stays within it at the largest length, 2^31.
constexpr double kMaxPatternSteps = double(int64_t{1} << 31);
constexpr double kStepsPerInterval = 2;

struct Args {
  std::string pattern;
  int64_t n = 0, kv_n = 0;
  std::string png;
  bool ascii = false;
  JsonOutput json;
  int64_t tile = 0, tiles = 0;
  int64_t size = PngOptions{}.max_side;
  CLI::Option *kv_n_opt = nullptr, *ascii_opt = nullptr, *tile_opt = nullptr, *tiles_opt = nullptr;
};

// Upper bounds on the work of the walks over a pattern's rows, from its description alone
// (before bind(), which is itself one of the walks for BigBird). A kind not named here is
// analytic (a row is one or two intervals); a new kind with many intervals per row must be
// added, or `pattern` will under-estimate it.
struct PatternCost {
  bool count_keys = false;  // visited_pairs() walks keys(), not an O(1) row_pairs()
  double keys_per_row = 2;  // keys(q) intervals: the PNG and the tile classes walk these
  double bind_steps = 0, bind_bytes = 0;
  bool analytic_tiles = true;  // tile rows built in O(tiles), not from keys()
  std::string hint;            // what makes the pattern cheaper
};

PatternCost pattern_cost(const Pattern& p, int64_t kv_len) {
  PatternCost c;
  const auto kv = double(kv_len);
  switch (p.kind()) {
    case Pattern::Kind::longformer: {
      const LongformerSpec& s = p.longformer_spec();
      const double window = s.dilation == 1 ? 1.0
                                            : std::min(double(s.window) * (s.causal ? 1 : 2) + 1,
                                                       kv / double(s.dilation) + 1);
      c.keys_per_row = window + double(s.global.size());
      c.count_keys = true;
      c.analytic_tiles = false;
      c.hint = s.dilation == 1 ? "fewer global tokens" : "a smaller w or d = 1, or fewer global tokens";
      break;
    }
    case Pattern::Kind::bigbird: {
      const BigBirdSpec& s = p.bigbird_spec();
      const double blocks = std::ceil(kv / double(s.block));
      const double random = std::min(double(s.random), blocks);
      c.keys_per_row = 3 + random;
      c.count_keys = true;
      c.bind_steps = blocks * (std::min(blocks, 2 * random + double(s.global) + double(s.window)) + random);
      c.bind_bytes = blocks * (56 + 8 * random);  // one vector of random blocks per block row
      c.analytic_tiles = false;
      c.hint = "a larger block or fewer random blocks";
      break;
    }
    case Pattern::Kind::strided:
    case Pattern::Kind::fixed:
      c.keys_per_row = 1 + kv / double(p.stride());  // count_keys() is O(1); keys() is not
      c.analytic_tiles = false;
      c.hint = "a larger stride";
      break;
    case Pattern::Kind::block_mask:
      c.keys_per_row = double(p.block_mask_spec().cols);
      c.count_keys = true;
      c.analytic_tiles = false;
      c.hint = "larger blocks (bq, bk)";
      break;
    case Pattern::Kind::predicate:
      c.keys_per_row = kv;
      c.count_keys = true;
      c.analytic_tiles = false;
      break;
    default:
      break;
  }
  return c;
}

// Refuses, before any of it starts, a request whose walks would exceed kMaxPatternSteps
// (or whose BigBird blocks would not fit in a quarter of memory).
// block > 0: the tiles are classified (--tile, --tiles).
void check_pattern_work(const Pattern& p, const Args& a, int64_t block) {
  const PatternCost c = pattern_cost(p, a.kv_n);
  const auto rows = double(a.n);
  const double kv_tiles = block > 0 ? std::ceil(double(a.kv_n) / double(block)) : 0;
  // A walk through keys(): every row's intervals, built and visited.
  auto keys_walk = [&](double per_row) { return rows * (1 + kStepsPerInterval * per_row); };
  const double tile_steps = c.analytic_tiles ? std::ceil(rows / std::max<double>(1, double(block))) * kv_tiles
                                             : keys_walk(c.keys_per_row + kv_tiles);
  // `per_row` > 0: key intervals per row, said in the message; 0: the walk is not per row.
  auto refuse_over = [&](const char* walk, double steps, double per_row) {
    if (steps <= kMaxPatternSteps) return;
    const std::string size =
        per_row > 0 ? fmt::format(" ({} rows x {:.3g} key intervals each)", a.n, per_row) : std::string();
    throw Error(fmt::format("pattern: {} of {} at {} x {} would take about {:.3g} steps{}; the limit is {} steps "
                            "(10-20 s): use a smaller --n / --kv-n{}",
                            walk, p.to_string(), a.n, a.kv_n, steps, size, static_cast<int64_t>(kMaxPatternSteps),
                            c.hint.empty() ? "" : ", or " + c.hint));
  };
  const double ram = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
  check(c.bind_bytes <= ram / 4, [&] {
    return fmt::format("pattern: {} at {} x {} needs about {:.1f} GiB for its random blocks; this machine has {:.1f} "
                       "GiB of memory: use a smaller --kv-n, or {}",
                       p.to_string(), a.n, a.kv_n, c.bind_bytes / double(1 << 30), ram / double(1 << 30), c.hint);
  });
  refuse_over("choosing the random blocks", c.bind_steps, 0);
  refuse_over("counting the allowed pairs", c.count_keys ? keys_walk(c.keys_per_row) : rows,
              c.count_keys ? c.keys_per_row : 0);
  if (!a.png.empty()) refuse_over("drawing the PNG", keys_walk(c.keys_per_row), c.keys_per_row);
  if (block > 0) refuse_over("classifying the tiles", tile_steps, c.analytic_tiles ? 0 : c.keys_per_row + kv_tiles);
}

struct TileCounts {
  int64_t block = 0, q_tiles = 0, kv_tiles = 0, full = 0, partial = 0;
  int64_t total() const { return q_tiles * kv_tiles; }
  int64_t empty() const { return total() - full - partial; }
  double visited_fraction() const { return double(full + partial) / double(total()); }
};

// block is in [1, kMaxSeqLen] and the tile count within kMaxTiles (checked by run()).
TileCounts count_tiles(const BoundPattern& b, int64_t block) {
  TileCounts c;
  c.block = block;
  c.q_tiles = (b.q_len() + block - 1) / block;
  c.kv_tiles = (b.kv_len() + block - 1) / block;
  const TileList list = b.tiles(block, block);
  c.full = list.count(TileClass::Full);
  c.partial = list.count(TileClass::Partial);
  return c;
}

int run(Args& a) {
  // Every option, the outputs and the work are checked before anything runs or prints.
  if (a.kv_n_opt->count() == 0) a.kv_n = a.n;
  const bool tile_classes = a.tiles_opt->count() > 0;
  const int64_t block = tile_classes ? a.tiles : a.tile;
  const char* tile_flag = tile_classes ? "--tiles" : "--tile";
  const bool have_tiles = tile_classes || a.tile_opt->count() > 0;
  const Pattern pattern = parse_option("--pattern", a.pattern, [](const std::string& t) { return Pattern::parse(t); });
  if (have_tiles) {
    const int64_t q_tiles = (a.n + block - 1) / block, kv_tiles = (a.kv_n + block - 1) / block;
    check(q_tiles <= kMaxTiles / kv_tiles, [&] {
      return fmt::format("{} {} splits {} x {} into {} x {} tiles; at most {} are counted (use a larger tile)",
                         tile_flag, block, a.n, a.kv_n, q_tiles, kv_tiles, kMaxTiles);
    });
  }
  check_pattern_work(pattern, a, have_tiles ? block : 0);
  const bool show_ascii =
      a.ascii_opt->count() > 0 || (!a.json.to_stdout() && a.png.empty() && std::max(a.n, a.kv_n) <= kAutoAsciiSide);
  check(!show_ascii || std::max(a.n, a.kv_n) <= kMaxAsciiSide, [&] {
    return fmt::format("--ascii: the pattern is {} x {}; the ASCII picture is limited to {} x {} (use --png FILE)",
                       a.n, a.kv_n, kMaxAsciiSide, kMaxAsciiSide);
  });
  const std::vector<OutputPath> outputs = {{a.png, "--png"}, {a.json.target(), "--json", true}};
  check_outputs(outputs);

  const BoundPattern b = pattern.bind(a.n, a.kv_n);
  TileCounts tiles;
  if (have_tiles) tiles = count_tiles(b, block);
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

  if (a.json.given()) {
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
    write_json(a.json, j);
    if (a.json.to_stdout()) return 0;
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
    fmt::print("png       {} ({} x {} px, {})\n", printable(a.png, 240), png.width, png.height, scale);
  }
  if (show_ascii) fmt::print("\nqueries top to bottom, keys left to right; # allowed, . not allowed\n{}", ascii);
  return 0;
}

auto setup(CLI::App& sub) {
  auto a = std::make_shared<Args>();
  sub.add_option("--pattern,-p", a->pattern, "pattern string, e.g. causal, window:128,0, longformer:w=4,global=0 "
                                             "(see docs/patterns.md)")
      ->required();
  add_int(sub, "--n,-n", a->n, "query length (and key length unless --kv-n)", 1, kMaxSeqLen)->required();
  a->kv_n_opt = add_int(sub, "--kv-n", a->kv_n, "key length (default: --n); causal alignment is bottom-right", 1,
                        kMaxSeqLen);
  sub.add_option("--png", a->png, "write the picture to this PNG file (written whole, then renamed into place)");
  a->ascii_opt = sub.add_flag("--ascii", a->ascii, "print the ASCII picture (default when n <= 64 and no --png)");
  a->tile_opt = add_int(sub, "--tile", a->tile, "count B x B tiles (Full/Partial/Empty); grid lines in the PNG", 1,
                        kMaxSeqLen);
  a->tiles_opt = add_int(sub, "--tiles", a->tiles, "like --tile, and shade the PNG by tile class", 1, kMaxSeqLen);
  a->tile_opt->excludes(a->tiles_opt);
  add_int(sub, "--size", a->size, "largest PNG side in pixels; longer patterns are downsampled", 16, kMaxPngSide)
      ->default_val(a->size);
  add_json(sub, a->json, "the numbers");
  sub.footer(fmt::format("Work is bounded: each walk over the rows (counting, drawing, tile classes) is refused "
                         "beyond {} steps (a row, or half a key interval; 10-20 s), with a message saying what to change.\n\n{}",
                         static_cast<int64_t>(kMaxPatternSteps), causal_alignment_note()));
  return [a] { return run(*a); };
}

ATTNKIT_COMMAND("pattern", "draw which (query, key) pairs a pattern allows (ASCII, PNG) and count its work", setup);

}  // namespace
}  // namespace attnkit::cli
