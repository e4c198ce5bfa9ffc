// linear.hpp's entry points: method strings, validation, the choice between the engine
// and the reference, LinearState and the FLOP count. The methods themselves live in
// linear_elu.cpp, linear_performer.cpp and linear_retention.cpp; the forms in
// linear_engine.cpp and linear_backward.cpp.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "attnkit/linear.hpp"
#include "kernels/linear_engine.hpp"

namespace attnkit {

namespace {

constexpr int64_t kMaxFeatures = int64_t{1} << 16;
constexpr int64_t kMaxChunk = 4096;

std::string_view kind_name(LinearKind k) {
  switch (k) {
    case LinearKind::performer: return "performer";
    case LinearKind::retention: return "retention";
    case LinearKind::linear: break;
  }
  return "linear";
}

std::string_view form_name(LinearForm f) {
  switch (f) {
    case LinearForm::parallel: return "parallel";
    case LinearForm::chunkwise: return "chunkwise";
    case LinearForm::recurrent: return "recurrent";
    case LinearForm::automatic: break;
  }
  return "auto";
}

std::string_view feature_name(LinearFeature f) {
  switch (f) {
    case LinearFeature::relu: return "relu";
    case LinearFeature::identity: return "identity";
    case LinearFeature::elu1: break;
  }
  return "elu1";
}

// Outputs are written from many threads: two elements sharing an address would race (the
// rule attend() applies to its outputs).
void expect_distinct(const TensorView& t, const char* name) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (|stride|, size)
  for (int i = 0; i < t.rank(); ++i)
    if (t.size(i) > 1) dims.emplace_back(std::abs(t.stride(i)), t.size(i));
  std::sort(dims.begin(), dims.end());
  int64_t extent = 1;
  for (const auto& [stride, size] : dims) {
    check(stride >= extent, [&] {
      return fmt::format("{}: strides make elements overlap (stride {} inside an extent of {}); outputs need "
                         "distinct addresses",
                         name, stride, extent);
    });
    extent = stride * (size - 1) + extent;
  }
}

void expect_dims(const TensorView& t, std::initializer_list<int64_t> want, const char* name, const char* layout) {
  const std::vector<int64_t> w(want);
  check(t.rank() == static_cast<int>(w.size()) && t.shape() == w, [&] {
    return fmt::format("{} must have shape {} = [{}], got {}", name, layout, fmt::join(w, ", "), t.shape_string());
  });
}

linear::Geometry geometry(const LinearMethod& m, const AttnShape& s) {
  const bool performer = m.kind == LinearKind::performer, retention = m.kind == LinearKind::retention;
  return linear::Geometry{s.batch, s.q_heads, s.kv_heads, s.q_len, s.kv_len, s.d_qk, s.d_v,
                          performer ? m.features : s.d_qk, s.d_v + (retention ? 0 : 1), retention ? 1 : s.group(),
                          m.chunk, m.causal};
}

}  // namespace

void LinearMethod::validate(int64_t q_heads) const {
  if (kind == LinearKind::linear) {
    check(feature == LinearFeature::elu1, [&] {
      return fmt::format("phi={} has no positive normaliser: {}; linear attention divides by phi(q) . sum phi(k), "
                         "so it takes phi=elu1 (elu(x) + 1 > 0)",
                         feature_name(feature),
                         feature == LinearFeature::relu ? "relu is 0 on every coordinate of a row that is <= 0, so the "
                                                          "normaliser can be 0"
                                                        : "the identity's dot products take either sign, so the "
                                                          "normaliser can be 0 or negative");
    });
  } else {
    check(feature == LinearFeature::elu1,
          [&] { return fmt::format("phi applies to kind linear only, not {}", kind_name(kind)); });
  }
  check(std::isfinite(eps) && eps >= 0, [&] { return fmt::format("eps ({}) must be finite and >= 0", eps); });
  if (kind == LinearKind::performer) {
    check(features >= 1 && features <= kMaxFeatures, [&] {
      return fmt::format("performer: m (features, {}) must be in [1, {}]", features, kMaxFeatures);
    });
  }
  if (kind == LinearKind::retention) {
    check(causal, [] {
      return std::string("retention is causal only: its decay gamma^(i - j) weighs earlier tokens (set causal)");
    });
    check(gamma.size() <= 1 || q_heads == 0 || static_cast<int64_t>(gamma.size()) == q_heads, [&] {
      return fmt::format("gamma has {} values; retention takes one for every head or one per query head ({})",
                         gamma.size(), q_heads);
    });
    for (size_t h = 0; h < gamma.size(); ++h)
      check(gamma[h] > 0 && gamma[h] <= 1, [&] { return fmt::format("gamma[{}] ({}) must be in (0, 1]", h, gamma[h]); });
  } else {
    check(gamma.empty(), [&] { return fmt::format("gamma is retention's decay; kind {} takes none", kind_name(kind)); });
  }
  check(std::isfinite(scale) && scale >= 0,
        [&] { return fmt::format("scale ({}) must be finite and >= 0 (0: the method's default)", scale); });
  check(chunk >= 1 && chunk <= kMaxChunk, [&] { return fmt::format("chunk ({}) must be in [1, {}]", chunk, kMaxChunk); });
  check(causal || form != LinearForm::recurrent, [] {
    return std::string("form=recurrent needs a causal method (a non-causal output depends on later tokens)");
  });
}

