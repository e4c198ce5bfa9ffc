// .npy reader (format: numpy.lib.format / NEP 1); the writer is npy_write.cpp. The reader is
// a parser for untrusted files: every length, count and offset is checked against the bytes actually
// present before anything is allocated or copied, and the header dict is read by a small
// strict grammar rather than a general Python-literal evaluator.
// Not for: writing (npy_write.cpp), .npz, memory mapping, or dtypes other than
// little-endian f2/f4/f8.
#include "attnkit/npy.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "attnkit/error.hpp"

namespace attnkit {
namespace {

// '<' data is copied byte for byte into tensors, which hold elements in host order; a
// big-endian host would need a byte swap on every path, and no supported host is one.
static_assert(std::endian::native == std::endian::little, "the .npy reader assumes a little-endian host");

constexpr unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr size_t kVersionEnd = 8;     // magic + major + minor
constexpr size_t kMaxPreamble = 12;   // ... + a 4-byte header length (versions 2 and 3)
constexpr size_t kSnippetBytes = 96;  // how much of a bad header an error message quotes
constexpr size_t kQuotedPathBytes = 240;

// Untrusted header bytes quoted in a message: every byte outside printable ASCII becomes
// \xNN, and long input is cut so a 1 MiB header cannot flood a terminal.
std::string escaped(std::string_view s, size_t max_bytes = kSnippetBytes) {
  return printable(s, max_bytes, Printable::ascii);
}

// The shape as numpy prints it, "(4, 8, 16, 64)" or "(5,)", which is also how the header
// spells it; a hostile header can list 10^5 dimensions, so only the first few are shown.
std::string shape_text(const std::vector<int64_t>& shape) {
  constexpr size_t kShown = 8;
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  if (shape.size() <= kShown) return fmt::format("({})", fmt::join(shape, ", "));
  return fmt::format("({}, ... {} dimensions)", fmt::join(shape.begin(), shape.begin() + kShown, ", "), shape.size());
}

// Where the fixed-size start of the file says the header dict lies.
struct Preamble {
  int major = 0;
  size_t header_offset = 0;  // first byte of the dict text
  size_t header_len = 0;     // <= kMaxNpyHeaderBytes, and the header lies inside the file
  size_t data_offset() const { return header_offset + header_len; }
};

// p holds the first min(total, kMaxPreamble) bytes of a file of `total` bytes.
Preamble parse_preamble(const unsigned char* p, uint64_t total, std::string_view label) {
  const size_t avail = static_cast<size_t>(std::min<uint64_t>(total, kMaxPreamble));
  if (total == 0) throw Error(fmt::format("{}: empty file (0 bytes), expected a .npy array", label));
  if (avail < sizeof kMagic)
    throw Error(fmt::format("{}: not a .npy file: {} bytes is shorter than the magic \\x93NUMPY", label, total));
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0)
    throw Error(fmt::format("{}: not a .npy file: it does not start with the magic \\x93NUMPY (starts with '{}')",
                            label, escaped({reinterpret_cast<const char*>(p), std::min<size_t>(avail, 8)})));
  if (avail < kVersionEnd)
    throw Error(fmt::format("{}: truncated .npy preamble: {} bytes, the magic and version alone need {}", label,
                            total, kVersionEnd));
  Preamble out;
  out.major = p[6];
  const int minor = p[7];
  if (minor != 0 || out.major < 1 || out.major > 3)
    throw Error(fmt::format("{}: unsupported .npy format version {}.{} (supported: 1.0, 2.0, 3.0)", label, out.major,
                            minor));
  // Version 1 stores the header length as a little-endian uint16, versions 2 and 3 as uint32.
  const size_t len_bytes = out.major == 1 ? 2 : 4;
  out.header_offset = kVersionEnd + len_bytes;
  if (total < out.header_offset)
    throw Error(fmt::format("{}: truncated .npy preamble: version {}.0 needs {} bytes before the header, file has {}",
                            label, out.major, out.header_offset, total));
  uint32_t len = 0;
  for (size_t i = 0; i < len_bytes; ++i) len |= uint32_t{p[kVersionEnd + i]} << (8 * i);
  if (len > kMaxNpyHeaderBytes)
    throw Error(fmt::format("{}: .npy header length {} exceeds the limit of {} bytes", label, len, kMaxNpyHeaderBytes));
  if (len > total - out.header_offset)
    throw Error(fmt::format("{}: .npy header length {} runs past the end of the file ({} bytes follow the {}-byte "
                            "preamble)",
                            label, len, total - out.header_offset, out.header_offset));
  out.header_len = len;
  return out;
}

// What the header dict says, validated: a supported dtype, C order, rank 1..4, and a byte
// count that does not overflow.
struct Header {
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  uint64_t data_bytes = 0;
};

// A strict reader for the one dict numpy writes:
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// Keys in any order, either quote style, optional trailing commas, whitespace anywhere
// between tokens, and the Python 2 long suffix (3L) that old numpy wrote. Anything else a
// Python literal could express (escapes, nested containers, expressions) is an error: the
// header of a real .npy file never needs it, and a small grammar is easy to make total.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, std::string_view label) : text_(text), label_(label) {}

