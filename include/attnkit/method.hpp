// attnkit/method.hpp — which attention function a call computes: exact softmax attention
// (attention.hpp), a linear-cost family over feature maps (linear.hpp: linear elu+1,
// Performer, retention) or Linformer's low-rank projection (linformer.hpp). One spec string
// names a method everywhere: `attnkit attend --method`, `attnkit bench --method` and a
// model layer's "method". Not for: MLA, which is a layer with its own weights (mla.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "attnkit/linear.hpp"
#include "attnkit/linformer.hpp"

namespace attnkit {

enum class MethodFamily : uint8_t { softmax, linear, linformer };

struct Method {
  MethodFamily family = MethodFamily::softmax;
  LinearMethod linear;        // family == linear: linear, performer or retention
  LinformerMethod linformer;  // family == linformer

  // The spec parse_method reads back.
  std::string to_string() const;
  // "softmax", "linear", "performer", "retention" or "linformer".
  std::string_view name() const;
  // Whether decoding keeps a recurrent state of constant size instead of a token cache.
  bool has_recurrent_state() const { return family == MethodFamily::linear; }
};

// "softmax" (the default: attend()), linear.hpp's "linear[:...]", "performer[:...]",
// "retention[:...]", or linformer.hpp's "linformer:k=K[,...]". Throws Error naming the spec.
Method parse_method(std::string_view spec);

}  // namespace attnkit
