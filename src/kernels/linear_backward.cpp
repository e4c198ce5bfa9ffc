// The backward engine of linear attention (linear_engine.hpp). With the normaliser as the
// last value column (Vx = [V, 1]) every method is the unnormalised U = ((Qf Kf^T) . D) Vx
// followed by a per-row output map, so the backward is: dU from dO, then U's gradients.
//   normalised  o = U[:Dv] / z, z = U[Dv] + row:  dU[:Dv] = dO / z,  dU[Dv] = -(dO . o) / z
//   otherwise   o = row U:                        dU = row dO
//   dA = (dU Vx^T) . D,  dQf = dA Kf,  dKf = dA^T Qf,  dVx = (A . D)^T dU
// Chunkwise (causal), per state head: a first pass stores the state at each chunk's start
// (in its scale); a reverse pass recomputes each chunk's forward and carries the state's
// gradient G = dL/dS backwards:
//   dQf  = dA Kf + diag(gamma^(i+1)) dU S^T               (in-chunk + earlier chunks)
//   H    = pre' G                                          G of the next chunk, in this one's scale
//   dKf  = dA^T Qf + diag(gamma^(n-1-j)) Vx H^T,  dVx = A^T dU + diag(gamma^(n-1-j)) Kf H
//   G    = gamma^n H + (diag(gamma^(i+1)) Qf)^T dU
// The state form (non-causal) is the same with one state and no decay. Feature maps
// differentiate themselves (FeatureMap::query_grad / key_grad), stabilisers held constant:
// the output does not depend on them (eps is scaled with them), so that is exact.
// Threads: one item per (batch, KV head); the state heads of a KV head (one, or the group's
// query heads for retention) run in order inside it, so dK and dV are summed in a fixed
// order and results do not depend on the thread count.
// Memory per thread: the chunk states (ceil(N / C) F W floats) and dK, dV accumulators.
#include <algorithm>
#include <cmath>

#include "kernels/linear_chunk.hpp"
#include "kernels/linear_simd.hpp"

namespace attnkit::linear {
namespace {

struct BackWork {
  ChunkRows c;
  Decays d;
  std::vector<float> a, da, u, du, dqf, dkf, dvx, qd, kd, scaled, dx, ob, grad, states, dk_acc, dv_acc;
  std::vector<float> scales, pres;  // [chunks][F]: the key log-scales after a chunk; the factors entering it
  std::vector<float> key_scales;    // [F]: the key log-scales being rebuilt