  Header parse() {
    std::optional<std::string_view> descr;
    std::optional<bool> fortran_order;
    std::optional<std::vector<int64_t>> shape;
    skip_ws();
    expect('{', "expected '{' opening the header dict");
    skip_ws();
    while (!at('}')) {
      const std::string_view key = parse_string("a quoted key");
      skip_ws();
      if (!eat(':')) fail(fmt::format("expected ':' after the key '{}'", escaped(key)));
      skip_ws();
      if (key == "descr") {
        if (descr) fail("duplicate key 'descr'");
        if (at('['))
          throw Error(fmt::format("{}: structured .npy dtypes (a list as 'descr') are not supported", label_));
        descr = parse_string("a quoted dtype string as 'descr'");
      } else if (key == "fortran_order") {
        if (fortran_order) fail("duplicate key 'fortran_order'");
        fortran_order = parse_bool();
      } else if (key == "shape") {
        if (shape) fail("duplicate key 'shape'");
        shape = parse_shape();
      } else {
        fail(fmt::format("unexpected key '{}' (the header has exactly 'descr', 'fortran_order' and 'shape')",
                         escaped(key)));
      }
      skip_ws();
      if (eat(',')) {
        skip_ws();
        continue;
      }
      if (!at('}')) fail(fmt::format("expected ',' or '}}' after the value of '{}'", key));
    }
    ++pos_;  // the '}'
    skip_ws();
    if (pos_ != text_.size()) fail("unexpected text after the closing '}'");
    if (!descr) missing("descr");
    if (!fortran_order) missing("fortran_order");
    if (!shape) missing("shape");
    return validate(*descr, *fortran_order, std::move(*shape));
  }

 private:
  std::string_view text_;
  std::string_view label_;
  size_t pos_ = 0;

  [[noreturn]] void fail(std::string_view what) const {
    throw Error(fmt::format("{}: malformed .npy header at byte {}: {} (header: \"{}\")", label_, pos_, what,
                            quoted_header()));
  }
  [[noreturn]] void missing(std::string_view key) const {
    throw Error(fmt::format("{}: .npy header is missing the key '{}' (header: \"{}\")", label_, key,
                            quoted_header()));
  }
  // The header without numpy's space padding, escaped and cut short.
  std::string quoted_header() const {
    const size_t end = text_.find_last_not_of(" \n");
    return escaped(text_.substr(0, end == std::string_view::npos ? 0 : end + 1));
  }

  bool at(char c) const { return pos_ < text_.size() && text_[pos_] == c; }
  bool at_digit() const { return pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9'; }
  bool at_word_char() const {
    if (pos_ >= text_.size()) return false;
    const char c = text_[pos_];
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '.';
  }
  bool eat(char c) {
    if (!at(c)) return false;
    ++pos_;
    return true;
  }
  void expect(char c, std::string_view what) {
    if (!eat(c)) fail(what);
  }
  void skip_ws() {
    // Python's whitespace inside brackets; numpy pads the header with spaces and a '\n'.
    auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
  }

  std::string_view parse_string(std::string_view what) {
    if (!at('\'') && !at('"')) fail(fmt::format("expected {}", what));
    const char quote = text_[pos_++];
    const size_t begin = pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      const char c = text_[pos_];
      if (c == '\\') fail("escape sequences in strings are not supported");
      if (c == '\n' || c == '\r') fail("unterminated string");
      ++pos_;
    }
    if (pos_ == text_.size()) fail("unterminated string");
    return text_.substr(begin, pos_++ - begin);
  }

  bool parse_bool() {
    for (const auto& [word, value] : {std::pair<std::string_view, bool>{"True", true}, {"False", false}}) {
      if (text_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        if (at_word_char()) break;
        return value;
      }
    }
    fail("'fortran_order' must be True or False");
  }

