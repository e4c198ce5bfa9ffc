// Tests for pattern pictures: hand-written ASCII, PNGs read back with libpng (size, the
// colour of allowed and disallowed pairs, downsampled shades equal to the exact allowed
// fraction of their block, tile classes, grid lines), and `attnkit pattern` run as a
// process (exit code 2 with a message for bad input, JSON numbers equal to the library's).
#include "attnkit/pattern_image.hpp"

#include <png.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cli_runner.hpp"
#include <nlohmann/json.hpp>

#include "attnkit/error.hpp"

namespace attnkit {
namespace {

namespace fs = std::filesystem;

// A scratch directory per test, removed afterwards.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            (std::string("attnkit_pic_") + std::to_string(getpid()) + "_" + info->test_suite_name() + "_" + info->name());
    fs::create_directories(path_);
  }
  ~ScratchDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

struct Image {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
  Rgb at(int64_t x, int64_t y) const {
    const uint8_t* p = &rgb[static_cast<size_t>((y * width + x) * 3)];
    return {p[0], p[1], p[2]};
  }
};

Image read_png(const std::string& path) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  EXPECT_TRUE(png_image_begin_read_from_file(&image, path.c_str())) << path << ": " << image.message;
  image.format = PNG_FORMAT_RGB;
  Image out;
  out.width = image.width;
  out.height = image.height;
  out.rgb.resize(PNG_IMAGE_SIZE(image));
  EXPECT_TRUE(png_image_finish_read(&image, nullptr, out.rgb.data(), 0, nullptr)) << image.message;
  return out;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected attnkit::Error";
  return "";
}

// The expected shade of a block with `allowed` of `total` pairs allowed.
double expected_channel(uint8_t background, uint8_t allowed, int64_t n_allowed, int64_t total) {
  return background + double(n_allowed) / double(total) * (double(allowed) - double(background));
}

TEST(PatternAscii, CausalIsALowerTriangle) {
  EXPECT_EQ(render_ascii(Pattern::causal().bind(4, 4)),
            "#...\n"
            "##..\n"
            "###.\n"
            "####\n");
}

TEST(PatternAscii, SymmetricWindowIsABand) {
  EXPECT_EQ(render_ascii(Pattern::parse("window:1,1").bind(5, 5)),
            "##...\n"
            "###..\n"
            ".###.\n"
            "..###\n"
            "...##\n");
}

TEST(PatternAscii, CausalIsBottomRightAlignedWhenKeysOutnumberQueries) {
  EXPECT_EQ(render_ascii(Pattern::causal().bind(2, 4)),
            "###.\n"
            "####\n");
}

