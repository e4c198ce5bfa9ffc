// Linformer (linformer.hpp): the seeded projections, the argument checks
// the fast form and the reference share, and the fast form itself. The projections and
// their gradients are plain matmuls, so they go to BLAS (K' = E K, dK = E^T dK',
// dE = dK' K^T per head); the attention over the k projected keys is the flash kernel's
// forward and backward, unchanged. Not for: the f64 oracle (src/ref/linformer_ref.cpp), the
// method string (src/core/method.cpp).
#include "attnkit/linformer.hpp"

#include <cblas.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <climits>
#include <cstring>
#include <numbers>
#include <optional>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "attnkit/backward.hpp"
#include "attnkit/reference.hpp"
#include "core/view_checks.hpp"
#include "kernels/flash.hpp"

namespace attnkit {

LinformerProjections make_linformer_projections(const LinformerMethod& m, int64_t kv_heads, int64_t n) {
  check(m.k >= 1 && m.k <= kMaxSeqLen, [&] { return fmt::format("k ({}) must be in [1, {}]", m.k, kMaxSeqLen); });
  check(kv_heads >= 1, [&] { return fmt::format("kv_heads ({}) must be >= 1", kv_heads); });
  check(n >= 0 && n <= kMaxSeqLen, [&] { return fmt::format("n ({}) must be in [0, {}]", n, kMaxSeqLen); });
  std::mt19937_64 rng(m.seed);
  const double sigma = 1.0 / std::sqrt(static_cast<double>(m.k));
  // u in (0, 1]: 53 random bits, shifted off zero so that log(u) is finite.
  const auto uniform = [&] { return static_cast<double>((rng() >> 11) + 1) * 0x1p-53; };
  const auto fill = [&](Tensor& t) {
    auto* x = static_cast<float*>(t.data());
    const int64_t count = t.numel();
    for (int64_t i = 0; i < count; i += 2) {
      const double r = sigma * std::sqrt(-2.0 * std::log(uniform())), a = 2.0 * std::numbers::pi * uniform();
      x[i] = static_cast<float>(r * std::cos(a));
      if (i + 1 < count) x[i + 1] = static_cast<float>(r * std::sin(a));
    }
  };
  const int64_t p = m.projections(kv_heads);
  LinformerProjections out{Tensor(DType::f32, {p, m.k, n}), Tensor()};
  fill(out.e);
  if (!m.shares_ef()) {
    out.f = Tensor(DType::f32, {p, m.k, n});
    fill(out.f);
  }
  return out;
}

double linformer_flops(const LinformerMethod& m, int64_t b, int64_t hq, int64_t hkv, int64_t n, int64_t dk,
                       int64_t dv) {
  const double per_head = 2.0 * double(n) * double(m.k) * double(dk + dv);
  return double(b) * (double(hkv) + double(hq)) * per_head;
}

// ---- argument checks ----

namespace {

void expect_projection(const TensorView& t, const char* name, const LinformerMethod& m, const AttnShape& s,
                       int64_t p) {
  check(t.rank() == 3, [&] { return fmt::format("{} must have rank 3 [P, k, n], got {}", name, t.shape_string()); });
  check(t.size(0) == p, [&] {
    return fmt::format("{}: P ({}) must be {} for sharing={} ({})", name, t.size(0), p,
                       linformer_sharing_name(m.sharing),
                       m.sharing == LinformerSharing::none ? "one matrix per KV head" : "one matrix for every head");
  });
  check(t.size(1) == m.k,
        [&] { return fmt::format("{}: projected length ({}) must equal the method's k ({})", name, t.size(1), m.k); });
  check(t.size(2) == s.kv_len, [&] {
    return fmt::format("{}: n != projection length: {} projects sequences of {} but k and v have n = {}", name, name,
                       t.size(2), s.kv_len);
  });
}

// Whether f holds exactly e's values (NaN matching NaN); e and f have one shape. The same
// view, or an equal contiguous copy, is told without reading values one by one.
bool same_values(const TensorView& e, const TensorView& f) {
  const bool same_layout = e.dtype() == f.dtype() && e.stride(0) == f.stride(0) && e.stride(1) == f.stride(1) &&
                           e.stride(2) == f.stride(2);
  if (same_layout && e.data() == f.data()) return true;
  if (same_layout && e.is_contiguous() &&
      std::memcmp(e.data(), f.data(), static_cast<size_t>(e.numel()) * dtype_size(e.dtype())) == 0)
    return true;
  for (int64_t p = 0; p < e.size(0); ++p)
    for (int64_t j = 0; j < e.size(1); ++j)
      for (int64_t t = 0; t < e.size(2); ++t) {
        const double x = e.get(p, j, t), y = f.get(p, j, t);
        if (x != y && !(std::isnan(x) && std::isnan(y))) return false;
      }
  return true;
}

LinformerProblem check_inputs(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& e,
                              const TensorView& f, const LinformerMethod& m) {
  check(!m.causal, [] {
    return std::string(
        "causal: Linformer is non-causal only: E and F mix every position, future ones included, into each "
        "projected key and value, so no mask can keep a query from seeing later tokens");
  });
  check(m.k >= 1 && m.k <= kMaxSeqLen, [&] { return fmt::format("k ({}) must be in [1, {}]", m.k, kMaxSeqLen); });
  const AttnShape s = AttnShape::from_views(q, k, v, m.scale);
  const int64_t p = m.projections(s.kv_heads);
  expect_projection(e, "e", m, s, p);
  if (m.shares_ef()) {
    if (f.rank() != 0) {
      expect_projection(f, "f", m, s, p);
      check(same_values(e, f), [&] {
        return fmt::format("f: with sharing={} F is E; pass an empty view or e's values", linformer_sharing_name(m.sharing));
      });
    }
  } else {
    expect_projection(f, "f", m, s, p);
  }
  return {s, m.k, p};
}

}  // namespace

LinformerProblem prepare_linformer(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& e,
                                   const TensorView& f, const LinformerMethod& m, const MutTensorView& o) {
  const LinformerProblem pr = check_inputs(q, k, v, e, f, m);
  const AttnShape& s = pr.shape;
  expect_dims(o, {s.batch, s.q_heads, s.q_len, s.d_v}, "o", "[B, Hq, Nq, Dv]");
  expect_no_overlap(o, "o");
  return pr;
}

LinformerProblem prepare_linformer_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                            const TensorView& e, const TensorView& f, const TensorView& d_o,
                                            const LinformerMethod& m, const MutTensorView& dq,
                                            const MutTensorView& dk, const MutTensorView& dv,
                                            const MutTensorView& de, const MutTensorView& df) {
  const LinformerProblem pr = check_inputs(q, k, v, e, f, m);
  const AttnShape& s = pr.shape;
  expect_dims(d_o, {s.batch, s.q_heads, s.q_len, s.d_v}, "d_o", "[B, Hq, Nq, Dv]");
  expect_dims(dq, {s.batch, s.q_heads, s.q_len, s.d_qk}, "dq", "[B, Hq, Nq, Dk]");
  expect_dims(dk, {s.batch, s.kv_heads, s.kv_len, s.d_qk}, "dk", "[B, Hkv, n, Dk]");
  expect_dims(dv, {s.batch, s.kv_heads, s.kv_len, s.d_v}, "dv", "[B, Hkv, n, Dv]");
  expect_dims(de, {pr.projections, pr.proj_len, s.kv_len}, "de", "[P, k, n]");
  if (m.shares_ef()) {
    check(df.rank() == 0, [&] {
      return fmt::format("df: with sharing={} F is E, so de receives dE + dF; pass an empty view for df",
                         linformer_sharing_name(m.sharing));
    });
  } else {
    expect_dims(df, {pr.projections, pr.proj_len, s.kv_len}, "df", "[P, k, n]");
    expect_no_overlap(df, "df");
  }
  expect_no_overlap(dq, "dq");
  expect_no_overlap(dk, "dk");
  expect_no_overlap(dv, "dv");
  expect_no_overlap(de, "de");
  return pr;
}

