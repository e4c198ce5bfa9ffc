// The plain-loop MLA oracle (mla.hpp): the naive form's definition written out literally
// (per head, k = [W_UK c ; k_r], v = W_UV c, softmax over pattern.allow()), its
// input-precision baseline for the tolerance rule, and the gradients of the definition.
// Obviously correct rather than fast; every sum is a loop. Not for: production use.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "attnkit/mla.hpp"

namespace attnkit {

namespace {

// RoPE by +theta (sign 1, rope.hpp's definition: theta_i = pos * base^(-2i / R) over the
// pairs of the style) or its transpose, the rotation by -theta (sign -1), of v [d_r].
template <class T>
void rotate(const RopeConfig& rope, int64_t d_r, int64_t pos, T* v, double sign) {
  const int64_t r = rope.resolved_rotary_dim(d_r), half = r / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double theta = double(pos) * std::pow(rope.base, -2.0 * double(i) / double(r));
    const double c = std::cos(theta), s = sign * std::sin(theta);
    const bool halves = rope.style == RopeStyle::rotate_half;
    const int64_t j0 = halves ? i : 2 * i, j1 = halves ? i + half : 2 * i + 1;
    const double x0 = v[j0], x1 = v[j1];
    v[j0] = T(x0 * c - x1 * s);
    v[j1] = T(x1 * c + x0 * s);
  }
}

struct Checked {
  int64_t B, N;
  std::vector<int64_t> pos;  // [B * N]
};

Checked check_inputs(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x, const int64_t* positions) {
  w.validate(cfg);
  check(x.rank() == 3 && x.size(2) == cfg.d_model && x.size(0) >= 1, [&] {
    return fmt::format("x must have shape [B, N, d_model] with B >= 1 and d_model = {}, got {}", cfg.d_model,
                       x.rank() == 0 ? std::string("no tensor") : x.shape_string());
  });
  Checked c{x.size(0), x.size(1), {}};
  for (int64_t i = 0; i < c.B * c.N; ++i) {
    const int64_t p = positions ? positions[i] : i % c.N;
    check(p >= 0 && p < kMaxRopePosition,
          [&] { return fmt::format("positions[b={}, n={}] ({}) must be in [0, 2^31)", i / c.N, i % c.N, p); });
    c.pos.push_back(p);
  }
  return c;
}

// One sequence's projections and per-head K, V under the definition, in T (double, or
// float for the baseline), each stage rounded by `rnd` (identity for the oracle) and the
// latent additionally by `lat` (the cache's storage type).
template <class T>
struct Sequence {
  int64_t N, H, dqk, dv;
  std::vector<T> q, c, kr, k, v;  // q [N][H][dqk], c [N][d_c], kr [N][d_r], k [H][N][dqk], v [H][N][dv]
};

template <class T, class Round, class RoundLatent>
Sequence<T> project(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x, int64_t b, const int64_t* pos,
                    Round rnd, RoundLatent lat) {
  const int64_t N = x.size(1), H = cfg.heads, D = cfg.d_model, dqk = cfg.d_qk(), dn = cfg.d_nope;
  Sequence<T> s{N, H, dqk, cfg.d_v, {}, {}, {}, {}, {}};
  s.q.resize(static_cast<size_t>(N * H * dqk));
  s.c.resize(static_cast<size_t>(N * cfg.d_c));
  s.kr.resize(static_cast<size_t>(N * cfg.d_r));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t e = 0; e < dqk; ++e) {
        T acc = 0;
        for (int64_t m = 0; m < D; ++m) acc += T(x.get(b, n, m)) * T(w.w_q.get(m, h, e));
        s.q[(n * H + h) * dqk + e] = rnd(acc);
      }
      T* q_r = s.q.data() + (n * H + h) * dqk + dn;
      rotate(cfg.rope, cfg.d_r, pos[n], q_r, 1);
      for (int64_t e = 0; e < cfg.d_r; ++e) q_r[e] = rnd(q_r[e]);
    }
    for (int64_t e = 0; e < cfg.d_c; ++e) {
      T acc = 0;
      for (int64_t m = 0; m < D; ++m) acc += T(x.get(b, n, m)) * T(w.w_dkv.get(m, e));
      s.c[n * cfg.d_c + e] = lat(rnd(acc));
    }
    T* kr = s.kr.data() + n * cfg.d_r;
    for (int64_t e = 0; e < cfg.d_r; ++e) {
      T acc = 0;
      for (int64_t m = 0; m < D; ++m) acc += T(x.get(b, n, m)) * T(w.w_kr.get(m, e));
      kr[e] = rnd(acc);
    }
    rotate(cfg.rope, cfg.d_r, pos[n], kr, 1);
    for (int64_t e = 0; e < cfg.d_r; ++e) kr[e] = lat(rnd(kr[e]));
  }
  s.k.resize(static_cast<size_t>(H * N * dqk));
  s.v.resize(static_cast<size_t>(H * N * cfg.d_v));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < N; ++j) {
      for (int64_t e = 0; e < dn; ++e) {
        T acc = 0;
        for (int64_t a = 0; a < cfg.d_c; ++a) acc += T(w.w_uk.get(h, e, a)) * s.c[j * cfg.d_c + a];
        s.k[(h * N + j) * dqk + e] = rnd(acc);
      }
      for (int64_t e = 0; e < cfg.d_r; ++e) s.k[(h * N + j) * dqk + dn + e] = s.kr[j * cfg.d_r + e];
      for (int64_t e = 0; e < cfg.d_v; ++e) {
        T acc = 0;
        for (int64_t a = 0; a < cfg.d_c; ++a) acc += T(w.w_uv.get(h, e, a)) * s.c[j * cfg.d_c + a];
        s.v[(h * N + j) * cfg.d_v + e] = rnd(acc);
      }
    }
  return s;
}

