// safetensors reader and writer for f32 tensors (safetensors.hpp).
#include "attnkit/safetensors.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"

namespace attnkit {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

constexpr uint64_t kMaxHeaderBytes = 100 << 20;  // the format's own limit
constexpr uint64_t kMaxFileBytes = uint64_t{64} << 30;
constexpr size_t kMaxRank = 8;

}  // namespace

std::string safetensors_bytes(const SafeTensorsFile& file) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t at = 0;
  for (const auto& entry : file.tensors) {
    const std::string& name = entry.first;
    const SafeTensor& t = entry.second;
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    check(n == static_cast<int64_t>(t.data.size()),
          [&] { return fmt::format("safetensors: tensor {} has {} values for its shape", printable(name), t.data.size()); });
    const uint64_t bytes = t.data.size() * sizeof(float);
    header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {at, at + bytes}}};
    at += bytes;
  }
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';  // data starts 8-byte aligned
  std::string out(8, '\0');
  const uint64_t len = text.size();
  std::memcpy(out.data(), &len, 8);
  out += text;
  out.reserve(out.size() + at);
  for (const auto& [name, t] : file.tensors)
    out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  return out;
}

SafeTensorsFile parse_safetensors(std::string_view bytes, std::string_view label) {
  const std::string where = printable(label);
  check(bytes.size() >= 8, [&] { return fmt::format("{}: too short for a safetensors header ({} bytes)", where, bytes.size()); });
  uint64_t len = 0;
  std::memcpy(&len, bytes.data(), 8);
  check(len <= kMaxHeaderBytes && len <= bytes.size() - 8, [&] {
    return fmt::format("{}: header length {} exceeds the file ({} bytes) or the format's 100 MiB", where, len, bytes.size());
  });
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.substr(8, len));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: header is not valid JSON ({})", where, printable(e.what())));
  }
  check(header.is_object(), [&] { return fmt::format("{}: header must be a JSON object", where); });
  const std::string_view data = bytes.substr(8 + len);
  SafeTensorsFile file;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [name, entry] : header.items()) {
    const std::string what = fmt::format("{}: tensor \"{}\"", where, printable(name));
    if (name == "__metadata__") {
      check(entry.is_object(), [&] { return fmt::format("{}: __metadata__ must be an object", where); });
      for (const auto& item : entry.items()) {
        check(item.value().is_string(),
              [&] { return fmt::format("{}: __metadata__.{} must be a string", where, printable(item.key())); });
        file.metadata[item.key()] = item.value().get<std::string>();
      }
      continue;
    }
    check(entry.is_object() && entry.contains("dtype") && entry.contains("shape") && entry.contains("data_offsets"),
          [&] { return fmt::format("{} needs dtype, shape and data_offsets", what); });
    check(entry["dtype"] == "F32", [&] { return fmt::format("{}: dtype must be F32", what); });
    const auto& shape = entry["shape"];
    check(shape.is_array() && shape.size() <= kMaxRank, [&] { return fmt::format("{}: shape must be a list of at most {} sizes", what, kMaxRank); });
    SafeTensor t;
    uint64_t n = 1;
    for (const auto& d : shape) {
      check(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
            [&] { return fmt::format("{}: shape entries must be non-negative integers", what); });
      const uint64_t v = d.get<uint64_t>();
      check(v == 0 || n <= kMaxFileBytes / v, [&] { return fmt::format("{}: shape is too large", what); });
      n *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    const auto& off = entry["data_offsets"];
    check(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
          [&] { return fmt::format("{}: data_offsets must be two non-negative integers", what); });
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    check(begin <= end && end <= data.size() && end - begin == n * sizeof(float), [&] {
      return fmt::format("{}: data_offsets [{}, {}) must hold its {} values inside the {} data bytes", what, begin, end,
                         n, data.size());
    });
    t.data.resize(n);
    if (n > 0) std::memcpy(t.data.data(), data.data() + begin, n * sizeof(float));
    spans.emplace_back(begin, end);
    file.tensors[name] = std::move(t);
  }
  std::sort(spans.begin(), spans.end());
  uint64_t at = 0;
  for (const auto& span : spans) {
    check(span.first == at,
          [&] { return fmt::format("{}: tensor data must be contiguous and not overlap (at byte {})", where, span.first); });
    at = span.second;
  }
  check(at == data.size(), [&] { return fmt::format("{}: {} data bytes after the last tensor", where, data.size() - at); });
  return file;
}

SafeTensorsFile read_safetensors(const std::string& path) {
  return parse_safetensors(read_whole_file(path, kMaxFileBytes), path);
}

void write_safetensors(const std::string& path, const SafeTensorsFile& file) {
  write_file_atomically(path, safetensors_bytes(file), path);
}

}  // namespace attnkit
