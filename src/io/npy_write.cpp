// .npy writer (format 1.0, numpy's header layout), through an AtomicFile so a failed write
// leaves the target as it was. Kept apart from the reader (npy.cpp), which the fuzz target
// builds on its own. Not for: reading, or formats other than .npy.
#include <cassert>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"
#include "attnkit/npy.hpp"

namespace attnkit {

namespace {

constexpr size_t kQuotedPathBytes = 240;

// numpy's own layout: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
// space padded and ending in '\n' so that the data starts at a multiple of 64 bytes (which
// lets readers memory-map it aligned).
std::string npy_v1_preamble_and_header(std::string_view descr, const TensorView& t) {
  const std::vector<int64_t> shape = t.shape();
  const std::string shape_tuple =
      shape.size() == 1 ? fmt::format("({},)", shape[0]) : fmt::format("({})", fmt::join(shape, ", "));
  std::string dict = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", descr, shape_tuple);
  constexpr size_t kPreambleV1 = 10;
  const size_t unpadded = kPreambleV1 + dict.size() + 1;
  dict.append((unpadded + 63) / 64 * 64 - unpadded, ' ');
  dict.push_back('\n');
  assert(dict.size() <= 0xFFFF);  // rank <= 4 keeps the dict far below version 1's limit
  std::string out("\x93NUMPY", 6);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(dict.size() & 0xFF));
  out.push_back(static_cast<char>(dict.size() >> 8));
  return out + dict;
}

// Gathers `t` in logical C order into `out` as `file_dtype` (bf16 widened to f32).
void write_data(AtomicFile& out, const TensorView& t, DType file_dtype) {
  const size_t in_size = dtype_size(t.dtype());
  const auto* base = static_cast<const unsigned char*>(t.data());
  if (t.is_contiguous() && file_dtype == t.dtype()) {
    out.write(base, static_cast<size_t>(t.numel()) * in_size);
    return;
  }
  // Through a bounded buffer: one write per element would be slow, and a whole-tensor copy
  // would double peak memory for large views.
  constexpr size_t kChunk = size_t{1} << 16;
  std::vector<unsigned char> buf;
  buf.reserve(kChunk + 8);
  // Dimensions past the rank have size 1 (TensorView pads them), so four loops cover 1..4.
  for (int64_t i0 = 0; i0 < t.size(0); ++i0)
    for (int64_t i1 = 0; i1 < t.size(1); ++i1)
      for (int64_t i2 = 0; i2 < t.size(2); ++i2)
        for (int64_t i3 = 0; i3 < t.size(3); ++i3) {
          const unsigned char* src = base + t.offset(i0, i1, i2, i3) * static_cast<int64_t>(in_size);
          if (t.dtype() == DType::bf16) {
            uint16_t b;
            std::memcpy(&b, src, sizeof b);
            const float x = bf16_to_float(b);
            const auto* xb = reinterpret_cast<const unsigned char*>(&x);
            buf.insert(buf.end(), xb, xb + sizeof x);
          } else {
            buf.insert(buf.end(), src, src + in_size);
          }
          if (buf.size() >= kChunk) {
            out.write(buf.data(), buf.size());
            buf.clear();
          }
        }
  out.write(buf.data(), buf.size());
}

// A view write_npy can write, checked before any file is created.
void check_view(const TensorView& t, std::string_view label) {
  if (t.rank() < 1 || t.rank() > kMaxRank)
    throw Error(fmt::format("{}: tensor rank {} is outside [1, {}]", label, t.rank(), kMaxRank));
  if (t.data() == nullptr && t.numel() != 0)
    throw Error(fmt::format("{}: view of shape {} has no data", label, t.shape_string()));
}

void write_array(AtomicFile& out, const TensorView& t) {
  // bf16 has no numpy dtype; every bf16 value is exactly an f32 value, so f32 loses nothing.
  const DType file_dtype = t.dtype() == DType::bf16 ? DType::f32 : t.dtype();
  const std::string_view descr = file_dtype == DType::f16 ? "<f2" : file_dtype == DType::f32 ? "<f4" : "<f8";
  out.write(npy_v1_preamble_and_header(descr, t));
  write_data(out, t, file_dtype);
}

}  // namespace

void write_npy(AtomicFile& out, const TensorView& t) {
  check_view(t, fmt::format("write_npy ({})", printable(out.target(), kQuotedPathBytes)));
  write_array(out, t);
}

void write_npy(const std::string& path, const TensorView& t, std::string_view arg_name) {
  const std::string shown = printable(path, kQuotedPathBytes);
  const std::string label = fmt::format("{} ({})", arg_name.empty() ? "write_npy" : arg_name, shown);
  check_view(t, label);
  AtomicFile out(path, label);
  write_array(out, t);
  out.commit();
}

}  // namespace attnkit
