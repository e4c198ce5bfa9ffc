// attnkit/method.hpp — which attention function a call computes: exact softmax attention
// (attention.hpp), a linear-cost family over feature maps (linear.hpp: linear elu+1,
// Performer, retention), Linformer's low-rank projection (linformer.hpp) or a model layer of
// multi-head latent attention (mla.hpp). One spec string names a method everywhere:
// `attnkit attend --method`, `attnkit bench --method` and a model layer's "method". MLA is a
// layer with its own weights, so only a model layer takes it (attend and bench refuse it;
// `attnkit mla` runs the op). Not for: computing anything.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "attnkit/linear.hpp"
#include "attnkit/linformer.hpp"

namespace attnkit {

enum class MethodFamily : uint8_t { softmax, linear, linformer, mla };

// An MLA layer's own sizes (mla.hpp's MlaConfig): the latent width d_c and the decoupled
// RoPE dims d_r. The model supplies the rest (heads; d_nope = d_v = its head_dim).
struct MlaMethod {
  int64_t latent = 0;  // d_c, "c=": the cache holds d_c + d_r values per token
  int64_t rope = 0;    // d_r, "r=": even (RoPE turns pairs), >= 2
};

struct Method {
  MethodFamily family = MethodFamily::softmax;
  LinearMethod linear;        // family == linear: linear, performer or retention
  LinformerMethod linformer;  // family == linformer
  MlaMethod mla;              // family == mla

  // The spec parse_method reads back.
  std::string to_string() const;
  // "softmax", "linear", "performer", "retention", "linformer" or "mla".
  std::string_view name() const;
  // Whether decoding keeps a recurrent state of constant size instead of a token cache.
  bool has_recurrent_state() const { return family == MethodFamily::linear; }
};

// "softmax" (the default: attend()), linear.hpp's "linear[:...]", "performer[:...]",
// "retention[:...]", linformer.hpp's "linformer:k=K[,...]", or "mla:c=C,r=R" (both keys
// required, each once: C in [1, kMaxHeadDim], R even in [2, kMaxHeadDim], C + R <=
// kMaxHeadDim). Throws Error naming the spec and the key.
Method parse_method(std::string_view spec);

}  // namespace attnkit
