// Shared helpers for the tests: seeded random tensors and comparisons.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "attnkit/reference.hpp"
#include "attnkit/tensor.hpp"

namespace attnkit::testing {

// One case of the kernel sweeps: shapes, pattern, input type and the variant's switches.
struct AttnCase {
  int64_t b, hq, hkv, nq, nk, dqk, dv;
  std::string pattern;
  DType dtype = DType::f32;
  double softcap = 0;
  bool alibi = false;
  bool sinks = false;  // learned sink logits
};

inline std::string describe(const AttnCase& c) {
  return fmt::format("B={} Hq={} Hkv={} Nq={} Nk={} Dqk={} Dv={} {} {} softcap={} alibi={} sinks={}", c.b, c.hq, c.hkv,
                     c.nq, c.nk, c.dqk, c.dv, c.pattern, dtype_name(c.dtype), c.softcap, c.alibi, c.sinks);
}

// Uniform in [-1, 1), rounded to dtype, deterministic for a seed.
inline Tensor random_tensor(std::vector<int64_t> shape, uint64_t seed, DType dtype = DType::f32, double scale = 1.0) {
  Tensor t(dtype, std::move(shape));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const MutTensorView m = t.mut();
  for (int64_t i = 0; i < t.numel(); ++i) m.store(i, scale * u(rng));
  return t;
}

inline double max_abs_diff(const TensorView& a, const TensorView& b) {
  double worst = 0;
  const std::vector<int64_t> s = a.shape();
  const int64_t n0 = s[0], n1 = s.size() > 1 ? s[1] : 1, n2 = s.size() > 2 ? s[2] : 1, n3 = s.size() > 3 ? s[3] : 1;
  for (int64_t i = 0; i < n0; ++i)
    for (int64_t j = 0; j < n1; ++j)
      for (int64_t k = 0; k < n2; ++k)
        for (int64_t l = 0; l < n3; ++l) {
          const double x = a.get(i, j, k, l), y = b.get(i, j, k, l);
          if (std::isinf(x) && x == y) continue;
          worst = std::max(worst, std::isnan(x) || std::isnan(y) ? INFINITY : std::abs(x - y));
        }
  return worst;
}

// Copies keys [begin, end) (dimension 2) of a [B, H, N, D] tensor.
inline Tensor slice_keys(const Tensor& t, int64_t begin, int64_t end) {
  const auto& s = t.shape();
  Tensor out(t.dtype(), {s[0], s[1], end - begin, s[3]});
  for (int64_t b = 0; b < s[0]; ++b)
    for (int64_t h = 0; h < s[1]; ++h)
      for (int64_t n = begin; n < end; ++n)
        for (int64_t c = 0; c < s[3]; ++c) out.mut().set(t.view().get(b, h, n, c), b, h, n - begin, c);
  return out;
}

// K or V [B, Hkv, N, D] with every head repeated `group` times: [B, Hkv * group, N, D],
// head h holding input head h / group. GQA / MQA over t equals MHA over this.
inline Tensor repeat_kv_heads(const Tensor& t, int64_t group) {
  const auto& s = t.shape();
  Tensor out(t.dtype(), {s[0], s[1] * group, s[2], s[3]});
  for (int64_t b = 0; b < s[0]; ++b)
    for (int64_t h = 0; h < s[1] * group; ++h)
      for (int64_t n = 0; n < s[2]; ++n)
        for (int64_t c = 0; c < s[3]; ++c) out.mut().set(t.view().get(b, h / group, n, c), b, h, n, c);
  return out;
}

// attention_reference() into new f64 tensors: o [B, Hq, Nq, Dv], lse [B, Hq, Nq], and with
// want_probs P [B, Hq, Nq, Nkv]. RefPrecision::input rounds to q's dtype (f64 q: no rounding).
struct RefResult {
  Tensor o, lse, probs;
};

inline RefResult reference_run(const TensorView& q, const TensorView& k, const TensorView& v, const AttendOptions& opts,
                               RefPrecision precision = RefPrecision::f64, bool want_probs = false) {
  RefResult r{Tensor(DType::f64, {q.size(0), q.size(1), q.size(2), v.size(3)}),
              Tensor(DType::f64, {q.size(0), q.size(1), q.size(2)}), {}};
  RefOptions ro;
  ro.precision = precision;
  if (want_probs) ro.probs = &r.probs;
  attention_reference(q, k, v, opts, r.o.mut(), r.lse.mut(), ro);
  return r;
}

// The tolerance rule of ARCHITECTURE.md: a kernel's max error against the f64 oracle may be
// twice the error of the plain reference run in the kernel's input precision (`baseline`
// against `exact`), plus `slack` for cases where that baseline happens to be exact.
inline double two_x_bound(const TensorView& baseline, const TensorView& exact, double slack) {
  return 2 * max_abs_diff(baseline, exact) + slack;
}

}  // namespace attnkit::testing