// P [H][N][N] of one sequence: softmax_j(scale q_i . k_j) over allowed j, 0 elsewhere (and
// for a row with no allowed key).
template <class T, class Round>
std::vector<T> probabilities(const MlaConfig& cfg, const Sequence<T>& s, const BoundPattern& bound, Round rnd) {
  const int64_t N = s.N, H = s.H, dqk = s.dqk;
  const T scale = T(cfg.softmax_scale());
  std::vector<T> p(static_cast<size_t>(H * N * N), T(0));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < N; ++i) {
      T* row = p.data() + (h * N + i) * N;
      T top = -INFINITY;
      for (int64_t j = 0; j < N; ++j) {
        if (!bound.allow(i, j)) continue;
        T acc = 0;
        for (int64_t e = 0; e < dqk; ++e) acc += s.q[(i * H + h) * dqk + e] * s.k[(h * N + j) * dqk + e];
        row[j] = rnd(scale * acc);
        top = std::max(top, row[j]);
      }
      T sum = 0;
      for (int64_t j = 0; j < N; ++j)
        if (bound.allow(i, j)) sum += (row[j] = std::exp(row[j] - top));
      for (int64_t j = 0; j < N; ++j) row[j] = bound.allow(i, j) ? rnd(row[j] / sum) : T(0);
    }
  return p;
}

template <class T>
void reference_forward(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x, const Checked& in,
                       const Pattern& pattern, const MutTensorView& out, const MlaRefOptions& ref) {
  const bool input = ref.precision == RefPrecision::input;
  const DType in_type = x.dtype();
  auto rnd = [&](T v) { return input ? T(round_to(in_type, double(v))) : v; };
  auto lat = [&](T v) { return T(round_to(ref.latent, double(v))); };
  const BoundPattern bound = pattern.bind(in.N, in.N);
  for (int64_t b = 0; b < in.B; ++b) {
    const Sequence<T> s = project<T>(cfg, w, x, b, in.pos.data() + b * in.N, rnd, lat);
    const std::vector<T> p = probabilities(cfg, s, bound, rnd);
    for (int64_t h = 0; h < cfg.heads; ++h)
      for (int64_t i = 0; i < in.N; ++i)
        for (int64_t e = 0; e < cfg.d_v; ++e) {
          T acc = 0;
          for (int64_t j = 0; j < in.N; ++j) acc += p[(h * in.N + i) * in.N + j] * s.v[(h * in.N + j) * cfg.d_v + e];
          out.set(double(rnd(acc)), b, i, h, e);
        }
  }
}

