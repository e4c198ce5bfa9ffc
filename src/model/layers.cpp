// The model's layers (layers.hpp): the fast forms, f32 with f32 accumulation, BLAS for the
// linear layers.
#include "model/layers.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "model/matvec.hpp"
#include "model/pointwise.hpp"

namespace attnkit::model {
namespace {

// Below this many elements a layer runs on one thread: starting the team costs more. Every
// parallel loop here writes disjoint rows or elements, and sums over rows (dw of RMSNorm,
// embedding gradients) are split by column, each column summed over rows in order, so
// results do not depend on the thread count.
constexpr int64_t kParallelElements = 1 << 15;
constexpr int64_t kColumnBlock = 16;
// Elementwise layers hand their SIMD loops ranges of this many elements (a multiple of
// every vector width), one range per iteration of the parallel loop.
constexpr int64_t kPointwiseChunk = 4096;
// One row through a weight matrix up to this size (4 MiB of f32, about an L2 or L3 slice)
// runs as a single-threaded SIMD loop; larger ones go to BLAS, which threads them.
constexpr int64_t kMatvecElements = int64_t{1} << 20;

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* wte, int64_t n, int64_t c) {
#pragma omp parallel for schedule(static) if (n * c >= kParallelElements)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * c, wte + static_cast<int64_t>(tokens[i]) * c, static_cast<size_t>(c) * sizeof(float));
}

void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t n, int64_t c) {
#pragma omp parallel for schedule(static) if (n * c >= kParallelElements)
  for (int64_t j0 = 0; j0 < c; j0 += kColumnBlock) {
    const int64_t j1 = std::min(c, j0 + kColumnBlock);
    for (int64_t i = 0; i < n; ++i) {
      float* row = dwte + static_cast<int64_t>(tokens[i]) * c;
      const float* d = dout + i * c;
      for (int64_t j = j0; j < j1; ++j) row[j] += d[j];
    }
  }
}

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t n, int64_t c, float eps) {
#pragma omp parallel for schedule(static) if (n * c >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * c;
    float ss = 0;
    for (int64_t j = 0; j < c; ++j) ss += xi[j] * xi[j];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(c) + eps);
    rstd[i] = r;
    for (int64_t j = 0; j < c; ++j) out[i * c + j] = xi[j] * r * w[j];
  }
}

// y_j = x_j r w_j with r = (mean(x^2) + eps)^-1/2, so dr/dx_k = -r^3 x_k / C and
//   dx_k = r w_k g_k - r^3 x_k / C * sum_j g_j w_j x_j.
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int64_t n, int64_t c) {
  const bool parallel = n * c >= kParallelElements;
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * c;
      const float* g = dout + i * c;
      const float r = rstd[i];
      float dot = 0;
      for (int64_t j = 0; j < c; ++j) dot += g[j] * w[j] * xi[j];
      const float k = r * r * r * dot / static_cast<float>(c);
      for (int64_t j = 0; j < c; ++j) dx[i * c + j] += r * w[j] * g[j] - k * xi[j];
    }
#pragma omp for schedule(static)
    for (int64_t j0 = 0; j0 < c; j0 += kColumnBlock) {
      const int64_t j1 = std::min(c, j0 + kColumnBlock);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = j0; j < j1; ++j) dw[j] += dout[i * c + j] * x[i * c + j] * rstd[i];
    }
  }
}

void linear_forward(float* out, const float* x, const float* w, int64_t n, int64_t c, int64_t oc, float beta) {
  if (n == 0 || oc == 0) return;
  if (n == 1 && oc * c <= kMatvecElements) return matvec(out, w, x, oc, c, beta);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(oc),
              static_cast<int>(c), 1.0f, x, static_cast<int>(c), w, static_cast<int>(c), beta, out,
              static_cast<int>(oc));
}

void linear_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, int64_t n, int64_t c,
                     int64_t oc) {
  if (n == 0 || oc == 0 || c == 0) return;
  if (dx)  // dx[N][C] += dout[N][OC] W[OC][C]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(c),
                static_cast<int>(oc), 1.0f, dout, static_cast<int>(oc), w, static_cast<int>(c), 1.0f, dx,
                static_cast<int>(c));
  // dW[OC][C] += dout^T[OC][N] x[N][C]
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(oc), static_cast<int>(c),
              static_cast<int>(n), 1.0f, dout, static_cast<int>(oc), x, static_cast<int>(c), 1.0f, dw,
              static_cast<int>(c));
}

namespace {

// f(i, len) over [0, count) in chunks of kPointwiseChunk, on the team when count is large.
template <class F>
void for_each_chunk(int64_t count, F f) {
  const int64_t chunks = (count + kPointwiseChunk - 1) / kPointwiseChunk;
#pragma omp parallel for schedule(static) if (count >= kParallelElements)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i = c * kPointwiseChunk;
    f(i, std::min(kPointwiseChunk, count - i));
  }
}

}  // namespace

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n, int64_t h) {
  for_each_chunk(n * h, [&](int64_t i, int64_t len) { swiglu_forward_simd(out + i, gate + i, up + i, len); });
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n,
                     int64_t h) {
  for_each_chunk(n * h, [&](int64_t i, int64_t len) {
    swiglu_backward_simd(dgate + i, dup + i, dout + i, gate + i, up + i, len);
  });
}

void rope_forward(const RopeCache& cache, float* x, const int64_t* pos, int64_t n, int64_t heads) {
  const int64_t d = cache.head_dim();
#pragma omp parallel for schedule(static) if (n * heads * d >= kParallelElements)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < heads; ++h) rope_row(cache, x + (i * heads + h) * d, d, pos[i]);
}

// Each pair turned by -theta: (a, b) -> (a cos + b sin, -a sin + b cos).
void rope_backward(const RopeCache& cache, float* dx, const int64_t* pos, int64_t n, int64_t heads) {
  const int64_t d = cache.head_dim(), half = cache.rotary_dim() / 2;
  const bool interleaved = cache.style() == RopeStyle::interleaved;
#pragma omp parallel for schedule(static) if (n * heads * d >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const float* cs = cache.cos(pos[i]);
    const float* sn = cache.sin(pos[i]);
    for (int64_t h = 0; h < heads; ++h) {
      float* row = dx + (i * heads + h) * d;
      for (int64_t p = 0; p < half; ++p) {
        float& a = row[interleaved ? 2 * p : p];
        float& b = row[interleaved ? 2 * p + 1 : p + half];
        const float a0 = a, b0 = b;
        a = a0 * cs[p] + b0 * sn[p];
        b = -a0 * sn[p] + b0 * cs[p];
      }
    }
  }
}

void crossentropy_forward(float* losses, float* probs, const float* logits, const int32_t* targets, int64_t n,
                          int64_t v) {
#pragma omp parallel for schedule(static) if (n * v >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const float* z = logits + i * v;
    float* p = probs + i * v;
    const float m = *std::max_element(z, z + v);
    float sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += (p[j] = std::exp(z[j] - m));
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < v; ++j) p[j] *= inv;
    losses[i] = m + std::log(sum) - z[targets[i]];
  }
}

void crossentropy_backward(float* dlogits, const float* probs, const float* dloss, const int32_t* targets, int64_t n,
                           int64_t v) {
#pragma omp parallel for schedule(static) if (n * v >= kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < v; ++j) dlogits[i * v + j] = dloss[i] * probs[i * v + j];
    dlogits[i * v + targets[i]] -= dloss[i];
  }
}

}  // namespace attnkit::model
