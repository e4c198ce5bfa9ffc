// Tests for the .npy reader and writer: round trips of every dtype, rank and stride
// pattern; hand-built version 1/2/3 files; and hostile inputs, each of which must be an
// attnkit::Error whose message names the argument and the broken constraint.
#include "attnkit/npy.hpp"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

namespace attnkit {
namespace {

namespace fs = std::filesystem;

// A .npy image: magic, version major.0, header length (2 bytes for version 1, else 4),
// the header text exactly as given, then `data`.
std::string npy_image(int major, std::string_view header, std::string_view data = {}) {
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  const size_t len_bytes = major == 1 ? 2 : 4;
  for (size_t i = 0; i < len_bytes; ++i) out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
  out.append(header);
  out.append(data);
  return out;
}

template <class T>
std::string raw_bytes(std::initializer_list<T> values) {
  std::string out(values.size() * sizeof(T), '\0');
  std::memcpy(out.data(), values.begin(), out.size());
  return out;
}

// Runs f, which must throw attnkit::Error, and returns the message.
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected attnkit::Error";
  return {};
}

// parse_npy must reject `bytes` with a message naming the argument and containing `needle`.
void expect_rejected(const std::string& bytes, std::string_view needle) {
  const std::string msg = error_message([&] { parse_npy(bytes.data(), bytes.size(), "--q"); });
  EXPECT_NE(msg.find("--q"), std::string::npos) << msg;
  EXPECT_NE(msg.find(needle), std::string::npos) << "expected '" << needle << "' in: " << msg;
}

// Header and 4 bytes of f32 data for a file that is valid except for what a test changes.
std::string f32_image(std::string_view shape, std::string_view data) {
  return npy_image(1, fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}\n", shape), data);
}

class NpyFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / fmt::format("attnkit_npy_{}_{}", getpid(), info->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(std::string_view name) const { return (dir_ / name).string(); }
  static std::string slurp(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  static void spit(const std::string& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  fs::path dir_;
};

// Distinct, exactly representable in f16 (multiples of 1/4 below 512).
double sample(int64_t i) { return static_cast<double>((i * 37) % 1000 - 500) / 4.0; }

TEST_F(NpyFiles, RoundTripsEveryDtypeAndRank) {
  const std::vector<std::vector<int64_t>> shapes = {{7}, {3, 5}, {2, 3, 5}, {2, 1, 3, 4}};
  for (DType dtype : {DType::f32, DType::f64, DType::f16}) {
    for (const auto& shape : shapes) {
      SCOPED_TRACE(fmt::format("{} {}", dtype_name(dtype), fmt::join(shape, "x")));
      Tensor t(dtype, shape);
      for (int64_t i = 0; i < t.numel(); ++i) t.mut().store(i, sample(i));
      write_npy(path("t.npy"), t.view());
      const Tensor back = read_npy(path("t.npy"), "--t");
      EXPECT_EQ(back.dtype(), dtype);
      EXPECT_EQ(back.shape(), shape);
      ASSERT_EQ(back.nbytes(), t.nbytes());
      EXPECT_EQ(std::memcmp(back.data(), t.data(), t.nbytes()), 0);
    }
  }
}

TEST_F(NpyFiles, WritesNumpysVersion1LayoutPaddedTo64Bytes) {
  Tensor t(DType::f32, {2, 3});
  write_npy(path("t.npy"), t.view());
  const std::string bytes = slurp(path("t.npy"));
  ASSERT_EQ(bytes.size(), 128u + 24u);  // 10-byte preamble + dict padded to 118 bytes + data
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);
  const std::string header = bytes.substr(10, header_len);
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u) << header;
  EXPECT_EQ(header.back(), '\n');

  Tensor v(DType::f64, {5});
  write_npy(path("v.npy"), v.view());
  EXPECT_NE(slurp(path("v.npy")).find("'shape': (5,), }"), std::string::npos);
}

TEST_F(NpyFiles, Bf16IsWrittenAsExactF32) {
  Tensor t(DType::bf16, {2, 3});
  for (int64_t i = 0; i < t.numel(); ++i) t.mut().store(i, sample(i) * 1.0078125);
  write_npy(path("b.npy"), t.view());
  const Tensor back = read_npy(path("b.npy"), "--b");
  ASSERT_EQ(back.dtype(), DType::f32);
  EXPECT_EQ(back.shape(), t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(back.view().load(i), t.view().load(i)) << i;
}

TEST_F(NpyFiles, StridedViewsAreWrittenInLogicalCOrder) {
  for (DType dtype : {DType::f32, DType::f64, DType::f16, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    Tensor mem(dtype, {2, 3, 4});  // [A, B, C]
    for (int64_t i = 0; i < mem.numel(); ++i) mem.mut().store(i, sample(i));
    const TensorView transposed(mem.data(), dtype, {4, 3, 2}, {1, 4, 12});  // [C, B, A]
    const TensorView every_other(mem.data(), dtype, {2, 3, 2}, {12, 4, 2});  // [A, B, C/2]
    const TensorView reversed(static_cast<const char*>(mem.data()) + 11 * dtype_size(dtype), dtype, {3, 4},
                              {-4, -1});  // rows and columns of mem[0] backwards
    for (const TensorView& v : {transposed, every_other, reversed}) {
      write_npy(path("s.npy"), v);
      const Tensor back = read_npy(path("s.npy"), "--s");
      ASSERT_EQ(back.shape(), v.shape());
      const TensorView b = back.view();
      for (int64_t i0 = 0; i0 < v.size(0); ++i0)
        for (int64_t i1 = 0; i1 < v.size(1); ++i1)
          for (int64_t i2 = 0; i2 < v.size(2); ++i2)
            for (int64_t i3 = 0; i3 < v.size(3); ++i3)
              EXPECT_EQ(b.get(i0, i1, i2, i3), v.get(i0, i1, i2, i3));
    }
  }
}

TEST_F(NpyFiles, EmptyDimensionRoundTrips) {
  Tensor t(DType::f32, {0, 3});
  write_npy(path("e.npy"), t.view());
  const Tensor back = read_npy(path("e.npy"), "--e");
  EXPECT_EQ(back.shape(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(back.nbytes(), 0u);
}

TEST(NpyParse, ReadsHandBuiltVersion1And2And3) {
  const std::string data = raw_bytes<float>({1.5f, -2.0f, 0.25f, 8.0f});
  const std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }          \n";
  for (int major : {1, 2, 3}) {
    SCOPED_TRACE(major);
    const std::string image = npy_image(major, header, data);
    const Tensor t = parse_npy(image.data(), image.size(), "--q");
    EXPECT_EQ(t.dtype(), DType::f32);
    EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(t.view().get(0, 0), 1.5);
    EXPECT_EQ(t.view().get(0, 1), -2.0);
    EXPECT_EQ(t.view().get(1, 0), 0.25);
    EXPECT_EQ(t.view().get(1, 1), 8.0);
  }
}

TEST(NpyParse, AcceptsEveryHeaderSpellingNumpyCouldWrite) {
  const std::string f8 = raw_bytes<double>({1, 2, 3, 4, 5, 6});
  const std::string f2 = raw_bytes<uint16_t>({0x3C00, 0xC000, 0x3800, 0x0000, 0x7BFF, 0x3C00});
  struct Case {
    std::string header, data;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Case> cases = {
      {"{'shape': (3, 2), 'fortran_order': False, 'descr': '<f8'}", f8, DType::f64, {3, 2}},
      {"{\"descr\": \"=f8\", \"fortran_order\": False, \"shape\": (6,)}", f8, DType::f64, {6}},
      {"\n{ 'descr' :'|f2' ,\t'fortran_order':False,'shape':( 2 , 3 , ) , }  \n", f2, DType::f16, {2, 3}},
      {"{'descr': '<f2', 'fortran_order': False, 'shape': (1L, 2L, 3L), }\n", f2, DType::f16, {1, 2, 3}},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1, 6), }\n", f8, DType::f64, {1, 1, 1, 6}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }\n", "", DType::f32, {0, 5}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-0,), }\n", "", DType::f32, {0}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.header);
    const std::string image = npy_image(1, c.header, c.data);
    const Tensor t = parse_npy(image.data(), image.size(), "--q");
    EXPECT_EQ(t.dtype(), c.dtype);
    EXPECT_EQ(t.shape(), c.shape);
    ASSERT_EQ(t.nbytes(), c.data.size());
    if (!c.data.empty()) {
      EXPECT_EQ(std::memcmp(t.data(), c.data.data(), c.data.size()), 0);
    }
  }
}

TEST(NpyHostile, PreambleErrors) {
  expect_rejected("", "empty file");
  expect_rejected("\x93NUM", "shorter than the magic");
  expect_rejected(std::string("\x93NUMPZ\x01\x00\x10\x00", 10), "magic");
  expect_rejected("PK\x03\x04 this is a zip", "magic");
  expect_rejected(std::string("\x93NUMPY\x01", 7), "truncated .npy preamble");
  expect_rejected(std::string("\x93NUMPY\x02\x00\x05\x00", 10), "truncated .npy preamble");
  const std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n";
  for (const char* version : {"\x04\x00", "\x01\x01", "\x00\x00", "\xff\xff"}) {
    std::string image = npy_image(1, header, raw_bytes<float>({1}));
    image.replace(6, 2, version, 2);
    expect_rejected(image, "unsupported .npy format version");
  }
  expect_rejected(npy_image(4, header), "version 4.0");
}

TEST(NpyHostile, HeaderLengthErrors) {
  std::string past_eof = f32_image("(1,)", raw_bytes<float>({1}));
  past_eof[8] = '\xff';
  past_eof[9] = '\x00';
  expect_rejected(past_eof, "runs past the end of the file");
  std::string huge = npy_image(2, "{}");
  huge.replace(8, 4, "\xf0\xff\xff\xff", 4);
  expect_rejected(huge, "exceeds the limit");
}

TEST(NpyHostile, HeaderSyntaxAndKeyErrors) {
  const std::string d = raw_bytes<float>({1});
  auto image = [&](std::string_view header) { return npy_image(1, header, d); };
  expect_rejected(image("{'descr': '<f4', 'fortran_order': False}"), "missing the key 'shape'");
  expect_rejected(image("{'descr': '<f4', 'shape': (1,)}"), "missing the key 'fortran_order'");
  expect_rejected(image("{'fortran_order': False, 'shape': (1,)}"), "missing the key 'descr'");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}"), "unexpected key 'x'");
  expect_rejected(image("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}"),
                  "duplicate key 'descr'");
  expect_rejected(image("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}"), "structured");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}"), "True or False");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': Falsey, 'shape': (1,)}"), "True or False");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': False, 'shape': (1)}"), "not a tuple");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': False, 'shape': [1]}"), "not a list");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,)}"), "not a plain integer");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': False, 'shape': (0x1,)}"), "not a plain integer");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': False, 'shape': (,)}"), "expected an integer");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x"), "after the closing");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)"), "expected ',' or '}'");
  expect_rejected(image("{'descr': '<f4\\x', 'fortran_order': False, 'shape': (1,)}"), "escape");
  expect_rejected(image("{'descr: '<f4', 'fortran_order': False, 'shape': (1,)}"), "expected ':'");
  expect_rejected(image("{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}"), "expected ','");
  expect_rejected(image("{'descr': '<f4', 'fortran_order': False, 'shape': (1,"), "expected an integer");
  expect_rejected(image("{'d\xc3\xa9scr': '<f4'}"), "unexpected key 'd\\xc3\\xa9scr'");
  expect_rejected(image("[1, 2]"), "expected '{'");
  expect_rejected(image("      \n"), "expected '{'");
  expect_rejected(image(""), "expected '{'");
}