// ---- the fast form ----

namespace {

// Work is split into items of fixed size, each computed by one thread with one
// single-threaded BLAS call per product: OpenBLAS threaded over 2 threads gives other bits
// than on 1 (measured: 7.6e-6 apart on a 64 x 64 x 1500 product), while inside an active
// OpenMP region it runs on the calling thread. So every element is the same sum whatever
// the thread count. Sizes: an item of K' is a block of kProjRows rows of E (64 x D outputs
// summed over n); of dK, dV kSeqRows positions; of dE, dF kSeqRows columns (k x 512 f32,
// 512 KiB at k = 256, summed over the batch and heads in order).
constexpr int64_t kProjRows = 64;
constexpr int64_t kSeqRows = 512;

// f32 rows with unit column stride, row r at data + r * ld: how BLAS reads a matrix.
struct F32Rows {
  const float* data;
  int64_t ld;
  F32Rows from_row(int64_t r) const { return {data + r * ld, ld}; }
  F32Rows from_col(int64_t c) const { return {data + c, ld}; }
};

// The matrices (last two dimensions) of a [P, k, n] or [B, H, n, D] input as F32Rows: the
// caller's memory when it is f32 laid out so, else one converted copy of the whole tensor
// (bf16 and f16 rows through the flash kernel's SIMD converters).
class F32Input {
 public:
  explicit F32Input(const TensorView& t)
      : t_(t), rows_(t.size(t.rank() - 2)), cols_(t.size(t.rank() - 1)), rs_(t.stride(t.rank() - 2)),
        cs_(t.stride(t.rank() - 1)) {
    borrowed_ = t.dtype() == DType::f32 && (cs_ == 1 || cols_ <= 1) && rs_ >= std::max<int64_t>(cols_, 1) &&
                rs_ <= INT_MAX;
    if (borrowed_) return;
    const int64_t inner = t.rank() == 4 ? t.size(1) : 1, count = t.size(0) * inner;
    copy_.resize(static_cast<size_t>(count * rows_ * cols_));
    const flash::SimdOps ops = flash::simd_ops();
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t m = 0; m < count; ++m)
      for (int64_t r = 0; r < rows_; ++r) {
        float* dst = copy_.data() + (m * rows_ + r) * cols_;
        const int64_t off = offset(m / inner, m % inner) + r * rs_;
        const auto* half = static_cast<const uint16_t*>(t.data()) + off;
        if (cs_ == 1 && t.dtype() == DType::bf16) ops.bf16_to_f32(half, dst, cols_);
        else if (cs_ == 1 && t.dtype() == DType::f16) ops.f16_to_f32(half, dst, cols_);
        else
          for (int64_t c = 0; c < cols_; ++c) dst[c] = static_cast<float>(t.load(off + c * cs_));
      }
  }
  // Matrix i0 of a rank-3 input, or (i0, i1) of a rank-4 one.
  F32Rows matrix(int64_t i0, int64_t i1 = 0) const {
    if (borrowed_) return {static_cast<const float*>(t_.data()) + offset(i0, i1), rs_};
    const int64_t m = t_.rank() == 4 ? i0 * t_.size(1) + i1 : i0;
    return {copy_.data() + m * rows_ * cols_, std::max<int64_t>(cols_, 1)};
  }