std::vector<double> linear_gammas(const LinearMethod& m, int64_t q_heads) {
  std::vector<double> g(static_cast<size_t>(std::max<int64_t>(q_heads, 0)), 1.0);
  if (m.kind != LinearKind::retention) return g;
  for (int64_t h = 0; h < q_heads; ++h) {
    const size_t i = static_cast<size_t>(h);
    g[i] = m.gamma.empty() ? 1.0 - std::exp2(-5.0 - static_cast<double>(h)) : m.gamma.size() == 1 ? m.gamma[0] : m.gamma[i];
  }
  return g;
}

double linear_scale(const LinearMethod& m, int64_t dk) {
  if (m.scale > 0) return m.scale;
  return m.kind == LinearKind::linear ? 1.0 : 1.0 / std::sqrt(static_cast<double>(dk));
}

LinearMethod parse_linear_method(std::string_view spec) {
  LinearMethod m;
  const std::string quoted = printable(spec);
  const size_t colon = spec.find(':');
  const std::string_view name = spec.substr(0, colon);
  if (name == "linear") {
    m.kind = LinearKind::linear;
  } else if (name == "performer") {
    m.kind = LinearKind::performer;
  } else if (name == "retention") {
    m.kind = LinearKind::retention;
  } else {
    throw Error(fmt::format("linear method '{}': '{}' is not one of linear, performer, retention", quoted,
                            printable(name)));
  }
  const auto bad = [&](std::string_view key, std::string_view why) {
    return Error(fmt::format("linear method '{}': key '{}' {}", quoted, printable(key), why));
  };
  const auto number = [&](std::string_view key, std::string_view text, auto& out) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty())
      throw bad(key, fmt::format("needs a number, got '{}'", printable(text)));
  };
  const auto only = [&](std::string_view key, std::initializer_list<LinearKind> kinds) {
    if (std::find(kinds.begin(), kinds.end(), m.kind) == kinds.end())
      throw bad(key, fmt::format("does not apply to {}", kind_name(m.kind)));
  };
  std::string_view rest = colon == std::string_view::npos ? std::string_view() : spec.substr(colon + 1);
  if (colon != std::string_view::npos && rest.empty()) throw bad("", "is empty (nothing after ':')");
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) throw bad(item, "needs a value (key=value)");
    const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "eps") {
      only(key, {LinearKind::linear, LinearKind::performer});
      number(key, value, m.eps);
    } else if (key == "phi") {
      only(key, {LinearKind::linear});
      if (value == "elu1") m.feature = LinearFeature::elu1;
      else if (value == "relu") m.feature = LinearFeature::relu;
      else if (value == "identity") m.feature = LinearFeature::identity;
      else throw bad(key, fmt::format("is '{}', not one of elu1, relu, identity", printable(value)));
    } else if (key == "m") {
      only(key, {LinearKind::performer});
      number(key, value, m.features);
    } else if (key == "seed") {
      only(key, {LinearKind::performer});
      number(key, value, m.seed);
    } else if (key == "gamma") {
      only(key, {LinearKind::retention});
      m.gamma.clear();
      for (std::string_view g = value;;) {
        const size_t slash = g.find('/');
        number(key, g.substr(0, slash), m.gamma.emplace_back());
        if (slash == std::string_view::npos) break;
        g = g.substr(slash + 1);
      }
    } else if (key == "chunk") {
      number(key, value, m.chunk);
    } else if (key == "scale") {
      number(key, value, m.scale);
    } else if (key == "form") {
      if (value == "auto") m.form = LinearForm::automatic;
      else if (value == "parallel") m.form = LinearForm::parallel;
      else if (value == "chunkwise") m.form = LinearForm::chunkwise;
      else if (value == "recurrent") m.form = LinearForm::recurrent;
      else throw bad(key, fmt::format("is '{}', not one of auto, parallel, chunkwise, recurrent", printable(value)));
    } else if (key == "causal") {
      if (value == "1" || value == "true") m.causal = true;
      else if (value == "0" || value == "false") m.causal = false;
      else throw bad(key, fmt::format("is '{}', not 1 or 0", printable(value)));
    } else if (key == "kernel") {
      m.kernel = parse_kernel(value);
    } else {
      throw bad(key, "is unknown (keys: eps, phi for linear; m, seed, eps for performer; gamma for retention; "
                     "chunk, form, causal, scale, kernel for all)");
    }
  }
  try {
    m.validate(0);
  } catch (const Error& e) {
    throw Error(fmt::format("linear method '{}': {}", quoted, printable(e.what(), 400, Printable::message)));
  }
  return m;
}

