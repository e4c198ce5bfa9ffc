// The pieces of one chunk that the forward (linear_engine.cpp) and the backward
// (linear_backward.cpp) share: rows loaded to f32 and feature-mapped, the decay tables of a
// chunk, the weighting of a block of pair scores, and BLAS. Row-major f32 throughout;
// "rows" of queries stack the heads that read one state: row r = head_in_state * n + i.
// Not for: loops over chunks or threads.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/linear_engine.hpp"

namespace attnkit::linear {

// C = alpha op(A) op(B) + beta C, row-major (cblas_sgemm; single-threaded inside the
// engine's OpenMP regions, where OpenBLAS sees omp_in_parallel()).
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Tokens t0 .. t0 + n - 1 of head h of a [B, H, N, D] view <-> f32 rows dst[i * ld + c].
void load_rows(const TensorView& t, int64_t b, int64_t h, int64_t t0, int64_t n, float* dst, int64_t ld);
void store_rows(const MutTensorView& t, int64_t b, int64_t h, int64_t t0, int64_t n, const float* src, int64_t ld);

// What one call reads.
struct Ctx {
  const FeatureMap& map;
  const Geometry& g;
  const TensorView& q;  // [B, Hq, Nq, Dk]
  const TensorView& k;  // [B, Hkv, Nk, Dk]
  const TensorView& v;  // [B, Hkv, Nk, Dv]
};

// One chunk of one state head: its keys and values, and the queries of the heads reading
// the state, as loaded and as mapped.
struct ChunkRows {
  int64_t n = 0, rows = 0;  // tokens; query rows (heads_per_state x n)
  std::vector<float> kx;    // [n][Dk]
  std::vector<float> vx;    // [n][W]: V, then the normaliser's column of ones
  std::vector<float> kf;    // [n][F]
  std::vector<float> qx;    // [rows][Dk]
  std::vector<float> qf;    // [rows][F]
  std::vector<float> row;   // [rows]: eps' or the output factor (FeatureMap::map_queries)
  std::vector<float> pre;   // [F]: the factors of the state's rows on entering the chunk

  explicit ChunkRows(const Geometry& g);
  // Keys and values of tokens t0 .. t0 + n - 1 of state head s; c: [F] as FeatureMap::map_keys.
  void load_keys(const Ctx& x, int64_t b, int64_t s, int64_t t0, int64_t len, float* c);
  // Queries of tokens t0 .. t0 + n - 1 (absolute positions pos + t0 ...) of the heads of state
  // head s, mapped against keys of log-scales c: [F].
  void load_queries(const Ctx& x, int64_t b, int64_t s, int64_t t0, int64_t len, int64_t pos, const float* c);
};

// s: [F][W] rows multiplied by factor: [F] (the keys' new scales), when the map has scales.
void rescale_rows(const FeatureMap& map, float* s, const float* factor, int64_t rows, int64_t cols);

// The decay of a chunk of n tokens: gamma^(i + 1) for query row i (what the state at the
// chunk's start is worth to it), gamma^(n - 1 - j) for key j (what it adds to the state at
// the chunk's end), gamma^n (what the state keeps) and the in-chunk pair table. Every power
// is exp(d log gamma) with d >= 0, so nothing overflows and underflow is to 0.
struct Decays {
  bool decay = false;
  float keep = 1;                  // gamma^n
  std::vector<float> qdec, kdec;   // [C]
  std::vector<float> tab;          // [2C]: see pair_table
  explicit Decays(int64_t chunk);
  void prepare(double log_gamma, int64_t n);

 private:
  double lg_ = 0;
  int64_t n_ = -1;
};

// tab[m], m in [0, nq + nk - 1): the weight of query i (of a block of nq starting at t0)
// and key j (of nk starting at j0) is tab[nq - 1 - i + j], i.e. for d = t0 + i - j0 - j:
// 0 when causal and d < 0, else exp(d log_gamma + log_factor).
void pair_table(float* tab, int64_t nq, int64_t nk, int64_t delta, double log_gamma, double log_factor, bool causal);
// Weighs a block of pair scores a: [heads * nq][nk] in place: keys a row may not see
// (causal, d < 0) set to 0 (not multiplied, so inf or NaN scores there vanish too), the rest
// multiplied by the table when there is one (tab may be null: weight 1).
void weigh_pairs(float* a, int64_t heads, int64_t nq, int64_t nk, int64_t delta, bool causal, const float* tab);
// dst[r][c] = src[r][c] * factor[r % n] for rows r < rows of cols values.
void scale_rows(const float* src, const float* factor, int64_t rows, int64_t n, int64_t cols, float* dst);
// The in-chunk scores: a: [rows][n] = (Qf Kf^T) weighted by the chunk's decay and the causal mask.
void chunk_scores(const Geometry& g, const ChunkRows& c, const Decays& d, float* a);
// Runs body(item) for item in [0, items) on the OpenMP threads, each thread first building
// its workspace with make(); an exception thrown inside is rethrown here.
template <class Make, class Body>
void for_items(int64_t items, const Make& make, const Body& body);

}  // namespace attnkit::linear

#include <exception>
#include <optional>

namespace attnkit::linear {

// Every thread meets the loop, even one whose workspace failed to allocate (it then skips its
// items), as OpenMP requires of a worksharing loop.
template <class Make, class Body>
void for_items(int64_t items, const Make& make, const Body& body) {
  std::exception_ptr error;
  const auto keep = [&error] {
#pragma omp critical(attnkit_linear_error)
    if (!error) error = std::current_exception();
  };
#pragma omp parallel
  {
    std::optional<decltype(make())> work;
    try {
      work.emplace(make());
    } catch (...) {
      keep();
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      if (!work) continue;
      try {
        body(item, *work);
      } catch (...) {
        keep();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace attnkit::linear
