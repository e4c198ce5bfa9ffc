// ModelConfig: validation and the JSON form (config.hpp).
#include "model/config.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "attnkit/error.hpp"
#include "attnkit/shape.hpp"

namespace attnkit::model {
namespace {

using nlohmann::json;

// Largest width or vocabulary a config may ask for: far beyond any model this runs, small
// enough that products of two of them cannot overflow int64.
constexpr int64_t kMaxWidth = int64_t{1} << 24;

int64_t get_int(const json& j, const char* key, int64_t lo, int64_t hi) {
  const std::string what = fmt::format("config.{}", key);
  check(j.contains(key), [&] { return fmt::format("{} is missing", what); });
  const json& v = j.at(key);
  check(v.is_number_integer(), [&] { return fmt::format("{} must be an integer", what); });
  // Unsigned values above int64's range parse as unsigned: out of range either way.
  check(!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(hi),
        [&] { return fmt::format("{} is out of range [{}, {}]", what, lo, hi); });
  const int64_t x = v.get<int64_t>();
  check(x >= lo && x <= hi, [&] { return fmt::format("{} ({}) is out of range [{}, {}]", what, x, lo, hi); });
  return x;
}

double get_double(const json& j, const char* key, double fallback) {
  if (!j.contains(key)) return fallback;
  const json& v = j.at(key);
  check(v.is_number(), [&] { return fmt::format("config.{} must be a number", key); });
  return v.get<double>();
}

std::string get_string(const json& j, const char* key, std::string_view what, std::string fallback) {
  if (!j.contains(key)) return fallback;
  const json& v = j.at(key);
  check(v.is_string(), [&] { return fmt::format("{} must be a string", what); });
  return v.get<std::string>();
}

void check_known(const json& j, const std::set<std::string>& known, std::string_view where) {
  for (const auto& item : j.items())
    check(known.count(item.key()) > 0,
          [&] { return fmt::format("{}: unknown field \"{}\"", where, printable(item.key())); });
}

std::string heads_name(int64_t kv_heads, int64_t n_heads) {
  if (kv_heads == n_heads) return "mha";
  if (kv_heads == 1) return "mqa";
  return fmt::format("gqa:{}", kv_heads);
}

}  // namespace

int64_t parse_heads(std::string_view text, int64_t n_heads, std::string_view what) {
  if (text == "mha") return n_heads;
  if (text == "mqa") return 1;
  if (text.substr(0, 4) == "gqa:") {
    const std::string_view num = text.substr(4);
    int64_t g = 0;
    const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), g);
    check(ec == std::errc() && end == num.data() + num.size() && g >= 1,
          [&] { return fmt::format("{} (\"{}\"): G in gqa:G must be a positive integer", what, printable(text)); });
    check(n_heads % g == 0,
          [&] { return fmt::format("{} (\"{}\"): n_heads ({}) must be a multiple of G", what, printable(text), n_heads); });
    return g;
  }
  throw Error(fmt::format("{} (\"{}\") must be mha, mqa or gqa:G", what, printable(text)));
}

