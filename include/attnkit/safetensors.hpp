// safetensors files of f32 tensors (the format of Hugging Face's safetensors: an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, and an
// optional "__metadata__" of strings}, then the raw data). The reader treats the file as
// hostile: the header length, every shape and every offset are checked against the file's
// size before anything is allocated, tensors may not overlap or leave gaps, and only F32 is
// accepted. Not for: other dtypes, memory-mapping.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace attnkit {

struct SafeTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

struct SafeTensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Bytes of a whole file: header and data (names sorted, data in that order).
std::string safetensors_bytes(const SafeTensorsFile& file);
// Parses bytes; `label` names the source in errors. Throws Error.
SafeTensorsFile parse_safetensors(std::string_view bytes, std::string_view label);

// Reads a file (at most 64 GiB) / writes one whole or not at all (atomic_file.hpp).
SafeTensorsFile read_safetensors(const std::string& path);
void write_safetensors(const std::string& path, const SafeTensorsFile& file);

}  // namespace attnkit
