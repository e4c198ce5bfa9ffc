// attnkit/linear.hpp — linear-cost attention: linear attention (phi = elu + 1), Performer
// (FAVOR+ random features) and retention (RetNet), forward, backward and decode state.
//
// All three are one computation over feature-mapped queries and keys, phi(q) and phi(k)
// (F features), with an optional per-head decay gamma and an optional normaliser:
//   U[i] = sum_{j <= i} gamma^(i - j) (phi(q_i) . phi(k_j)) v_j        (causal; all j if not)
//   normalised (linear, performer):  o_i = U[i] / (sum_{j <= i} phi(q_i) . phi(k_j) + eps)
//   retention (no normaliser):       o_i = U[i] / sqrt(sum_{j <= i} gamma^(i - j))
// The methods differ only in phi and gamma:
//   linear     phi(x) = elu(x) + 1 > 0 (Katharopoulos et al.), F = Dk, no decay.
//   performer  phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m), x' = x scale^(1/2), so that
//              E[phi(q) . phi(k)] = exp(scale q . k) (FAVOR+, Choromanski et al.); F = m rows
//              of W drawn as blocks of orthogonal Gaussian directions with chi-distributed
//              norms (performer_features). No decay.
//   retention  phi(q) = scale q, phi(k) = k, F = Dk; decay gamma_h per query head, default
//              RetNet's 1 - 2^(-5 - h); the row division by sqrt of the decay mask's row sum is
//              RetNet's D~ normalisation, which its recurrent form applies too. torchscale's
//              parallel form further divides by the clamped |row sum| of (QK^T * D) and applies
//              a GroupNorm; neither has a recurrent form and the GroupNorm makes the layer
//              almost scale-free, so both are left to the layer. Causal only.
// Forms (LinearForm): parallel is the definition, the masked (decayed) phi(Q) phi(K)^T matrix
// applied to V, O(n^2); chunkwise splits the sequence into chunks of C: quadratic inside a
// chunk, a state S = sum_j gamma^(..) phi(k_j) [v_j, 1]^T in R^{F x (Dv + 1)} carried
// across chunks (the last column is the normaliser's z); recurrent updates S token by token,
// O(F Dv) per token. Non-causal calls sum the state over every key first (the O(n F Dv)
// "state" form, what chunkwise and automatic mean there) or use the parallel form.
// Every form equals the f64 definition (linear_reference) within the tolerance rule.
// Numerics: retention's decays are exp(d log gamma) for d >= 0 only (never gamma^-j, which
// overflows), so n = 16K and beyond stays exact. The Performer's features are stabilised:
// a query's by the max of its W x' (cancels between numerator and normaliser), a key's by a
// running max, per feature, of the keys seen so far (the state's rows are rescaled when it
// grows); eps is scaled by the same factors, so the result is the definition with eps added
// to the true normaliser. See docs/linear.md.
// GQA / MQA: Hq a multiple of Hkv; linear and performer keep one state per KV head (the query
// heads of a group read it), retention one per query head (their decays differ).
// NaN or inf in an input reach the outputs of its chunk and of everything after; they never
// crash. Results are bitwise identical for any OpenMP thread count.
// Not for: softmax attention (attention.hpp), Linformer and MLA (their own headers), the
// model's cache manager (which holds LinearState objects).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "attnkit/attention.hpp"
#include "attnkit/reference.hpp"
#include "attnkit/tensor.hpp"

namespace attnkit {

enum class LinearKind : uint8_t { linear, performer, retention };
// automatic: chunkwise when causal, the state form when not.
enum class LinearForm : uint8_t { automatic, parallel, chunkwise, recurrent };
// Linear attention's feature map. Only elu1 has the positive normaliser linear attention
// divides by; relu (zero for a whole row when every coordinate is <= 0) and identity (any
// sign) are named so that asking for them gets that reason rather than "unknown".
enum class LinearFeature : uint8_t { elu1, relu, identity };

struct LinearMethod {
  LinearKind kind = LinearKind::linear;
  bool causal = true;
  double eps = 1e-6;             // linear, performer: added to the normaliser (>= 0)
  int64_t features = 256;        // performer m (>= 1)
  uint64_t seed = 1;             // performer: the draw of the orthogonal random features (redraw = new seed)
  std::vector<double> gamma;     // retention: one decay per query head in (0, 1], or one for all; empty: RetNet's 1 - 2^(-5 - h)
  double scale = 0;              // 0: the method's default (retention, performer: 1/sqrt(Dk); unused by linear)
  int64_t chunk = 64;            // chunkwise form's chunk size C (1 ... 4096)
  LinearForm form = LinearForm::automatic;
  Kernel kernel = Kernel::automatic;  // Kernel::ref runs the f64 reference (attention.hpp's enum)
  LinearFeature feature = LinearFeature::elu1;  // linear only

