// attnkit/error.hpp — the one error type the library throws for bad input.
// Every message names the argument and the constraint it broke, e.g.
//   "q_heads (12) must be a multiple of kv_heads (5)".
// Internal invariants use assert(); this type is for the caller's mistakes.
#pragma once

#include <stdexcept>
#include <string>

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

}  // namespace attnkit
