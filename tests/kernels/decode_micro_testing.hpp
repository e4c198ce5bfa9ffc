// Helpers shared by the decode micro-kernel tests (decode_micro_test.cpp,
// decode_micro_f16_test.cpp): rows in their own heap blocks, seeded data, tolerances.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/decode_micro.hpp"

namespace attnkit::decode::micro_test {

inline constexpr double kU = 0x1p-24;
inline constexpr float kUntouched = -12345.0f;

inline const int64_t kRowCounts[] = {1, 3, 4, 5, 8};
inline const int64_t kKeyCounts[] = {0, 1, 2, 17, 63, 64, kTileKeys - 1, kTileKeys};
inline const int64_t kWidths[] = {32, 64, 96, 128, 256};  // 96: int4 key rows end mid-chunk

// Owns the stored rows; each add() is a fresh block with the row `misalign` bytes in.
class RowPool {
 public:
  template <class T>
  const T* add(const std::vector<T>& src, int misalign) {
    const size_t bytes = src.size() * sizeof(T);
    blocks_.push_back(std::make_unique<unsigned char[]>(bytes + misalign));
    unsigned char* at = blocks_.back().get() + misalign;
    std::memcpy(at, src.data(), bytes);
    return reinterpret_cast<const T*>(at);
  }

 private:
  std::vector<std::unique_ptr<unsigned char[]>> blocks_;
};

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t seed) : gen(seed) {}
  double normal(double mean = 0, double sigma = 1) { return std::normal_distribution<double>(mean, sigma)(gen); }
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(gen); }
  std::vector<float> normals(int64_t count, double mean = 0, double sigma = 1) {
    std::vector<float> x(static_cast<size_t>(count));
    for (float& v : x) v = static_cast<float>(normal(mean, sigma));
    return x;
  }
  // A random order of 0 .. count-1: the order rows are allocated in.
  std::vector<int64_t> order(int64_t count) {
    std::vector<int64_t> o(static_cast<size_t>(count));
    std::iota(o.begin(), o.end(), 0);
    std::shuffle(o.begin(), o.end(), gen);
    return o;
  }
};

inline uint64_t seed_of(int kernel, int64_t rows, int64_t n, int64_t d, int64_t extra = 0) {
  return static_cast<uint64_t>((((kernel * 131 + rows) * 131 + n) * 1031 + d) * 131 + extra);
}

inline std::string case_name(int64_t rows, int64_t n, int64_t d, int64_t G = 0) {
  return "rows " + std::to_string(rows) + ", n " + std::to_string(n) + ", width " + std::to_string(d) +
         (G ? ", G " + std::to_string(G) : "");
}

// Probabilities: mostly exp(-|x|), some exactly 0 and 1, some tiny; NaN past n.
inline std::vector<float> make_p(Rng& rng, int64_t rows, int64_t n) {
  std::vector<float> p(static_cast<size_t>(rows * kTileKeys), std::numeric_limits<float>::quiet_NaN());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      const double pick = rng.uniform(0, 1);
      p[r * kTileKeys + j] = pick < 0.1    ? 0.0f
                             : pick < 0.2  ? 1.0f
                             : pick < 0.25 ? 1e-30f
                                           : static_cast<float>(std::exp(-std::abs(rng.normal(0, 2))));
    }
  return p;
}

inline bool within(double got, double want, double tol, const std::string& what) {
  if (std::abs(got - want) <= tol) return true;
  ADD_FAILURE() << what << ": got " << got << ", want " << want << " (tolerance " << tol << ")";
  return false;
}

inline std::vector<float> scores_buffer(int64_t rows) {
  return std::vector<float>(static_cast<size_t>(rows * kTileKeys), kUntouched);
}

inline bool untouched_past_n(const std::vector<float>& s, int64_t rows, int64_t n, const std::string& what) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = n; j < kTileKeys; ++j)
      if (s[r * kTileKeys + j] != kUntouched) {
        ADD_FAILURE() << what << ": s[" << r << "][" << j << "] written past n";
        return false;
      }
  return true;
}

}  // namespace attnkit::decode::micro_test
