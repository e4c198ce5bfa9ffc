// The forward engine of linear attention (linear_engine.hpp): every form over the rows a
// FeatureMap produces, and the chunk pieces it shares with the backward (linear_chunk.hpp).
//
// Chunkwise (causal), per state head, for each chunk of n tokens starting at t0:
//   S     *= pre                                   the keys' new log-scale (Performer; else 1)
//   U      = diag(gamma^(i+1)) Qf S                what the earlier chunks give
//   U     += ((Qf Kf^T) . D) Vx                    inside the chunk, D[i, j] = gamma^(i-j), j <= i
//   S      = gamma^n S + (diag(gamma^(n-1-j)) Kf)^T Vx
//   o      = U[:, :Dv] / (U[:, Dv] + row)  or  row U
// four matrix products per chunk (BLAS), with the g query heads of a KV head stacked as the
// rows of one product when they share the state. Parallel runs the same pair blocks over
// every key block before the query block (no state); the state form (non-causal) sums
// S over all keys, then U = Qf S; recurrent updates S one token at a time.
// Threads: one work item per (batch, state head); each item is computed by one thread in a
// fixed order, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>

#include <cblas.h>

#include "kernels/flash.hpp"
#include "kernels/linear_chunk.hpp"
#include "kernels/linear_simd.hpp"

namespace attnkit::linear {

Form resolve_form(const LinearMethod& m) {
  if (!m.causal) return m.form == LinearForm::parallel ? Form::parallel : Form::state;
  switch (m.form) {
    case LinearForm::parallel: return Form::parallel;
    case LinearForm::recurrent: return Form::recurrent;
    case LinearForm::automatic:
    case LinearForm::chunkwise: break;
  }
  return Form::chunkwise;
}

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

void load_rows(const TensorView& t, int64_t b, int64_t h, int64_t t0, int64_t n, float* dst, int64_t ld) {
  static const flash::SimdOps ops = flash::simd_ops();
  const int64_t dim = t.size(3);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = t.offset(b, h, t0 + i, 0);
    float* d = dst + i * ld;
    if (t.stride(3) == 1 && t.dtype() == DType::f32) {
      std::memcpy(d, static_cast<const float*>(t.data()) + off, static_cast<size_t>(dim) * sizeof(float));
    } else if (t.stride(3) == 1 && t.dtype() == DType::bf16) {
      ops.bf16_to_f32(static_cast<const uint16_t*>(t.data()) + off, d, dim);
    } else if (t.stride(3) == 1 && t.dtype() == DType::f16) {
      ops.f16_to_f32(static_cast<const uint16_t*>(t.data()) + off, d, dim);
    } else {
      for (int64_t c = 0; c < dim; ++c) d[c] = static_cast<float>(t.load(off + c * t.stride(3)));
    }
  }
}

void store_rows(const MutTensorView& t, int64_t b, int64_t h, int64_t t0, int64_t n, const float* src, int64_t ld) {
  const int64_t dim = t.size(3);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = t.offset(b, h, t0 + i, 0);
    const float* s = src + i * ld;
    if (t.stride(3) == 1 && t.dtype() == DType::f32) {
      std::memcpy(static_cast<float*>(t.mutable_data()) + off, s, static_cast<size_t>(dim) * sizeof(float));
    } else {
      for (int64_t c = 0; c < dim; ++c) t.store(off + c * t.stride(3), s[c]);
    }
  }
}

ChunkRows::ChunkRows(const Geometry& g)
    : kx(static_cast<size_t>(g.chunk * g.dk)),
      vx(static_cast<size_t>(g.chunk * g.width)),
      kf(static_cast<size_t>(g.chunk * g.features)),
      qx(static_cast<size_t>(g.heads_per_state * g.chunk * g.dk)),
      qf(static_cast<size_t>(g.heads_per_state * g.chunk * g.features)),
      row(static_cast<size_t>(g.heads_per_state * g.chunk)),
      pre(static_cast<size_t>(g.features)) {}

