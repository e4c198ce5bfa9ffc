// The scalar halves of the online-softmax step every kernel shares (online_softmax-inl.h
// has the vector half): a row's rescale factor when its running max is kept as a scalar,
// the finish (O / l and the log-sum-exp), the split-KV merge of partial rows, and the
// OpenMP loop over work items with its exception capture.
// Not for: anything that knows a kernel's tile layout.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>


namespace attnkit::softmax {

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The shift of a row with running max m: m, or 0 while nothing is visible (m = -inf).
inline float shift_of(float m) { return m == kNegInf ? 0.0f : m; }

// alpha = e^(m_old - shift(m_new)); exactly 1 when the max did not move (the common case
// past the first tiles: no exponential, and kernels may skip rescaling the row).
inline float alpha_of(float m_old, float m_new) {
  return m_old == m_new ? 1.0f : std::exp(m_old - shift_of(m_new));
}

// A finished row: O = O_acc * inv and LSE = m + log l; a row that saw no key (l = 0)
// gives inv = 0 (O = 0) and LSE = -inf, never NaN. A NaN l (a NaN score the row could see)
// stays NaN.
struct Finished {
  float inv, lse;
};
inline Finished finish_row(float m, float l) {
  if (l == 0.0f) return {0.0f, kNegInf};
  return {1.0f / l, m + std::log(l)};
}

// The same with a learned sink logit z (variant.hpp): one more key of score z and value 0
// joins the sum, so O shrinks by the sink's share and LSE = log(l e^m + e^z); a row that saw
// no key gives O = 0, LSE = z. z = -inf: no sink, as finish_row(m, l).
inline Finished finish_row(float m, float l, float z) {
  if (z == kNegInf || std::isnan(m) || std::isnan(l)) return finish_row(m, l);
  const double top = l == 0.0f ? double(z) : std::max(double(m), double(z));
  const double keys = l == 0.0f ? 0.0 : double(l) * std::exp(double(m) - top);
  const double total = keys + std::exp(double(z) - top);
  return {l == 0.0f ? 0.0f : static_cast<float>(std::exp(double(m) - top) / total),
          static_cast<float>(top + std::log(total))};
}

// A finished row o [dv] with its lse (merge_chunks' result) and the sink z joined.
inline void join_sink(float* o, int64_t dv, float& lse, float z) {
  if (z == kNegInf || std::isnan(lse)) return;
  const double top = std::max(double(lse), double(z));
  const double joined = top + std::log(std::exp(double(lse) - top) + std::exp(double(z) - top));
  const float shrink = static_cast<float>(std::exp(double(lse) - joined));
  for (int64_t i = 0; i < dv; ++i) o[i] *= shrink;
  lse = static_cast<float>(joined);
}

// Split-KV: the chunks of one row, each a normalised row o_c: [dv] with its running max
// m_c and sum l_c, merged in chunk order (fixed, so the result does not depend on which
// thread ran which chunk) into o and lse:
//   M = max_c m_c,  w_c = l_c e^(m_c - M),  L = sum_c w_c,  o = sum_c (w_c / L) o_c,
//   lse = M + log L.
// (m, l) rather than the chunks' LSE: with scores near 1e9 an f32 LSE has lost log l (its
// ulp is 128), and a merge by LSE then weighs tied chunks wrongly (twice the true output was
// measured). Empty chunks (l = 0) weigh nothing; all empty gives o = 0, lse = -inf.
template <class ChunkO, class ChunkM, class ChunkL>
void merge_chunks(int64_t chunks, int64_t dv, ChunkO&& chunk_o, ChunkM&& chunk_m, ChunkL&& chunk_l, float* o,
                  float& lse) {
  float top = kNegInf;
  bool nan = false;  // a NaN score a row could see: the row is NaN, as in a plain softmax
  for (int64_t c = 0; c < chunks; ++c) {
    nan |= std::isnan(chunk_l(c)) || std::isnan(chunk_m(c));
    if (chunk_l(c) != 0.0f) top = std::max(top, chunk_m(c));
  }
  lse = nan ? std::numeric_limits<float>::quiet_NaN() : kNegInf;
  for (int64_t i = 0; i < dv; ++i) o[i] = nan ? lse : 0.0f;
  if (nan || top == kNegInf) return;
  double total = 0;
  for (int64_t c = 0; c < chunks; ++c)
    if (chunk_l(c) != 0.0f) total += double(chunk_l(c)) * std::exp(double(chunk_m(c)) - double(top));
  for (int64_t c = 0; c < chunks; ++c) {
    if (chunk_l(c) == 0.0f) continue;
    const float w = static_cast<float>(double(chunk_l(c)) * std::exp(double(chunk_m(c)) - double(top)) / total);
    const float* oc = chunk_o(c);
    for (int64_t i = 0; i < dv; ++i) o[i] += w * oc[i];
  }
  lse = static_cast<float>(double(top) + std::log(total));
}

// Runs body(item, thread) for item in [0, n) over `threads` OpenMP threads (dynamic
// schedule: items differ in cost). The first exception stops the remaining items and is
// rethrown on the calling thread; an exception must not cross an OpenMP region.
template <class Body>
void for_each_item(int64_t n, int threads, Body&& body) {
  std::exception_ptr failure;
  bool failed = false;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    bool stop;
#pragma omp atomic read
    stop = failed;
    if (stop) continue;
    try {
      body(i, omp_get_thread_num());
    } catch (...) {
#pragma omp critical(attnkit_item_failure)
      if (!failure) failure = std::current_exception();
#pragma omp atomic write
      failed = true;
    }
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace attnkit::softmax
