// MLA's forward in both forms and its backward by composition (mla.hpp): argument checks,
// the projections (cblas_sgemm), RoPE on the d_r parts, and the attention in between through
// attend_into / attend_backward_into (the flash kernels). Not for: the latent cache
// (src/cache/mla_cache.cpp), the decode kernel (mla_decode.cpp), the oracle (src/ref).
#include "attnkit/mla.hpp"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include <fmt/format.h>

#include "attnkit/attention.hpp"
#include "attnkit/backward.hpp"
#include "core/view_checks.hpp"
#include "kernels/mla_internal.hpp"

namespace attnkit {

std::string_view mla_form_name(MlaForm f) { return f == MlaForm::naive ? "naive" : "absorbed"; }

MlaForm parse_mla_form(std::string_view name) {
  if (name == "naive") return MlaForm::naive;
  if (name == "absorbed") return MlaForm::absorbed;
  throw Error(fmt::format("MLA form '{}' is not one of naive, absorbed", printable(name)));
}


void MlaWeights::validate(const MlaConfig& c) const {
  c.validate();
  expect_dims(w_q, {c.d_model, c.heads, c.d_qk()}, "w_q", "[d_model, H, d_nope + d_r]");
  expect_dims(w_dkv, {c.d_model, c.d_c}, "w_dkv", "[d_model, d_c]");
  expect_dims(w_kr, {c.d_model, c.d_r}, "w_kr", "[d_model, d_r]");
  expect_dims(w_uk, {c.heads, c.d_nope, c.d_c}, "w_uk", "[H, d_nope, d_c]");
  expect_dims(w_uv, {c.heads, c.d_v, c.d_c}, "w_uv", "[H, d_v, d_c]");
}

namespace mla {

F32Array::F32Array(const TensorView& t) {
  if (t.dtype() == DType::f32 && t.is_contiguous()) {
    data_ = static_cast<const float*>(t.data());
    return;
  }
  owned_.resize(static_cast<size_t>(t.numel()));
  int64_t dims[kMaxRank] = {1, 1, 1, 1};
  for (int i = 0; i < t.rank(); ++i) dims[kMaxRank - t.rank() + i] = t.size(i);
  const int lead = kMaxRank - t.rank();  // padded dims come first and have index 0
  size_t at = 0;
  int64_t idx[kMaxRank];
  for (idx[0] = 0; idx[0] < dims[0]; ++idx[0])
    for (idx[1] = 0; idx[1] < dims[1]; ++idx[1])
      for (idx[2] = 0; idx[2] < dims[2]; ++idx[2])
        for (idx[3] = 0; idx[3] < dims[3]; ++idx[3]) {
          int64_t off = 0;
          for (int i = 0; i < t.rank(); ++i) off += idx[lead + i] * t.stride(i);
          owned_[at++] = static_cast<float>(t.load(off));
        }
  data_ = owned_.data();
}

void store_f32(const MutTensorView& dst, const float* src) {
  if (dst.dtype() == DType::f32 && dst.is_contiguous()) {
    std::memcpy(dst.mutable_data(), src, static_cast<size_t>(dst.numel()) * sizeof(float));
    return;
  }
  const std::vector<int64_t> s = dst.shape();
  std::vector<int64_t> idx(s.size(), 0);
  const int64_t count = dst.numel();
  for (int64_t i = 0; i < count; ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < s.size(); ++d) off += idx[d] * dst.stride(static_cast<int>(d));
    dst.store(off, src[i]);
    for (size_t d = s.size(); d-- > 0;) {  // next index in C order
      if (++idx[d] < s[d]) break;
      idx[d] = 0;
    }
  }
}

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // BLAS leaves C alone for k = 0 only with beta = 1: make the empty sum explicit
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] *= beta;
    return;
  }
  auto i = [](int64_t v) { return static_cast<int>(v); };
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, i(m), i(n),
              i(k), 1.0f, a, i(lda), b, i(ldb), beta, c, i(ldc));
}

