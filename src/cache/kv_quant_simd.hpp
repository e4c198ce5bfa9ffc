// Internal interface of the SIMD KV-cache decoders (kv_quant_simd.cpp, compiled once per
// Highway target and dispatched at run time). The public entry points in kv_quant.hpp
// validate arguments and call these; tests call them per target. Not for: quantization
// (scalar, once per token, in kv_quant.cpp) or argument checking (callers did it).
#pragma once

#include <cstdint>

namespace attnkit::kvq {

struct KvQuantOps {
  // Same contracts and shapes as dequantize_int8_rows / dequantize_int4_key_group /
  // dequantize_int4_value_rows in kv_quant.hpp, arguments already validated.
  void (*int8_rows)(const int8_t* q, const uint16_t* scales, int64_t rows, int64_t w, float* out,
                    int64_t out_stride);
  void (*int4_key_rows)(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros, int64_t rows,
                        int64_t w, float* out, int64_t out_stride);
  void (*int4_value_rows)(const uint8_t* codes, const uint16_t* scales, const uint16_t* zeros, int64_t rows,
                          int64_t w, int64_t G, float* out, int64_t out_stride);
  const char* target;  // Highway target name, e.g. "AVX3"
};

// The ops of the target Highway's dispatch picks now (honours hwy::DisableTargets and
// SetSupportedTargetsForTest). Costs CPU detection: callers on a hot path keep the result.
KvQuantOps simd_ops();

}  // namespace attnkit::kvq
