// Every attention method's spec string, in one self-contained place (method.hpp): the
// kernel names of attend(), linear.hpp's methods and their validation, linformer.hpp's, an
// MLA layer's sizes, and the dispatch between them. Parsing treats the text as hostile (model configs carry these
// strings), so each error names the key and the rule. Not for: computing anything.
#include "attnkit/method.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <optional>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/mla.hpp"
#include "core/view_checks.hpp"
#include "attnkit/shape.hpp"

namespace attnkit {

// ---- attend()'s kernels ----

Kernel parse_kernel(std::string_view name) {
  if (name == "auto") return Kernel::automatic;
  if (name == "ref") return Kernel::ref;
  if (name == "flash") return Kernel::flash;
  throw Error(fmt::format("kernel '{}' is not one of auto, flash, ref", name));
}

std::string_view kernel_name(Kernel k) {
  switch (k) {
    case Kernel::ref: return "ref";
    case Kernel::flash: return "flash";
    case Kernel::automatic: break;
  }
  return "auto";
}

// ---- linear.hpp: linear attention, Performer, retention ----

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

// ---- linformer.hpp ----

namespace {

constexpr const char* kSharingNames = "none, headwise, kv, layerwise";

std::optional<LinformerSharing> sharing_from(std::string_view name) {
  if (name == "none") return LinformerSharing::none;
  if (name == "headwise") return LinformerSharing::headwise;
  if (name == "kv") return LinformerSharing::kv;
  if (name == "layerwise") return LinformerSharing::layerwise;
  return std::nullopt;
}

}  // namespace

LinformerSharing parse_linformer_sharing(std::string_view name) {
  const auto s = sharing_from(name);
  check(s.has_value(),
        [&] { return fmt::format("sharing '{}' is not one of {}", printable(name), kSharingNames); });
  return *s;
}

std::string_view linformer_sharing_name(LinformerSharing s) {
  switch (s) {
    case LinformerSharing::none: return "none";
    case LinformerSharing::kv: return "kv";
    case LinformerSharing::layerwise: return "layerwise";
    case LinformerSharing::headwise: break;
  }
  return "headwise";
}

// The method string.

namespace {

constexpr std::string_view kPrefix = "linformer:";
constexpr const char* kSyntax = "linformer:k=K[,sharing=none|headwise|kv|layerwise][,seed=S]";

[[noreturn]] void bad_spec(std::string_view spec, const std::string& why) {
  throw Error(fmt::format("linformer method '{}': {}; expected {}", printable(spec), why, kSyntax));
}

template <class T>
T parse_integer(std::string_view spec, std::string_view key, std::string_view value) {
  T v{};
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, v);
  // from_chars reads every digit before it reports a range error, so ptr == end tells a
  // well-formed number that does not fit from text that is not a number at all.
  if (ec == std::errc::result_out_of_range && ptr == end)
    bad_spec(spec, fmt::format("{} '{}' is out of range", key, printable(value)));
  if (value.empty() || ec != std::errc() || ptr != end)
    bad_spec(spec, fmt::format("{} '{}' is not a non-negative integer", key, printable(value)));
  return v;
}

}  // namespace

LinformerMethod parse_linformer_method(std::string_view spec) {
  if (!spec.starts_with(kPrefix)) bad_spec(spec, "the method must start with 'linformer:'");
  LinformerMethod m;
  bool seen_k = false, seen_sharing = false, seen_seed = false;
  std::string_view rest = spec.substr(kPrefix.size());
  for (;;) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) bad_spec(spec, fmt::format("item '{}' is not key=value", printable(item)));
    const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    const auto once = [&](bool& seen) {
      if (seen) bad_spec(spec, fmt::format("key '{}' given twice", key));
      seen = true;
    };
    if (key == "k") {
      once(seen_k);
      m.k = parse_integer<int64_t>(spec, "k", value);
      if (m.k < 1 || m.k > kMaxSeqLen) bad_spec(spec, fmt::format("k ({}) must be in [1, {}]", m.k, kMaxSeqLen));
    } else if (key == "sharing") {
      once(seen_sharing);
      const auto s = sharing_from(value);
      if (!s) bad_spec(spec, fmt::format("sharing '{}' is not one of {}", printable(value), kSharingNames));
      m.sharing = *s;
    } else if (key == "seed") {
      once(seen_seed);
      m.seed = parse_integer<uint64_t>(spec, "seed", value);
    } else {
      bad_spec(spec, fmt::format("unknown key '{}' (allowed: k, sharing, seed)", printable(key)));
    }
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  if (!seen_k) bad_spec(spec, "missing 'k='");
  return m;
}

std::string linformer_method_string(const LinformerMethod& m) {
  return fmt::format("linformer:k={},sharing={},seed={}", m.k, linformer_sharing_name(m.sharing), m.seed);
}

// ---- MLA: a model layer's latent and RoPE widths (mla.hpp) ----