 private:
  int64_t offset(int64_t i0, int64_t i1) const { return t_.rank() == 4 ? t_.offset(i0, i1) : t_.offset(i0); }

  const TensorView& t_;
  int64_t rows_, cols_, rs_, cs_;
  bool borrowed_ = false;
  std::vector<float> copy_;
};

// A [rows, cols] block of an output view: element (r, c) at offset + r * rs + c * cs.
struct OutBlock {
  int64_t offset, rows, cols, rs, cs;
};

// Writes f32 rows (row stride ld) into block m of an output view, converting to its dtype.
void store_rows(const float* src, int64_t ld, const MutTensorView& t, const OutBlock& m) {
  for (int64_t r = 0; r < m.rows; ++r) {
    const float* row = src + r * ld;
    const int64_t off = m.offset + r * m.rs;
    auto* half = static_cast<uint16_t*>(t.mutable_data()) + off;
    if (m.cs == 1 && t.dtype() == DType::f32)
      std::memcpy(static_cast<float*>(t.mutable_data()) + off, row, static_cast<size_t>(m.cols) * sizeof(float));
    else if (m.cs == 1 && t.dtype() == DType::bf16)
      for (int64_t c = 0; c < m.cols; ++c) half[c] = float_to_bf16(row[c]);
    else if (m.cs == 1 && t.dtype() == DType::f16)
      for (int64_t c = 0; c < m.cols; ++c) half[c] = float_to_f16(row[c]);
    else
      for (int64_t c = 0; c < m.cols; ++c) t.store(off + c * m.cs, row[c]);
  }
}

