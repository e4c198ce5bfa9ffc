// Internal: the storage-independent SIMD steps of the decode kernel (decode_simd.cpp),
// chosen once for the best Highway target the CPU supports.
#pragma once

#include <cstdint>

#include "kernels/decode_micro.hpp"

namespace attnkit::decode {

struct SoftmaxParams {
  float scale = 1;    // multiplies raw scores
  float softcap = 0;  // c > 0: x = c tanh(x / c), before the mask bias
};

struct SimdOps {
  // s[r][j] = sum_c q[r][c] k_j[c]; q: [rows][dk] f32.
  void (*scores_f32)(const float* q, int64_t rows, int64_t dk, const float* const* krows, int64_t n, float* s);
  // acc[r][c] += sum_j p[r][j] v_j[c].
  void (*pv_f32)(const float* p, int64_t rows, const float* const* vrows, int64_t n, int64_t dv, float* acc);
  // Online softmax of one tile (see decode_simd.cpp); bias: [rows][kTileKeys] 0 / -inf, or null.
  void (*softmax_tile)(float* s, int64_t rows, int64_t n, const SoftmaxParams& prm, const float* bias, float* m,
                       float* l, float* alpha);
  void (*rescale_rows)(float* acc, int64_t rows, int64_t dv, const float* alpha);
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);  // exact
  const char* target;
};

SimdOps simd_ops();

}  // namespace attnkit::decode