void check_positions(const int64_t* pos, int64_t rows, int64_t n, const char* what) {
  for (int64_t r = 0; r < rows; ++r)
    check(pos[r] >= 0 && pos[r] < kMaxRopePosition, [&] {
      return fmt::format("{}[b={}, n={}] ({}) must be in [0, 2^31)", what, r / n, r % n, pos[r]);
    });
}

void rope_parts(const MlaConfig& cfg, float* x, int64_t rows, int64_t row_stride, int64_t first, int64_t parts,
                int64_t part_stride, const int64_t* pos, bool inverse) {
  const int64_t half = cfg.rope.resolved_rotary_dim(cfg.d_r) / 2;
  std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
  for (int64_t r = 0; r < rows; ++r) {
    rope_angles(cfg.rope, cfg.d_r, pos[r], c.data(), s.data());
    // R(theta)^T = R(-theta): the same cosines, negated sines.
    if (inverse)
      for (float& v : s) v = -v;
    for (int64_t p = 0; p < parts; ++p)
      rope_row_angles(cfg.rope, cfg.d_r, c.data(), s.data(), x + r * row_stride + first + p * part_stride);
  }
}

Projected project(const MlaConfig& cfg, const Weights32& w, const float* x, int64_t rows, const int64_t* pos,
                  bool want_queries) {
  const int64_t hq = cfg.heads * cfg.d_qk(), wl = cfg.latent_width();
  Projected p;
  p.latent.resize(static_cast<size_t>(rows * wl));
  gemm(false, false, rows, cfg.d_c, cfg.d_model, x, cfg.d_model, w.w_dkv.data(), cfg.d_c, 0, p.latent.data(), wl);
  gemm(false, false, rows, cfg.d_r, cfg.d_model, x, cfg.d_model, w.w_kr.data(), cfg.d_r, 0, p.latent.data() + cfg.d_c,
       wl);
  rope_parts(cfg, p.latent.data(), rows, wl, cfg.d_c, 1, 0, pos, false);
  if (want_queries) {
    p.q.resize(static_cast<size_t>(rows * hq));
    gemm(false, false, rows, hq, cfg.d_model, x, cfg.d_model, w.w_q.data(), hq, 0, p.q.data(), hq);
    rope_parts(cfg, p.q.data(), rows, hq, cfg.d_nope, cfg.heads, cfg.d_qk(), pos, false);
  }
  return p;
}

std::vector<float> absorb_queries(const MlaConfig& cfg, const Weights32& w, const float* q, int64_t rows) {
  const int64_t H = cfg.heads, dqk = cfg.d_qk(), wl = cfg.latent_width();
  std::vector<float> qt(static_cast<size_t>(rows * H * wl));
  for (int64_t h = 0; h < H; ++h) {
    // q~_h[:, :d_c] = q_nope_h W_UK[h]: [R, d_nope] x [d_nope, d_c]
    gemm(false, false, rows, cfg.d_c, cfg.d_nope, q + h * dqk, H * dqk, w.w_uk.data() + h * cfg.d_nope * cfg.d_c,
         cfg.d_c, 0, qt.data() + h * wl, H * wl);
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(q + (r * H + h) * dqk + cfg.d_nope, cfg.d_r, qt.data() + (r * H + h) * wl + cfg.d_c);
  }
  return qt;
}

void up_project_values(const MlaConfig& cfg, const Weights32& w, const float* ot, int64_t rows, float* out) {
  const int64_t H = cfg.heads;
  for (int64_t h = 0; h < H; ++h)  // out_h = o~_h W_UV[h]^T: [R, d_c] x [d_c, d_v]
    gemm(false, true, rows, cfg.d_v, cfg.d_c, ot + h * cfg.d_c, H * cfg.d_c, w.w_uv.data() + h * cfg.d_v * cfg.d_c,
         cfg.d_c, 0, out + h * cfg.d_v, H * cfg.d_v);
}