int blas_int(int64_t x) {
  check(x <= INT_MAX, [&] { return fmt::format("linformer: a matrix dimension ({}) exceeds BLAS's int", x); });
  return static_cast<int>(x);
}

// C [m][n] = op(A) op(B) + beta C, row-major; op(X) = X^T when trans_x. A is [m][k] before
// op, or [k][m] with trans_a; likewise B; k >= 1. Called inside the items' parallel loops
// only.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, F32Rows a, F32Rows b, float beta, float* c,
          int64_t ldc) {
  assert(k > 0);
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, blas_int(m),
              blas_int(n), blas_int(k), 1.0f, a.data, blas_int(a.ld), b.data, blas_int(b.ld), beta, c, blas_int(ldc));
}

int64_t blocks(int64_t n, int64_t size) { return (n + size - 1) / size; }

// The projection KV head h uses.
int64_t proj_of(const LinformerProblem& pr, int64_t h) { return pr.projections == 1 ? 0 : h; }

// x' = E_p x[b, h] for every (batch, KV head): [B, Hkv, k, D] f32 from x [B, Hkv, n, D]
// and the projections e [P, k, n].
Tensor project(const LinformerProblem& pr, const F32Input& e, const F32Input& x, int64_t d) {
  const AttnShape& s = pr.shape;
  const int64_t k = pr.proj_len, row_blocks = blocks(k, kProjRows);
  Tensor out(DType::f32, {s.batch, s.kv_heads, k, d});
  if (s.kv_len == 0) return out;  // a sum over no position
  auto* dst = static_cast<float*>(out.data());
#pragma omp parallel for schedule(dynamic)
  for (int64_t item = 0; item < s.batch * s.kv_heads * row_blocks; ++item) {
    const int64_t bh = item / row_blocks, h = bh % s.kv_heads, r0 = item % row_blocks * kProjRows;
    const int64_t rows = std::min(kProjRows, k - r0);
    gemm(false, false, rows, d, s.kv_len, e.matrix(proj_of(pr, h)).from_row(r0), x.matrix(bh / s.kv_heads, h), 0.0f,
         dst + (bh * k + r0) * d, d);
  }
  return out;
}

