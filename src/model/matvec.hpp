// y = beta y + W x for one row x (a decoded token's linear layers): W [rows][cols]
// row-major, x [cols], y [rows]. BLAS's sgemm pays packing and thread start-up on every
// call at this size, which dominated decoding small models; this is a plain SIMD loop
// (Highway, dispatched at run time), four output rows per pass sharing each load of x.
#pragma once

#include <cstdint>

namespace attnkit::model {

void matvec(float* y, const float* w, const float* x, int64_t rows, int64_t cols, float beta);

}  // namespace attnkit::model