TEST(PatternAscii, RefusesLargeSizesNamingTheLimit) {
  EXPECT_EQ(render_ascii(Pattern::none().bind(kMaxAsciiSide, 1)).size(), size_t(kMaxAsciiSide * 2));
  const std::string msg = message_of([] { render_ascii(Pattern::none().bind(4, kMaxAsciiSide + 1)); });
  EXPECT_NE(msg.find("256"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--png"), std::string::npos) << msg;
}

// Small patterns are scaled up; the centre pixel of every pair has exactly the allowed or
// the background colour.
TEST(PatternPng, SmallPatternsShowEveryPair) {
  ScratchDir dir;
  const PngOptions o;
  for (const char* text : {"causal", "longformer:w=2,d=3,global=1", "bigbird:block=3,window=3,global=1,random=2,seed=7",
                           "strided:stride=4", "fixed:stride=5,c=2"}) {
    SCOPED_TRACE(text);
    const BoundPattern b = Pattern::parse(text).bind(19, 23);
    const std::string path = dir.file("small.png");
    const PngInfo info = write_pattern_png(b, path, o);
    EXPECT_EQ(info.pixels_per_pair, 12);  // ceil(256 / 23)
    EXPECT_EQ(info.pairs_per_pixel, 1);
    const Image img = read_png(path);
    ASSERT_EQ(img.width, 23 * 12);
    ASSERT_EQ(img.height, 19 * 12);
    EXPECT_EQ(info.width, img.width);
    EXPECT_EQ(info.height, img.height);
    for (int64_t q = 0; q < 19; ++q)
      for (int64_t k = 0; k < 23; ++k)
        ASSERT_EQ(img.at(k * 12 + 6, q * 12 + 6), b.allow(q, k) ? o.allowed : o.background) << "q=" << q << " k=" << k;
  }
}

TEST(PatternPng, CausalCornersAreDarkAndLight) {
  ScratchDir dir;
  const std::string path = dir.file("causal.png");
  write_pattern_png(Pattern::causal().bind(4, 4), path);
  const Image img = read_png(path);
  ASSERT_EQ(img.width, 256);
  ASSERT_EQ(img.height, 256);
  const Rgb dark = img.at(32, 224), light = img.at(224, 32);  // (q=3, k=0) and (q=0, k=3)
  EXPECT_LT(dark.r + dark.g + dark.b, 300);
  EXPECT_EQ(light, (Rgb{255, 255, 255}));
}

// Downsampled: every pixel is the exact allowed fraction of its block (odd sizes, so edge
// blocks are cut), and darker pixels always mean larger fractions.
TEST(PatternPng, DownsampledShadesAreTheExactAllowedFraction) {
  ScratchDir dir;
  PngOptions o;
  o.max_side = 90;
  const int64_t nq = 997, nk = 1003, f = 12;  // ceil(1003 / 90)
  for (const char* text : {"causal", "window:40,7", "longformer:w=20,d=3,global=0+500", "strided:stride=37",
                           "bigbird:block=7,window=3,global=1,random=3,seed=2"}) {
    SCOPED_TRACE(text);
    const BoundPattern b = Pattern::parse(text).bind(nq, nk);
    const std::string path = dir.file("down.png");
    const PngInfo info = write_pattern_png(b, path, o);
    EXPECT_EQ(info.pairs_per_pixel, f);
    const Image img = read_png(path);
    ASSERT_EQ(img.width, (nk + f - 1) / f);
    ASSERT_EQ(img.height, (nq + f - 1) / f);
    std::vector<std::pair<double, int>> shade;  // (allowed fraction, r + g + b)
    for (int64_t y = 0; y < img.height; ++y) {
      for (int64_t x = 0; x < img.width; ++x) {
        int64_t allowed = 0, total = 0;
        for (int64_t q = y * f; q < std::min(nq, (y + 1) * f); ++q)
          for (int64_t k = x * f; k < std::min(nk, (x + 1) * f); ++k, ++total) allowed += b.allow(q, k);
        const Rgb c = img.at(x, y);
        ASSERT_NEAR(c.r, expected_channel(o.background.r, o.allowed.r, allowed, total), 0.51) << x << "," << y;
        ASSERT_NEAR(c.g, expected_channel(o.background.g, o.allowed.g, allowed, total), 0.51) << x << "," << y;
        ASSERT_NEAR(c.b, expected_channel(o.background.b, o.allowed.b, allowed, total), 0.51) << x << "," << y;
        shade.emplace_back(double(allowed) / double(total), c.r + c.g + c.b);
      }
    }
    std::sort(shade.begin(), shade.end());
    for (size_t i = 1; i < shade.size(); ++i)
      ASSERT_LE(shade[i].second, shade[i - 1].second) << "fraction " << shade[i].first << " is lighter than "
                                                      << shade[i - 1].first;
  }
}

TEST(PatternPng, LargePatternsFitTheMaximumSide) {
  ScratchDir dir;
  const std::string path = dir.file("big.png");
  const PngInfo info = write_pattern_png(Pattern::causal().bind(65536, 65536), path);
  EXPECT_EQ(info.width, 1024);
  EXPECT_EQ(info.pairs_per_pixel, 64);
  const Image img = read_png(path);
  EXPECT_EQ(img.width, 1024);
  EXPECT_EQ(img.height, 1024);
  EXPECT_EQ(img.at(10, 1000), (PngOptions{}.allowed));
  EXPECT_EQ(img.at(1000, 10), (PngOptions{}.background));
}

TEST(PatternPng, TileClassesShowWhatAKernelVisits) {
  ScratchDir dir;
  PngOptions o;
  o.min_side = 1;  // one pixel per pair, so pixel (x, y) is pair (q = y, k = x)
  o.tile = 16;
  o.tile_classes = true;
  const std::string path = dir.file("tiles.png");
  write_pattern_png(Pattern::causal().bind(64, 64), path, o);
  const Image img = read_png(path);
  ASSERT_EQ(img.width, 64);
  EXPECT_EQ(img.at(20, 40), o.full_tile);        // tile (2, 1): every pair allowed
  EXPECT_EQ(img.at(40, 20), o.background);       // tile (1, 2): none
  EXPECT_EQ(img.at(36, 40), o.partial_allowed);  // diagonal tile, below the diagonal
  EXPECT_EQ(img.at(40, 36), o.partial_masked);   // diagonal tile, above it
  EXPECT_EQ(img.at(16, 40), o.tile_grid_color);  // a tile boundary
}

TEST(PatternPng, GridLinesFollowPairsAndTiles) {
  ScratchDir dir;
  PngOptions o;
  o.tile = 4;
  const std::string path = dir.file("grid.png");
  EXPECT_EQ(write_pattern_png(Pattern::none().bind(8, 8), path, o).pixels_per_pair, 32);
  const Image img = read_png(path);
  EXPECT_EQ(img.at(32, 5), o.pair_grid_color);
  EXPECT_EQ(img.at(128, 5), o.tile_grid_color);
  EXPECT_EQ(img.at(255, 5), o.tile_grid_color);  // the frame
  EXPECT_EQ(img.at(50, 50), o.allowed);
  o.pair_grid = false;
  o.tile = 0;
  write_pattern_png(Pattern::none().bind(8, 8), path, o);
  EXPECT_EQ(read_png(path).at(32, 5), o.allowed);
}

TEST(PatternPng, BadOptionsAndUnwritablePathsAreErrors) {
  const BoundPattern b = Pattern::causal().bind(8, 8);
  const std::string path = "/nonexistent-attnkit-dir/x.png";
  EXPECT_NE(message_of([&] { write_pattern_png(b, path); }).find(path), std::string::npos);
  PngOptions o;
  o.tile_classes = true;
  EXPECT_NE(message_of([&] { write_pattern_png(b, "x.png", o); }).find("tile"), std::string::npos);
  o = {};
  o.max_side = 0;
  EXPECT_NE(message_of([&] { write_pattern_png(b, "x.png", o); }).find("max_side"), std::string::npos);
  EXPECT_NE(message_of([&] { write_pattern_png(Pattern::causal().bind(0, 4), "x.png"); }).find("empty"),
            std::string::npos);
}

using CliRun = testing::CliResult;

CliRun run_cli(const std::string& args) { return testing::run_cli("pattern " + args); }

TEST(PatternCli, BadInputExitsWithTwoAndSaysWhy) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--pattern bogus --n 8", "unknown pattern kind 'bogus'"},
      {"--pattern window:1,2,3 --n 8", "window takes L,R or W"},
      {"--pattern causal --n 0", "--n: 0 is out of range: must be in [1, 2147483648]"},
      {"--pattern causal --n -3", "--n: -3 is out of range"},
      {"--pattern causal --n 4294967296", "--n: 4294967296 is out of range"},
      {"--pattern causal --n 9223372036854775808", "--n: 9223372036854775808 is out of range"},
      {"--pattern causal --n 8 --kv-n 0", "--kv-n: 0 is out of range"},
      {"--pattern causal --n 8 --tile 0", "--tile: 0 is out of range"},
      {"--pattern causal --n 65536 --tile 1", "use a larger tile"},
      {"--pattern causal --n 300 --ascii", "limited to 256 x 256"},
      {"--pattern causal --n 8 --png /nonexistent-attnkit-dir/x.png", "/nonexistent-attnkit-dir/x.png"},
      {"--pattern causal --n 8 --size 4", "--size: 4 is out of range: must be in [16, 8192]"},
      {"--pattern longformer:w=2,global=9 --n 8", "global position 9"},
      {"--pattern causal --n 8 --tile 2 --tiles 2", "excludes"},
      {"--pattern causal --n eight", "--n: 'eight' is not an integer"},
  };
  for (const auto& [args, expected] : cases) {
    const CliRun r = run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << args << "\n" << r.output;
  }
}

