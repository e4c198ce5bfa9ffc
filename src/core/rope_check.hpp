// Validation shared by the RoPE fast path (src/core/rope.cpp) and its reference
// (src/ref/rope_ref.cpp), so both refuse the same inputs with the same messages.
// Internal header: not part of the public API, and not for the rotation itself.
#pragma once

#include <cstdint>

#include "attnkit/tensor.hpp"

namespace attnkit::detail {

// Throws Error naming the first entry of positions [batch, len] (row-major) that is
// negative, >= 2^31, or >= max_pos; or naming `positions` when it is null and the
// tensor is not empty. `max_pos` is the RoPE table's size (kMaxRopePosition for the
// reference, which has no table).
void check_rope_positions(const int64_t* positions, int64_t batch, int64_t len, int64_t max_pos);

// Throws Error unless x is 4-D [B, H, N, D]; returns D.
int64_t rope_head_dim(const TensorView& x);

}  // namespace attnkit::detail