std::string linear_method_string(const LinearMethod& m) {
  const LinearMethod d;
  std::vector<std::string> keys;
  if (m.kind == LinearKind::performer) {
    keys.push_back(fmt::format("m={}", m.features));
    keys.push_back(fmt::format("seed={}", m.seed));
  }
  if (!m.gamma.empty()) keys.push_back(fmt::format("gamma={}", fmt::join(m.gamma, "/")));
  if (m.eps != d.eps) keys.push_back(fmt::format("eps={}", m.eps));
  if (m.feature != d.feature) keys.push_back(fmt::format("phi={}", feature_name(m.feature)));
  if (m.chunk != d.chunk) keys.push_back(fmt::format("chunk={}", m.chunk));
  if (m.form != d.form) keys.push_back(fmt::format("form={}", form_name(m.form)));
  if (m.causal != d.causal) keys.push_back(fmt::format("causal={}", m.causal ? 1 : 0));
  if (m.scale != d.scale) keys.push_back(fmt::format("scale={}", m.scale));
  if (m.kernel != d.kernel) keys.push_back(fmt::format("kernel={}", kernel_name(m.kernel)));
  if (keys.empty()) return std::string(kind_name(m.kind));
  return fmt::format("{}:{}", kind_name(m.kind), fmt::join(keys, ","));
}

namespace {
LinearProblem prepare_inputs(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m) {
  const AttnShape s = AttnShape::from_views(q, k, v);
  check(!m.causal || s.q_len == s.kv_len, [&] {
    return fmt::format("k and v must have q's length ({}) for a causal method, got {} (query i is paired with key i)",
                       s.q_len, s.kv_len);
  });
  m.validate(s.q_heads);
  return {s, m.kind == LinearKind::performer ? m.features : s.d_qk, linear_scale(m, s.d_qk),
          linear_gammas(m, s.q_heads)};
}
}  // namespace

LinearProblem prepare_linear(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                             const MutTensorView& o) {
  LinearProblem p = prepare_inputs(q, k, v, m);
  const AttnShape& s = p.shape;
  expect_dims(o, {s.batch, s.q_heads, s.q_len, s.d_v}, "o", "[B, Hq, N, Dv]");
  expect_distinct(o, "o");
  return p;
}

namespace linear {

std::unique_ptr<FeatureMap> make_feature_map(const LinearMethod& m, int64_t q_heads, int64_t dk) {
  switch (m.kind) {
    case LinearKind::performer: return make_performer_map(m, dk);
    case LinearKind::retention: return make_retention_map(m, q_heads, dk);
    case LinearKind::linear: break;
  }
  return make_elu_map(m, dk);
}

}  // namespace linear

void linear_attend_into(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                        const MutTensorView& o) {
  const LinearProblem p = prepare_linear(q, k, v, m, o);
  if (m.kernel == Kernel::ref) {
    linear_reference(q, k, v, m, o);
    return;
  }
  const auto map = linear::make_feature_map(m, p.shape.q_heads, p.shape.d_qk);
  linear::forward(*map, geometry(m, p.shape), linear::resolve_form(m), q, k, v, o);
}

Tensor linear_attend(const TensorView& q, const TensorView& k, const TensorView& v, const LinearMethod& m,
                     DType o_dtype) {
  const AttnShape s = AttnShape::from_views(q, k, v);
  Tensor o(o_dtype, {s.batch, s.q_heads, s.q_len, s.d_v});
  linear_attend_into(q, k, v, m, o.mut());
  return o;
}

LinearProblem prepare_linear_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                                      const TensorView& dout, const LinearMethod& m, const MutTensorView& dq,
                                      const MutTensorView& dk, const MutTensorView& dv) {
  LinearProblem p = prepare_inputs(q, k, v, m);
  const AttnShape& s = p.shape;
  expect_dims(dout, {s.batch, s.q_heads, s.q_len, s.d_v}, "dout", "[B, Hq, N, Dv]");
  expect_dims(dq, {s.batch, s.q_heads, s.q_len, s.d_qk}, "dq", "[B, Hq, N, Dk]");
  expect_dims(dk, {s.batch, s.kv_heads, s.kv_len, s.d_qk}, "dk", "[B, Hkv, N, Dk]");
  expect_dims(dv, {s.batch, s.kv_heads, s.kv_len, s.d_v}, "dv", "[B, Hkv, N, Dv]");
  expect_distinct(dq, "dq");
  expect_distinct(dk, "dk");
  expect_distinct(dv, "dv");
  return p;
}