  // A tuple of integers: () or (N,) or (N, M[, ...][,]). (N) without the comma is a
  // parenthesised integer in Python, not a tuple, and numpy rejects it too.
  std::vector<int64_t> parse_shape() {
    if (at('[')) fail("'shape' must be a tuple such as (2, 3), not a list");
    expect('(', "expected '(' opening the 'shape' tuple");
    skip_ws();
    std::vector<int64_t> dims;
    bool trailing_comma = false;
    while (!at(')')) {
      dims.push_back(parse_dim(dims.size()));
      skip_ws();
      trailing_comma = eat(',');
      if (trailing_comma) {
        skip_ws();
      } else if (!at(')')) {
        fail("expected ',' or ')' in the 'shape' tuple");
      }
    }
    ++pos_;  // the ')'
    if (dims.size() == 1 && !trailing_comma)
      fail("'shape' (N) is not a tuple; a 1-d shape is written (N,)");
    return dims;
  }

  int64_t parse_dim(size_t index) {
    const size_t begin = pos_;
    const bool negative = eat('-');
    if (!at_digit()) fail(fmt::format("expected an integer as dimension {} of 'shape'", index));
    constexpr uint64_t kMax = std::numeric_limits<int64_t>::max();
    uint64_t value = 0;
    bool too_large = false;
    while (at_digit()) {
      const unsigned digit = static_cast<unsigned>(text_[pos_++] - '0');
      if (value > (kMax - digit) / 10)
        too_large = true;  // keep consuming digits so the message quotes the whole number
      else
        value = value * 10 + digit;
    }
    const std::string_view number = text_.substr(begin, pos_ - begin);
    if (at('L') || at('l')) ++pos_;  // Python 2 long, written by numpy on Python 2
    if (at_word_char()) fail(fmt::format("dimension {} of 'shape' is not a plain integer", index));
    if (too_large)
      throw Error(fmt::format("{}: .npy shape dimension {} ({}) does not fit in a signed 64-bit integer", label_,
                              index, number));
    if (negative && value != 0)
      throw Error(fmt::format("{}: .npy shape dimension {} is negative ({})", label_, index, number));
    return static_cast<int64_t>(value);
  }

  Header validate(std::string_view descr, bool fortran_order, std::vector<int64_t> shape) const {
    Header h;
    // '<' is little-endian; '=' (native) and '|' (not applicable) mean the host order, which
    // is little-endian wherever attnkit builds (static_assert above).
    const bool known_code = descr.size() == 3 && descr[1] == 'f' &&
                            (descr[2] == '2' || descr[2] == '4' || descr[2] == '8');
    if (known_code && descr[0] == '>')
      throw Error(fmt::format("{}: big-endian dtype '{}' is not supported; save arr.astype('<{}') instead", label_,
                              descr, descr.substr(1)));
    if (!known_code || std::string_view("<=|").find(descr[0]) == std::string_view::npos)
      throw Error(fmt::format("{}: unsupported .npy dtype '{}' (attnkit reads '<f2', '<f4' and '<f8')", label_,
                              escaped(descr)));
    h.dtype = descr[2] == '2' ? DType::f16 : descr[2] == '4' ? DType::f32 : DType::f64;
    if (fortran_order)
      throw Error(fmt::format("{}: fortran_order is True (column-major data); attnkit reads C order only: save "
                              "np.ascontiguousarray(arr) instead",
                              label_));
    if (shape.empty())
      throw Error(fmt::format("{}: .npy shape () is a rank-0 scalar; attnkit tensors have rank 1 to {}: save "
                              "arr.reshape(1) instead",
                              label_, kMaxRank));
    if (shape.size() > static_cast<size_t>(kMaxRank))
      throw Error(fmt::format("{}: .npy shape {} has rank {}; attnkit tensors have rank 1 to {}", label_,
                              shape_text(shape), shape.size(), kMaxRank));
    const size_t elem = dtype_size(h.dtype);
    // checked_numel also requires the non-zero dimensions to fit on their own, as numpy
    // does: (0, 2**40, 2**40) would otherwise overflow a stride.
    h.data_bytes = static_cast<uint64_t>(checked_numel(shape, elem, label_)) * elem;
    h.shape = std::move(shape);
    return h;
  }
};

