// attnkit/error.hpp — the one error type the library throws for bad input.
// Every message names the argument and the constraint it broke, e.g.
//   "q_heads (12) must be a multiple of kv_heads (5)".
// Internal invariants use assert(); this type is for the caller's mistakes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace attnkit {

class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& what) : std::invalid_argument(what) {}
};

// Throws Error(message) when cond is false. message is built lazily by the caller's
// lambda so the happy path formats nothing.
template <class MakeMessage>
inline void check(bool cond, MakeMessage&& make_message) {
  if (!cond) throw Error(make_message());
}

// How much of an input (a pattern string, a path, an option's value) a message quotes.
constexpr size_t kMaxQuotedBytes = 80;

enum class Printable : unsigned char {
  text,     // user text (patterns, paths): valid UTF-8 kept, backslash written as \\ .
  ascii,    // binary data (file headers): every byte outside printable ASCII escaped.
  message,  // a finished message: backslashes kept, so text escaped once stays as it is.
};

namespace detail {
// Length of the valid UTF-8 sequence at s[i] (2 to 4 bytes) of a code point that is not a
// C1 control, or 0: overlong forms, surrogates, code points past U+10FFFF and U+0080..009F
// (C1 holds CSI, which some terminals obey in UTF-8 too) all count as invalid.
inline size_t utf8_sequence(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  uint32_t cp = 0;
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1Fu;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0Fu;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07u;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t j = 1; j < n; ++j) {
    const auto b = static_cast<unsigned char>(s[i + j]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  const bool overlong = (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
  if (overlong || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF || cp < 0xA0) return 0;
  return n;
}
}  // namespace detail

// `s` made safe to print in a message: control bytes (C0, DEL, C1) and bytes that are not
// valid UTF-8 become \xNN, so no input can move a terminal's cursor or change its colours,
// and input longer than max_bytes is cut (at a character boundary) and ends in
// "... (N bytes)", so a 100 KB argument cannot flood the terminal. For example, the
// 7 bytes a, b, ESC, [, 3, 1, m come back as the 10 characters ab\x1b[31m.
// Inline (no fmt) so that every file, fuzz targets included, can use it without linking.
inline std::string printable(std::string_view s, size_t max_bytes = kMaxQuotedBytes,
                             Printable mode = Printable::text) {
  constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::min(s.size(), max_bytes) + 24);
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t seq = c < 0x80 || mode == Printable::ascii ? 0 : detail::utf8_sequence(s, i);
    const size_t n = seq > 0 ? seq : 1;
    if (i + n > max_bytes) break;
    if (seq > 0) {
      out.append(s.substr(i, n));
    } else if (c >= 0x20 && c < 0x7F) {
      if (c == '\\' && mode != Printable::message) out += '\\';
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
    i += n;
  }
  if (i < s.size()) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

}  // namespace attnkit
