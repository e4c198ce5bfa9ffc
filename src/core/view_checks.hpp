// Argument checks every entry point applies to what it is given (attend(), the linear-cost
// methods, Linformer, MLA): one message for one rule. Throws Error naming `name`.
#pragma once

#include <initializer_list>
#include <vector>

#include "attnkit/tensor.hpp"

namespace attnkit {

// lo <= v <= hi.
void check_in_range(int64_t v, int64_t lo, int64_t hi, const char* name);

// t must have exactly the shape `want`; `layout` names its dimensions ("[B, Hq, Nq, Dv]").
void expect_dims(const TensorView& t, const std::vector<int64_t>& want, const char* name, const char* layout);

// Outputs are written from many threads (or BLAS's): two elements sharing an address would
// race. Sorted by stride, each dimension's stride must step over the whole extent of the
// smaller ones (dimensions of size 1 are free).
void expect_no_overlap(const TensorView& t, const char* name);

}  // namespace attnkit
