// libFuzzer target for the llama2.c checkpoint reader (src/model/llama2c.cpp): any bytes
// are an Error or a model that writes back to the same bytes (the RoPE tables aside).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "attnkit/error.hpp"
#include "model/llama2c.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const attnkit::model::Model m = attnkit::model::parse_llama2c(bytes, "fuzz");
    if (attnkit::model::llama2c_bytes(m).size() != size) std::abort();
  } catch (const attnkit::Error&) {
  }
  return 0;
}