// dx[b, h] = E_p^T dx'[b, h] into the view dx [B, Hkv, n, D], from dx' [B, Hkv, k, D] f32.
void unproject(const LinformerProblem& pr, const F32Input& e, const Tensor& dxp, const MutTensorView& dx) {
  const AttnShape& s = pr.shape;
  const int64_t k = pr.proj_len, d = dx.size(3), seq_blocks = blocks(s.kv_len, kSeqRows);
  const auto* g = static_cast<const float*>(dxp.data());
#pragma omp parallel
  {
    std::vector<float> buf(static_cast<size_t>(kSeqRows * d));
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < s.batch * s.kv_heads * seq_blocks; ++item) {
      const int64_t bh = item / seq_blocks, b = bh / s.kv_heads, h = bh % s.kv_heads;
      const int64_t t0 = item % seq_blocks * kSeqRows, rows = std::min(kSeqRows, s.kv_len - t0);
      gemm(true, false, rows, d, k, e.matrix(proj_of(pr, h)).from_col(t0), {g + bh * k * d, d}, 0.0f, buf.data(), d);
      store_rows(buf.data(), d, dx, {dx.offset(b, h, t0), rows, d, dx.stride(2), dx.stride(3)});
    }
  }
}

// One term of a projection's gradient: dx' [B, Hkv, k, D] f32 and the x [B, Hkv, n, D] it
// was projected from.
struct GradTerm {
  const Tensor* dxp;
  const F32Input* x;
  int64_t d;
};

// de[p] = sum over the terms, the batch and the heads of p of dx'[b, h] x[b, h]^T [k, n],
// each item's block of columns added up in that fixed order.
void projection_grad(const LinformerProblem& pr, std::initializer_list<GradTerm> terms, const MutTensorView& de) {
  const AttnShape& s = pr.shape;
  const int64_t k = pr.proj_len, col_blocks = blocks(s.kv_len, kSeqRows);
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<size_t>(k * kSeqRows));
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < pr.projections * col_blocks; ++item) {
      const int64_t p = item / col_blocks, t0 = item % col_blocks * kSeqRows;
      const int64_t cols = std::min(kSeqRows, s.kv_len - t0);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (const GradTerm& t : terms)
        for (int64_t b = 0; b < s.batch; ++b)
          for (int64_t h = 0; h < s.kv_heads; ++h) {
            if (proj_of(pr, h) != p) continue;
            const F32Rows g{static_cast<const float*>(t.dxp->data()) + (b * s.kv_heads + h) * k * t.d, t.d};
            gemm(false, true, k, cols, t.d, g, t.x->matrix(b, h).from_row(t0), 1.0f, acc.data(), cols);
          }
      store_rows(acc.data(), cols, de, {de.offset(p, 0, t0), k, cols, de.stride(1), de.stride(2)});
    }
  }
}

// The inner attention: full (non-causal) flash over the k projected keys.
AttendOptions inner_options(const LinformerProblem& pr) {
  AttendOptions opts;
  opts.scale = pr.shape.softmax_scale();
  opts.kernel = Kernel::flash;
  return opts;
}

bool all_f64(std::initializer_list<const TensorView*> views) {
  return std::all_of(views.begin(), views.end(),
                     [](const TensorView* t) { return t->rank() == 0 || t->dtype() == DType::f64; });
}

bool use_reference(const LinformerMethod& m, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& e, const TensorView& f) {
  return m.kernel == Kernel::ref || (m.kernel == Kernel::automatic && all_f64({&q, &k, &v, &e, &f}));
}

}  // namespace

void linformer_attend_into(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& e,
                           const TensorView& f, const LinformerMethod& m, const MutTensorView& o) {
  if (use_reference(m, q, k, v, e, f)) return linformer_reference(q, k, v, e, f, m, o);
  const LinformerProblem pr = prepare_linformer(q, k, v, e, f, m, o);
  const F32Input e32(e), k32(k), v32(v);
  const Tensor kp = project(pr, e32, k32, pr.shape.d_qk);
  const Tensor vp = m.shares_ef() ? project(pr, e32, v32, pr.shape.d_v) : project(pr, F32Input(f), v32, pr.shape.d_v);
  attend_into(q, kp.view(), vp.view(), inner_options(pr), o, MutTensorView());
}

