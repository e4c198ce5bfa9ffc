// The oracle of the model's layers (src/model/layers.hpp): each layer written literally in
// double, the same shapes and semantics as the fast form (backwards accumulate where the
// fast ones do). Slow on purpose; for tests and finite-difference checks.
#pragma once

#include <cstdint>

#include "attnkit/rope.hpp"

namespace attnkit::ref {

void embedding_forward(double* out, const int32_t* tokens, const double* wte, int64_t n, int64_t c);
void embedding_backward(double* dwte, const double* dout, const int32_t* tokens, int64_t n, int64_t c);
void rmsnorm_forward(double* out, double* rstd, const double* x, const double* w, int64_t n, int64_t c, double eps);
void rmsnorm_backward(double* dx, double* dw, const double* dout, const double* x, const double* w,
                      const double* rstd, int64_t n, int64_t c);
void linear_forward(double* out, const double* x, const double* w, int64_t n, int64_t c, int64_t oc);
void linear_backward(double* dx, double* dw, const double* dout, const double* x, const double* w, int64_t n,
                     int64_t c, int64_t oc);
void swiglu_forward(double* out, const double* gate, const double* up, int64_t n, int64_t h);
void swiglu_backward(double* dgate, double* dup, const double* dout, const double* gate, const double* up, int64_t n,
                     int64_t h);
// x[N][heads][D], angles computed from the config (no table).
void rope_forward(const RopeConfig& config, int64_t head_dim, double* x, const int64_t* pos, int64_t n,
                  int64_t heads);
void rope_backward(const RopeConfig& config, int64_t head_dim, double* dx, const int64_t* pos, int64_t n,
                   int64_t heads);
void crossentropy_forward(double* losses, double* probs, const double* logits, const int32_t* targets, int64_t n,
                          int64_t v);
void crossentropy_backward(double* dlogits, const double* probs, const double* dloss, const int32_t* targets,
                           int64_t n, int64_t v);

}  // namespace attnkit::ref