namespace {

// The rows of one call: x [B, N, d_model] as BN rows, and the positions of each.
struct Rows {
  int64_t b = 0, n = 0;
  F32Array x;
  std::vector<int64_t> pos;  // [B * N]
  int64_t count() const { return b * n; }
};

Rows check_rows(const MlaConfig& cfg, const TensorView& x, const int64_t* positions) {
  check(x.rank() == 3 && x.size(2) == cfg.d_model, [&] {
    return fmt::format("x must have shape [B, N, d_model] with d_model = {}, got {}", cfg.d_model,
                       x.rank() == 0 ? std::string("no tensor") : x.shape_string());
  });
  check(x.size(0) >= 1, [&] { return fmt::format("x: batch ({}) must be >= 1", x.size(0)); });
  check(x.size(1) <= kMaxSeqLen && x.size(0) * x.size(1) <= INT_MAX, [&] {
    return fmt::format("x: B * N ({} * {}) must be at most 2^31 - 1 rows (BLAS's int)", x.size(0), x.size(1));
  });
  check(x.size(0) * x.size(1) * cfg.heads * std::max(cfg.d_qk(), cfg.latent_width()) <= (int64_t{1} << 40), [&] {
    return fmt::format("x: B * N * H * width ({} * {} * {} * {}) is absurdly large", x.size(0), x.size(1), cfg.heads,
                       std::max(cfg.d_qk(), cfg.latent_width()));
  });
  Rows r{x.size(0), x.size(1), F32Array(x), {}};
  r.pos.resize(static_cast<size_t>(r.count()));
  for (int64_t i = 0; i < r.count(); ++i) r.pos[static_cast<size_t>(i)] = positions ? positions[i] : i % r.n;
  if (positions) check_positions(positions, r.count(), r.n, "positions");
  return r;
}

// Everything the forward computes before its output: the projections, the form's attention
// operands, the attention output and its LSE (the backward's starting point).
struct Forward {
  int64_t b, n;
  Projected p;
  std::vector<float> k, v;  // naive: [BN][H][d_qk], [BN][H][d_v]
  std::vector<float> qt;    // absorbed: [BN][H][d_c + d_r]
  std::vector<float> o;     // naive: out [BN][H][d_v]; absorbed: o~ [BN][H][d_c]
  std::vector<float> lse;   // [B][H][N]
};

// [B][N][H][D] memory seen as [B, H, N, D], the layout attend() takes.
template <class View, class T>
View heads_view(T* data, int64_t b, int64_t n, int64_t h, int64_t d) {
  return View(data, DType::f32, {b, h, n, d}, {n * h * d, d, h * d, 1});
}
// The latent [B][N][d_c + d_r] as the absorbed form's single KV head, the first `width`
// columns of each row: K with width d_c + d_r, V (the same memory) with width d_c.
template <class View, class T>
View latent_view(T* data, int64_t b, int64_t n, int64_t row, int64_t width) {
  return View(data, DType::f32, {b, 1, n, width}, {n * row, n * row, row, 1});
}

struct AttnOperands {
  TensorView q, k, v;
  MutTensorView o;
  int64_t d_q, d_o;  // widths of q / k and of v / o
};

AttnOperands operands(const MlaConfig& cfg, MlaForm form, Forward& f) {
  const int64_t H = cfg.heads, wl = cfg.latent_width();
  if (form == MlaForm::naive)
    return {heads_view<TensorView>(f.p.q.data(), f.b, f.n, H, cfg.d_qk()),
            heads_view<TensorView>(f.k.data(), f.b, f.n, H, cfg.d_qk()),
            heads_view<TensorView>(f.v.data(), f.b, f.n, H, cfg.d_v),
            heads_view<MutTensorView>(f.o.data(), f.b, f.n, H, cfg.d_v), cfg.d_qk(), cfg.d_v};
  return {heads_view<TensorView>(f.qt.data(), f.b, f.n, H, wl), latent_view<TensorView>(f.p.latent.data(), f.b, f.n, wl, wl),
          latent_view<TensorView>(f.p.latent.data(), f.b, f.n, wl, cfg.d_c),
          heads_view<MutTensorView>(f.o.data(), f.b, f.n, H, cfg.d_c), wl, cfg.d_c};
}

AttendOptions attend_options(const MlaConfig& cfg, const MlaOptions& opts) {
  AttendOptions a;
  a.pattern = opts.pattern;
  a.scale = cfg.softmax_scale();  // the same in both forms: q~ . [c ; k_r] = q . k
  return a;
}

Forward run_forward(const MlaConfig& cfg, const Weights32& w, const Rows& rows, const MlaOptions& opts) {
  const int64_t H = cfg.heads, R = rows.count(), dqk = cfg.d_qk(), wl = cfg.latent_width();
  Forward f{rows.b, rows.n, project(cfg, w, rows.x.data(), R, rows.pos.data()), {}, {}, {}, {}, {}};
  const float* latent = f.p.latent.data();
  if (opts.form == MlaForm::naive) {
    f.k.resize(static_cast<size_t>(R * H * dqk));
    f.v.resize(static_cast<size_t>(R * H * cfg.d_v));
    for (int64_t h = 0; h < H; ++h) {
      // k_h = [c W_UK[h]^T ; k_r], v_h = c W_UV[h]^T: [R, d_c] x [d_c, d_nope | d_v]
      gemm(false, true, R, cfg.d_nope, cfg.d_c, latent, wl, w.w_uk.data() + h * cfg.d_nope * cfg.d_c, cfg.d_c, 0,
           f.k.data() + h * dqk, H * dqk);
      gemm(false, true, R, cfg.d_v, cfg.d_c, latent, wl, w.w_uv.data() + h * cfg.d_v * cfg.d_c, cfg.d_c, 0,
           f.v.data() + h * cfg.d_v, H * cfg.d_v);
      for (int64_t r = 0; r < R; ++r)
        std::copy_n(latent + r * wl + cfg.d_c, cfg.d_r, f.k.data() + (r * H + h) * dqk + cfg.d_nope);
    }
  } else {
    f.qt = absorb_queries(cfg, w, f.p.q.data(), R);
  }
  f.o.resize(static_cast<size_t>(R * H * (opts.form == MlaForm::naive ? cfg.d_v : cfg.d_c)));
  f.lse.resize(static_cast<size_t>(R * H));
  const AttnOperands a = operands(cfg, opts.form, f);
  attend_into(a.q, a.k, a.v, attend_options(cfg, opts), a.o,
              MutTensorView(f.lse.data(), DType::f32, {f.b, H, f.n}));
  return f;
}

}  // namespace
}  // namespace mla