Tensor linformer_attend(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& e,
                        const TensorView& f, const LinformerMethod& m, DType o_dtype) {
  const AttnShape s = AttnShape::from_views(q, k, v, m.scale);
  Tensor o(o_dtype, {s.batch, s.q_heads, s.q_len, s.d_v});
  linformer_attend_into(q, k, v, e, f, m, o.mut());
  return o;
}

void linformer_attend_backward_into(const TensorView& q, const TensorView& k, const TensorView& v,
                                    const TensorView& e, const TensorView& f, const TensorView& d_o,
                                    const LinformerMethod& m, const MutTensorView& dq, const MutTensorView& dk,
                                    const MutTensorView& dv, const MutTensorView& de, const MutTensorView& df) {
  if (use_reference(m, q, k, v, e, f) && (m.kernel == Kernel::ref || all_f64({&d_o})))
    return linformer_backward_reference(q, k, v, e, f, d_o, m, dq, dk, dv, de, df);
  const LinformerProblem pr = prepare_linformer_backward(q, k, v, e, f, d_o, m, dq, dk, dv, de, df);
  const AttnShape& s = pr.shape;
  const F32Input e32(e), k32(k), v32(v);
  std::optional<F32Input> f_own;
  if (!m.shares_ef()) f_own.emplace(f);
  const F32Input& f_in = m.shares_ef() ? e32 : *f_own;
  const Tensor kp = project(pr, e32, k32, s.d_qk), vp = project(pr, f_in, v32, s.d_v);
  // The forward again for O and LSE, which the attention backward starts from: over k keys
  // it costs a fraction of the backward.
  const AttendOptions opts = inner_options(pr);
  Tensor o(DType::f32, {s.batch, s.q_heads, s.q_len, s.d_v}), lse(DType::f32, {s.batch, s.q_heads, s.q_len});
  attend_into(q, kp.view(), vp.view(), opts, o.mut(), lse.mut());
  Tensor dkp(DType::f32, kp.shape()), dvp(DType::f32, vp.shape());
  attend_backward_into(q, kp.view(), vp.view(), o.view(), lse.view(), d_o, opts, dq, dkp.mut(), dvp.mut(),
                       MutTensorView());
  unproject(pr, e32, dkp, dk);
  unproject(pr, f_in, dvp, dv);
  const GradTerm k_term{&dkp, &k32, s.d_qk}, v_term{&dvp, &v32, s.d_v};
  if (m.shares_ef()) {
    projection_grad(pr, {k_term, v_term}, de);
  } else {
    projection_grad(pr, {k_term}, de);
    projection_grad(pr, {v_term}, df);
  }
}

LinformerGradients linformer_attend_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                             const TensorView& e, const TensorView& f, const TensorView& d_o,
                                             const LinformerMethod& m, DType grad_dtype) {
  const AttnShape s = AttnShape::from_views(q, k, v, m.scale);
  check(e.rank() == 3, [&] { return fmt::format("e must have rank 3 [P, k, n], got {}", e.shape_string()); });
  const std::vector<int64_t> proj_shape = e.shape();
  LinformerGradients g{Tensor(grad_dtype, {s.batch, s.q_heads, s.q_len, s.d_qk}),
                       Tensor(grad_dtype, {s.batch, s.kv_heads, s.kv_len, s.d_qk}),
                       Tensor(grad_dtype, {s.batch, s.kv_heads, s.kv_len, s.d_v}), Tensor(grad_dtype, proj_shape),
                       m.shares_ef() ? Tensor() : Tensor(grad_dtype, proj_shape)};
  linformer_attend_backward_into(q, k, v, e, f, d_o, m, g.dq.mut(), g.dk.mut(), g.dv.mut(), g.de.mut(),
                                 m.shares_ef() ? MutTensorView() : g.df.mut());
  return g;
}

}  // namespace attnkit