void ChunkRows::load_keys(const Ctx& x, int64_t b, int64_t s, int64_t t0, int64_t len, float* c) {
  const Geometry& g = x.g;
  n = len;
  const int64_t kvh = g.kv_head(s);
  load_rows(x.k, b, kvh, t0, n, kx.data(), g.dk);
  load_rows(x.v, b, kvh, t0, n, vx.data(), g.width);
  if (g.width > g.dv)
    for (int64_t j = 0; j < n; ++j) vx[static_cast<size_t>(j * g.width + g.dv)] = 1.0f;
  x.map.map_keys(kx.data(), n, kf.data(), c, pre.data());
}

void ChunkRows::load_queries(const Ctx& x, int64_t b, int64_t s, int64_t t0, int64_t len, int64_t pos, const float* c) {
  const Geometry& g = x.g;
  n = len;
  rows = g.heads_per_state * n;
  for (int64_t hh = 0; hh < g.heads_per_state; ++hh) {
    const int64_t h = s * g.heads_per_state + hh;
    float* xq = qx.data() + hh * n * g.dk;
    load_rows(x.q, b, h, t0, n, xq, g.dk);
    x.map.map_queries(xq, n, h, pos + t0, c, qf.data() + hh * n * g.features, row.data() + hh * n);
  }
}

Decays::Decays(int64_t chunk)
    : qdec(static_cast<size_t>(chunk)), kdec(static_cast<size_t>(chunk)), tab(static_cast<size_t>(2 * chunk)) {}

void Decays::prepare(double log_gamma, int64_t n) {
  decay = log_gamma != 0;
  if (!decay || (log_gamma == lg_ && n == n_)) return;
  lg_ = log_gamma, n_ = n;
  keep = static_cast<float>(std::exp(static_cast<double>(n) * log_gamma));
  for (int64_t i = 0; i < n; ++i) {
    qdec[static_cast<size_t>(i)] = static_cast<float>(std::exp(static_cast<double>(i + 1) * log_gamma));
    kdec[static_cast<size_t>(i)] = static_cast<float>(std::exp(static_cast<double>(n - 1 - i) * log_gamma));
  }
  pair_table(tab.data(), n, n, 0, log_gamma, 0, true);
}

void pair_table(float* tab, int64_t nq, int64_t nk, int64_t delta, double log_gamma, double log_factor, bool causal) {
  for (int64_t m = 0; m < nq + nk - 1; ++m) {
    const int64_t d = delta + nq - 1 - m;
    tab[m] = causal && d < 0 ? 0.0f : static_cast<float>(std::exp(static_cast<double>(d) * log_gamma + log_factor));
  }
}

void weigh_pairs(float* a, int64_t heads, int64_t nq, int64_t nk, int64_t delta, bool causal, const float* tab) {
  if (!tab && (!causal || delta >= nk)) return;
  for (int64_t hh = 0; hh < heads; ++hh)
    for (int64_t i = 0; i < nq; ++i) {
      float* ar = a + (hh * nq + i) * nk;
      const int64_t visible = causal ? std::clamp<int64_t>(i + delta + 1, 0, nk) : nk;
      if (tab) simd::mul(ar, tab + nq - 1 - i, visible);
      std::fill(ar + visible, ar + nk, 0.0f);
    }
}

void rescale_rows(const FeatureMap& map, float* s, const float* factor, int64_t rows, int64_t cols) {
  if (!map.scales_keys()) return;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) s[r * cols + c] *= factor[r];
}

void scale_rows(const float* src, const float* factor, int64_t rows, int64_t n, int64_t cols, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const float f = factor[r % n];
    for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = f * src[r * cols + c];
  }
}

void chunk_scores(const Geometry& g, const ChunkRows& c, const Decays& d, float* a) {
  gemm(false, true, c.rows, c.n, g.features, 1.0f, c.qf.data(), g.features, c.kf.data(), g.features, 0.0f, a, c.n);
  weigh_pairs(a, g.heads_per_state, c.n, c.n, 0, true, d.decay ? d.tab.data() : nullptr);
}

namespace {

// Per-thread buffers of the forward.
struct Work {
  ChunkRows c;
  Decays d;
  std::vector<float> a, u, scaled, ob, state, scales, key_blocks, value_blocks;
  std::vector<float> block_scales;  // parallel: [key blocks][F], the keys' scales after each block

