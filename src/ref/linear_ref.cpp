// The plain-loop definitions of linear attention, the Performer and retention
// (linear.hpp): for every (batch, query head, query row) the feature maps and the pair
// weights are formed literally, with no stabiliser, no chunking and no shared state.
//   a[i, j]  = D[i, j] phi(q_i) . phi(k_j)   over the keys i sees (j <= i when causal)
//   o_i      = sum_j a[i, j] v_j / (sum_j a[i, j] + eps)            linear, performer
//   o_i      = sum_j a[i, j] v_j / sqrt(sum_j D[i, j])              retention
// with D[i, j] = gamma_h^(i - j) for retention, 1 otherwise. The recurrent form runs
// S_i = gamma S_{i-1} + phi(k_i) [v_i, 1]^T, o_i from phi(q_i) S_i, one state per query head.
// The backward applies the chain rule to the same sums, pair by pair.
// One body serves both precisions: Acc is the accumulator type and round() rounds to the
// storage type after each stage (identity in f64 mode).
#include <cmath>
#include <vector>

#include "attnkit/linear.hpp"

namespace attnkit {

namespace {

template <class Acc>
struct Definition {
  const LinearMethod& m;
  const LinearProblem& p;
  DType round_type;         // f64 in oracle mode, else q's dtype
  std::vector<double> w;    // performer: W [F][Dk]

  Definition(const LinearMethod& method, const LinearProblem& problem, DType t) : m(method), p(problem), round_type(t) {
    if (m.kind == LinearKind::performer) {
      const Tensor wt = performer_features(m, p.shape.d_qk);
      for (int64_t i = 0; i < wt.numel(); ++i) w.push_back(wt.view().load(i));
    }
  }

  Acc round(Acc x) const { return static_cast<Acc>(round_to(round_type, static_cast<double>(x))); }
  int64_t dk() const { return p.shape.d_qk; }
  int64_t dv() const { return p.shape.d_v; }
  bool normalised() const { return m.kind != LinearKind::retention; }
  bool sees(int64_t i, int64_t j) const { return !m.causal || j <= i; }
  Acc decay(int64_t h, int64_t i, int64_t j) const {
    if (m.kind != LinearKind::retention) return Acc(1);
    return static_cast<Acc>(std::exp(static_cast<double>(i - j) * std::log(p.gammas[static_cast<size_t>(h)])));
  }

  std::vector<Acc> row(const TensorView& t, int64_t b, int64_t h, int64_t i) const {
    std::vector<Acc> x(static_cast<size_t>(dk()));
    for (int64_t c = 0; c < dk(); ++c) x[static_cast<size_t>(c)] = static_cast<Acc>(t.get(b, h, i, c));
    return x;
  }

  // phi(x) of a query or key row.
  std::vector<Acc> phi(const std::vector<Acc>& x, bool query) const {
    std::vector<Acc> f(static_cast<size_t>(p.features));
    switch (m.kind) {
      case LinearKind::linear:
        for (size_t c = 0; c < x.size(); ++c) f[c] = x[c] > 0 ? x[c] + 1 : std::exp(x[c]);
        break;
      case LinearKind::retention:
        for (size_t c = 0; c < x.size(); ++c) f[c] = query ? static_cast<Acc>(p.scale) * x[c] : x[c];
        break;
      case LinearKind::performer: {
        const Acc root = static_cast<Acc>(std::sqrt(p.scale));
        Acc norm2 = 0;
        for (Acc xc : x) norm2 += root * xc * root * xc;
        for (int64_t r = 0; r < p.features; ++r) {
          const double* wr = w.data() + r * dk();
          Acc dot = 0;
          for (size_t c = 0; c < x.size(); ++c) dot += static_cast<Acc>(wr[c]) * root * x[c];
          f[static_cast<size_t>(r)] = std::exp(dot - norm2 / 2) / std::sqrt(static_cast<Acc>(p.features));
        }
        break;
      }
    }
    for (Acc& e : f) e = round(e);
    return f;
  }

  // dx from the features' gradient df (phi as above).
  std::vector<Acc> phi_grad(const std::vector<Acc>& x, const std::vector<Acc>& f, const std::vector<Acc>& df,
                            bool query) const {
    std::vector<Acc> dx(x.size(), Acc(0));
    switch (m.kind) {
      case LinearKind::linear:
        for (size_t c = 0; c < x.size(); ++c) dx[c] = df[c] * (x[c] > 0 ? Acc(1) : std::exp(x[c]));
        break;
      case LinearKind::retention:
        for (size_t c = 0; c < x.size(); ++c) dx[c] = query ? static_cast<Acc>(p.scale) * df[c] : df[c];
        break;
      case LinearKind::performer: {
        // d phi_r / dx = phi_r (w_r - x') sqrt(scale), x' = sqrt(scale) x.
        const Acc root = static_cast<Acc>(std::sqrt(p.scale));
        Acc g_sum = 0;
        for (int64_t r = 0; r < p.features; ++r) {
          const double* wr = w.data() + r * dk();
          const Acc g = df[static_cast<size_t>(r)] * f[static_cast<size_t>(r)];
          g_sum += g;
          for (size_t c = 0; c < x.size(); ++c) dx[c] += g * static_cast<Acc>(wr[c]);
        }
        for (size_t c = 0; c < x.size(); ++c) dx[c] = root * (dx[c] - g_sum * root * x[c]);
        break;
      }
    }
    return dx;
  }

