// The pattern string syntax: Pattern::parse and its inverse Pattern::to_string.
// Grammar: KIND[:ARGS], ARGS = comma-separated values (window) or key=value / flag items.
// Every error names "pattern", quotes the text (escaped and cut: printable()) and says what
// was expected; an integer too large for 64 bits is out of range, not "not an integer".
#include <charconv>
#include <limits>
#include <map>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/pattern.hpp"

namespace attnkit {

namespace {

constexpr const char* kSyntax =
    "none (or full) | causal | window:L,R[,sinks=S] | window:W[,sinks=S] | "
    "longformer:w=W[,d=D][,global=P+P+...][,causal] | "
    "bigbird:block=B[,window=W][,global=G][,random=R][,seed=S] | strided:stride=S | fixed:stride=S,c=C | "
    "blocks:bq=BQ,bk=BK,mask=ROW/ROW/... (rows of 0/1)";

// User text quoted in a message: control bytes escaped, long text cut (error.hpp).
std::string q(std::string_view s) { return printable(s); }

[[noreturn]] void fail(std::string_view text, const std::string& why) {
  throw Error(fmt::format("pattern '{}': {}; expected {}", q(text), why, kSyntax));
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

int64_t parse_int(std::string_view text, std::string_view field, std::string_view value) {
  int64_t v = 0;
  const char* end = value.data() + value.size();
  auto [ptr, ec] = std::from_chars(value.data(), end, v);
  // from_chars reads every digit before it reports a range error, so ptr == end tells a
  // well-formed number that does not fit from text that is not a number at all.
  if (ec == std::errc::result_out_of_range && ptr == end)
    fail(text, fmt::format("{} '{}' is out of range (beyond a 64-bit integer's +-{})", field, q(value),
                           std::numeric_limits<int64_t>::max()));
  if (value.empty() || ec != std::errc() || ptr != end)
    fail(text, fmt::format("{} '{}' is not an integer", field, q(value)));
  return v;
}

// key=value items (and bare flags) of one pattern, each used at most once.
struct Items {
  std::string_view text;
  std::map<std::string, std::string_view, std::less<>> values;

  Items(std::string_view full, std::string_view args, std::initializer_list<std::string_view> allowed) : text(full) {
    for (std::string_view item : split(args, ',')) {
      if (item.empty()) fail(text, "empty item");
      const size_t eq = item.find('=');
      const std::string_view key = item.substr(0, eq);
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
        fail(text, fmt::format("unknown key '{}' (allowed: {})", q(key), fmt::join(allowed, ", ")));
      if (!values.emplace(std::string(key), eq == std::string_view::npos ? "" : item.substr(eq + 1)).second)
        fail(text, fmt::format("key '{}' given twice", q(key)));
    }
  }
  bool has(std::string_view key) const { return values.count(key) != 0; }
  int64_t integer(std::string_view key, int64_t fallback, bool required = false) const {
    auto it = values.find(key);
    if (it == values.end()) {
      if (required) fail(text, fmt::format("missing '{}='", key));
      return fallback;
    }
    return parse_int(text, key, it->second);
  }
  std::string_view raw(std::string_view key) const {
    auto it = values.find(key);
    return it == values.end() ? std::string_view() : it->second;
  }
};

}  // namespace

Pattern Pattern::parse(std::string_view text) {
  const size_t colon = text.find(':');
  const std::string_view kind = text.substr(0, colon);
  const std::string_view args = colon == std::string_view::npos ? std::string_view() : text.substr(colon + 1);
  const bool has_args = colon != std::string_view::npos;
  auto no_args = [&] {
    if (has_args) fail(text, fmt::format("'{}' takes no arguments", q(kind)));
  };

  if (kind == "none" || kind == "full") {
    no_args();
    return none();
  }
  if (kind == "causal") {
    no_args();
    return causal();
  }
  if (kind == "window") {
    auto parts = split(args, ',');
    int64_t sinks = 0;
    if (parts.size() >= 2 && parts.back().starts_with("sinks=")) {
      sinks = parse_int(text, "window sinks", parts.back().substr(6));
      parts.pop_back();
    }
    if (!has_args || parts.size() > 2) fail(text, "window takes L,R or W, then optionally sinks=S");
    const int64_t left = parse_int(text, "window left", parts[0]);
    const int64_t right = parts.size() == 2 ? parse_int(text, "window right", parts[1]) : left;
    return window(left, right, sinks);
  }
  if (kind == "longformer") {
    Items it(text, args, {"w", "d", "global", "causal"});
    LongformerSpec s;
    s.window = it.integer("w", 0, true);
    s.dilation = it.integer("d", 1);
    s.causal = it.has("causal");
    if (s.causal && !it.raw("causal").empty()) fail(text, "'causal' is a flag and takes no value");
    if (it.has("global"))
      for (std::string_view g : split(it.raw("global"), '+')) s.global.push_back(parse_int(text, "global", g));
    return longformer(std::move(s));
  }
  if (kind == "bigbird") {
    Items it(text, args, {"block", "window", "global", "random", "seed"});
    BigBirdSpec s;
    s.block = it.integer("block", 64, true);
    s.window = it.integer("window", s.window);
    s.global = it.integer("global", s.global);
    s.random = it.integer("random", s.random);
    const int64_t seed = it.integer("seed", 0);
    if (seed < 0) fail(text, "seed must be >= 0");
    s.seed = static_cast<uint64_t>(seed);
    return bigbird(s);
  }
  if (kind == "strided") {
    Items it(text, args, {"stride"});
    return strided(it.integer("stride", 0, true));
  }
  if (kind == "fixed") {
    Items it(text, args, {"stride", "c"});
    return fixed(it.integer("stride", 0, true), it.integer("c", 0, true));
  }
  if (kind == "blocks") {
    Items it(text, args, {"bq", "bk", "mask"});
    BlockMaskSpec s;
    s.block_q = it.integer("bq", 0, true);
    s.block_k = it.integer("bk", 0, true);
    if (!it.has("mask")) fail(text, "missing 'mask='");
    const auto rows = split(it.raw("mask"), '/');
    s.rows = static_cast<int64_t>(rows.size());
    s.cols = static_cast<int64_t>(rows[0].size());
    for (std::string_view row : rows) {
      if (static_cast<int64_t>(row.size()) != s.cols) fail(text, "mask rows have different lengths");
      for (char c : row) {
        if (c != '0' && c != '1')
          fail(text, fmt::format("mask character '{}' is not 0 or 1", q(std::string_view(&c, 1))));
        s.mask.push_back(c == '1');
      }
    }
    return block_mask(std::move(s));
  }
  fail(text, fmt::format("unknown pattern kind '{}'", q(kind)));
}

std::string Pattern::to_string() const {
  switch (kind_) {
    case Kind::none: return "none";
    case Kind::causal: return "causal";
    case Kind::window: return fmt::format("window:{},{}", left_, right_);
    case Kind::sinks: return fmt::format("window:{},{},sinks={}", left_, right_, sinks_);
    case Kind::longformer: {
      std::string s = fmt::format("longformer:w={},d={}", longformer_.window, longformer_.dilation);
      if (!longformer_.global.empty()) s += fmt::format(",global={}", fmt::join(longformer_.global, "+"));
      if (longformer_.causal) s += ",causal";
      return s;
    }
    case Kind::bigbird:
      return fmt::format("bigbird:block={},window={},global={},random={},seed={}", bigbird_.block, bigbird_.window,
                         bigbird_.global, bigbird_.random, bigbird_.seed);
    case Kind::strided: return fmt::format("strided:stride={}", stride_);
    case Kind::fixed: return fmt::format("fixed:stride={},c={}", stride_, summary_);
    case Kind::block_mask: {
      std::string mask;
      for (int64_t r = 0; r < blocks_.rows; ++r) {
        if (r) mask += '/';
        for (int64_t c = 0; c < blocks_.cols; ++c) mask += blocks_.mask[static_cast<size_t>(r * blocks_.cols + c)] ? '1' : '0';
      }
      return fmt::format("blocks:bq={},bk={},mask={}", blocks_.block_q, blocks_.block_k, mask);
    }
    case Kind::predicate: return predicate_name_;
  }
  return "?";
}

}  // namespace attnkit
