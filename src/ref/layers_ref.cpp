// Plain double-precision forms of the model's layers (layers_ref.hpp): the formulas as
// written, one loop per sum, no shared subexpressions beyond what the math names.
#include "ref/layers_ref.hpp"

#include <cmath>

namespace attnkit::ref {

void embedding_forward(double* out, const int32_t* tokens, const double* wte, int64_t n, int64_t c) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j) out[i * c + j] = wte[tokens[i] * c + j];
}

void embedding_backward(double* dwte, const double* dout, const int32_t* tokens, int64_t n, int64_t c) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j) dwte[tokens[i] * c + j] += dout[i * c + j];
}

void rmsnorm_forward(double* out, double* rstd, const double* x, const double* w, int64_t n, int64_t c, double eps) {
  for (int64_t i = 0; i < n; ++i) {
    double ms = 0;
    for (int64_t j = 0; j < c; ++j) ms += x[i * c + j] * x[i * c + j] / c;
    rstd[i] = 1 / std::sqrt(ms + eps);
    for (int64_t j = 0; j < c; ++j) out[i * c + j] = x[i * c + j] * rstd[i] * w[j];
  }
}

// The full Jacobian of one row: dy_j/dx_k = w_j (r [j == k] - r^3 x_j x_k / C).
void rmsnorm_backward(double* dx, double* dw, const double* dout, const double* x, const double* w,
                      const double* rstd, int64_t n, int64_t c) {
  for (int64_t i = 0; i < n; ++i) {
    const double r = rstd[i];
    for (int64_t k = 0; k < c; ++k) {
      double sum = 0;
      for (int64_t j = 0; j < c; ++j)
        sum += dout[i * c + j] * w[j] * ((j == k ? r : 0.0) - r * r * r * x[i * c + j] * x[i * c + k] / c);
      dx[i * c + k] += sum;
    }
    for (int64_t j = 0; j < c; ++j) dw[j] += dout[i * c + j] * x[i * c + j] * r;
  }
}

void linear_forward(double* out, const double* x, const double* w, int64_t n, int64_t c, int64_t oc) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < oc; ++o) {
      double sum = 0;
      for (int64_t j = 0; j < c; ++j) sum += x[i * c + j] * w[o * c + j];
      out[i * oc + o] = sum;
    }
}

void linear_backward(double* dx, double* dw, const double* dout, const double* x, const double* w, int64_t n,
                     int64_t c, int64_t oc) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < oc; ++o)
      for (int64_t j = 0; j < c; ++j) {
        if (dx) dx[i * c + j] += dout[i * oc + o] * w[o * c + j];
        dw[o * c + j] += dout[i * oc + o] * x[i * c + j];
      }
}

void swiglu_forward(double* out, const double* gate, const double* up, int64_t n, int64_t h) {
  for (int64_t i = 0; i < n * h; ++i) out[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
}

void swiglu_backward(double* dgate, double* dup, const double* dout, const double* gate, const double* up, int64_t n,
                     int64_t h) {
  for (int64_t i = 0; i < n * h; ++i) {
    const double sigmoid = 1 / (1 + std::exp(-gate[i]));
    dup[i] = dout[i] * gate[i] * sigmoid;
    dgate[i] = dout[i] * up[i] * (sigmoid + gate[i] * sigmoid * (1 - sigmoid));
  }
}

namespace {

// Turns every rotary pair of every head by sign * theta_p(pos).
void rotate(const RopeConfig& config, int64_t head_dim, double* x, const int64_t* pos, int64_t n, int64_t heads,
            double sign) {
  const int64_t r = config.resolved_rotary_dim(head_dim);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < heads; ++h) {
      double* row = x + (i * heads + h) * head_dim;
      for (int64_t p = 0; p < r / 2; ++p) {
        const double theta = sign * static_cast<double>(pos[i]) * std::pow(config.base, -2.0 * p / r);
        const int64_t a = config.style == RopeStyle::interleaved ? 2 * p : p;
        const int64_t b = config.style == RopeStyle::interleaved ? 2 * p + 1 : p + r / 2;
        const double xa = row[a], xb = row[b];
        row[a] = xa * std::cos(theta) - xb * std::sin(theta);
        row[b] = xa * std::sin(theta) + xb * std::cos(theta);
      }
    }
}

}  // namespace

void rope_forward(const RopeConfig& config, int64_t head_dim, double* x, const int64_t* pos, int64_t n,
                  int64_t heads) {
  rotate(config, head_dim, x, pos, n, heads, 1.0);
}

void rope_backward(const RopeConfig& config, int64_t head_dim, double* dx, const int64_t* pos, int64_t n,
                   int64_t heads) {
  rotate(config, head_dim, dx, pos, n, heads, -1.0);
}

void crossentropy_forward(double* losses, double* probs, const double* logits, const int32_t* targets, int64_t n,
                          int64_t v) {
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(logits[i * v + j]);
    for (int64_t j = 0; j < v; ++j) probs[i * v + j] = std::exp(logits[i * v + j]) / sum;
    losses[i] = -std::log(probs[i * v + targets[i]]);
  }
}

void crossentropy_backward(double* dlogits, const double* probs, const double* dloss, const int32_t* targets,
                           int64_t n, int64_t v) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < v; ++j) dlogits[i * v + j] = dloss[i] * (probs[i * v + j] - (j == targets[i] ? 1 : 0));
}

}  // namespace attnkit::ref
