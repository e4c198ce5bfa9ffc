// Internal interface of the linear-attention kernels (linear.hpp): the one engine that runs
// every form over feature-mapped rows (linear_engine.cpp, linear_backward.cpp), and the
// FeatureMap each method implements in its own file (linear_elu.cpp, linear_performer.cpp,
// linear_retention.cpp). The engine knows nothing of a method but this interface; a method
// knows nothing of chunks or states.
//
// Per state head, the engine computes (rows of f32, row-major):
//   U[i] = sum_j D[i, j] (Qf[i] . Kf[j]) Vx[j]      D: gamma^(i - j) on j <= i (causal), 1 else
//   Vx = [V, 1] for normalised methods (its last column of U is the normaliser), V else,
//   o[i] = U[i, :Dv] / (U[i, Dv] + row[i])   normalised
//   o[i] = row[i] U[i, :Dv]                  otherwise (retention's 1 / sqrt(decay row sum))
// State S [F][W] = sum_j gamma^(t - j) Kf[j] Vx[j]^T over the keys j < t seen so far.
// Not for: argument checking (linear_api.cpp does it before anything here runs).
#pragma once

#include <cstdint>
#include <memory>

#include "attnkit/linear.hpp"

namespace attnkit::linear {

class FeatureMap {
 public:
  FeatureMap(int64_t dk, int64_t features, bool normalised, bool per_query_state)
      : dk_(dk), features_(features), normalised_(normalised), per_query_state_(per_query_state) {}
  virtual ~FeatureMap() = default;

  int64_t dk() const { return dk_; }
  int64_t features() const { return features_; }  // F
  bool normalised() const { return normalised_; }
  bool per_query_state() const { return per_query_state_; }  // one state per query head (decays differ)
  // Whether keys carry running log-scales c (map_keys updates them); otherwise c is unused.
  virtual bool scales_keys() const { return false; }
  // log gamma of the state of query head h (0: no decay); only per-query-state maps decay.
  virtual double log_decay(int64_t h) const { return 0; }

  // Keys x: [n][Dk] -> f: [n][F]. c: [F] the state's per-feature key log-scales (in/out, -inf
  // before any key): feature r is exp(. - c[r]), c raised to cover this chunk; pre: [F] the
  // factor row r of the state accumulated so far must be multiplied by to join the new
  // scales. Neither is touched by maps without scales.
  virtual void map_keys(const float* x, int64_t n, float* f, float* c, float* pre) const = 0;
  // Queries x: [n][Dk] of head h at absolute positions pos .. pos + n - 1 -> f: [n][F] and
  // row: [n] (see above), given the key log-scales c: [F] of the keys they meet.
  virtual void map_queries(const float* x, int64_t n, int64_t h, int64_t pos, const float* c, float* f,
                           float* row) const = 0;
  // Backward through the maps with their stabilisers held constant: x, f as above, df:
  // [n][F] the gradient of the features (clobbered) -> dx: [n][Dk].
  virtual void query_grad(const float* x, const float* f, float* df, int64_t n, float* dx) const = 0;
  virtual void key_grad(const float* x, const float* f, float* df, int64_t n, float* dx) const = 0;

 private:
  int64_t dk_, features_;
  bool normalised_, per_query_state_;
};

std::unique_ptr<FeatureMap> make_elu_map(const LinearMethod& m, int64_t dk);
std::unique_ptr<FeatureMap> make_performer_map(const LinearMethod& m, int64_t dk);
std::unique_ptr<FeatureMap> make_retention_map(const LinearMethod& m, int64_t q_heads, int64_t dk);
// The method's map (m validated).
std::unique_ptr<FeatureMap> make_feature_map(const LinearMethod& m, int64_t q_heads, int64_t dk);

// The sizes the engine works with.
struct Geometry {
  int64_t batch, q_heads, kv_heads, q_len, kv_len, dk, dv;
  int64_t features, width;  // F; W = Dv + 1 when normalised
  int64_t heads_per_state;  // query heads reading one state: Hq / Hkv, or 1 per query head
  int64_t chunk;            // C
  bool causal;

  int64_t group() const { return q_heads / kv_heads; }
  int64_t state_heads() const { return q_heads / heads_per_state; }
  int64_t kv_head(int64_t state_head) const { return state_head * heads_per_state / group(); }
  int64_t state_floats() const { return features * width; }
};

// The form a call runs: parallel, chunkwise or recurrent (causal), parallel or state (not).
enum class Form : uint8_t { parallel, chunkwise, recurrent, state };
Form resolve_form(const LinearMethod& m);

// Forward of a whole sequence (q_len = kv_len when causal) into o.
void forward(const FeatureMap& map, const Geometry& g, Form form, const TensorView& q, const TensorView& k,
             const TensorView& v, const MutTensorView& o);
// Causal forward continuing from states [B][state heads][F][W] and key scales [B][state
// heads][F] (null when the map has no key scales) at absolute position pos
// (LinearState::step); recurrent or chunkwise.
void forward_from_state(const FeatureMap& map, const Geometry& g, bool recurrent, const TensorView& q,
                        const TensorView& k, const TensorView& v, const MutTensorView& o, float* states,
                        float* scales, int64_t pos);
// Gradients (causal: chunkwise; otherwise the state form).
void backward(const FeatureMap& map, const Geometry& g, const TensorView& q, const TensorView& k,
              const TensorView& v, const TensorView& dout, const MutTensorView& dq, const MutTensorView& dk,
              const MutTensorView& dv);
// What forward() multiplies and adds, counted as linear_flops documents; map_flops is the
// feature map's share per mapped row (the Performer's W x).
double forward_flops(const Geometry& g, Form form, double map_flops);

}  // namespace attnkit::linear