template <class T>
MlaGradients backward(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x, const Checked& in,
                      const Pattern& pattern, const TensorView& d_out) {
  const int64_t B = in.B, N = in.N, H = cfg.heads, D = cfg.d_model, dqk = cfg.d_qk(), dn = cfg.d_nope;
  const int64_t dc = cfg.d_c, dr = cfg.d_r, dv = cfg.d_v;
  const std::vector<int64_t> want = {B, N, H, dv};
  check(d_out.rank() == 4 && d_out.shape() == want, [&] {
    return fmt::format("d_out must have shape [B, N, H, d_v] = [{}], got {}", fmt::join(want, ", "),
                       d_out.shape_string());
  });
  MlaGradients g{Tensor(DType::f64, {B, N, D}), Tensor(DType::f64, {D, H, dqk}), Tensor(DType::f64, {D, dc}),
                 Tensor(DType::f64, {D, dr}),   Tensor(DType::f64, {H, dn, dc}), Tensor(DType::f64, {H, dv, dc})};
  // Accumulated in T, kept in f64 tensors.
  std::vector<T> dx(static_cast<size_t>(B * N * D)), dwq(static_cast<size_t>(D * H * dqk)),
      dwdkv(static_cast<size_t>(D * dc)), dwkr(static_cast<size_t>(D * dr)), dwuk(static_cast<size_t>(H * dn * dc)),
      dwuv(static_cast<size_t>(H * dv * dc));
  const BoundPattern bound = pattern.bind(N, N);
  auto same = [](T v) { return v; };
  const T scale = T(cfg.softmax_scale());
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* pos = in.pos.data() + b * N;
    const Sequence<T> s = project<T>(cfg, w, x, b, pos, same, same);
    const std::vector<T> p = probabilities(cfg, s, bound, same);
    std::vector<T> dq(s.q.size(), T(0)), dk(s.k.size(), T(0)), dvv(s.v.size(), T(0));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        const T* prow = p.data() + (h * N + i) * N;
        // dP_ij = dout_i . v_j,  dS_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij')
        std::vector<T> dp(static_cast<size_t>(N), T(0));
        T rowsum = 0;
        for (int64_t j = 0; j < N; ++j) {
          for (int64_t e = 0; e < dv; ++e) {
            dp[j] += T(d_out.get(b, i, h, e)) * s.v[(h * N + j) * dv + e];
            dvv[(h * N + j) * dv + e] += prow[j] * T(d_out.get(b, i, h, e));
          }
          rowsum += prow[j] * dp[j];
        }
        for (int64_t j = 0; j < N; ++j) {
          const T ds = prow[j] * (dp[j] - rowsum) * scale;
          for (int64_t e = 0; e < dqk; ++e) {
            dq[(i * H + h) * dqk + e] += ds * s.k[(h * N + j) * dqk + e];
            dk[(h * N + j) * dqk + e] += ds * s.q[(i * H + h) * dqk + e];
          }
        }
      }
    // Through the up-projections to the latent and the shared rotated key.
    std::vector<T> dc_(static_cast<size_t>(N * dc), T(0)), dkr(static_cast<size_t>(N * dr), T(0));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < N; ++j) {
        for (int64_t a = 0; a < dc; ++a) {
          for (int64_t e = 0; e < dn; ++e) {
            dc_[j * dc + a] += dk[(h * N + j) * dqk + e] * T(w.w_uk.get(h, e, a));
            dwuk[(h * dn + e) * dc + a] += dk[(h * N + j) * dqk + e] * s.c[j * dc + a];
          }
          for (int64_t e = 0; e < dv; ++e) {
            dc_[j * dc + a] += dvv[(h * N + j) * dv + e] * T(w.w_uv.get(h, e, a));
            dwuv[(h * dv + e) * dc + a] += dvv[(h * N + j) * dv + e] * s.c[j * dc + a];
          }
        }
        for (int64_t e = 0; e < dr; ++e) dkr[j * dr + e] += dk[(h * N + j) * dqk + dn + e];
      }
    // Undo RoPE (the transpose rotates by -theta), then the input projections.
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t h = 0; h < H; ++h) rotate(cfg.rope, dr, pos[n], dq.data() + (n * H + h) * dqk + dn, -1);
      rotate(cfg.rope, dr, pos[n], dkr.data() + n * dr, -1);
      for (int64_t m = 0; m < D; ++m) {
        const T xv = T(x.get(b, n, m));
        T sum = 0;
        for (int64_t h = 0; h < H; ++h)
          for (int64_t e = 0; e < dqk; ++e) {
            dwq[(m * H + h) * dqk + e] += xv * dq[(n * H + h) * dqk + e];
            sum += dq[(n * H + h) * dqk + e] * T(w.w_q.get(m, h, e));
          }
        for (int64_t a = 0; a < dc; ++a) {
          dwdkv[m * dc + a] += xv * dc_[n * dc + a];
          sum += dc_[n * dc + a] * T(w.w_dkv.get(m, a));
        }
        for (int64_t e = 0; e < dr; ++e) {
          dwkr[m * dr + e] += xv * dkr[n * dr + e];
          sum += dkr[n * dr + e] * T(w.w_kr.get(m, e));
        }
        dx[(b * N + n) * D + m] = sum;
      }
    }
  }
  for (auto [t, v] : {std::pair{&g.dx, &dx}, {&g.dw_q, &dwq}, {&g.dw_dkv, &dwdkv}, {&g.dw_kr, &dwkr},
                      {&g.dw_uk, &dwuk}, {&g.dw_uv, &dwuv}})
    std::copy(v->begin(), v->end(), static_cast<double*>(t->data()));
  return g;
}

}  // namespace

void mla_reference(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x, const int64_t* positions,
                   const Pattern& pattern, const MutTensorView& out, const MlaRefOptions& ref) {
  const Checked in = check_inputs(cfg, w, x, positions);
  const std::vector<int64_t> want = {in.B, in.N, cfg.heads, cfg.d_v};
  check(out.rank() == 4 && out.shape() == want, [&] {
    return fmt::format("out must have shape [B, N, H, d_v] = [{}], got {}", fmt::join(want, ", "), out.shape_string());
  });
  if (ref.precision == RefPrecision::f64)
    reference_forward<double>(cfg, w, x, in, pattern, out, ref);
  else
    reference_forward<float>(cfg, w, x, in, pattern, out, ref);
}

MlaGradients mla_backward_reference(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x,
                                    const int64_t* positions, const Pattern& pattern, const TensorView& d_out,
                                    RefPrecision precision) {
  const Checked in = check_inputs(cfg, w, x, positions);
  return precision == RefPrecision::f64 ? backward<double>(cfg, w, x, in, pattern, d_out)
                                        : backward<float>(cfg, w, x, in, pattern, d_out);
}

}  // namespace attnkit
