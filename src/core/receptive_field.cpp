// Validation of the sliding-window receptive-field calculation (receptive_field.hpp).
#include "attnkit/receptive_field.hpp"

#include <fmt/format.h>

#include "attnkit/kv_size.hpp"
#include "attnkit/shape.hpp"
#include "core/checked_math.hpp"

namespace attnkit {

ReceptiveField receptive_field(int64_t layers, int64_t window, int64_t dilation) {
  detail::check_range(layers, 1, kMaxKvLayers, "layers");
  detail::check_range(window, 1, kMaxSeqLen, "window");
  detail::check_range(dilation, 1, kMaxSeqLen, "dilation");
  // Once checked here, every accessor's product is bounded by span().
  constexpr const char* what = "receptive-field span";
  const int64_t per_layer = detail::checked_mul(window - 1, dilation, what, fmt::format("dilation ({})", dilation));
  detail::checked_add(detail::checked_mul(per_layer, layers, what, fmt::format("layers ({})", layers)), 1, what, "1");
  return {layers, window, dilation};
}

}  // namespace attnkit