TEST(PatternCli, JsonMatchesTheLibrary) {
  ScratchDir dir;
  const std::string text = "longformer:w=3,d=2,global=0+5";
  const std::string png = dir.file("cli.png");
  const CliRun r = run_cli("--pattern " + text + " --n 100 --kv-n 120 --tile 16 --json --png " + png);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);
  const BoundPattern b = Pattern::parse(text).bind(100, 120);
  const TileList tiles = b.tiles(16, 16);
  EXPECT_EQ(j["pattern"], b.pattern().to_string());
  EXPECT_EQ(j["q_len"], 100);
  EXPECT_EQ(j["kv_len"], 120);
  EXPECT_EQ(j["allowed_pairs"], b.visited_pairs());
  EXPECT_EQ(j["dense_pairs"], 100 * 120);
  EXPECT_DOUBLE_EQ(j["visited_fraction"].get<double>(), double(b.visited_pairs()) / 12000.0);
  EXPECT_DOUBLE_EQ(j["flop_saving"].get<double>(), 12000.0 / double(b.visited_pairs()));
  EXPECT_EQ(j["tiles"]["q_tiles"], 7);
  EXPECT_EQ(j["tiles"]["kv_tiles"], 8);
  EXPECT_EQ(j["tiles"]["full"], tiles.count(TileClass::Full));
  EXPECT_EQ(j["tiles"]["partial"], tiles.count(TileClass::Partial));
  EXPECT_EQ(j["tiles"]["empty"], 56 - static_cast<int64_t>(tiles.entries.size()));
  EXPECT_FALSE(j.contains("ascii"));
  const Image img = read_png(png);
  EXPECT_EQ(j["png"]["width"], img.width);
  EXPECT_EQ(j["png"]["height"], img.height);
}

TEST(PatternCli, SmallSizesPrintTheAsciiPicture) {
  const CliRun r = run_cli("--pattern causal --n 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("allowed   10 of 16 pairs"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1.6x fewer FLOPs"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("#...\n##..\n###.\n####\n"), std::string::npos) << r.output;
  EXPECT_EQ(run_cli("--pattern causal --n 65").output.find("#."), std::string::npos);
}

}  // namespace
}  // namespace attnkit
