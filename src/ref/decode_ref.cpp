// The decode oracle: attention of each sequence's newest Nq tokens over gather()'s
// dequantised (and, with in_cache RoPE, rotated) K / V, in double, one plain loop per
// definition in decode.hpp. Queries are rotated with rope_reference (double angles).
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/decode.hpp"
#include "attnkit/rope.hpp"
#include "kernels/decode_plan.hpp"

namespace attnkit {

void decode_reference(const KvCache& cache, int64_t layer, std::span<const int64_t> seqs, const TensorView& q,
                      const MutTensorView& out, const DecodeOptions& opts, const MutTensorView& lse) {
  const decode::Plan p = decode::make_plan(cache, layer, seqs, q, out, opts, lse);
  const KvCacheConfig& cfg = cache.config();
  for (int64_t b = 0; b < p.B; ++b) {
    const KvSequence& s = *p.seqs[static_cast<size_t>(b)];
    const int64_t n = s.held;
    Tensor k(DType::f64, {p.Hkv, n, p.dk}), v(DType::f64, {p.Hkv, n, p.dv});
    cache.gather(seqs[static_cast<size_t>(b)], layer, k.mut(), v.mut());
    const auto* kd = static_cast<const double*>(k.data());
    const auto* vd = static_cast<const double*>(v.data());
    Tensor qb(DType::f64, {1, p.Hq, p.nq, p.dk});
    MutTensorView qv = qb.mut();
    for (int64_t h = 0; h < p.Hq; ++h)
      for (int64_t t = 0; t < p.nq; ++t)
        for (int64_t c = 0; c < p.dk; ++c) qv.set(q.get(b, h, t, c), 0, h, t, c);
    if (cfg.rope) {
      std::vector<int64_t> pos(static_cast<size_t>(p.nq));
      for (int64_t t = 0; t < p.nq; ++t) pos[static_cast<size_t>(t)] = cache.rope_position(s, n - p.nq + t);
      rope_reference(*cfg.rope, qv, pos.data());
    }
    const auto* qd = static_cast<const double*>(qb.data());
    std::vector<double> sc(static_cast<size_t>(n));
    for (int64_t h = 0; h < p.Hq; ++h) {
      const int64_t kh = h / p.g;
      for (int64_t t = 0; t < p.nq; ++t) {
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t i = 0; i < n; ++i) {
          double x = -std::numeric_limits<double>::infinity();
          if (p.visible(n, i, t)) {
            double dot = 0;
            for (int64_t c = 0; c < p.dk; ++c) dot += qd[(h * p.nq + t) * p.dk + c] * kd[(kh * n + i) * p.dk + c];
            x = opts.apply(dot * static_cast<double>(p.scale), h, n - p.nq + t, i);
          }
          sc[static_cast<size_t>(i)] = x;
          mx = std::max(mx, x);
        }
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) {
          double& e = sc[static_cast<size_t>(i)];
          e = std::isinf(mx) ? 0.0 : std::exp(e - mx);
          sum += e;
        }
        for (int64_t c = 0; c < p.dv; ++c) {
          double o = 0;
          for (int64_t i = 0; i < n; ++i) o += sc[static_cast<size_t>(i)] * vd[(kh * n + i) * p.dv + c];
          out.set(sum > 0 ? o / sum : 0.0, b, h, t, c);
        }
        if (lse.rank() != 0) lse.set(sum > 0 ? mx + std::log(sum) : -std::numeric_limits<double>::infinity(), b, h, t);
      }
    }
  }
}

}  // namespace attnkit
