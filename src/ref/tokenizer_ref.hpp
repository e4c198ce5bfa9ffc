// The oracle of the tokenizer's encode (src/model/tokenizer.hpp): run.c's loop written
// literally — rescan every adjacent pair for the best merge, merge it, repeat — which is
// quadratic in the text; for tests.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "model/tokenizer.hpp"

namespace attnkit::ref {

std::vector<int32_t> tokenizer_encode(const model::Tokenizer& t, std::string_view text, bool bos, bool eos);

}  // namespace attnkit::ref