void linear_attend_backward_into(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& dout,
                                 const LinearMethod& m, const MutTensorView& dq, const MutTensorView& dk,
                                 const MutTensorView& dv) {
  const LinearProblem p = prepare_linear_backward(q, k, v, dout, m, dq, dk, dv);
  if (m.kernel == Kernel::ref) {
    linear_backward_reference(q, k, v, dout, m, dq, dk, dv);
    return;
  }
  const auto map = linear::make_feature_map(m, p.shape.q_heads, p.shape.d_qk);
  linear::backward(*map, geometry(m, p.shape), q, k, v, dout, dq, dk, dv);
}

LinearState::LinearState(const LinearMethod& m, int64_t batch, int64_t q_heads, int64_t kv_heads, int64_t dk,
                         int64_t dv)
    : m_(m), batch_(batch), q_heads_(q_heads), kv_heads_(kv_heads), dk_(dk), dv_(dv) {
  check(m.causal, [] {
    return std::string("LinearState: the method is not causal; only a causal method has a decode state (a "
                       "non-causal output depends on later tokens)");
  });
  AttnShape s;
  s.batch = batch, s.q_heads = q_heads, s.kv_heads = kv_heads, s.d_qk = dk, s.d_v = dv;
  s.validate();
  m.validate(q_heads);
  map_ = linear::make_feature_map(m, q_heads, dk);
  const linear::Geometry g = geometry(m, s);
  state_.assign(static_cast<size_t>(batch * g.state_heads() * g.state_floats()), 0.0f);
  if (map_->scales_keys()) scales_.assign(static_cast<size_t>(batch * g.state_heads() * g.features), -HUGE_VALF);
}

LinearState::~LinearState() = default;
LinearState::LinearState(LinearState&&) noexcept = default;
LinearState& LinearState::operator=(LinearState&&) noexcept = default;

void LinearState::step(const TensorView& q, const TensorView& k, const TensorView& v, const MutTensorView& o) {
  const AttnShape s = AttnShape::from_views(q, k, v);
  const auto agree = [](int64_t got, int64_t want, const char* what) {
    check(got == want, [&] { return fmt::format("LinearState::step: {} is {}, the state was made for {}", what, got, want); });
  };
  agree(s.batch, batch_, "the batch");
  agree(s.q_heads, q_heads_, "q's head count");
  agree(s.kv_heads, kv_heads_, "k's head count");
  agree(s.d_qk, dk_, "the head dim of q and k");
  agree(s.d_v, dv_, "v's head dim");
  check(s.q_len >= 1 && s.q_len == s.kv_len, [&] {
    return fmt::format("LinearState::step: q, k and v need the same T >= 1 tokens, got q {} and k {}", s.q_len, s.kv_len);
  });
  check(tokens_ <= kMaxSeqLen - s.q_len,
        [&] { return fmt::format("LinearState::step: more than {} tokens in one state", kMaxSeqLen); });
  expect_dims(o, {s.batch, s.q_heads, s.q_len, s.d_v}, "o", "[B, Hq, T, Dv]");
  expect_distinct(o, "o");
  const bool recurrent = s.q_len == 1 || m_.form == LinearForm::recurrent;
  linear::Geometry g = geometry(m_, s);
  g.chunk = std::min(g.chunk, s.q_len);  // workspaces sized for the step, not for a whole chunk
  linear::forward_from_state(*map_, g, recurrent, q, k, v, o, state_.data(),
                             scales_.empty() ? nullptr : scales_.data(), tokens_);
  tokens_ += s.q_len;
}

int64_t LinearState::bytes() const {
  return static_cast<int64_t>((state_.size() + scales_.size()) * sizeof(float));
}

void LinearState::reset() {
  std::fill(state_.begin(), state_.end(), 0.0f);
  std::fill(scales_.begin(), scales_.end(), -HUGE_VALF);
  tokens_ = 0;
}

double linear_flops(const LinearMethod& m, int64_t b, int64_t hq, int64_t hkv, int64_t n, int64_t dk, int64_t dv) {
  AttnShape s;
  s.batch = b, s.q_heads = hq, s.kv_heads = hkv, s.q_len = n, s.kv_len = n, s.d_qk = dk, s.d_v = dv;
  s.validate();
  m.validate(hq);
  const double map_flops = m.kind == LinearKind::performer ? 2.0 * static_cast<double>(dk * m.features) : 0.0;
  return linear::forward_flops(geometry(m, s), linear::resolve_form(m), map_flops);
}

}  // namespace attnkit
