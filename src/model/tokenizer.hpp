// llama2.c's tokenizer: the tokenizer.bin file (int32 max_token_length, then per piece a
// float32 score, an int32 byte length and the piece's bytes; the piece count is not stored:
// it is the model's vocabulary) and run.c's encoding and decoding with it:
//   encode: an optional BOS (id 1), a dummy-prefix space when the text is not empty, each
//     UTF-8 code point as its piece or, when it has none, as its bytes' "<0xHH>" pieces;
//     then, repeatedly, the adjacent pair whose concatenation is a piece with the highest
//     score (> -1e10; the leftmost on ties) is merged; an optional EOS (id 2).
//   decode: a piece after BOS loses its leading space; "<0xHH>" is the byte HH.
// The reader treats the file as hostile: every length is checked against what is left of
// the file and against max_token_length before anything is copied; scores must be finite.
// learn_bpe builds such a tokenizer from text (byte-pair merges by frequency), so
// tokenizer files can be made and tested without downloads.
// Not for: the byte-level tokenizer (corpus.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace attnkit::model {

constexpr int32_t kBosId = 1;  // llama2.c's fixed ids
constexpr int32_t kEosId = 2;

class Tokenizer {
 public:
  // Throws Error when a score is not finite, a piece is longer than max_piece_bytes, or
  // there are fewer than 3 pieces (ids 0..2 are unk, BOS, EOS).
  Tokenizer(std::vector<std::string> pieces, std::vector<float> scores, int32_t max_piece_bytes);

  int64_t vocab() const { return static_cast<int64_t>(pieces_.size()); }
  const std::string& piece(int32_t id) const { return pieces_[static_cast<size_t>(id)]; }
  float score(int32_t id) const { return scores_[static_cast<size_t>(id)]; }
  int32_t max_piece_bytes() const { return max_piece_bytes_; }
  // The id of a piece, -1 when none (the first id when a file repeats a piece).
  int32_t find(std::string_view piece) const;
  // The id of "<0xHH>" for byte b, -1 when the tokenizer has none.
  int32_t byte_id(uint8_t b) const { return byte_ids_[b]; }

  // run.c's encode. Throws Error when a byte has neither a piece nor a "<0xHH>" piece.
  std::vector<int32_t> encode(std::string_view text, bool bos, bool eos) const;
  // run.c's decode of one token following `prev`; ids outside the vocabulary are an Error.
  std::string decode_piece(int32_t prev, int32_t id) const;
  // The pieces of ids in order, each decoded after the one before (the first after `prev`).
  std::string decode(std::span<const int32_t> ids, int32_t prev = -1) const;

 private:
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  int32_t max_piece_bytes_;
  std::unordered_map<std::string, int32_t> index_;
  std::array<int32_t, 256> byte_ids_;
};

// `vocab` pieces, or every piece up to the end of the file when vocab < 0; the file must end
// after the last piece. Throws Error naming `label` and the piece.
Tokenizer parse_tokenizer(std::string_view bytes, int64_t vocab, std::string_view label);
Tokenizer load_tokenizer(const std::string& path, int64_t vocab);
std::string tokenizer_bytes(const Tokenizer& t);
void save_tokenizer(const Tokenizer& t, const std::string& path);  // whole or not at all

// A tokenizer of `vocab` pieces in llama2.c's layout: <unk>, <s>, </s>, the 256 byte pieces,
// every code point of `text` (score 0, as pieces that are never merge results), then merges
// learned from `text` split into words (a space starts a word, as the dummy prefix does),
// each scored -rank so that earlier merges win. Throws Error when vocab < 259.
Tokenizer learn_bpe(std::string_view text, int64_t vocab);

}  // namespace attnkit::model