  // Throws Error naming the field: a feature map without a positive normaliser, m < 1,
  // gamma outside (0, 1] or of a length other than 1 or q_heads, non-causal retention,
  // eps < 0, scale < 0 or not finite, chunk outside [1, 4096], form recurrent when not causal.
  // q_heads = 0 skips the check of gamma's length (parse_linear_method does not know it).
  void validate(int64_t q_heads) const;
};

// "linear[:eps=E][,phi=elu1]", "performer[:m=M][,seed=S][,eps=E]", "retention[:gamma=G]" (one
// G for all heads, or G0/G1/... one per head), plus the common keys "chunk=C",
// "form=parallel|chunkwise|recurrent|auto", "causal=1|0", "scale=S" and "kernel=auto|ref".
// Throws Error naming the key.
LinearMethod parse_linear_method(std::string_view spec);
std::string linear_method_string(const LinearMethod& m);  // parse_linear_method reads it back

// The decay of every query head (retention; 1 for the others) and the scale a method uses.
std::vector<double> linear_gammas(const LinearMethod& m, int64_t q_heads);
double linear_scale(const LinearMethod& m, int64_t dk);

// Validates (Error naming the argument: non-positive feature map / m < 1 / gamma outside (0, 1] / shapes).
// q: [B, Hq, N, Dk], k: [B, Hkv, N, Dk], v: [B, Hkv, N, Dv] (Hq a multiple of Hkv: GQA/MQA), o: [B, Hq, N, Dv]
// (non-causal calls may have keys of another length than queries: k, v [B, Hkv, Nk, .]).
// Inputs f32 / bf16 / f16 / f64, any strides; o any dtype and strides, written once per element.
void linear_attend_into(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                        const MutTensorView& o);
Tensor linear_attend(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                     DType o_dtype = DType::f32);

// dout: [B, Hq, N, Dv] -> dq, dk, dv (same shapes as q, k, v; overwritten). The fast kernel
// runs the chunkwise form (causal; the state is carried backwards for dK, dV) or the state
// form (non-causal) whatever m.form says; Kernel::ref runs linear_backward_reference. The
// Performer's features W are constants (the gradient flows through phi to q and k).
void linear_attend_backward_into(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& dout,
                                 const LinearMethod& m, const MutTensorView& dq, const MutTensorView& dk,
                                 const MutTensorView& dv);

namespace linear {
class FeatureMap;
}

// Decode state of one sequence batch: O(1) in n. Causal methods only.
// Holds S [B][state heads][F][Dv + normalised] in f32 (state heads: Hkv for linear and
// performer, Hq for retention) and, for the Performer, the keys' running log-scale of each
// feature, [B][state heads][F]. step() runs the chunkwise kernel over T > 1 tokens (chunks of m.chunk) and the
// recurrent one for T = 1 or m.form == recurrent; m.kernel is not consulted.
class LinearState {
 public:
  LinearState(const LinearMethod& m, int64_t batch, int64_t q_heads, int64_t kv_heads, int64_t dk, int64_t dv);
  ~LinearState();
  LinearState(LinearState&&) noexcept;
  LinearState& operator=(LinearState&&) noexcept;
  LinearState(const LinearState&) = delete;
  LinearState& operator=(const LinearState&) = delete;

  // Appends T >= 1 tokens and writes their outputs: q: [B, Hq, T, Dk], k: [B, Hkv, T, Dk], v: [B, Hkv, T, Dv], o: [B, Hq, T, Dv].
  // Equal (within the tolerance rule) to the causal forward over everything appended so far.
  void step(const TensorView& q, const TensorView& k, const TensorView& v, const MutTensorView& o);
  int64_t tokens() const { return tokens_; }  // appended so far
  int64_t bytes() const;                      // bytes of state held (constant in tokens())
  void reset();
  const LinearMethod& method() const { return m_; }

 private:
  LinearMethod m_;
  int64_t batch_, q_heads_, kv_heads_, dk_, dv_;
  std::shared_ptr<const linear::FeatureMap> map_;
  std::vector<float> state_;   // [B][state heads][F][W]
  std::vector<float> scales_;  // [B][state heads]: the Performer's key log-scale (-inf: no key yet)
  int64_t tokens_ = 0;
};

// The Performer's drawn features W: [m, Dk] (f32) for a method and width, deterministic in (seed, m, Dk).
Tensor performer_features(const LinearMethod& m, int64_t dk);

// FLOPs of one call (forward), for throughput figures: count what the chosen form does
// (2 per multiply-add of its matrix products, feature maps' products included, element-wise
// work not counted). n: the sequence length (queries and keys).
double linear_flops(const LinearMethod& m, int64_t b, int64_t hq, int64_t hkv, int64_t n, int64_t dk, int64_t dv);

// The plain-loop definitions, the oracle of every form above. Parallel walks every pair
// (j <= i when causal) and applies the formulas literally; recurrent runs the token-by-token
// state recurrence (O(n F Dv), for long sequences). RefPrecision::f64 accumulates in double;
// RefPrecision::input is the tolerance rule's baseline: f32 accumulation with the features,
// the pair weights and the output rounded to q's dtype.
enum class LinearRefForm : uint8_t { parallel, recurrent };
void linear_reference(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                      const MutTensorView& o, RefPrecision precision = RefPrecision::f64,
                      LinearRefForm form = LinearRefForm::parallel);
// The definition's gradients by the chain rule over every pair (the normaliser's derivative
// included), summed over the query heads of a group for dk and dv.
void linear_backward_reference(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& dout,
                               const LinearMethod& m, const MutTensorView& dq, const MutTensorView& dk,
                               const MutTensorView& dv, RefPrecision precision = RefPrecision::f64);

// The checked description of one call, shared by every kernel and the reference.
struct LinearProblem {
  AttnShape shape;  // q_len, kv_len; d_qk = Dk, d_v = Dv
  int64_t features = 0;  // F
  double scale = 0;      // resolved
  std::vector<double> gammas;  // per query head (1 where there is no decay)
};
LinearProblem prepare_linear(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                             const MutTensorView& o);
LinearProblem prepare_linear_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                      const TensorView& dout, const LinearMethod& m, const MutTensorView& dq,
                                      const MutTensorView& dk, const MutTensorView& dv);

}  // namespace attnkit
