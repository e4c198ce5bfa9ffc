// attnkit/linformer.hpp — Linformer (Wang et al., 2020): softmax attention over k projected
// keys and values instead of the n real ones.
//
//   K'[b, h] = E_p K[b, h]   [k, Dk]      E_p, F_p: [k, n], p the projection of KV head h
//   V'[b, h] = F_p V[b, h]   [k, Dv]
//   O[b, hq] = softmax(scale Q[b, hq] K'[b, hq / g]^T) V'[b, hq / g],  g = Hq / Hkv,
// scale = 1 / sqrt(Dk) unless given. The projections mix the whole sequence, future positions
// included, into every projected key, so Linformer is non-causal only: a causal request is
// an Error that says so. Cost O(n k d) per head instead of O(n^2 d).
//
// Sharing (the paper's section 4): none, one E_h and F_h per KV head (P = Hkv); headwise,
// one E and one F for every head (P = 1); kv, E = F, one matrix for K and V of every head
// (P = 1); layerwise, kv within a call, the caller passing the same matrix to every layer
// (and summing its gradients over the layers). With kv / layerwise `f` is an empty view or
// holds exactly e's values, and only `de` receives a gradient (dE + dF).
//
// Kernels: automatic / flash project with BLAS (f32) and attend over the k projected keys
// with the flash kernel; automatic runs the f64 reference when every input is f64, since
// only it keeps double precision; ref is the f64 oracle (reference.hpp).
// Not for: causal or decoding use (no recurrent form exists), learned projections' training
// loop (the model owns its parameters; this file gives values and gradients).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "attnkit/attention.hpp"

namespace attnkit {

enum class LinformerSharing : uint8_t { none, headwise, kv, layerwise };
LinformerSharing parse_linformer_sharing(std::string_view name);  // throws Error
std::string_view linformer_sharing_name(LinformerSharing s);

struct LinformerMethod {
  int64_t k = 256;  // projected length
  LinformerSharing sharing = LinformerSharing::headwise;
  uint64_t seed = 1;    // for make_linformer_projections
  bool causal = false;  // true is rejected: the projections mix future positions into every key
  double scale = NAN;   // NaN: 1 / sqrt(Dk); else finite
  Kernel kernel = Kernel::automatic;

  // P, the number of E (and F) matrices, for `kv_heads` KV heads.
  int64_t projections(int64_t kv_heads) const { return sharing == LinformerSharing::none ? kv_heads : 1; }
  // Whether F is E (kv and layerwise sharing).
  bool shares_ef() const { return sharing == LinformerSharing::kv || sharing == LinformerSharing::layerwise; }
};

// "linformer:k=K[,sharing=none|headwise|kv|layerwise][,seed=S]" (k required); throws Error
// naming the key. linformer_method_string writes every key, and parses back to the same
// k, sharing and seed.
LinformerMethod parse_linformer_method(std::string_view spec);
std::string linformer_method_string(const LinformerMethod& m);

// e, f: f32 [P, k, n]. For kv / layerwise sharing f is an empty Tensor (F is E): pass e,
// or TensorView(), as f.
struct LinformerProjections {
  Tensor e, f;
};
// F as the calls take it: an empty view when F is E (kv / layerwise sharing), else p.f.
inline TensorView linformer_f(const LinformerMethod& m, const LinformerProjections& p) {
  return m.shares_ef() ? TensorView() : p.f.view();
}

// Entries i.i.d. N(0, 1/k), the Johnson-Lindenstrauss projection of the paper's Theorem 1,
// under which |E x|^2 equals |x|^2 in expectation. Deterministic for m.seed: normals by
// Box-Muller on std::mt19937_64 (whose sequence the standard fixes), E's matrices first,
// then F's.
LinformerProjections make_linformer_projections(const LinformerMethod& m, int64_t kv_heads, int64_t n);

// The checked description of a call: q, k, v's shape (kv_len = n, the length E and F project),
// k and P. Throws Error naming the argument: the method (causal, k < 1, scale), q, k, v (as
// attend()), e and f (rank, P for the sharing, k, and "n != projection length"), outputs'
// shapes and overlap.
struct LinformerProblem {
  AttnShape shape;
  int64_t proj_len = 0;     // k
  int64_t projections = 0;  // P
  // The inner attention's shape: kv_len = k.
  AttnShape projected() const {
    AttnShape s = shape;
    s.kv_len = proj_len;
    return s;
  }
};
LinformerProblem prepare_linformer(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& e,
                                   const TensorView& f, const LinformerMethod& m, const MutTensorView& o);
LinformerProblem prepare_linformer_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                            const TensorView& e, const TensorView& f, const TensorView& d_o,
                                            const LinformerMethod& m, const MutTensorView& dq,
                                            const MutTensorView& dk, const MutTensorView& dv,
                                            const MutTensorView& de, const MutTensorView& df);

// q: [B, Hq, Nq, Dk], k: [B, Hkv, n, Dk], v: [B, Hkv, n, Dv], e, f: [P, k, n]
// -> o: [B, Hq, Nq, Dv]. Any strides; f32 / bf16 / f16 / f64 inputs, each its own type.
// Nq is free (it is n in self-attention; a decoder's cross-attention may differ).
void linformer_attend_into(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& e,
                           const TensorView& f, const LinformerMethod& m, const MutTensorView& o);
Tensor linformer_attend(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& e,
                        const TensorView& f, const LinformerMethod& m, DType o_dtype = DType::f32);

// Gradients of sum(dO o O): d_o: [B, Hq, Nq, Dv] -> dq, dk, dv (shaped as q, k, v) and
// de, df: [P, k, n], summed over the batch and the heads that share a projection. With
// kv / layerwise sharing de receives dE + dF and df must be empty (rank 0). Outputs are
// overwritten; results are bitwise identical for any thread count.
//   dK' = scale dS^T Q, dV' = P^T dO (attend_backward over K', V'),
//   dK = E^T dK',  dV = F^T dV',  dE = sum_(b, h) dK' K^T,  dF = sum_(b, h) dV' V^T.
void linformer_attend_backward_into(const TensorView& q, const TensorView& k, const TensorView& v,
                                    const TensorView& e, const TensorView& f, const TensorView& d_o,
                                    const LinformerMethod& m, const MutTensorView& dq, const MutTensorView& dk,
                                    const MutTensorView& dv, const MutTensorView& de, const MutTensorView& df);

struct LinformerGradients {
  Tensor dq, dk, dv, de, df;  // df empty for kv / layerwise sharing
};
LinformerGradients linformer_attend_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                             const TensorView& e, const TensorView& f, const TensorView& d_o,
                                             const LinformerMethod& m, DType grad_dtype = DType::f32);

// Forward FLOPs (2 per multiply-add): the projections, 2 n k (Dk + Dv) per (batch, KV head),
// and the attention over k keys, 2 Nq k (Dk + Dv) per (batch, query head), with Nq = n.
double linformer_flops(const LinformerMethod& m, int64_t b, int64_t hq, int64_t hkv, int64_t n, int64_t dk,
                       int64_t dv);

}  // namespace attnkit
