// Printing of the KV-memory comparison, shared by `kv-size --compare` and `bench`.
#pragma once

#include "attnkit/kv_size.hpp"

namespace attnkit::cli {

// The config's layout line followed by the MHA / GQA / MQA / MLA / SWA table.
void print_kv_comparison(const KvConfig& c);

}  // namespace attnkit::cli
