// Internal pieces the MLA forward, backward and decode (mla.cpp, mla_decode.cpp) share: views
// as contiguous f32 arrays, the row-major sgemm wrapper, the projections of x into queries
// and latent rows, and RoPE over the d_r-wide parts of rows. Not for: attention itself
// (attend_into and the decode kernel) nor argument checking at the API (mla.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/mla.hpp"

namespace attnkit::mla {

// A view's elements in C order as one contiguous f32 array: the caller's memory when the
// view already is that, else a converted copy.
class F32Array {
 public:
  explicit F32Array(const TensorView& t);
  F32Array(const F32Array&) = delete;  // data_ may point into owned_
  F32Array(F32Array&&) = default;      // a moved vector keeps its buffer
  const float* data() const { return data_; }

 private:
  std::vector<float> owned_;
  const float* data_ = nullptr;
};

// The weights as f32 row-major matrices: w_q [d_model][H * d_qk], w_dkv [d_model][d_c],
// w_kr [d_model][d_r], w_uk [H][d_nope][d_c], w_uv [H][d_v][d_c].
struct Weights32 {
  F32Array w_q, w_dkv, w_kr, w_uk, w_uv;
  explicit Weights32(const MlaWeights& w) : w_q(w.w_q), w_dkv(w.w_dkv), w_kr(w.w_kr), w_uk(w.w_uk), w_uv(w.w_uv) {}
};

// C[m][n] = op(A) op(B) + beta C, row-major with leading dimensions in elements; op(A) is
// A^T when trans_a (A stored [k][m]), likewise B. Sizes must fit BLAS's int (checked at
// the API: every dimension here is at most B * N or a product of config widths).
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc);

// Rotates, for each of `rows` rows r (at x + r * row_stride), `parts` d_r-wide parts (the
// p-th at offset first + p * part_stride) by the RoPE angles of pos[r]; inverse rotates by
// -theta, the transpose, which is what a backward pass applies to gradients.
void rope_parts(const MlaConfig& cfg, float* x, int64_t rows, int64_t row_stride, int64_t first, int64_t parts,
                int64_t part_stride, const int64_t* pos, bool inverse);

// The projections of R token rows x: [R][d_model] at positions pos [R]:
//   q [R][H][d_qk]     = x W_Q with RoPE on each head's last d_r channels
//   latent [R][d_c + d_r] = [x W_DKV ; RoPE(x W_KR)]   (c and k_r side by side: one cache row)
struct Projected {
  std::vector<float> q, latent;
};
Projected project(const MlaConfig& cfg, const Weights32& w, const float* x, int64_t rows, const int64_t* pos,
                  bool want_queries = true);

// The absorbed queries from projected ones: qt [R][H][d_c + d_r] = [W_UK[h]^T q_nope_h ; q_r_h].
std::vector<float> absorb_queries(const MlaConfig& cfg, const Weights32& w, const float* q, int64_t rows);

// out [R][H][d_v] = W_UV[h] o~_h for o~ [R][H][d_c] (the absorbed form's last step).
void up_project_values(const MlaConfig& cfg, const Weights32& w, const float* ot, int64_t rows, float* out);

// Checks positions[r] in [0, 2^31) for r < rows, naming `what` and the index.
void check_positions(const int64_t* pos, int64_t rows, int64_t n, const char* what);

// Writes src, the f32 [n0][n1][n2][n3] array in C order, into dst (any dtype, any strides).
void store_f32(const MutTensorView& dst, const float* src);

}  // namespace attnkit::mla
