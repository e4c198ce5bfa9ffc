// llama2.c's tokenizer: file reader and writer, run.c's encode and decode, and a BPE
// learner (tokenizer.hpp).
#include "model/tokenizer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <queue>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"

namespace attnkit::model {
namespace {

constexpr uint64_t kMaxFileBytes = uint64_t{1} << 30;
constexpr int32_t kMaxPieceLimit = 1 << 16;
// run.c starts its search for the best merge at this score with a strict '>', so pieces
// scored at or below it are never merge results.
constexpr float kNoMergeScore = -1e10f;

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The byte a "<0xHH>" piece stands for, -1 for any other piece.
int byte_piece_value(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  const int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// run.c's split of text into code points: a byte that is not a continuation byte starts one,
// and up to three continuation bytes join it.
template <class F>
void for_each_code_point(std::string_view text, F&& f) {
  size_t i = 0;
  while (i < text.size()) {
    size_t len = 1;
    while (i + len < text.size() && len < 4 && (static_cast<uint8_t>(text[i + len]) & 0xC0) == 0x80) ++len;
    f(text.substr(i, len));
    i += len;
  }
}

}  // namespace

Tokenizer::Tokenizer(std::vector<std::string> pieces, std::vector<float> scores, int32_t max_piece_bytes)
    : pieces_(std::move(pieces)), scores_(std::move(scores)), max_piece_bytes_(max_piece_bytes) {
  check(pieces_.size() == scores_.size(), [&] {
    return fmt::format("tokenizer: {} pieces but {} scores", pieces_.size(), scores_.size());
  });
  check(pieces_.size() >= 3 && pieces_.size() <= (size_t{1} << 24), [&] {
    return fmt::format("tokenizer: {} pieces is outside [3, 2^24] (ids 0..2 are <unk>, <s>, </s>)", pieces_.size());
  });
  check(max_piece_bytes_ >= 1 && max_piece_bytes_ <= kMaxPieceLimit, [&] {
    return fmt::format("tokenizer: max_token_length {} is outside [1, {}]", max_piece_bytes_, kMaxPieceLimit);
  });
  byte_ids_.fill(-1);
  index_.reserve(pieces_.size());
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const auto id = static_cast<int32_t>(i);
    check(std::isfinite(scores_[i]), [&] { return fmt::format("tokenizer: piece {} has a non-finite score", id); });
    check(pieces_[i].size() <= static_cast<size_t>(max_piece_bytes_), [&] {
      return fmt::format("tokenizer: piece {} is {} bytes, longer than max_token_length ({})", id, pieces_[i].size(),
                         max_piece_bytes_);
    });
    index_.emplace(pieces_[i], id);
    const int b = byte_piece_value(pieces_[i]);
    if (b >= 0 && byte_ids_[static_cast<size_t>(b)] < 0) byte_ids_[static_cast<size_t>(b)] = id;
  }
}

int32_t Tokenizer::find(std::string_view piece) const {
  const auto it = index_.find(std::string(piece));
  return it == index_.end() ? -1 : it->second;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool bos, bool eos) const {
  // The symbols form a linked list in text order; merging keeps the left symbol's slot, so
  // slot order is text order and "leftmost" is "lowest slot".
  struct Symbol {
    int32_t id, next, prev;
  };
  std::vector<Symbol> syms;
  syms.reserve(text.size() + 1);
  const auto push = [&](int32_t id) {
    const auto slot = static_cast<int32_t>(syms.size());
    syms.push_back({id, -1, slot - 1});
    if (slot > 0) syms[static_cast<size_t>(slot - 1)].next = slot;
  };
  const auto push_text = [&](std::string_view cp) {
    const int32_t id = find(cp);
    if (id >= 0) return push(id);
    for (const char c : cp) {
      const int32_t b = byte_ids_[static_cast<uint8_t>(c)];
      check(b >= 0, [&] {
        return fmt::format("tokenizer: byte 0x{:02X} has neither a piece nor a <0x{:02X}> piece", static_cast<uint8_t>(c),
                           static_cast<uint8_t>(c));
      });
      push(b);
    }
  };
  // BOS takes part in the merges, as in run.c.
  if (bos) push(kBosId);
  if (!text.empty()) push_text(" ");  // run.c's dummy prefix
  for_each_code_point(text, push_text);

  struct Candidate {
    float score;
    int32_t left, left_id, right_id, merged;
    bool operator<(const Candidate& o) const {  // priority_queue pops the greatest
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::priority_queue<Candidate> heap;
  std::string pair;
  const auto consider = [&](int32_t left) {
    if (left < 0) return;
    const Symbol& a = syms[static_cast<size_t>(left)];
    if (a.next < 0) return;
    const Symbol& b = syms[static_cast<size_t>(a.next)];
    pair.assign(pieces_[static_cast<size_t>(a.id)]).append(pieces_[static_cast<size_t>(b.id)]);
    if (pair.size() > static_cast<size_t>(max_piece_bytes_)) return;
    const int32_t merged = find(pair);
    if (merged >= 0 && scores_[static_cast<size_t>(merged)] > kNoMergeScore)
      heap.push({scores_[static_cast<size_t>(merged)], left, a.id, b.id, merged});
  };
  for (int32_t s = 0; s < static_cast<int32_t>(syms.size()); ++s) consider(s);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& a = syms[static_cast<size_t>(c.left)];
    // An entry is stale unless the pair it names is still adjacent as it was.
    if (a.id != c.left_id || a.next < 0 || syms[static_cast<size_t>(a.next)].id != c.right_id) continue;
    Symbol& b = syms[static_cast<size_t>(a.next)];
    a.id = c.merged;
    a.next = b.next;
    if (b.next >= 0) syms[static_cast<size_t>(b.next)].prev = c.left;
    b.id = -1;
    consider(a.prev);
    consider(c.left);
  }
  std::vector<int32_t> ids;
  ids.reserve(syms.size() + 1);
  for (int32_t s = syms.empty() ? -1 : 0; s >= 0; s = syms[static_cast<size_t>(s)].next)
    ids.push_back(syms[static_cast<size_t>(s)].id);
  if (eos) ids.push_back(kEosId);
  return ids;
}

std::string Tokenizer::decode_piece(int32_t prev, int32_t id) const {
  check(id >= 0 && id < vocab(), [&] { return fmt::format("tokenizer: id {} is outside [0, {})", id, vocab()); });
  std::string_view p = pieces_[static_cast<size_t>(id)];
  if (prev == kBosId && !p.empty() && p[0] == ' ') p.remove_prefix(1);
  const int b = byte_piece_value(p);
  return b >= 0 ? std::string(1, static_cast<char>(b)) : std::string(p);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, int32_t prev) const {
  std::string out;
  for (const int32_t id : ids) {
    if (id != kBosId && id != kEosId) out += decode_piece(prev, id);
    prev = id;
  }
  return out;
}

Tokenizer parse_tokenizer(std::string_view bytes, int64_t vocab, std::string_view label) {
  const std::string where = printable(label);
  size_t at = 0;
  const auto read_i32 = [&](const char* what, int64_t piece) {
    check(bytes.size() - at >= 4, [&] {
      return piece < 0 ? fmt::format("{}: truncated before {}", where, what)
                       : fmt::format("{}: truncated in piece {} ({})", where, piece, what);
    });
    int32_t v;
    std::memcpy(&v, bytes.data() + at, 4);
    at += 4;
    return v;
  };
  const int32_t max_len = read_i32("max_token_length", -1);
  check(max_len >= 1 && max_len <= kMaxPieceLimit, [&] {
    return fmt::format("{}: max_token_length {} is outside [1, {}]", where, max_len, kMaxPieceLimit);
  });
  check(vocab <= (int64_t{1} << 24), [&] { return fmt::format("{}: vocabulary {} is over 2^24", where, vocab); });
  // Each piece takes at least 8 bytes, which bounds the reservation by the file.
  const size_t cap = bytes.size() / 8;
  std::vector<std::string> pieces;
  std::vector<float> scores;
  pieces.reserve(std::min(cap, vocab < 0 ? cap : static_cast<size_t>(vocab)));
  scores.reserve(pieces.capacity());
  for (int64_t i = 0; vocab < 0 ? at < bytes.size() : i < vocab; ++i) {
    const int32_t raw_score = read_i32("score", i);
    float score;
    std::memcpy(&score, &raw_score, 4);
    check(std::isfinite(score), [&] { return fmt::format("{}: piece {} has a non-finite score", where, i); });
    const int32_t len = read_i32("length", i);
    check(len >= 0 && len <= max_len, [&] {
      return fmt::format("{}: piece {} has length {}, outside [0, max_token_length = {}]", where, i, len, max_len);
    });
    check(bytes.size() - at >= static_cast<size_t>(len), [&] {
      return fmt::format("{}: piece {} needs {} bytes, {} are left", where, i, len, bytes.size() - at);
    });
    pieces.emplace_back(bytes.substr(at, static_cast<size_t>(len)));
    scores.push_back(score);
    at += static_cast<size_t>(len);
  }
  check(at == bytes.size(), [&] {
    return fmt::format("{}: {} bytes follow piece {}: the file holds more than the model's vocabulary ({} pieces)",
                       where, bytes.size() - at, pieces.size() - 1, vocab);
  });
  try {
    return Tokenizer(std::move(pieces), std::move(scores), max_len);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  }
}

Tokenizer load_tokenizer(const std::string& path, int64_t vocab) {
  return parse_tokenizer(read_whole_file(path, kMaxFileBytes), vocab, path);
}

std::string tokenizer_bytes(const Tokenizer& t) {
  std::string out;
  const auto put_i32 = [&](int32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  put_i32(t.max_piece_bytes());
  for (int32_t i = 0; i < t.vocab(); ++i) {
    const float s = t.score(i);
    out.append(reinterpret_cast<const char*>(&s), 4);
    put_i32(static_cast<int32_t>(t.piece(i).size()));
    out += t.piece(i);
  }
  return out;
}

void save_tokenizer(const Tokenizer& t, const std::string& path) {
  write_file_atomically(path, tokenizer_bytes(t), path);
}

Tokenizer learn_bpe(std::string_view text, int64_t vocab) {
  check(vocab >= 259 && vocab <= (int64_t{1} << 20),
        [&] { return fmt::format("learn_bpe: vocab {} is outside [259, 2^20] (3 specials and 256 bytes)", vocab); });
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) pieces.push_back(fmt::format("<0x{:02X}>", b));
  // Specials and byte pieces are never merge results, so text that spells them ("<s>",
  // "<0x41>") still decodes to itself.
  std::vector<float> scores(pieces.size(), kNoMergeScore);
  std::unordered_map<std::string, int32_t> index;
  for (size_t i = 0; i < pieces.size(); ++i) index.emplace(pieces[i], static_cast<int32_t>(i));

  // Code points by frequency (ties by bytes, for determinism); at most half the room left.
  std::map<std::string, int64_t> cp_count;
  for_each_code_point(text, [&](std::string_view cp) { ++cp_count[std::string(cp)]; });
  ++cp_count[" "];
  std::vector<std::pair<int64_t, std::string>> cps;
  for (const auto& [cp, n] : cp_count) cps.emplace_back(-n, cp);
  std::sort(cps.begin(), cps.end());
  const size_t room = static_cast<size_t>(vocab) - pieces.size();
  for (size_t i = 0; i < cps.size() && i < std::max<size_t>(1, room / 2); ++i) {
    if (index.emplace(cps[i].second, static_cast<int32_t>(pieces.size())).second) {
      pieces.push_back(cps[i].second);
      scores.push_back(0.0f);
    }
  }

  // Words: a space or a line break starts one; the text starts with the dummy prefix.
  std::map<std::string, int64_t> word_count;
  std::string prefixed(1, ' ');
  prefixed.append(text);
  size_t start = 0;
  for (size_t i = 1; i <= prefixed.size(); ++i) {
    if (i == prefixed.size() || prefixed[i] == ' ' || prefixed[i] == '\n' || prefixed[i - 1] == '\n') {
      ++word_count[prefixed.substr(start, i - start)];
      start = i;
    }
  }
  struct Word {
    std::vector<int32_t> syms;  // -1: a byte without a code-point piece, which never merges
    int64_t count;
  };
  std::vector<Word> words;
  for (const auto& [w, n] : word_count) {
    Word word{{}, n};
    for_each_code_point(w, [&](std::string_view cp) {
      const auto it = index.find(std::string(cp));
      word.syms.push_back(it == index.end() ? -1 : it->second);
    });
    words.push_back(std::move(word));
  }

  int64_t rank = 0;
  while (static_cast<int64_t>(pieces.size()) < vocab) {
    std::unordered_map<uint64_t, int64_t> pair_count;
    for (const Word& w : words)
      for (size_t i = 0; i + 1 < w.syms.size(); ++i)
        if (w.syms[i] >= 0 && w.syms[i + 1] >= 0)
          pair_count[static_cast<uint64_t>(w.syms[i]) << 32 | static_cast<uint32_t>(w.syms[i + 1])] += w.count;
    uint64_t best = 0;
    int64_t best_n = 0;
    std::string best_text;
    for (const auto& [key, n] : pair_count) {
      if (n < best_n) continue;
      std::string merged = pieces[key >> 32] + pieces[key & 0xffffffffu];
      if (n > best_n || merged < best_text) best = key, best_n = n, best_text = std::move(merged);
    }
    if (best_n < 2) break;
    const auto [it, added] = index.emplace(best_text, static_cast<int32_t>(pieces.size()));
    if (added) {
      pieces.push_back(best_text);
      scores.push_back(static_cast<float>(-++rank));
    }
    const auto a = static_cast<int32_t>(best >> 32), b = static_cast<int32_t>(best & 0xffffffffu);
    for (Word& w : words) {
      size_t out = 0;
      for (size_t i = 0; i < w.syms.size(); ++i) {
        if (i + 1 < w.syms.size() && w.syms[i] == a && w.syms[i + 1] == b) {
          w.syms[out++] = it->second;
          ++i;
        } else {
          w.syms[out++] = w.syms[i];
        }
      }
      w.syms.resize(out);
    }
  }
  int32_t max_len = 1;
  for (const std::string& p : pieces) max_len = std::max(max_len, static_cast<int32_t>(p.size()));
  return Tokenizer(std::move(pieces), std::move(scores), max_len);
}

}  // namespace attnkit::model