  Work(const Geometry& g, Form form)
      : c(g),
        d(g.chunk),
        a(static_cast<size_t>(g.heads_per_state * g.chunk * g.chunk)),
        u(static_cast<size_t>(g.heads_per_state * g.chunk * g.width)),
        scaled(static_cast<size_t>(g.heads_per_state * g.chunk * std::max(g.features, g.width))),
        ob(static_cast<size_t>(g.chunk * g.dv)),
        state(static_cast<size_t>(g.state_floats())),
        scales(static_cast<size_t>(g.features)) {
    if (form == Form::parallel) {  // every key block's features, kept for all query blocks
      key_blocks.resize(static_cast<size_t>(g.kv_len * g.features));
      value_blocks.resize(static_cast<size_t>(g.kv_len * g.width));
    }
  }
};

// o rows of the chunk's query rows from U: normalised or scaled (linear_engine.hpp).
void emit(const Ctx& x, const MutTensorView& o, Work& w, int64_t b, int64_t s, int64_t t0) {
  const Geometry& g = x.g;
  const ChunkRows& c = w.c;
  for (int64_t hh = 0; hh < g.heads_per_state; ++hh) {
    for (int64_t i = 0; i < c.n; ++i) {
      const int64_t r = hh * c.n + i;
      const float* u = w.u.data() + r * g.width;
      const float f = x.map.normalised() ? 1.0f / (u[g.dv] + c.row[static_cast<size_t>(r)]) : c.row[static_cast<size_t>(r)];
      for (int64_t col = 0; col < g.dv; ++col) w.ob[static_cast<size_t>(i * g.dv + col)] = f * u[col];
    }
    store_rows(o, b, s * g.heads_per_state + hh, t0, c.n, w.ob.data(), g.dv);
  }
}

// Causal chunkwise over every token of the views, continuing the state S (and key scale
// c) at absolute position pos.
void causal_chunks(const Ctx& x, const MutTensorView& o, Work& w, int64_t b, int64_t s, int64_t pos, float* S,
                   float* c) {
  const Geometry& g = x.g;
  const int64_t F = g.features, W = g.width;
  const double lg = x.map.log_decay(s * g.heads_per_state);
  for (int64_t t0 = 0; t0 < g.q_len; t0 += g.chunk) {
    const int64_t n = std::min(g.chunk, g.q_len - t0);
    w.c.load_keys(x, b, s, t0, n, c);
    rescale_rows(x.map, S, w.c.pre.data(), F, W);
    w.c.load_queries(x, b, s, t0, n, pos, c);
    w.d.prepare(lg, n);
    const int64_t rows = w.c.rows;
    // What the earlier chunks give: U = diag(gamma^(i+1)) Qf S.
    const float* qs = w.c.qf.data();
    if (w.d.decay) {
      scale_rows(qs, w.d.qdec.data(), rows, n, F, w.scaled.data());
      qs = w.scaled.data();
    }
    gemm(false, false, rows, W, F, 1.0f, qs, F, S, W, 0.0f, w.u.data(), W);
    // Inside the chunk: U += ((Qf Kf^T) . D) Vx.
    chunk_scores(g, w.c, w.d, w.a.data());
    gemm(false, false, rows, W, n, 1.0f, w.a.data(), n, w.c.vx.data(), W, 1.0f, w.u.data(), W);
    // The state at the chunk's end: S = gamma^n S + (diag(gamma^(n-1-j)) Kf)^T Vx.
    const float* ks = w.c.kf.data();
    if (w.d.decay) {
      scale_rows(ks, w.d.kdec.data(), n, n, F, w.scaled.data());
      ks = w.scaled.data();
    }
    gemm(true, false, F, W, n, 1.0f, ks, F, w.c.vx.data(), W, w.d.decay ? w.d.keep : 1.0f, S, W);
    emit(x, o, w, b, s, t0);
  }
}

// Recurrent: S = gamma diag(pre) S + kf vx^T, then U = qf S, one token at a time.
void recurrent(const Ctx& x, const MutTensorView& o, Work& w, int64_t b, int64_t s, int64_t pos, float* S, float* c) {
  const Geometry& g = x.g;
  const float gamma = static_cast<float>(std::exp(x.map.log_decay(s * g.heads_per_state)));
  for (int64_t t = 0; t < g.q_len; ++t) {
    w.c.load_keys(x, b, s, t, 1, c);
    rescale_rows(x.map, S, w.c.pre.data(), g.features, g.width);
    simd::rank1(S, g.features, g.width, gamma, w.c.kf.data(), w.c.vx.data());
    w.c.load_queries(x, b, s, t, 1, pos, c);
    for (int64_t hh = 0; hh < g.heads_per_state; ++hh)
      simd::vecmat(w.c.qf.data() + hh * g.features, S, g.features, g.width, w.u.data() + hh * g.width);
    emit(x, o, w, b, s, t);
  }
}

// Parallel: every query block against every key block it may see, pairs weighted by decay
// and causal mask. Key block b's features are at the scales c_b reached after it, the query
// block's at c_t (causal: its own block's; else the last): the queries meet block b with
// feature r multiplied by e^(c_b,r - c_t,r).
void parallel(const Ctx& x, const MutTensorView& o, Work& w, int64_t b, int64_t s, bool causal) {
  const Geometry& g = x.g;
  const int64_t F = g.features, W = g.width, C = g.chunk;
  const double lg = x.map.log_decay(s * g.heads_per_state);
  std::vector<float>& scales = w.block_scales;
  scales.clear();
  std::fill(w.scales.begin(), w.scales.end(), -HUGE_VALF);
  for (int64_t j0 = 0; j0 < g.kv_len; j0 += C) {
    const int64_t nk = std::min(C, g.kv_len - j0);
    w.c.load_keys(x, b, s, j0, nk, w.scales.data());
    std::copy_n(w.c.kf.begin(), nk * F, w.key_blocks.begin() + j0 * F);
    std::copy_n(w.c.vx.begin(), nk * W, w.value_blocks.begin() + j0 * W);
    scales.insert(scales.end(), w.scales.begin(), w.scales.end());
  }
  std::vector<float> factor(static_cast<size_t>(F));
  for (int64_t t0 = 0; t0 < g.q_len; t0 += C) {
    const int64_t n = std::min(C, g.q_len - t0);
    const int64_t blocks = static_cast<int64_t>(scales.size()) / F;
    const float* cq = blocks == 0 ? w.scales.data() : scales.data() + (causal ? t0 / C : blocks - 1) * F;
    w.c.load_queries(x, b, s, t0, n, 0, cq);
    std::fill_n(w.u.begin(), w.c.rows * W, 0.0f);
    for (int64_t j0 = 0; j0 < (causal ? t0 + 1 : g.kv_len); j0 += C) {
      const int64_t nk = std::min(C, g.kv_len - j0);
      const float* qs = w.c.qf.data();
      if (x.map.scales_keys()) {
        const float* cb = scales.data() + j0 / C * F;
        float* scaled = w.scaled.data();
        for (int64_t r = 0; r < F; ++r) factor[static_cast<size_t>(r)] = std::exp(cb[r] - cq[r]);
        for (int64_t row = 0; row < w.c.rows; ++row) simd::mul_into(qs + row * F, factor.data(), scaled + row * F, F);
        qs = scaled;
      }
      gemm(false, true, w.c.rows, nk, F, 1.0f, qs, F, w.key_blocks.data() + j0 * F, F, 0.0f, w.a.data(), nk);
      if (lg != 0) pair_table(w.d.tab.data(), n, nk, t0 - j0, lg, 0, causal);
      weigh_pairs(w.a.data(), g.heads_per_state, n, nk, t0 - j0, causal, lg != 0 ? w.d.tab.data() : nullptr);
      gemm(false, false, w.c.rows, W, nk, 1.0f, w.a.data(), nk, w.value_blocks.data() + j0 * W, W, 1.0f, w.u.data(), W);
    }
    emit(x, o, w, b, s, t0);
  }
}

// The state form (non-causal): S = sum over every key, then U = Qf S.
void state_form(const Ctx& x, const MutTensorView& o, Work& w, int64_t b, int64_t s) {
  const Geometry& g = x.g;
  const int64_t F = g.features, W = g.width;
  float* S = w.state.data();
  float* c = w.scales.data();
  std::fill_n(S, F * W, 0.0f);
  std::fill_n(c, F, -HUGE_VALF);
  for (int64_t j0 = 0; j0 < g.kv_len; j0 += g.chunk) {
    const int64_t nk = std::min(g.chunk, g.kv_len - j0);
    w.c.load_keys(x, b, s, j0, nk, c);
    rescale_rows(x.map, S, w.c.pre.data(), F, W);
    gemm(true, false, F, W, nk, 1.0f, w.c.kf.data(), F, w.c.vx.data(), W, 1.0f, S, W);
  }
  for (int64_t t0 = 0; t0 < g.q_len; t0 += g.chunk) {
    const int64_t n = std::min(g.chunk, g.q_len - t0);
    w.c.load_queries(x, b, s, t0, n, 0, c);
    gemm(false, false, w.c.rows, W, F, 1.0f, w.c.qf.data(), F, S, W, 0.0f, w.u.data(), W);
    emit(x, o, w, b, s, t0);
  }
}

}  // namespace

