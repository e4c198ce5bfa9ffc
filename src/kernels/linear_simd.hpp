// The element-wise and vector loops of the linear-attention kernels, written once with
// Highway (linear_simd.cpp) and dispatched at run time; the matrix products go to BLAS.
// n counts floats; pointers need no alignment.
#pragma once

#include <cstdint>

namespace attnkit::linear::simd {

// f = elu(x) + 1: x + 1 for x > 0, e^x otherwise.
void elu1(const float* x, float* f, int64_t n);
// dx = df * phi'(x) with phi'(x) = 1 for x > 0, e^x = f otherwise.
void elu1_grad(const float* x, const float* f, const float* df, float* dx, int64_t n);
// x = mul * e^(x - shift); e^ of anything below -87 is 0, never a subnormal or NaN.
void exp_shift(float* x, int64_t n, float shift, float mul);
// x = x + alpha y.
void add_scaled(float* x, const float* y, int64_t n, float alpha);
// max_i x[i] (-inf for n = 0; NaN when an element is NaN).
float max(const float* x, int64_t n);
// a = a * t; out = a * t.
void mul(float* a, const float* t, int64_t n);
void mul_into(const float* a, const float* t, float* out, int64_t n);
// s[r][c] = alpha s[r][c] + kf[r] vx[c] for s: [rows][cols] (the recurrent state update).
void rank1(float* s, int64_t rows, int64_t cols, float alpha, const float* kf, const float* vx);
// u[c] = sum_r qf[r] s[r][c] (a query row read through the state).
void vecmat(const float* qf, const float* s, int64_t rows, int64_t cols, float* u);

}  // namespace attnkit::linear::simd