namespace {

constexpr const char* kMlaSyntax = "mla:c=C,r=R";

MlaMethod parse_mla_method(std::string_view spec) {
  const std::string quoted = printable(spec);
  const auto bad = [&](const std::string& why) {
    return Error(fmt::format("mla method '{}': {}; expected {}", quoted, why, kMlaSyntax));
  };
  constexpr std::string_view prefix = "mla:";
  if (!spec.starts_with(prefix)) throw bad("it needs its sizes after 'mla:'");
  MlaMethod m;
  bool seen_c = false, seen_r = false;
  for (std::string_view rest = spec.substr(prefix.size());;) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) throw bad(fmt::format("item '{}' is not key=value", printable(item)));
    const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key != "c" && key != "r")
      throw bad(fmt::format("unknown key '{}' (keys: c, the latent width d_c; r, the RoPE dims d_r)", printable(key)));
    bool& seen = key == "c" ? seen_c : seen_r;
    if (seen) throw bad(fmt::format("key '{}' given twice", key));
    seen = true;
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size() || v < 1 || v > kMaxHeadDim)
      throw bad(fmt::format("{} ('{}') must be an integer in [1, {}]", key, printable(value), kMaxHeadDim));
    (key == "c" ? m.latent : m.rope) = v;
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  if (!seen_c) throw bad("missing 'c=' (the latent width d_c)");
  if (!seen_r) throw bad("missing 'r=' (the decoupled RoPE dims d_r)");
  if (m.rope < 2 || m.rope % 2 != 0) throw bad(fmt::format("r ({}) must be even and >= 2: RoPE turns pairs", m.rope));
  if (m.latent + m.rope > kMaxHeadDim)
    throw bad(fmt::format("c + r ({} + {}) is a latent row, at most {} wide", m.latent, m.rope, kMaxHeadDim));
  return m;
}

}  // namespace

// ---- mla.hpp's shapes (a model layer's "mla:c=C,r=R" is checked with them) ----

void MlaConfig::validate() const {
  check_in_range(heads, 1, kMaxMlaHeads, "heads");
  check_in_range(d_model, 1, kMaxMlaModel, "d_model");
  check_in_range(d_c, 1, kMaxHeadDim, "d_c");
  check_in_range(d_nope, 1, kMaxHeadDim, "d_nope");
  check_in_range(d_v, 1, kMaxHeadDim, "d_v");
  check_in_range(d_r, 2, kMaxHeadDim, "d_r");
  check(d_r % 2 == 0, [&] { return fmt::format("d_r ({}) must be even: RoPE turns pairs of channels", d_r); });
  check(d_c + d_r <= kMaxHeadDim, [&] {
    return fmt::format("d_c + d_r ({} + {}) exceeds the head-dim limit {} (the absorbed form's query width)", d_c,
                       d_r, kMaxHeadDim);
  });
  check(d_nope + d_r <= kMaxHeadDim, [&] {
    return fmt::format("d_nope + d_r ({} + {}) exceeds the head-dim limit {}", d_nope, d_r, kMaxHeadDim);
  });
  try {
    rope.validate(d_r);
  } catch (const Error& e) {
    throw Error(fmt::format("rope (over the d_r = {} RoPE dims): {}", d_r, e.what()));
  }
  check(std::isnan(scale) || (std::isfinite(scale) && scale > 0),
        [&] { return fmt::format("scale ({}) must be finite and > 0 (NaN: 1/sqrt(d_nope + d_r))", scale); });
}

// ---- every method ----

std::string Method::to_string() const {
  switch (family) {
    case MethodFamily::softmax:
      return "softmax";
    case MethodFamily::linear:
      return linear_method_string(linear);
    case MethodFamily::linformer:
      return linformer_method_string(linformer);
    case MethodFamily::mla:
      return fmt::format("mla:c={},r={}", mla.latent, mla.rope);
  }
  return "softmax";
}

std::string_view Method::name() const {
  if (family == MethodFamily::softmax) return "softmax";
  if (family == MethodFamily::linformer) return "linformer";
  if (family == MethodFamily::mla) return "mla";
  switch (linear.kind) {
    case LinearKind::linear:
      return "linear";
    case LinearKind::performer:
      return "performer";
    case LinearKind::retention:
      return "retention";
  }
  return "linear";
}

Method parse_method(std::string_view spec) {
  const std::string_view head = spec.substr(0, spec.find(':'));
  Method m;
  if (spec == "softmax") return m;
  if (head == "linear" || head == "performer" || head == "retention") {
    m.family = MethodFamily::linear;
    m.linear = parse_linear_method(spec);
  } else if (head == "linformer") {
    m.family = MethodFamily::linformer;
    m.linformer = parse_linformer_method(spec);
  } else if (head == "mla") {
    m.family = MethodFamily::mla;
    m.mla = parse_mla_method(spec);
  } else {
    throw Error(fmt::format("method \"{}\" must be softmax, linear[:...], performer[:...], retention[:...], "
                            "linformer:k=K[,...] or mla:c=C,r=R",
                            printable(spec)));
  }
  return m;
}

}  // namespace attnkit