  static Acc dot(const std::vector<Acc>& a, const std::vector<Acc>& b) {
    Acc s = 0;
    for (size_t c = 0; c < a.size(); ++c) s += a[c] * b[c];
    return s;
  }

  // The features of every key of (b, kv head hk).
  std::vector<std::vector<Acc>> key_features(const TensorView& k, int64_t b, int64_t hk) const {
    std::vector<std::vector<Acc>> kf;
    for (int64_t j = 0; j < p.shape.kv_len; ++j) kf.push_back(phi(row(k, b, hk, j), false));
    return kf;
  }

  // U = sum_j a v_j (first Dv values), then its normaliser sum_j a (normalised) or
  // sum_j D (retention), for query row i of head h.
  std::vector<Acc> unnormalised(const std::vector<Acc>& qf, const std::vector<std::vector<Acc>>& kf, const TensorView& v,
                                int64_t b, int64_t h, int64_t i) const {
    const int64_t hk = h / p.shape.group();
    std::vector<Acc> u(static_cast<size_t>(dv() + 1), Acc(0));
    for (int64_t j = 0; j < p.shape.kv_len; ++j) {
      if (!sees(i, j)) continue;
      const Acc a = round(decay(h, i, j) * round(dot(qf, kf[static_cast<size_t>(j)])));
      for (int64_t c = 0; c < dv(); ++c) u[static_cast<size_t>(c)] += a * static_cast<Acc>(v.get(b, hk, j, c));
      u[static_cast<size_t>(dv())] += normalised() ? a : decay(h, i, j);
    }
    return u;
  }

  // o from U and its normaliser as unnormalised() leaves them.
  Acc out(const std::vector<Acc>& u, int64_t c) const {
    const Acc z = u[static_cast<size_t>(dv())];
    return round(normalised() ? u[static_cast<size_t>(c)] / (z + static_cast<Acc>(m.eps))
                              : u[static_cast<size_t>(c)] / std::sqrt(z));
  }

  void parallel(const TensorView& q, const TensorView& k, const TensorView& v, const MutTensorView& o) const {
    const AttnShape& s = p.shape;
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.q_heads; ++h) {
        const auto kf = key_features(k, b, h / s.group());
        for (int64_t i = 0; i < s.q_len; ++i) {
          const std::vector<Acc> u = unnormalised(phi(row(q, b, h, i), true), kf, v, b, h, i);
          for (int64_t c = 0; c < dv(); ++c) o.set(static_cast<double>(out(u, c)), b, h, i, c);
        }
      }
  }

  // S [F][Dv + 1] per query head; the last column is the normaliser (sum phi(k) or the
  // decay row sum).
  void recurrent(const TensorView& q, const TensorView& k, const TensorView& v, const MutTensorView& o) const {
    const AttnShape& s = p.shape;
    const int64_t F = p.features, W = dv() + 1;
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.q_heads; ++h) {
        const int64_t hk = h / s.group();
        const Acc gamma = static_cast<Acc>(p.gammas[static_cast<size_t>(h)]);
        std::vector<Acc> S(static_cast<size_t>(F * W), Acc(0));
        Acc decay_sum = 0;
        const auto add_key = [&](int64_t j, Acc keep) {
          const std::vector<Acc> kf = phi(row(k, b, hk, j), false);
          for (int64_t r = 0; r < F; ++r)
            for (int64_t c = 0; c < W; ++c) {
              const Acc vc = c < dv() ? static_cast<Acc>(v.get(b, hk, j, c)) : Acc(1);
              Acc& e = S[static_cast<size_t>(r * W + c)];
              e = keep * e + kf[static_cast<size_t>(r)] * vc;
            }
          decay_sum = keep * decay_sum + 1;
        };
        if (!m.causal)
          for (int64_t j = 0; j < s.kv_len; ++j) add_key(j, Acc(1));
        for (int64_t i = 0; i < s.q_len; ++i) {
          if (m.causal) add_key(i, gamma);
          const std::vector<Acc> qf = phi(row(q, b, h, i), true);
          std::vector<Acc> u(static_cast<size_t>(W), Acc(0));
          for (int64_t r = 0; r < F; ++r) {
            const Acc* row_r = S.data() + r * W;
            for (size_t c = 0; c < u.size(); ++c) u[c] += qf[static_cast<size_t>(r)] * row_r[c];
          }
          if (!normalised()) u[static_cast<size_t>(dv())] = decay_sum;
          for (int64_t c = 0; c < dv(); ++c) o.set(static_cast<double>(out(u, c)), b, h, i, c);
        }
      }
  }

