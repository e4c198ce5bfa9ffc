// libFuzzer target for the model config parser (src/model/config.cpp): any text is either
// an Error or a config that validates, serialises and parses back to the same JSON.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "attnkit/error.hpp"
#include "model/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attnkit::model::ModelConfig c;
  try {
    c = attnkit::model::parse_config(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const attnkit::Error&) {
    return 0;
  }
  const std::string text = attnkit::model::config_to_json(c);
  if (attnkit::model::config_to_json(attnkit::model::parse_config(text)) != text) std::abort();
  return 0;
}
