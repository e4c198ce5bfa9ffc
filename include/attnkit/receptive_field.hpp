// attnkit/receptive_field.hpp — how far back information can travel through a stack of
// sliding-window attention layers. Not for: masks or FLOPs (patterns own those).
//
// Convention: a window of W tokens includes the query itself. Query i of one layer sees
// keys i - j*D for j = 0 .. W-1 (D = dilation, 1 for a plain sliding window; this is the
// pattern window(left = (W-1)*D, right = 0) with stride D, as Longformer's dilated window).
// One layer therefore reaches (W-1)*D tokens back, and k stacked layers reach k*(W-1)*D:
// the token at i depends, through the hidden states, on tokens down to i - k*(W-1)*D.
// Mistral's paper counts positions i - W .. i (W + 1 keys) and states "k x W"; with the
// query counted inside the window, as here, the exact figure is k*(W-1).
// With D > 1 on every layer only positions i - m*D are reachable (m = 0 .. k*(W-1)), so
// k*(W-1) + 1 distinct tokens within a span of k*(W-1)*D + 1; Longformer fills the gaps by
// giving some heads or lower layers D = 1.
#pragma once

#include <cstdint>

namespace attnkit {

struct ReceptiveField {
  int64_t layers = 0;
  int64_t window = 0;
  int64_t dilation = 1;

  int64_t reach_per_layer() const { return (window - 1) * dilation; }
  // Tokens back from the query that layer k (1-based) can draw on: k*(W-1)*D.
  int64_t reach(int64_t k) const { return k * reach_per_layer(); }
  // Positions from the farthest reachable token to the query inclusive: L*(W-1)*D + 1.
  int64_t span() const { return reach(layers) + 1; }
  // Distinct tokens the last layer can draw on: L*(W-1) + 1 (equals span() when D = 1).
  int64_t reachable_tokens() const { return layers * (window - 1) + 1; }
};

// Validated ReceptiveField: layers, window, dilation >= 1, and span() fits int64; throws
// Error naming the argument otherwise.
ReceptiveField receptive_field(int64_t layers, int64_t window, int64_t dilation = 1);

}  // namespace attnkit