void ModelConfig::validate() const {
  auto positive = [](int64_t v, const char* name) {
    check(v >= 1 && v <= kMaxWidth, [&] { return fmt::format("config.{} ({}) is out of range [1, {}]", name, v, kMaxWidth); });
  };
  positive(dim, "dim");
  positive(hidden_dim, "hidden_dim");
  positive(n_layers, "n_layers");
  positive(n_heads, "n_heads");
  positive(vocab, "vocab");
  check(vocab <= (int64_t{1} << 31) - 1, [&] { return fmt::format("config.vocab ({}) must fit int32 token ids", vocab); });
  check(context >= 1 && context <= kMaxSeqLen,
        [&] { return fmt::format("config.context ({}) is out of range [1, {}]", context, kMaxSeqLen); });
  check(dim % n_heads == 0, [&] { return fmt::format("config.dim ({}) must be a multiple of n_heads ({})", dim, n_heads); });
  check(head_dim() <= kMaxHeadDim,
        [&] { return fmt::format("config.dim / n_heads ({}) must be at most {}", head_dim(), kMaxHeadDim); });
  check(std::isfinite(norm_eps) && norm_eps > 0, [&] { return fmt::format("config.norm_eps ({}) must be finite and > 0", norm_eps); });
  rope.validate(head_dim());
  check(static_cast<int64_t>(layers.size()) == n_layers,
        [&] { return fmt::format("config.layers has {} entries; n_layers is {}", layers.size(), n_layers); });
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerConfig& lc = layers[l];
    check(lc.kv_heads >= 1 && n_heads % lc.kv_heads == 0, [&] {
      return fmt::format("config.layers[{}].heads: kv heads ({}) must divide n_heads ({})", l, lc.kv_heads, n_heads);
    });
    const Pattern p = [&] {
      try {
        return Pattern::parse(lc.pattern);
      } catch (const Error& e) {
        throw Error(fmt::format("config.layers[{}].pattern: {}", l, e.what()));
      }
    }();
    check(p.is_causal(), [&] {
      return fmt::format("config.layers[{}].pattern (\"{}\") must be causal: a decoder's query may not see later keys",
                         l, printable(lc.pattern));
    });
    const Method m = parse_layer_method(lc.method, fmt::format("config.layers[{}].method", l));
    check(m.family == MethodFamily::softmax || p.kind() == Pattern::Kind::causal, [&] {
      return fmt::format("config.layers[{}].pattern (\"{}\"): a {} layer attends causally to every earlier key; "
                         "its pattern must be \"causal\"",
                         l, printable(lc.pattern), m.name());
    });
    if (m.family != MethodFamily::mla) continue;
    check(lc.kv_heads == n_heads, [&] {
      return fmt::format("config.layers[{}].heads: an MLA layer's heads all read one shared latent; its heads must be "
                         "mha (kv heads {} != n_heads {})",
                         l, lc.kv_heads, n_heads);
    });
    try {
      layer_mla_config(*this, static_cast<int64_t>(l)).validate();
    } catch (const Error& e) {
      throw Error(fmt::format("config.layers[{}].method (\"{}\"): {}", l, printable(lc.method), e.what()));
    }
  }
}

MlaConfig layer_mla_config(const ModelConfig& c, int64_t l) {
  check(l >= 0 && l < static_cast<int64_t>(c.layers.size()),
        [&] { return fmt::format("layer {} is out of range [0, {})", l, c.layers.size()); });
  const Method m = parse_layer_method(c.layers[static_cast<size_t>(l)].method, fmt::format("config.layers[{}].method", l));
  check(m.family == MethodFamily::mla, [&] { return fmt::format("config.layers[{}] is not an MLA layer", l); });
  MlaConfig mc;
  mc.heads = c.n_heads, mc.d_model = c.dim;
  mc.d_c = m.mla.latent, mc.d_r = m.mla.rope;
  mc.d_nope = mc.d_v = c.head_dim();
  mc.rope = {c.rope.style, 0, c.rope.base};
  return mc;
}

Method parse_layer_method(std::string_view spec, std::string_view what) {
  Method m;
  try {
    m = parse_method(spec);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", what, e.what()));
  }
  check(m.family != MethodFamily::linformer, [&] {
    return fmt::format("{} (\"{}\"): Linformer projects the whole sequence, future positions included, into every "
                       "key, so a decoder layer cannot use it",
                       what, printable(spec));
  });
  // A decoder layer's linear method is causal whatever the spec says.
  m.linear.causal = true;
  return m;
}

int64_t ModelConfig::parameter_count() const {
  int64_t n = vocab * dim * (tied_head ? 1 : 2) + dim;
  for (int64_t l = 0; l < n_layers; ++l) {
    const LayerConfig& lc = layers[static_cast<size_t>(l)];
    n += 2 * dim + dim * dim + 3 * dim * hidden_dim;  // norms, wo and the MLP
    if (parse_layer_method(lc.method, "method").family == MethodFamily::mla) {
      // w_q, w_dkv, w_kr, w_uk and w_uv (model.hpp)
      const MlaConfig m = layer_mla_config(*this, l);
      n += dim * m.heads * m.d_qk() + dim * (m.d_c + m.d_r) + m.heads * (m.d_nope + m.d_v) * m.d_c;
    } else {
      n += dim * dim + 2 * lc.kv_heads * head_dim() * dim;  // wq, wk, wv
    }
  }
  return n;
}

