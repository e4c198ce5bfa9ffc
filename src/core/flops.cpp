// FLOP counting on visited pairs (see flops.hpp for the convention).
#include "attnkit/flops.hpp"

#include <fmt/format.h>

#include "attnkit/error.hpp"

namespace attnkit {

AttnWork count_work(const AttnShape& shape, const BoundPattern& pattern) {
  shape.validate();
  check(pattern.q_len() == shape.q_len && pattern.kv_len() == shape.kv_len, [&] {
    return fmt::format("pattern bound to {}x{} but shape is q_len={} kv_len={}", pattern.q_len(), pattern.kv_len(),
                       shape.q_len, shape.kv_len);
  });
  AttnWork w;
  w.pairs = pattern.visited_pairs();
  w.dense_pairs = shape.q_len * shape.kv_len;
  const double per_pair = 2.0 * double(shape.d_qk + shape.d_v) * double(shape.batch * shape.q_heads);
  w.flops = per_pair * double(w.pairs);
  w.dense_flops = per_pair * double(w.dense_pairs);
  return w;
}

}  // namespace attnkit
