// The plain-loop reference of exact attention: for every (batch, head, query row), walk
// every key, ask the pattern, and apply scale, softcap, ALiBi, sink logits and softmax
// literally.
// One row body serves both precisions: Acc is the accumulator type and round() the
// rounding to the storage type after each stage (identity in f64 mode).
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/reference.hpp"

namespace attnkit {

namespace {

template <class Acc>
struct RowRef {
  const TensorView &q, &k, &v;
  const AttendOptions& opts;
  const AttnShape& s;
  const BoundPattern& pattern;
  DType round_type;  // f64 in oracle mode, else the input dtype

  double round(Acc x) const { return round_to(round_type, static_cast<double>(x)); }

  // o_row: [Dv]; p_row (optional): [Nkv]. Returns the row's LSE.
  double run(int64_t b, int64_t h, int64_t i, std::vector<double>& o_row, double* p_row) const {
    const int64_t hk = h / s.group();
    const int64_t pos = i + s.causal_offset();
    const Acc scale = static_cast<Acc>(s.softmax_scale());
    std::vector<int64_t> keys;
    std::vector<Acc> scores;
    bool has_nan = false;
    Acc m = -std::numeric_limits<Acc>::infinity();
    for (int64_t j = 0; j < s.kv_len; ++j) {
      if (!pattern.allow(i, j)) continue;
      Acc dot = 0;
      for (int64_t c = 0; c < s.d_qk; ++c) dot += static_cast<Acc>(q.get(b, h, i, c)) * static_cast<Acc>(k.get(b, hk, j, c));
      Acc sc = static_cast<Acc>(round(static_cast<Acc>(round(dot)) * scale));
      if (opts.has_mods()) sc = static_cast<Acc>(round(opts.apply(static_cast<double>(sc), h, pos, j)));
      has_nan |= std::isnan(sc);
      m = std::max(m, sc);
      keys.push_back(j);
      scores.push_back(sc);
    }
    std::fill(o_row.begin(), o_row.end(), 0.0);
    // A learned sink logit is one more key of value 0: it joins the max and the sum only.
    const bool sink = opts.has_sinks();
    const Acc z = sink ? static_cast<Acc>(opts.sink_logits[static_cast<size_t>(h)]) : Acc(0);
    if (sink) m = std::max(m, z);
    if (keys.empty() && !sink) return -std::numeric_limits<double>::infinity();
    if (has_nan) m = std::numeric_limits<Acc>::quiet_NaN();
    Acc sum = sink ? static_cast<Acc>(std::exp(z - m)) : Acc(0);
    for (Acc& sc : scores) {
      sc = std::exp(sc - m);
      sum += sc;
    }
    std::vector<Acc> acc(o_row.size(), Acc(0));
    for (size_t n = 0; n < keys.size(); ++n) {
      const Acc p = static_cast<Acc>(round(scores[n] / sum));
      if (p_row) p_row[keys[n]] = static_cast<double>(p);
      for (size_t c = 0; c < acc.size(); ++c) acc[c] += p * static_cast<Acc>(v.get(b, hk, keys[n], static_cast<int64_t>(c)));
    }
    for (size_t c = 0; c < acc.size(); ++c) o_row[c] = round(acc[c]);
    return static_cast<double>(m) + std::log(static_cast<double>(sum));
  }
};

template <class Acc>
void run_all(const RowRef<Acc>& ref, const MutTensorView& o, const MutTensorView& lse, Tensor* probs) {
  const AttnShape& s = ref.s;
  double* p = probs ? static_cast<double*>(probs->data()) : nullptr;
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.q_heads; ++h) {
      std::vector<double> o_row(static_cast<size_t>(s.d_v));
      for (int64_t i = 0; i < s.q_len; ++i) {
        double* p_row = p ? p + ((b * s.q_heads + h) * s.q_len + i) * s.kv_len : nullptr;
        const double row_lse = ref.run(b, h, i, o_row, p_row);
        for (int64_t c = 0; c < s.d_v; ++c) o.set(o_row[static_cast<size_t>(c)], b, h, i, c);
        if (lse.rank() != 0) lse.set(row_lse, b, h, i);
      }
    }
}

}  // namespace

void attention_reference(const TensorView& q, const TensorView& k, const TensorView& v, const AttendOptions& opts,
                         const MutTensorView& o, const MutTensorView& lse, const RefOptions& ref) {
  const AttnProblem prob = prepare_attention(q, k, v, opts, o, lse);
  const AttnShape& s = prob.shape;
  if (ref.probs) *ref.probs = Tensor(DType::f64, {s.batch, s.q_heads, s.q_len, s.kv_len});
  if (ref.precision == RefPrecision::f64 || q.dtype() == DType::f64) {
    run_all(RowRef<double>{q, k, v, opts, s, prob.pattern, DType::f64}, o, lse, ref.probs);
  } else {
    run_all(RowRef<float>{q, k, v, opts, s, prob.pattern, q.dtype()}, o, lse, ref.probs);
  }
}

}  // namespace attnkit