void forward(const FeatureMap& map, const Geometry& g, Form form, const TensorView& q, const TensorView& k,
             const TensorView& v, const MutTensorView& o) {
  if (g.q_len == 0) return;
  const Ctx x{map, g, q, k, v};
  const int64_t heads = g.state_heads();
  for_items(
      g.batch * heads, [&] { return Work(g, form); },
      [&](int64_t item, Work& w) {
        const int64_t b = item / heads, s = item % heads;
        switch (form) {
          case Form::chunkwise:
          case Form::recurrent:
            std::fill(w.state.begin(), w.state.end(), 0.0f);
            std::fill(w.scales.begin(), w.scales.end(), -HUGE_VALF);
            if (form == Form::chunkwise) {
              causal_chunks(x, o, w, b, s, 0, w.state.data(), w.scales.data());
            } else {
              recurrent(x, o, w, b, s, 0, w.state.data(), w.scales.data());
            }
            break;
          case Form::parallel: parallel(x, o, w, b, s, g.causal); break;
          case Form::state: state_form(x, o, w, b, s); break;
        }
      });
}

void forward_from_state(const FeatureMap& map, const Geometry& g, bool recurrent_form, const TensorView& q,
                        const TensorView& k, const TensorView& v, const MutTensorView& o, float* states,
                        float* scales, int64_t pos) {
  if (g.q_len == 0) return;
  const Ctx x{map, g, q, k, v};
  const int64_t heads = g.state_heads();
  const Form form = recurrent_form ? Form::recurrent : Form::chunkwise;
  for_items(
      g.batch * heads, [&] { return Work(g, form); },
      [&](int64_t item, Work& w) {
        const int64_t b = item / heads, s = item % heads;
        float* S = states + item * g.state_floats();
        float* c = scales ? scales + item * g.features : w.scales.data();
        if (recurrent_form) {
          recurrent(x, o, w, b, s, pos, S, c);
        } else {
          causal_chunks(x, o, w, b, s, pos, S, c);
        }
      });
}

