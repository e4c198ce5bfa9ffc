// Tensor form of the exact LSE merge (the row form lives in merge.hpp).
#include "attnkit/merge.hpp"

#include <vector>

#include <fmt/format.h>

namespace attnkit {

void merge_attention(const TensorView& o1, const TensorView& lse1, const TensorView& o2, const TensorView& lse2,
                     const MutTensorView& o, const MutTensorView& lse) {
  o1.expect_rank(4, "o1 [B, H, N, D]");
  const std::vector<int64_t> os = o1.shape();
  const std::vector<int64_t> ls(os.begin(), os.end() - 1);
  auto same = [](const TensorView& t, const std::vector<int64_t>& want, const char* name) {
    check(t.shape() == want, [&] {
      return fmt::format("{} has shape {}; merge needs [{}]", name, t.shape_string(), fmt::join(want, ", "));
    });
  };
  same(o2, os, "o2");
  same(o, os, "o");
  same(lse1, ls, "lse1");
  same(lse2, ls, "lse2");
  same(lse, ls, "lse");
  const int64_t d = os[3];
  std::vector<double> acc(static_cast<size_t>(d)), part(static_cast<size_t>(d));
  for (int64_t b = 0; b < os[0]; ++b)
    for (int64_t h = 0; h < os[1]; ++h)
      for (int64_t n = 0; n < os[2]; ++n) {
        double l = lse1.get(b, h, n);
        for (int64_t i = 0; i < d; ++i) {
          acc[static_cast<size_t>(i)] = o1.get(b, h, n, i);
          part[static_cast<size_t>(i)] = o2.get(b, h, n, i);
        }
        merge_row(acc.data(), l, part.data(), lse2.get(b, h, n), d);
        for (int64_t i = 0; i < d; ++i) o.set(acc[static_cast<size_t>(i)], b, h, n, i);
        lse.set(l, b, h, n);
      }
}

}  // namespace attnkit
