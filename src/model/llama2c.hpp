// llama2.c's legacy checkpoint format (run.c's "version 0" .bin): seven little-endian
// int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; vocab_size
// negative when the classifier is not shared with the embedding), then every weight in f32,
// grouped by kind across layers: token embedding [vocab][dim], attention norms [L][dim],
// wq [L][dim][dim], wk and wv [L][kv_dim][dim], wo [L][dim][dim], ffn norms [L][dim],
// w1 [L][hidden][dim], w2 [L][dim][hidden], w3 [L][hidden][dim], final norm [dim], two
// unused RoPE tables [seq_len][head_size / 2] each, and the classifier [vocab][dim] when
// unshared. Semantics: interleaved RoPE with base 10000, RMSNorm eps 1e-5, SwiGLU, GQA when
// n_kv_heads < n_heads, causal attention in every layer.
// The reader treats the file as hostile: the header's dims are range-checked and the file
// size must equal exactly what they imply before anything is allocated.
#pragma once

#include <string>

#include "model/model.hpp"

namespace attnkit::model {

// Throws Error naming the file and the field.
Model load_llama2c(const std::string& path);
Model parse_llama2c(std::string_view bytes, std::string_view label);
// Writes the model in that format (whole or not at all). Throws Error when the model has
// something the format cannot say: per-layer KV heads or patterns other than causal, a
// RoPE other than interleaved / base 10000, eps other than 1e-5.
void export_llama2c(const Model& model, const std::string& path);
std::string llama2c_bytes(const Model& model);

}  // namespace attnkit::model
