// attnkit/attnkit.hpp — the umbrella header: every public header of the library, so one
// include gives the whole API (attend(), its backward and its variant, linear-cost attention,
// Linformer, MLA, patterns, tensors, KV caches and decoding, sizes, RoPE, .npy files and
// atomic writes, version macros). Including only the
// headers you use compiles faster; tests/install checks that this list names every public
// header. Not for: the library's internals (src/), which are not installed.
#pragma once

#include "attnkit/atomic_file.hpp"
#include "attnkit/attention.hpp"
#include "attnkit/backward.hpp"
#include "attnkit/decode.hpp"
#include "attnkit/error.hpp"
#include "attnkit/flops.hpp"
#include "attnkit/hwinfo.hpp"
#include "attnkit/kv_cache.hpp"
#include "attnkit/kv_quant.hpp"
#include "attnkit/kv_size.hpp"
#include "attnkit/layer_memory.hpp"
#include "attnkit/linear.hpp"
#include "attnkit/linformer.hpp"
#include "attnkit/merge.hpp"
#include "attnkit/method.hpp"
#include "attnkit/mla.hpp"
#include "attnkit/npy.hpp"
#include "attnkit/pattern.hpp"
#include "attnkit/pattern_image.hpp"
#include "attnkit/receptive_field.hpp"
#include "attnkit/reference.hpp"
#include "attnkit/rope.hpp"
#include "attnkit/safetensors.hpp"
#include "attnkit/shape.hpp"
#include "attnkit/tensor.hpp"
#include "attnkit/variant.hpp"
#include "attnkit/version.hpp"
