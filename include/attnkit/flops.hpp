// attnkit/flops.hpp — the work an attention call must do, counted on the (q, k) pairs its
// pattern allows. Benchmarks divide measured time by these figures, so sparse patterns
// are credited only with the work they really need.
// Convention (FlashAttention's): 2 FLOPs per multiply-add of QK^T and of PV, nothing for
// softmax, so one allowed pair costs 2 * d_qk + 2 * d_v FLOPs per (batch, query head).
#pragma once

#include <cstdint>

#include "attnkit/pattern.hpp"
#include "attnkit/shape.hpp"

namespace attnkit {

struct AttnWork {
  int64_t pairs = 0;        // allowed (q, k) pairs per (batch, query head)
  int64_t dense_pairs = 0;  // q_len * kv_len
  double flops = 0;         // forward FLOPs over the whole call, allowed pairs only
  double dense_flops = 0;   // the same for full attention
  double visited_fraction() const { return dense_pairs ? double(pairs) / double(dense_pairs) : 0.0; }
};

AttnWork count_work(const AttnShape& shape, const BoundPattern& pattern);

}  // namespace attnkit