void mla_forward(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x, const int64_t* positions,
                 const MlaOptions& opts, const MutTensorView& out) {
  w.validate(cfg);
  const mla::Rows rows = mla::check_rows(cfg, x, positions);
  expect_dims(out, {rows.b, rows.n, cfg.heads, cfg.d_v}, "out", "[B, N, H, d_v]");
  if (rows.count() == 0) return;
  const mla::Weights32 w32(w);
  mla::Forward f = mla::run_forward(cfg, w32, rows, opts);
  if (opts.form == MlaForm::absorbed) {  // out_h = W_UV[h] o~_h
    std::vector<float> result(static_cast<size_t>(rows.count() * cfg.heads * cfg.d_v));
    mla::up_project_values(cfg, w32, f.o.data(), rows.count(), result.data());
    f.o = std::move(result);
  }
  mla::store_f32(out, f.o.data());
}

MlaGradients mla_backward(const MlaConfig& cfg, const MlaWeights& w, const TensorView& x, const int64_t* positions,
                          const MlaOptions& opts, const TensorView& d_out) {
  using mla::gemm;
  w.validate(cfg);
  const mla::Rows rows = mla::check_rows(cfg, x, positions);
  expect_dims(d_out, {rows.b, rows.n, cfg.heads, cfg.d_v}, "d_out", "[B, N, H, d_v]");
  const int64_t H = cfg.heads, R = rows.count(), B = rows.b, N = rows.n;
  const int64_t dqk = cfg.d_qk(), wl = cfg.latent_width(), dc = cfg.d_c, dv = cfg.d_v, dn = cfg.d_nope;
  MlaGradients g{Tensor(DType::f32, {B, N, cfg.d_model}), Tensor(DType::f32, {cfg.d_model, H, dqk}),
                 Tensor(DType::f32, {cfg.d_model, dc}),   Tensor(DType::f32, {cfg.d_model, cfg.d_r}),
                 Tensor(DType::f32, {H, dn, dc}),         Tensor(DType::f32, {H, dv, dc})};
  if (R == 0) return g;
  auto f32 = [](Tensor& t) { return static_cast<float*>(t.data()); };
  const mla::Weights32 w32(w);
  mla::Forward f = mla::run_forward(cfg, w32, rows, opts);
  const mla::AttnOperands a = mla::operands(cfg, opts.form, f);
  const mla::F32Array dout(d_out);  // [R][H][d_v]
  const float* latent = f.p.latent.data();
  const TensorView lse(f.lse.data(), DType::f32, {B, H, N});
  std::vector<float> dq(static_cast<size_t>(R * H * dqk));  // d(q after RoPE), [R][H][d_qk]
  std::vector<float> dlat(static_cast<size_t>(R * wl));     // [dc ; d(k_r after RoPE)], [R][d_c + d_r]
  if (opts.form == MlaForm::naive) {
    std::vector<float> dk(static_cast<size_t>(R * H * dqk)), dvh(static_cast<size_t>(R * H * dv));
    attend_backward_into(a.q, a.k, a.v, a.o, lse, mla::heads_view<TensorView>(dout.data(), B, N, H, dv),
                         mla::attend_options(cfg, opts), mla::heads_view<MutTensorView>(dq.data(), B, N, H, dqk),
                         mla::heads_view<MutTensorView>(dk.data(), B, N, H, dqk),
                         mla::heads_view<MutTensorView>(dvh.data(), B, N, H, dv), {});
    for (int64_t h = 0; h < H; ++h) {
      const float* w_uk = w32.w_uk.data() + h * dn * dc;
      const float* w_uv = w32.w_uv.data() + h * dv * dc;
      // v_h = c W_UV[h]^T:  dW_UV[h] = dv_h^T c,  dc += dv_h W_UV[h]
      gemm(true, false, dv, dc, R, dvh.data() + h * dv, H * dv, latent, wl, 0, f32(g.dw_uv) + h * dv * dc, dc);
      gemm(false, false, R, dc, dv, dvh.data() + h * dv, H * dv, w_uv, dc, 1, dlat.data(), wl);
      // k_nope_h = c W_UK[h]^T:  dW_UK[h] = dk_nope_h^T c,  dc += dk_nope_h W_UK[h]
      gemm(true, false, dn, dc, R, dk.data() + h * dqk, H * dqk, latent, wl, 0, f32(g.dw_uk) + h * dn * dc, dc);
      gemm(false, false, R, dc, dn, dk.data() + h * dqk, H * dqk, w_uk, dc, 1, dlat.data(), wl);
    }
    for (int64_t r = 0; r < R; ++r)  // k_r is shared: its gradient sums over heads, in head order
      for (int64_t h = 0; h < H; ++h)
        for (int64_t c = 0; c < cfg.d_r; ++c) dlat[r * wl + dc + c] += dk[(r * H + h) * dqk + dn + c];
  } else {
    // out_h = o~_h W_UV[h]^T:  do~_h = dout_h W_UV[h],  dW_UV[h] = dout_h^T o~_h
    std::vector<float> dot(static_cast<size_t>(R * H * dc)), dqt(static_cast<size_t>(R * H * wl));
    std::vector<float> dlv(static_cast<size_t>(R * dc));
    for (int64_t h = 0; h < H; ++h) {
      const float* w_uv = w32.w_uv.data() + h * dv * dc;
      gemm(false, false, R, dc, dv, dout.data() + h * dv, H * dv, w_uv, dc, 0, dot.data() + h * dc, H * dc);
      gemm(true, false, dv, dc, R, dout.data() + h * dv, H * dv, f.o.data() + h * dc, H * dc, 0,
           f32(g.dw_uv) + h * dv * dc, dc);
    }
    attend_backward_into(a.q, a.k, a.v, a.o, lse, mla::heads_view<TensorView>(dot.data(), B, N, H, dc),
                         mla::attend_options(cfg, opts), mla::heads_view<MutTensorView>(dqt.data(), B, N, H, wl),
                         mla::latent_view<MutTensorView>(dlat.data(), B, N, wl, wl),
                         mla::latent_view<MutTensorView>(dlv.data(), B, N, dc, dc), {});
    // V is K's first d_c columns: the latent's gradient is dK plus dV there.
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < dc; ++c) dlat[r * wl + c] += dlv[r * dc + c];
    for (int64_t h = 0; h < H; ++h) {
      const float* w_uk = w32.w_uk.data() + h * dn * dc;
      // q~_h = [q_nope_h W_UK[h] ; q_r_h]:  dq_nope_h = dq~_h W_UK[h]^T,  dW_UK[h] = q_nope_h^T dq~_h
      gemm(false, true, R, dn, dc, dqt.data() + h * wl, H * wl, w_uk, dc, 0, dq.data() + h * dqk, H * dqk);
      gemm(true, false, dn, dc, R, f.p.q.data() + h * dqk, H * dqk, dqt.data() + h * wl, H * wl, 0,
           f32(g.dw_uk) + h * dn * dc, dc);
      for (int64_t r = 0; r < R; ++r)
        std::copy_n(dqt.data() + (r * H + h) * wl + dc, cfg.d_r, dq.data() + (r * H + h) * dqk + dn);
    }
  }
  // Shared by both forms: undo RoPE (rotate gradients by -theta), then the input projections.
  mla::rope_parts(cfg, dq.data(), R, H * dqk, dn, H, dqk, rows.pos.data(), true);
  mla::rope_parts(cfg, dlat.data(), R, wl, dc, 1, 0, rows.pos.data(), true);
  const float* x32 = rows.x.data();
  const int64_t D = cfg.d_model, hq = H * dqk;
  gemm(true, false, D, hq, R, x32, D, dq.data(), hq, 0, f32(g.dw_q), hq);  // dW_Q = x^T dq
  gemm(true, false, D, dc, R, x32, D, dlat.data(), wl, 0, f32(g.dw_dkv), dc);
  gemm(true, false, D, cfg.d_r, R, x32, D, dlat.data() + dc, wl, 0, f32(g.dw_kr), cfg.d_r);
  // dx = dq W_Q^T + dc W_DKV^T + dk_r W_KR^T
  gemm(false, true, R, D, hq, dq.data(), hq, w32.w_q.data(), hq, 0, f32(g.dx), D);
  gemm(false, true, R, D, dc, dlat.data(), wl, w32.w_dkv.data(), dc, 1, f32(g.dx), D);
  gemm(false, true, R, D, cfg.d_r, dlat.data() + dc, wl, w32.w_kr.data(), cfg.d_r, 1, f32(g.dx), D);
  return g;
}

}  // namespace attnkit
