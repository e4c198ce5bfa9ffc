// The plain-loop reference of the attention backward (backward.hpp): for every (batch, KV
// head), walk the query rows of its group, recompute each row's scores and probabilities
// over the keys the pattern allows, and apply the gradient formulas literally. One body
// serves both precisions: Acc is the accumulator type and round() the rounding to the
// input dtype after each stage (identity in f64 mode), as an unfused framework would round
// S, P, dP and dS.
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/backward.hpp"

namespace attnkit {

namespace {

template <class Acc>
struct BackwardRef {
  const TensorView &q, &k, &v, &d_o;
  const AttendOptions& opts;
  const AttnShape& s;
  const BoundPattern& pattern;
  DType round_type;  // f64 in oracle mode, else the input dtype

  Acc round(Acc x) const { return static_cast<Acc>(round_to(round_type, static_cast<double>(x))); }

  // Row i of query head h (KV head hk): adds its terms to dq_row [Dqk], dk and dv
  // ([Nkv][Dqk], [Nkv][Dv] of head hk). Returns the row's term of dsink[h].
  Acc row(int64_t b, int64_t h, int64_t hk, int64_t i, std::vector<Acc>& dq_row, std::vector<Acc>& dk,
          std::vector<Acc>& dv) const {
    const int64_t pos = i + s.causal_offset();
    const Acc scale = static_cast<Acc>(s.softmax_scale());
    std::vector<int64_t> keys;
    std::vector<Acc> sc, deriv;
    bool has_nan = false;
    Acc m = -std::numeric_limits<Acc>::infinity();
    for (int64_t j = 0; j < s.kv_len; ++j) {
      if (!pattern.allow(i, j)) continue;
      Acc dot = 0;
      for (int64_t c = 0; c < s.d_qk; ++c) dot += static_cast<Acc>(q.get(b, h, i, c)) * static_cast<Acc>(k.get(b, hk, j, c));
      Acc x = round(round(dot) * scale);
      if (opts.has_mods()) {
        x = round(static_cast<Acc>(opts.apply(static_cast<double>(x), h, pos, j)));
        deriv.push_back(static_cast<Acc>(opts.derivative(static_cast<double>(x), h, pos, j)));
      } else {
        deriv.push_back(Acc(1));
      }
      has_nan |= std::isnan(x);
      m = std::max(m, x);
      keys.push_back(j);
      sc.push_back(x);
    }
    const bool sink = opts.has_sinks();
    const Acc z = sink ? static_cast<Acc>(opts.sink_logits[static_cast<size_t>(h)]) : Acc(0);
    if (sink) m = std::max(m, z);
    if (keys.empty()) return Acc(0);  // no key: O = 0, so D = 0 and every term vanishes
    if (has_nan) m = std::numeric_limits<Acc>::quiet_NaN();
    Acc sum = sink ? static_cast<Acc>(std::exp(z - m)) : Acc(0);
    for (Acc& x : sc) {
      x = std::exp(x - m);
      sum += x;
    }
    // P, dP = dO . V_j and D = sum_j P_j dP_j (the softmax backward's row sum, equal to
    // dO . O for the exact O).
    std::vector<Acc> p(keys.size()), dp(keys.size());
    Acc d_row = 0;
    for (size_t n = 0; n < keys.size(); ++n) {
      p[n] = round(sc[n] / sum);
      Acc dot = 0;
      for (int64_t c = 0; c < s.d_v; ++c)
        dot += static_cast<Acc>(d_o.get(b, h, i, c)) * static_cast<Acc>(v.get(b, hk, keys[n], c));
      dp[n] = round(dot);
      d_row += p[n] * dp[n];
    }
    d_row = round(d_row);
    for (size_t n = 0; n < keys.size(); ++n) {
      const int64_t j = keys[n];
      const Acc ds = round(p[n] * (dp[n] - d_row) * deriv[n]);
      for (int64_t c = 0; c < s.d_qk; ++c) {
        dq_row[static_cast<size_t>(c)] += ds * scale * static_cast<Acc>(k.get(b, hk, j, c));
        dk[static_cast<size_t>(j * s.d_qk + c)] += ds * scale * static_cast<Acc>(q.get(b, h, i, c));
      }
      for (int64_t c = 0; c < s.d_v; ++c)
        dv[static_cast<size_t>(j * s.d_v + c)] += p[n] * static_cast<Acc>(d_o.get(b, h, i, c));
    }
    if (!sink) return Acc(0);
    return -round(static_cast<Acc>(std::exp(z - m)) / sum) * d_row;
  }

  // Writes dq, dk, dv and, when wanted, dsink. Parallel over (batch, KV head); dsink's
  // per-(b, h) terms are summed afterwards in batch order, so the result is deterministic.
  void run(const MutTensorView& dq, const MutTensorView& dk, const MutTensorView& dv,
           const MutTensorView& dsink) const {
    std::vector<Acc> sink_terms(static_cast<size_t>(s.batch * s.q_heads), Acc(0));
#pragma omp parallel for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t hk = 0; hk < s.kv_heads; ++hk) {
        std::vector<Acc> dk_acc(static_cast<size_t>(s.kv_len * s.d_qk), Acc(0));
        std::vector<Acc> dv_acc(static_cast<size_t>(s.kv_len * s.d_v), Acc(0));
        std::vector<Acc> dq_row(static_cast<size_t>(s.d_qk));
        for (int64_t h = hk * s.group(); h < (hk + 1) * s.group(); ++h)
          for (int64_t i = 0; i < s.q_len; ++i) {
            std::fill(dq_row.begin(), dq_row.end(), Acc(0));
            sink_terms[static_cast<size_t>(b * s.q_heads + h)] += row(b, h, hk, i, dq_row, dk_acc, dv_acc);
            for (int64_t c = 0; c < s.d_qk; ++c) dq.set(round(dq_row[static_cast<size_t>(c)]), b, h, i, c);
          }
        for (int64_t j = 0; j < s.kv_len; ++j) {
          for (int64_t c = 0; c < s.d_qk; ++c) dk.set(round(dk_acc[static_cast<size_t>(j * s.d_qk + c)]), b, hk, j, c);
          for (int64_t c = 0; c < s.d_v; ++c) dv.set(round(dv_acc[static_cast<size_t>(j * s.d_v + c)]), b, hk, j, c);
        }
      }
    if (dsink.rank() == 0) return;
    for (int64_t h = 0; h < s.q_heads; ++h) {
      Acc total = 0;
      for (int64_t b = 0; b < s.batch; ++b) total += sink_terms[static_cast<size_t>(b * s.q_heads + h)];
      dsink.set(round(total), h);
    }
  }
};

}  // namespace

void attention_backward_reference(const TensorView& q, const TensorView& k, const TensorView& v,
                                  const TensorView& o, const TensorView& lse, const TensorView& d_o,
                                  const AttendOptions& opts, const MutTensorView& dq, const MutTensorView& dk,
                                  const MutTensorView& dv, const MutTensorView& dsink, RefPrecision precision) {
  const AttnProblem prob = prepare_backward(q, k, v, o, lse, d_o, opts, dq, dk, dv, dsink);
  if (precision == RefPrecision::f64 || q.dtype() == DType::f64) {
    BackwardRef<double>{q, k, v, d_o, opts, prob.shape, prob.pattern, DType::f64}.run(dq, dk, dv, dsink);
  } else {
    BackwardRef<float>{q, k, v, d_o, opts, prob.shape, prob.pattern, q.dtype()}.run(dq, dk, dv, dsink);
  }
}

}  // namespace attnkit