// The data must fill the rest of the file exactly. Fewer bytes is truncation; more is
// rejected too, because the usual cause is a header whose shape under-states the data
// (loading a silent prefix of it), and attnkit files hold one array each.
void check_data_size(const Header& h, uint64_t available, std::string_view label) {
  if (available < h.data_bytes)
    throw Error(fmt::format("{}: truncated data: header says {} {} = {} bytes, but only {} bytes follow the header",
                            label, shape_text(h.shape), dtype_name(h.dtype), h.data_bytes, available));
  if (available > h.data_bytes)
    throw Error(fmt::format("{}: {} unexpected bytes after the data (header says {} {} = {} bytes); a .npy file "
                            "must hold exactly one array",
                            label, available - h.data_bytes, shape_text(h.shape), dtype_name(h.dtype),
                            h.data_bytes));
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

void read_exact(std::FILE* f, void* dst, size_t n, std::string_view label, std::string_view what) {
  if (n == 0) return;
  if (std::fread(dst, 1, n, f) == n) return;
  if (std::ferror(f)) throw Error(fmt::format("{}: read error in the {}: {}", label, what, std::strerror(errno)));
  throw Error(fmt::format("{}: the file ended while reading the {} (was it changed while being read?)", label, what));
}

}  // namespace

Tensor parse_npy(const void* bytes, size_t size, std::string_view arg_name) {
  const std::string_view label = arg_name.empty() ? std::string_view(".npy data") : arg_name;
  if (bytes == nullptr && size != 0) throw Error(fmt::format("{}: null buffer of {} bytes", label, size));
  const auto* p = static_cast<const unsigned char*>(bytes);
  const Preamble pre = parse_preamble(p, size, label);
  const std::string_view text(reinterpret_cast<const char*>(p + pre.header_offset), pre.header_len);
  const Header h = HeaderParser(text, label).parse();
  check_data_size(h, size - pre.data_offset(), label);
  Tensor t(h.dtype, h.shape);
  if (h.data_bytes != 0) std::memcpy(t.data(), p + pre.data_offset(), static_cast<size_t>(h.data_bytes));
  return t;
}

Tensor read_npy(const std::string& path, std::string_view arg_name) {
  const std::string shown = printable(path, kQuotedPathBytes);
  const std::string label = arg_name.empty() ? shown : fmt::format("{} ({})", arg_name, shown);
  // O_NONBLOCK so that opening a FIFO does not wait for a writer; fstat on the open handle,
  // so the size belongs to the file actually read. Directories, pipes and devices are
  // refused because their sizes say nothing about their contents.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("{}: cannot open for reading: {}", label, std::strerror(errno)));
  struct stat st {};
  const bool stat_ok = fstat(fd, &st) == 0;
  if (!stat_ok || !S_ISREG(st.st_mode)) {
    const std::string why = stat_ok ? "not a regular file" : fmt::format("cannot stat: {}", std::strerror(errno));
    ::close(fd);
    throw Error(fmt::format("{}: {}", label, why));
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  const File f(fdopen(fd, "rb"));
  if (!f) {
    ::close(fd);
    throw Error(fmt::format("{}: cannot open for reading: {}", label, std::strerror(errno)));
  }
  const auto total = static_cast<uint64_t>(st.st_size);
  // A sparse or enormous file can pass every size check and still not fit in memory: refuse
  // it here rather than be killed while reading it.
  const uint64_t ram = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  if (ram > 0 && total > ram / 2)
    throw Error(fmt::format("{}: file of {} bytes is larger than half of this machine's memory ({} bytes)", label,
                            total, ram));

  unsigned char head[kMaxPreamble];
  read_exact(f.get(), head, static_cast<size_t>(std::min<uint64_t>(total, kMaxPreamble)), label, "preamble");
  const Preamble pre = parse_preamble(head, total, label);
  // header_len is capped by parse_preamble and lies inside the file, so this allocation is
  // bounded by kMaxNpyHeaderBytes whatever the length field said.
  std::string text(pre.header_len, '\0');
  if (std::fseek(f.get(), static_cast<long>(pre.header_offset), SEEK_SET) != 0)
    throw Error(fmt::format("{}: cannot seek to the header: {}", label, std::strerror(errno)));
  read_exact(f.get(), text.data(), text.size(), label, "header");
  const Header h = HeaderParser(text, label).parse();
  check_data_size(h, total - pre.data_offset(), label);
  // Only now, with the byte count checked against the file size, is the data allocated.
  Tensor t(h.dtype, h.shape);
  read_exact(f.get(), t.data(), static_cast<size_t>(h.data_bytes), label, "data");
  return t;
}

}  // namespace attnkit
