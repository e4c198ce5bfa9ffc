// libFuzzer target for the safetensors parser (src/io/safetensors.cpp), built like
// npy_fuzz. attnkit::Error is the documented answer to a bad file; any other exception, a
// sanitizer report, a crash, or a parsed file that does not survive a write and re-read
// unchanged is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "attnkit/error.hpp"
#include "attnkit/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attnkit::SafeTensorsFile f;
  try {
    f = attnkit::parse_safetensors(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const attnkit::Error&) {
    return 0;
  }
  size_t bytes = 0;
  for (const auto& [name, t] : f.tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    if (n != static_cast<int64_t>(t.data.size())) std::abort();
    bytes += t.data.size() * sizeof(float);
  }
  if (bytes > size) std::abort();
  const attnkit::SafeTensorsFile back = attnkit::parse_safetensors(attnkit::safetensors_bytes(f), "again");
  if (back.tensors.size() != f.tensors.size() || back.metadata != f.metadata) std::abort();
  return 0;
}