ModelConfig parse_config(std::string_view text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(fmt::format("config: not valid JSON ({})", printable(e.what())));
  }
  check(j.is_object(), [] { return std::string("config must be a JSON object"); });
  check_known(j, {"dim", "hidden_dim", "n_layers", "n_heads", "vocab", "context", "norm_eps", "rope_base", "rope_style",
                  "tied_head", "seed", "layers", "heads", "pattern", "method"},
              "config");
  ModelConfig c;
  c.dim = get_int(j, "dim", 1, kMaxWidth);
  c.hidden_dim = get_int(j, "hidden_dim", 1, kMaxWidth);
  c.n_layers = get_int(j, "n_layers", 1, 4096);
  c.n_heads = get_int(j, "n_heads", 1, kMaxWidth);
  c.vocab = get_int(j, "vocab", 1, (int64_t{1} << 31) - 1);
  c.context = get_int(j, "context", 1, kMaxSeqLen);
  c.norm_eps = get_double(j, "norm_eps", c.norm_eps);
  c.rope.base = get_double(j, "rope_base", c.rope.base);
  c.rope.style = parse_rope_style(get_string(j, "rope_style", "config.rope_style", "interleaved"));
  if (j.contains("tied_head")) {
    check(j["tied_head"].is_boolean(), [] { return std::string("config.tied_head must be true or false"); });
    c.tied_head = j["tied_head"].get<bool>();
  }
  if (j.contains("seed")) {
    check(j["seed"].is_number_unsigned() || (j["seed"].is_number_integer() && j["seed"].get<int64_t>() >= 0),
          [] { return std::string("config.seed must be a non-negative integer"); });
    c.seed = j["seed"].get<uint64_t>();
  }
  if (j.contains("layers")) {
    check(!j.contains("heads") && !j.contains("pattern") && !j.contains("method"),
          [] { return std::string("config: give either layers or heads / pattern / method, not both"); });
    const json& layers = j["layers"];
    check(layers.is_array() && static_cast<int64_t>(layers.size()) == c.n_layers,
          [&] { return fmt::format("config.layers must be an array of n_layers ({}) objects", c.n_layers); });
    for (size_t l = 0; l < layers.size(); ++l) {
      const std::string where = fmt::format("config.layers[{}]", l);
      check(layers[l].is_object(), [&] { return fmt::format("{} must be an object", where); });
      check_known(layers[l], {"heads", "pattern", "method"}, where);
      LayerConfig lc;
      lc.kv_heads = parse_heads(get_string(layers[l], "heads", where + ".heads", "mha"), c.n_heads, where + ".heads");
      lc.pattern = get_string(layers[l], "pattern", where + ".pattern", "causal");
      lc.method = get_string(layers[l], "method", where + ".method", "softmax");
      c.layers.push_back(lc);
    }
  } else {
    LayerConfig lc;
    lc.kv_heads = parse_heads(get_string(j, "heads", "config.heads", "mha"), c.n_heads, "config.heads");
    lc.pattern = get_string(j, "pattern", "config.pattern", "causal");
    lc.method = get_string(j, "method", "config.method", "softmax");
    c.layers.assign(static_cast<size_t>(c.n_layers), lc);
  }
  c.validate();
  return c;
}

std::string config_to_json(const ModelConfig& c) {
  json j = {{"dim", c.dim},           {"hidden_dim", c.hidden_dim},
            {"n_layers", c.n_layers}, {"n_heads", c.n_heads},
            {"vocab", c.vocab},       {"context", c.context},
            {"norm_eps", c.norm_eps}, {"rope_base", c.rope.base},
            {"rope_style", std::string(rope_style_name(c.rope.style))},
            {"tied_head", c.tied_head}, {"seed", c.seed}};
  json layers = json::array();
  for (const LayerConfig& lc : c.layers) {
    json layer = {{"heads", heads_name(lc.kv_heads, c.n_heads)}, {"pattern", lc.pattern}};
    if (lc.method != "softmax") layer["method"] = lc.method;
    layers.push_back(layer);
  }
  j["layers"] = layers;
  return j.dump(2);
}

}  // namespace attnkit::model
