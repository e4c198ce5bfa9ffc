// run.c's encode, literally (tokenizer_ref.hpp).
#include "ref/tokenizer_ref.hpp"

#include <string>

#include "attnkit/error.hpp"

namespace attnkit::ref {

std::vector<int32_t> tokenizer_encode(const model::Tokenizer& t, std::string_view text, bool bos, bool eos) {
  std::vector<int32_t> ids;
  if (bos) ids.push_back(model::kBosId);
  const auto push_code_point = [&](std::string_view cp) {
    const int32_t id = t.find(cp);
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
    for (const char c : cp) {
      const int32_t b = t.byte_id(static_cast<uint8_t>(c));
      check(b >= 0, [] { return std::string("tokenizer_encode: a byte without a piece"); });
      ids.push_back(b);
    }
  };
  if (!text.empty()) push_code_point(" ");
  std::string buffer;
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<uint8_t>(text[i]) & 0xC0) != 0x80) buffer.clear();
    buffer += text[i];
    if (i + 1 < text.size() && (static_cast<uint8_t>(text[i + 1]) & 0xC0) == 0x80 && buffer.size() < 4) continue;
    push_code_point(buffer);
    buffer.clear();
  }
  for (;;) {
    float best_score = -1e10f;
    int32_t best_id = -1;
    size_t best_at = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const int32_t id = t.find(t.piece(ids[i]) + t.piece(ids[i + 1]));
      if (id >= 0 && t.score(id) > best_score) best_score = t.score(id), best_id = id, best_at = i;
    }
    if (best_id < 0) break;
    ids[best_at] = best_id;
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
  }
  if (eos) ids.push_back(model::kEosId);
  return ids;
}

}  // namespace attnkit::ref
