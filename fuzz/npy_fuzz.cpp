// libFuzzer target for the .npy parser (src/io/npy.cpp), built with clang++ by
// cmake/fuzz.cmake under ASan + UBSan. attnkit::Error is the parser's documented answer to a
// bad file and is swallowed; any other exception, a sanitizer report, a crash, or a parsed
// tensor that disagrees with itself is a finding.
// Not for: the writer or file I/O, which the unit tests in tests/io/npy_test.cpp cover.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "attnkit/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attnkit::Tensor t;
  try {
    t = attnkit::parse_npy(data, size, "fuzz");
  } catch (const attnkit::Error&) {
    return 0;
  }
  // A tensor that parsed must be one attnkit can use: rank 1..4, its bytes fitting in the
  // input, and the shape, element count and byte count agreeing.
  const auto& shape = t.shape();
  if (shape.empty() || shape.size() > static_cast<size_t>(attnkit::kMaxRank)) std::abort();
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;  // parse_npy checked every partial product
  if (numel != t.numel() || t.nbytes() != static_cast<size_t>(numel) * attnkit::dtype_size(t.dtype()) ||
      t.nbytes() > size)
    std::abort();
  if (t.view().numel() != numel) std::abort();
  return 0;
}
