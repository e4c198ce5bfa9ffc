// llama2.c checkpoints: reader and writer (llama2c.hpp).
#include "model/llama2c.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"

namespace attnkit::model {
namespace {

constexpr int64_t kHeaderBytes = 7 * 4;
constexpr uint64_t kMaxFileBytes = uint64_t{64} << 30;

// The weights of one kind for every layer, in file order: (layer offset, rows x cols).
struct Kind {
  int64_t LayerOffsets::*field;
  int64_t rows, cols;
};

std::vector<Kind> layer_kinds(const ModelConfig& c) {
  const int64_t kv = c.layers[0].kv_heads * c.head_dim();
  return {{&LayerOffsets::rms_att, c.dim, 1}, {&LayerOffsets::wq, c.dim, c.dim},   {&LayerOffsets::wk, kv, c.dim},
          {&LayerOffsets::wv, kv, c.dim},      {&LayerOffsets::wo, c.dim, c.dim},   {&LayerOffsets::rms_ffn, c.dim, 1},
          {&LayerOffsets::w1, c.hidden_dim, c.dim}, {&LayerOffsets::w2, c.dim, c.hidden_dim},
          {&LayerOffsets::w3, c.hidden_dim, c.dim}};
}

// Floats the file holds for a config (rope tables included).
uint64_t file_floats(const ModelConfig& c) {
  uint64_t n = static_cast<uint64_t>(c.vocab * c.dim);
  for (const Kind& k : layer_kinds(c)) n += static_cast<uint64_t>(c.n_layers * k.rows * k.cols);
  n += static_cast<uint64_t>(c.dim + c.context * c.head_dim());  // final norm, two tables of head_size / 2
  if (!c.tied_head) n += static_cast<uint64_t>(c.vocab * c.dim);
  return n;
}

// Visits every weight range in file order: f(offset into Model::weights or -1 for the
// RoPE tables, floats).
template <class F>
void for_each_range(const Model& m, F&& f) {
  const ModelConfig& c = m.config();
  f(m.wte(), c.vocab * c.dim);
  for (const Kind& k : layer_kinds(c))
    for (int64_t l = 0; l < c.n_layers; ++l) f(m.layer(l).*(k.field), k.rows * k.cols);
  f(m.rms_final(), c.dim);
  f(-1, c.context * c.head_dim());
  if (!c.tied_head) f(m.wcls(), c.vocab * c.dim);
}

}  // namespace

Model parse_llama2c(std::string_view bytes, std::string_view label) {
  const std::string where = printable(label);
  check(bytes.size() >= kHeaderBytes,
        [&] { return fmt::format("{}: {} bytes is too short for a llama2.c header (28)", where, bytes.size()); });
  int32_t h[7];
  std::memcpy(h, bytes.data(), sizeof h);
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  const int64_t limits[7] = {1 << 16, 1 << 18, 1024, 1024, 1024, 1 << 24, 1 << 24};
  for (int i = 0; i < 7; ++i) {
    const int64_t v = i == 5 ? std::abs(static_cast<int64_t>(h[i])) : h[i];
    check(v >= 1 && v <= limits[i], [&] {
      return fmt::format("{}: header {} ({}) is out of range [1, {}]{}", where, names[i], h[i], limits[i],
                         i == 5 ? " in magnitude" : "");
    });
  }
  check(h[0] % h[3] == 0, [&] { return fmt::format("{}: dim ({}) must be a multiple of n_heads ({})", where, h[0], h[3]); });
  check(h[4] <= h[3] && h[3] % h[4] == 0,
        [&] { return fmt::format("{}: n_heads ({}) must be a multiple of n_kv_heads ({})", where, h[3], h[4]); });
  ModelConfig c;
  c.dim = h[0], c.hidden_dim = h[1], c.n_layers = h[2], c.n_heads = h[3], c.vocab = std::abs(h[5]), c.context = h[6];
  c.tied_head = h[5] > 0;
  c.rope = {RopeStyle::interleaved, 0, 10000.0};
  c.norm_eps = 1e-5;
  c.layers.assign(static_cast<size_t>(c.n_layers), LayerConfig{h[4], "causal"});
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  }
  const uint64_t floats = file_floats(c);
  check(floats <= kMaxFileBytes / 4 && bytes.size() == kHeaderBytes + floats * 4, [&] {
    return fmt::format("{}: the header implies {} bytes of weights, the file has {}", where, floats * 4,
                       bytes.size() - kHeaderBytes);
  });
  Model m(c);
  const char* at = bytes.data() + kHeaderBytes;
  for_each_range(m, [&](int64_t offset, int64_t n) {
    if (offset >= 0) std::memcpy(m.weights.data() + offset, at, static_cast<size_t>(n) * 4);
    at += n * 4;
  });
  return m;
}

Model load_llama2c(const std::string& path) { return parse_llama2c(read_whole_file(path, kMaxFileBytes), path); }

std::string llama2c_bytes(const Model& m) {
  const ModelConfig& c = m.config();
  for (size_t l = 0; l < c.layers.size(); ++l) {
    check(c.layers[l].kv_heads == c.layers[0].kv_heads && c.layers[l].pattern == "causal", [&] {
      return fmt::format("llama2.c format: layer {} must be causal with the same KV heads as layer 0", l);
    });
    check(!m.is_mla(static_cast<int64_t>(l)), [&] {
      return fmt::format("llama2.c format: layer {} is MLA, whose projections the format has no place for", l);
    });
  }
  check(c.rope.style == RopeStyle::interleaved && c.rope.base == 10000.0 && c.rope.rotary_dim == 0 && c.norm_eps == 1e-5,
        [] { return std::string("llama2.c format: RoPE must be interleaved, base 10000, whole head; norm_eps 1e-5"); });
  const int32_t h[7] = {static_cast<int32_t>(c.dim),      static_cast<int32_t>(c.hidden_dim),
                        static_cast<int32_t>(c.n_layers), static_cast<int32_t>(c.n_heads),
                        static_cast<int32_t>(c.layers[0].kv_heads),
                        static_cast<int32_t>(c.tied_head ? c.vocab : -c.vocab), static_cast<int32_t>(c.context)};
  std::string out(reinterpret_cast<const char*>(h), sizeof h);
  out.reserve(out.size() + file_floats(c) * 4);
  for_each_range(m, [&](int64_t offset, int64_t n) {
    if (offset >= 0) {
      out.append(reinterpret_cast<const char*>(m.weights.data() + offset), static_cast<size_t>(n) * 4);
    } else {
      // run.c skips its RoPE tables; write the ones it would have: cos, then sin.
      const int64_t half = c.head_dim() / 2;
      std::vector<float> cs(static_cast<size_t>(n / 2)), sn(cs.size());
      for (int64_t p = 0; p < c.context; ++p)
        for (int64_t i = 0; i < half; ++i) {
          const double theta = static_cast<double>(p) * std::pow(10000.0, -2.0 * static_cast<double>(i) / c.head_dim());
          cs[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(theta));
          sn[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(theta));
        }
      out.append(reinterpret_cast<const char*>(cs.data()), cs.size() * 4);
      out.append(reinterpret_cast<const char*>(sn.data()), sn.size() * 4);
    }
  });
  return out;
}

void export_llama2c(const Model& model, const std::string& path) {
  write_file_atomically(path, llama2c_bytes(model), path);
}

}  // namespace attnkit::model