  void backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& dout,
                const MutTensorView& dq_out, const MutTensorView& dk_out, const MutTensorView& dv_out) const {
    const AttnShape& s = p.shape;
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t hk = 0; hk < s.kv_heads; ++hk) {
        const auto kf = key_features(k, b, hk);
        std::vector<std::vector<Acc>> dkf(kf.size(), std::vector<Acc>(static_cast<size_t>(p.features), Acc(0)));
        std::vector<std::vector<Acc>> dvx(kf.size(), std::vector<Acc>(static_cast<size_t>(dv()), Acc(0)));
        for (int64_t h = hk * s.group(); h < (hk + 1) * s.group(); ++h)
          for (int64_t i = 0; i < s.q_len; ++i) {
            const std::vector<Acc> x = row(q, b, h, i), qf = phi(x, true);
            const std::vector<Acc> u = unnormalised(qf, kf, v, b, h, i);
            // dU (its last entry: the normaliser's gradient; retention: none).
            std::vector<Acc> du(static_cast<size_t>(dv() + 1), Acc(0));
            const Acc z = u[static_cast<size_t>(dv())];
            for (int64_t c = 0; c < dv(); ++c) {
              const Acc d_o = static_cast<Acc>(dout.get(b, h, i, c));
              if (normalised()) {
                const Acc den = z + static_cast<Acc>(m.eps);
                du[static_cast<size_t>(c)] = round(d_o / den);
                du[static_cast<size_t>(dv())] -= d_o * u[static_cast<size_t>(c)] / (den * den);
              } else {
                du[static_cast<size_t>(c)] = round(d_o / std::sqrt(z));
              }
            }
            du[static_cast<size_t>(dv())] = round(du[static_cast<size_t>(dv())]);
            std::vector<Acc> dqf(static_cast<size_t>(p.features), Acc(0));
            for (int64_t j = 0; j < s.kv_len; ++j) {
              if (!sees(i, j)) continue;
              const auto& kj = kf[static_cast<size_t>(j)];
              const Acc dij = decay(h, i, j);
              const Acc a = round(dij * round(dot(qf, kj)));
              Acc da = normalised() ? du[static_cast<size_t>(dv())] : Acc(0);
              for (int64_t c = 0; c < dv(); ++c) {
                const Acc vc = static_cast<Acc>(v.get(b, hk, j, c));
                da += du[static_cast<size_t>(c)] * vc;
                dvx[static_cast<size_t>(j)][static_cast<size_t>(c)] += a * du[static_cast<size_t>(c)];
              }
              da = round(dij * da);
              for (int64_t r = 0; r < p.features; ++r) {
                dqf[static_cast<size_t>(r)] += da * kj[static_cast<size_t>(r)];
                dkf[static_cast<size_t>(j)][static_cast<size_t>(r)] += da * qf[static_cast<size_t>(r)];
              }
            }
            const std::vector<Acc> dx = phi_grad(x, qf, dqf, true);
            for (int64_t c = 0; c < dk(); ++c) dq_out.set(static_cast<double>(dx[static_cast<size_t>(c)]), b, h, i, c);
          }
        for (int64_t j = 0; j < s.kv_len; ++j) {
          const std::vector<Acc> dx = phi_grad(row(k, b, hk, j), kf[static_cast<size_t>(j)], dkf[static_cast<size_t>(j)], false);
          for (int64_t c = 0; c < dk(); ++c) dk_out.set(static_cast<double>(dx[static_cast<size_t>(c)]), b, hk, j, c);
          for (int64_t c = 0; c < dv(); ++c)
            dv_out.set(static_cast<double>(dvx[static_cast<size_t>(j)][static_cast<size_t>(c)]), b, hk, j, c);
        }
      }
  }
};

}  // namespace

void linear_reference(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                      const MutTensorView& o, RefPrecision precision, LinearRefForm form) {
  const LinearProblem p = prepare_linear(q, k, v, m, o);
  const auto run = [&](const auto& def) {
    if (form == LinearRefForm::recurrent) {
      def.recurrent(q, k, v, o);
    } else {
      def.parallel(q, k, v, o);
    }
  };
  if (precision == RefPrecision::f64 || q.dtype() == DType::f64) {
    run(Definition<double>(m, p, DType::f64));
  } else {
    run(Definition<float>(m, p, q.dtype()));
  }
}

void linear_backward_reference(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& dout,
                               const LinearMethod& m, const MutTensorView& dq, const MutTensorView& dk,
                               const MutTensorView& dv, RefPrecision precision) {
  const LinearProblem p = prepare_linear_backward(q, k, v, dout, m, dq, dk, dv);
  if (precision == RefPrecision::f64 || q.dtype() == DType::f64) {
    Definition<double>(m, p, DType::f64).backward(q, k, v, dout, dq, dk, dv);
  } else {
    Definition<float>(m, p, q.dtype()).backward(q, k, v, dout, dq, dk, dv);
  }
}

}  // namespace attnkit