TEST(NpyHostile, UnsupportedDtypeOrLayout) {
  const std::string d = raw_bytes<float>({1});
  auto with_descr = [&](std::string_view descr) {
    return npy_image(1, fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': (1,), }}", descr), d);
  };
  expect_rejected(with_descr("<i4"), "unsupported .npy dtype '<i4'");
  expect_rejected(with_descr("<f16"), "unsupported .npy dtype '<f16'");
  expect_rejected(with_descr("<c8"), "unsupported .npy dtype");
  expect_rejected(with_descr("float32"), "unsupported .npy dtype");
  expect_rejected(with_descr("<V2"), "unsupported .npy dtype");
  expect_rejected(with_descr(""), "unsupported .npy dtype");
  expect_rejected(with_descr(">f4"), "big-endian dtype '>f4'");
  expect_rejected(with_descr(">f8"), "big-endian");
  expect_rejected(npy_image(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", d),
                  "fortran_order is True");
}

TEST(NpyHostile, ShapeErrors) {
  expect_rejected(f32_image("(1099511627776, 1099511627776)", ""), "overflows");
  expect_rejected(f32_image("(99999999999999999999,)", ""), "does not fit in a signed 64-bit integer");
  expect_rejected(f32_image("(9223372036854775807, 2)", ""), "overflows");
  expect_rejected(f32_image("(0, 1099511627776, 1099511627776)", ""), "overflows the addressable byte count");
  expect_rejected(f32_image("(2, -3)", raw_bytes<float>({1, 2, 3, 4, 5, 6})), "dimension 1 is negative (-3)");
  expect_rejected(f32_image("()", raw_bytes<float>({1})), "rank-0");
  expect_rejected(f32_image("(1, 1, 1, 1, 1)", raw_bytes<float>({1})), "shape (1, 1, 1, 1, 1) has rank 5");
}

TEST(NpyHostile, DataSizeErrors) {
  const std::string msg = error_message([] {
    const std::string image = f32_image("(4, 8, 16, 64)", std::string(1000, '\0'));
    parse_npy(image.data(), image.size(), "--q");
  });
  EXPECT_NE(msg.find("--q: truncated data: header says (4, 8, 16, 64) f32 = 131072 bytes, but only 1000 bytes"),
            std::string::npos)
      << msg;
  // An absurd but non-overflowing shape must fail on the size check, not on allocation.
  expect_rejected(f32_image("(1073741824, 1073741824)", ""), "truncated data");
  expect_rejected(f32_image("(3,)", raw_bytes<float>({1, 2})), "truncated data");
  expect_rejected(f32_image("(1,)", raw_bytes<float>({1, 2})),
                  "4 unexpected bytes after the data (header says (1,) f32 = 4 bytes)");
}

TEST_F(NpyFiles, ReadErrorsNameTheArgumentAndPath) {
  auto expect_read_error = [&](const std::string& p, std::string_view needle) {
    const std::string msg = error_message([&] { read_npy(p, "--k"); });
    EXPECT_NE(msg.find(fmt::format("--k ({})", p)), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "expected '" << needle << "' in: " << msg;
  };
  expect_read_error(path("missing.npy"), "cannot open");
  expect_read_error(dir_.string(), "not a regular file");
  // A named pipe with no writer must be refused at once, not block the reader.
  ASSERT_EQ(mkfifo(path("pipe.npy").c_str(), 0600), 0);
  expect_read_error(path("pipe.npy"), "not a regular file");
  spit(path("empty.npy"), "");
  expect_read_error(path("empty.npy"), "empty file");

  Tensor t(DType::f32, {4, 8});
  write_npy(path("t.npy"), t.view());
  fs::resize_file(path("t.npy"), fs::file_size(path("t.npy")) - 5);
  expect_read_error(path("t.npy"), "truncated data: header says (4, 8) f32 = 128 bytes, but only 123 bytes");

  std::string long_header = f32_image("(1,)", raw_bytes<float>({1}));
  long_header[8] = '\xff';
  spit(path("h.npy"), long_header);
  expect_read_error(path("h.npy"), "runs past the end of the file");
  spit(path("r5.npy"), f32_image("(1, 1, 1, 1, 1)", raw_bytes<float>({1})));
  expect_read_error(path("r5.npy"), "rank 5");
}

TEST_F(NpyFiles, WriteErrorsNameThePath) {
  Tensor t(DType::f32, {2});
  const std::string bad = path("no/such/dir/t.npy");
  const std::string msg = error_message([&] { write_npy(bad, t.view()); });
  EXPECT_NE(msg.find(bad), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  EXPECT_THROW(write_npy(path("rank0.npy"), TensorView()), Error);
  EXPECT_FALSE(fs::exists(path("rank0.npy")));
}

}  // namespace
}  // namespace attnkit
