// The trade-off report's approximation figures (report.hpp): how far each linear-cost method
// is from the softmax attention it replaces, on the same inputs. Not a pass/fail: linear
// attention and retention compute other functions by design; Performer estimates softmax
// attention and its error should shrink like 1/sqrt(m).
#include <cmath>
#include <random>

#include "attnkit/attention.hpp"
#include "attnkit/linear.hpp"
#include "report.hpp"

namespace attnkit::cli {
namespace {

using nlohmann::json;

Tensor gaussian(std::vector<int64_t> shape, uint64_t seed) {
  Tensor t(DType::f32, std::move(shape));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  const MutTensorView m = t.mut();
  for (int64_t i = 0; i < t.numel(); ++i) m.store(i, nd(rng));
  return t;
}

// ||a - b||_F / ||b||_F.
double relative_error(const Tensor& a, const Tensor& b) {
  double num = 0, den = 0;
  const TensorView av = a.view(), bv = b.view();
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = av.load(i) - bv.load(i);
    num += d * d, den += bv.load(i) * bv.load(i);
  }
  return std::sqrt(num / den);
}

}  // namespace

json approximation(int64_t heads, int64_t head_dim, int64_t n, bool quick) {
  const Tensor q = gaussian({1, heads, n, head_dim}, 11), k = gaussian({1, heads, n, head_dim}, 12);
  const Tensor v = gaussian({1, heads, n, head_dim}, 13);
  AttendOptions opts;
  opts.pattern = Pattern::parse("causal");
  const Tensor exact = attend(q.view(), k.view(), v.view(), opts).o;
  const auto error_of = [&](const std::string& spec) {
    LinearMethod m = parse_linear_method(spec);
    m.causal = true;
    return relative_error(linear_attend(q.view(), k.view(), v.view(), m), exact);
  };
  json distances = json::array();
  for (const std::string spec : {"linear", "retention", "performer:m=64", "performer:m=256"})
    distances.push_back({{"method", spec}, {"relative_error", error_of(spec)}});
  json performer = json::array();
  const int seeds = quick ? 3 : 8;
  for (int64_t m = 8; m <= (quick ? 256 : 2048); m *= 2) {
    double sum = 0, sq = 0;
    for (int s = 1; s <= seeds; ++s) {
      const double e = error_of("performer:m=" + std::to_string(m) + ",seed=" + std::to_string(s));
      sum += e, sq += e * e;
    }
    const double mean = sum / seeds;
    performer.push_back({{"m", m}, {"mean", mean}, {"std", std::sqrt(std::max(0.0, sq / seeds - mean * mean))}, {"seeds", seeds}});
  }
  return {{"n", n}, {"heads", heads}, {"head_dim", head_dim}, {"inputs", "q, k, v ~ N(0, 1), causal, scale 1/sqrt(d)"},
          {"distances", distances}, {"performer", performer}};
}

}  // namespace attnkit::cli
