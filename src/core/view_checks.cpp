// The shared view checks (view_checks.hpp).
#include "core/view_checks.hpp"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "attnkit/error.hpp"

namespace attnkit {

void check_in_range(int64_t v, int64_t lo, int64_t hi, const char* name) {
  check(v >= lo && v <= hi, [&] { return fmt::format("{} ({}) must be in [{}, {}]", name, v, lo, hi); });
}

void expect_dims(const TensorView& t, const std::vector<int64_t>& want, const char* name, const char* layout) {
  check(t.rank() == static_cast<int>(want.size()) && t.shape() == want, [&] {
    return fmt::format("{} must have shape {} = [{}], got {}", name, layout, fmt::join(want, ", "),
                       t.rank() == 0 ? std::string("no tensor") : t.shape_string());
  });
}

void expect_no_overlap(const TensorView& t, const char* name) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (|stride|, size)
  for (int i = 0; i < t.rank(); ++i)
    if (t.size(i) > 1) dims.emplace_back(std::abs(t.stride(i)), t.size(i));
  std::sort(dims.begin(), dims.end());
  int64_t extent = 1;
  for (const auto& dim : dims) {
    const int64_t stride = dim.first, size = dim.second;  // a lambda may not capture a structured binding (clang)
    check(stride >= extent, [&] {
      return fmt::format("{}: strides make elements overlap (stride {} inside an extent of {}); outputs need "
                         "distinct addresses",
                         name, stride, extent);
    });
    extent = stride * (size - 1) + extent;
  }
}

}  // namespace attnkit
