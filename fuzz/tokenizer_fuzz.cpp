// libFuzzer target for llama2.c's tokenizer.bin reader (src/model/tokenizer.cpp): any bytes
// are an Error or a tokenizer that writes back to the same bytes and whose encode agrees
// with run.c's literal loop on a text made of the input's own bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "attnkit/error.hpp"
#include "model/tokenizer.hpp"
#include "ref/tokenizer_ref.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const attnkit::model::Tokenizer t = attnkit::model::parse_tokenizer(bytes, -1, "fuzz");
    if (attnkit::model::tokenizer_bytes(t) != bytes) std::abort();
    const std::string_view text = bytes.substr(bytes.size() - std::min<size_t>(bytes.size(), 48));
    try {
      const auto ids = t.encode(text, true, false);
      if (ids != attnkit::ref::tokenizer_encode(t, text, true, false)) std::abort();
      for (const int32_t id : ids)
        if (id < 0 || id >= t.vocab()) std::abort();
      (void)t.decode(ids);
    } catch (const attnkit::Error&) {
      // a byte without a piece
    }
  } catch (const attnkit::Error&) {
  }
  return 0;
}