double forward_flops(const Geometry& g, Form form, double map_flops) {
  const double F = static_cast<double>(g.features), W = static_cast<double>(g.width);
  const double hs = static_cast<double>(g.heads_per_state);
  const double nq = static_cast<double>(g.q_len), nk = static_cast<double>(g.kv_len);
  double per_state = map_flops * (nk + hs * nq);  // keys mapped once per state, queries per head
  switch (form) {
    case Form::chunkwise:
      for (int64_t t0 = 0; t0 < g.q_len; t0 += g.chunk) {
        const double n = static_cast<double>(std::min(g.chunk, g.q_len - t0)), rows = hs * n;
        per_state += 2 * rows * F * W + 2 * rows * n * (F + W) + 2 * n * F * W;
      }
      break;
    case Form::parallel:
      for (int64_t t0 = 0; t0 < g.q_len; t0 += g.chunk) {
        const double rows = hs * static_cast<double>(std::min(g.chunk, g.q_len - t0));
        const double keys = g.causal ? static_cast<double>(std::min(t0 + g.chunk, g.kv_len)) : nk;
        per_state += 2 * rows * keys * (F + W);
      }
      break;
    case Form::recurrent: per_state += nq * (2 * F * W + hs * 2 * F * W); break;
    case Form::state: per_state += 2 * nk * F * W + hs * nq * 2 * F * W; break;
  }
  return static_cast<double>(g.batch * g.state_heads()) * per_state;
}

}  // namespace attnkit::linear
