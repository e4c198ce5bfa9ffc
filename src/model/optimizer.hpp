// AdamW (Loshchilov & Hutter: Adam with decoupled weight decay), global-norm gradient
// clipping and the warm-up + cosine learning-rate schedule. Plain loops over the flat
// parameter vector: the same bits for any thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model.hpp"

namespace attnkit::model {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;  // on matrices and the embedding only (ParamRef::decay)
  double clip_norm = 1.0;     // global L2 norm of the gradient; 0: no clipping
};

struct AdamWState {
  std::vector<float> m, v;  // first and second moments, [num_params]
  int64_t step = 0;         // updates taken
};

// Learning rate at step s (0-based) of `total`: linear warm-up over `warmup` steps to
// `peak`, then a cosine down to `floor` at the last step.
double cosine_lr(int64_t s, int64_t total, int64_t warmup, double peak, double floor);

// The gradient's global L2 norm (summed in double, in parameter order).
double grad_norm(const std::vector<float>& grads);

// One update of model.weights with `grads` at learning rate lr; clips by cfg.clip_norm
// first. Returns the gradient norm before clipping.
double adamw_step(Model& model, std::vector<float>& grads, AdamWState& state, const AdamWConfig& cfg, double lr);

}  // namespace attnkit::model
