// attnkit/npy.hpp — read and write NumPy .npy files (one array per file).
// The reader treats every file as hostile: each malformed, truncated or unsupported input
// is an attnkit::Error naming the argument, never a crash or an unchecked allocation.
// Not for: .npz archives, memory mapping, structured/integer/complex dtypes, big-endian
// data or Fortran order (all rejected with a clear message). docs/io.md has the details.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "attnkit/atomic_file.hpp"
#include "attnkit/tensor.hpp"

namespace attnkit {

// Largest header (the Python dict text) accepted. numpy itself refuses headers above
// 10 000 bytes by default; the larger cap admits hand-written files while bounding the work
// and memory a hostile length field can demand.
constexpr size_t kMaxNpyHeaderBytes = size_t{1} << 20;

// Reads a .npy file: format 1.0, 2.0 or 3.0; descr '<f2', '<f4', '<f8' (also with the
// '=' or '|' byte-order marks, which mean little-endian on the hosts attnkit supports);
// fortran_order False; rank 1..4. Returns a contiguous f16/f32/f64 Tensor with the file's
// shape. The data must end exactly at the end of the file: trailing bytes are an error.
// Errors name `arg_name` and `path`, e.g. "--q (q.npy): truncated data: ...".
Tensor read_npy(const std::string& path, std::string_view arg_name);

// The same, for a .npy image already in memory (size bytes at `bytes`); errors name
// `arg_name`. read_npy and the fuzz target share this parser's checks.
Tensor parse_npy(const void* bytes, size_t size, std::string_view arg_name);

// Writes `t` as a version 1.0 .npy file in logical C order (any strides, including
// transposed or sliced views); the header is padded so the data starts at a multiple of
// 64 bytes. f16, f32 and f64 keep their type; bf16 has no numpy dtype and is written as
// '<f4' (exactly, since every bf16 value is an f32 value). The file is written beside
// `path` and renamed over it (attnkit/atomic_file.hpp): on any failure `path` is left as
// it was, and a `path` that exists but is not a regular file is refused. Throws Error
// starting with `arg_name` and the path (e.g. "--out (o.npy): ..."), or "write_npy (PATH)".
void write_npy(const std::string& path, const TensorView& t, std::string_view arg_name = {});

// The same array written into an open AtomicFile; the caller commits, so a command with
// several outputs can write all of them before renaming any into place.
void write_npy(AtomicFile& out, const TensorView& t);

}  // namespace attnkit