  BackWork(const Geometry& g, int64_t chunks)
      : c(g),
        d(g.chunk),
        a(static_cast<size_t>(g.heads_per_state * g.chunk * g.chunk)),
        da(a.size()),
        u(static_cast<size_t>(g.heads_per_state * g.chunk * g.width)),
        du(u.size()),
        dqf(static_cast<size_t>(g.heads_per_state * g.chunk * g.features)),
        dkf(static_cast<size_t>(g.chunk * g.features)),
        dvx(static_cast<size_t>(g.chunk * g.width)),
        qd(dqf.size()),
        kd(dkf.size()),
        scaled(static_cast<size_t>(g.heads_per_state * g.chunk * std::max(g.features, g.width))),
        dx(static_cast<size_t>(g.heads_per_state * g.chunk * g.dk)),
        ob(static_cast<size_t>(g.chunk * g.dv)),
        grad(static_cast<size_t>(g.state_floats())),
        states(static_cast<size_t>((g.causal ? chunks : 1) * g.state_floats())),
        dk_acc(static_cast<size_t>(g.kv_len * g.dk)),
        dv_acc(static_cast<size_t>(g.kv_len * g.dv)),
        scales(static_cast<size_t>(chunks * g.features)),
        pres(static_cast<size_t>(chunks * g.features)),
        key_scales(static_cast<size_t>(g.features)) {}
};

struct Grads {
  const TensorView& dout;
  const MutTensorView& dq;
};

// dU of the chunk's query rows from U (in w.u) and dO.
void output_grad(const Ctx& x, const Grads& gr, BackWork& w, int64_t b, int64_t s, int64_t t0) {
  const Geometry& g = x.g;
  const ChunkRows& c = w.c;
  for (int64_t hh = 0; hh < g.heads_per_state; ++hh) {
    load_rows(gr.dout, b, s * g.heads_per_state + hh, t0, c.n, w.ob.data(), g.dv);
    for (int64_t i = 0; i < c.n; ++i) {
      const int64_t r = hh * c.n + i;
      const float* u = w.u.data() + r * g.width;
      const float* d_o = w.ob.data() + i * g.dv;
      float* du = w.du.data() + r * g.width;
      const float row = c.row[static_cast<size_t>(r)];
      if (x.map.normalised()) {
        const float inv = 1.0f / (u[g.dv] + row);
        float dot = 0;
        for (int64_t col = 0; col < g.dv; ++col) {
          du[col] = d_o[col] * inv;
          dot += du[col] * u[col];
        }
        du[g.dv] = -dot * inv;  // -(dO . o) / z with o = U inv
      } else {
        for (int64_t col = 0; col < g.dv; ++col) du[col] = row * d_o[col];
      }
    }
  }
}

// dQf -> dq rows of every head of the chunk.
void store_query_grads(const Ctx& x, const Grads& gr, BackWork& w, int64_t b, int64_t s, int64_t t0) {
  const Geometry& g = x.g;
  x.map.query_grad(w.c.qx.data(), w.c.qf.data(), w.dqf.data(), w.c.rows, w.dx.data());
  for (int64_t hh = 0; hh < g.heads_per_state; ++hh)
    store_rows(gr.dq, b, s * g.heads_per_state + hh, t0, w.c.n, w.dx.data() + hh * w.c.n * g.dk, g.dk);
}

// dKf, dVx (in w.dkf, w.dvx) -> the dK, dV accumulators.
void add_key_grads(const Ctx& x, BackWork& w, int64_t t0) {
  const Geometry& g = x.g;
  const int64_t n = w.c.n;
  x.map.key_grad(w.c.kx.data(), w.c.kf.data(), w.dkf.data(), n, w.dx.data());
  for (int64_t i = 0; i < n * g.dk; ++i) w.dk_acc[static_cast<size_t>(t0 * g.dk + i)] += w.dx[static_cast<size_t>(i)];
  for (int64_t j = 0; j < n; ++j)
    for (int64_t col = 0; col < g.dv; ++col)
      w.dv_acc[static_cast<size_t>((t0 + j) * g.dv + col)] += w.dvx[static_cast<size_t>(j * g.width + col)];
}

// w.c = the key log-scales before chunk t (as pass 1 had them), so that reloading the
// chunk reproduces its features.
void restore_scales(BackWork& w, int64_t t) {
  const int64_t F = static_cast<int64_t>(w.key_scales.size());
  if (t == 0) {
    std::fill(w.key_scales.begin(), w.key_scales.end(), -HUGE_VALF);
  } else {
    std::copy_n(w.scales.begin() + (t - 1) * F, F, w.key_scales.begin());
  }
}

void causal_state_head(const Ctx& x, const Grads& gr, BackWork& w, int64_t b, int64_t s) {
  const Geometry& g = x.g;
  const int64_t F = g.features, W = g.width, C = g.chunk, N = g.q_len;
  const int64_t chunks = (N + C - 1) / C;
  const double lg = x.map.log_decay(s * g.heads_per_state);
  // Pass 1: the state at each chunk's start.
  std::vector<float>& S = w.grad;  // as the running state here; G in pass 2
  std::fill(S.begin(), S.end(), 0.0f);
  std::fill(w.key_scales.begin(), w.key_scales.end(), -HUGE_VALF);
  for (int64_t t = 0; t < chunks; ++t) {
    const int64_t t0 = t * C, n = std::min(C, N - t0);
    w.c.load_keys(x, b, s, t0, n, w.key_scales.data());
    std::copy(w.key_scales.begin(), w.key_scales.end(), w.scales.begin() + t * F);
    std::copy(w.c.pre.begin(), w.c.pre.end(), w.pres.begin() + t * F);
    rescale_rows(x.map, S.data(), w.c.pre.data(), F, W);
    std::copy(S.begin(), S.end(), w.states.begin() + t * F * W);
    w.d.prepare(lg, n);
    const float* ks = w.c.kf.data();
    if (w.d.decay) {
      scale_rows(ks, w.d.kdec.data(), n, n, F, w.scaled.data());
      ks = w.scaled.data();
    }
    gemm(true, false, F, W, n, 1.0f, ks, F, w.c.vx.data(), W, w.d.decay ? w.d.keep : 1.0f, S.data(), W);
  }
  // Pass 2, last chunk first.
  std::vector<float>& G = w.grad;
  std::fill(G.begin(), G.end(), 0.0f);
  for (int64_t t = chunks - 1; t >= 0; --t) {
    const int64_t t0 = t * C, n = std::min(C, N - t0);
    restore_scales(w, t);
    w.c.load_keys(x, b, s, t0, n, w.key_scales.data());  // the same features as pass 1 (c becomes scales[t])
    w.c.load_queries(x, b, s, t0, n, 0, w.key_scales.data());
    w.d.prepare(lg, n);
    const int64_t rows = w.c.rows;
    const float* St = w.states.data() + t * F * W;
    // The forward of the chunk, then dU.
    const float* qs = w.c.qf.data();
    if (w.d.decay) {
      scale_rows(qs, w.d.qdec.data(), rows, n, F, w.qd.data());
      qs = w.qd.data();
    }
    gemm(false, false, rows, W, F, 1.0f, qs, F, St, W, 0.0f, w.u.data(), W);
    chunk_scores(g, w.c, w.d, w.a.data());
    gemm(false, false, rows, W, n, 1.0f, w.a.data(), n, w.c.vx.data(), W, 1.0f, w.u.data(), W);
    output_grad(x, gr, w, b, s, t0);
    // dA = (dU Vx^T) . D; dQf = dA Kf + diag(gamma^(i+1)) dU S^T.
    gemm(false, true, rows, n, W, 1.0f, w.du.data(), W, w.c.vx.data(), W, 0.0f, w.da.data(), n);
    weigh_pairs(w.da.data(), g.heads_per_state, n, n, 0, true, w.d.decay ? w.d.tab.data() : nullptr);
    gemm(false, false, rows, F, n, 1.0f, w.da.data(), n, w.c.kf.data(), F, 0.0f, w.dqf.data(), F);
    const float* dus = w.du.data();
    if (w.d.decay) {
      scale_rows(dus, w.d.qdec.data(), rows, n, W, w.scaled.data());
      dus = w.scaled.data();
    }
    gemm(false, true, rows, F, W, 1.0f, dus, W, St, W, 1.0f, w.dqf.data(), F);
    store_query_grads(x, gr, w, b, s, t0);
    // H = diag(pre(t + 1)) G: the next chunk's state gradient in this chunk's scales.
    if (t + 1 < chunks) rescale_rows(x.map, G.data(), w.pres.data() + (t + 1) * F, F, W);
    // dKf = dA^T Qf + diag(gamma^(n-1-j)) Vx H^T; dVx = A^T dU + diag(gamma^(n-1-j)) Kf H.
    gemm(true, false, n, F, rows, 1.0f, w.da.data(), n, w.c.qf.data(), F, 0.0f, w.dkf.data(), F);
    gemm(true, false, n, W, rows, 1.0f, w.a.data(), n, w.du.data(), W, 0.0f, w.dvx.data(), W);
    const float* vs = w.c.vx.data();
    const float* ks = w.c.kf.data();
    if (w.d.decay) {
      scale_rows(vs, w.d.kdec.data(), n, n, W, w.scaled.data());
      vs = w.scaled.data();
      scale_rows(ks, w.d.kdec.data(), n, n, F, w.kd.data());
      ks = w.kd.data();
    }
    gemm(false, true, n, F, W, 1.0f, vs, W, G.data(), W, 1.0f, w.dkf.data(), F);
    gemm(false, false, n, W, F, 1.0f, ks, F, G.data(), W, 1.0f, w.dvx.data(), W);
    // G = gamma^n H + (diag(gamma^(i+1)) Qf)^T dU.
    gemm(true, false, F, W, rows, 1.0f, qs, F, w.du.data(), W, w.d.decay ? w.d.keep : 1.0f, G.data(), W);
    add_key_grads(x, w, t0);
  }
}

void state_form_head(const Ctx& x, const Grads& gr, BackWork& w, int64_t b, int64_t s) {
  const Geometry& g = x.g;
  const int64_t F = g.features, W = g.width, C = g.chunk;
  float* S = w.states.data();
  std::fill_n(S, F * W, 0.0f);
  std::fill(w.key_scales.begin(), w.key_scales.end(), -HUGE_VALF);
  for (int64_t t = 0, j0 = 0; j0 < g.kv_len; ++t, j0 += C) {
    const int64_t nk = std::min(C, g.kv_len - j0);
    w.c.load_keys(x, b, s, j0, nk, w.key_scales.data());
    std::copy(w.key_scales.begin(), w.key_scales.end(), w.scales.begin() + t * F);
    rescale_rows(x.map, S, w.c.pre.data(), F, W);
    gemm(true, false, F, W, nk, 1.0f, w.c.kf.data(), F, w.c.vx.data(), W, 1.0f, S, W);
  }
  // Queries: U = Qf S, dQf = dU S^T, G = sum Qf^T dU.
  const std::vector<float> c = w.key_scales;  // the final scales
  std::vector<float>& G = w.grad;
  std::fill(G.begin(), G.end(), 0.0f);
  for (int64_t t0 = 0; t0 < g.q_len; t0 += C) {
    const int64_t n = std::min(C, g.q_len - t0);
    w.c.load_queries(x, b, s, t0, n, 0, c.data());
    gemm(false, false, w.c.rows, W, F, 1.0f, w.c.qf.data(), F, S, W, 0.0f, w.u.data(), W);
    output_grad(x, gr, w, b, s, t0);
    gemm(false, true, w.c.rows, F, W, 1.0f, w.du.data(), W, S, W, 0.0f, w.dqf.data(), F);
    gemm(true, false, F, W, w.c.rows, 1.0f, w.c.qf.data(), F, w.du.data(), W, 1.0f, G.data(), W);
    store_query_grads(x, gr, w, b, s, t0);
  }
  // Keys: feature r of a key block of scales c_t entered S with weight e^(c_t,r - c_final,r).
  for (int64_t t = 0, j0 = 0; j0 < g.kv_len; ++t, j0 += C) {
    const int64_t nk = std::min(C, g.kv_len - j0);
    restore_scales(w, t);
    w.c.load_keys(x, b, s, j0, nk, w.key_scales.data());
    gemm(false, true, nk, F, W, 1.0f, w.c.vx.data(), W, G.data(), W, 0.0f, w.dkf.data(), F);
    const float* ks = w.c.kf.data();
    if (x.map.scales_keys()) {
      float* weight = w.c.pre.data();
      for (int64_t r = 0; r < F; ++r) weight[r] = std::exp(w.key_scales[static_cast<size_t>(r)] - c[static_cast<size_t>(r)]);
      for (int64_t j = 0; j < nk; ++j) {
        simd::mul(w.dkf.data() + j * F, weight, F);
        simd::mul_into(w.c.kf.data() + j * F, weight, w.kd.data() + j * F, F);
      }
      ks = w.kd.data();
    }
    gemm(false, false, nk, W, F, 1.0f, ks, F, G.data(), W, 0.0f, w.dvx.data(), W);
    add_key_grads(x, w, j0);
  }
}

}  // namespace

void backward(const FeatureMap& map, const Geometry& g, const TensorView& q, const TensorView& k,
              const TensorView& v, const TensorView& dout, const MutTensorView& dq, const MutTensorView& dk,
              const MutTensorView& dv) {
  const Ctx x{map, g, q, k, v};
  const Grads gr{dout, dq};
  const int64_t chunks = (std::max(g.q_len, g.kv_len) + g.chunk - 1) / g.chunk;
  const int64_t states_per_kv = g.state_heads() / g.kv_heads;
  for_items(
      g.batch * g.kv_heads, [&] { return BackWork(g, chunks); },
      [&](int64_t item, BackWork& w) {
        const int64_t b = item / g.kv_heads, hk = item % g.kv_heads;
        std::fill(w.dk_acc.begin(), w.dk_acc.end(), 0.0f);
        std::fill(w.dv_acc.begin(), w.dv_acc.end(), 0.0f);
        for (int64_t s = hk * states_per_kv; s < (hk + 1) * states_per_kv; ++s) {
          if (g.causal) {
            causal_state_head(x, gr, w, b, s);
          } else {
            state_form_head(x, gr, w, b, s);
          }
        }
        store_rows(dk, b, hk, 0, g.kv_len, w.dk_acc.data(), g.dk);
        store_rows(dv, b, hk, 0, g.kv_len, w.dv_acc.data(), g.dv);
      });
}

}  // namespace attnkit::linear
