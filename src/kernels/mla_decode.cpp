// MLA's absorbed decode (mla.hpp): MQA of Nq * H absorbed query rows against one cached
// latent sequence, reading each latent row once per tile of 128 query rows (once in all for
// a decode step of up to 128 heads), and the full decode step around it. Not for: the
// full-sequence forms (mla.cpp) or the general KV-cache decode (decode.cpp).
//
// Per (row tile, chunk of key blocks), for each block of kTileKeys keys:
//   K   = the block's latent rows as f32 [nb][d_c + d_r] (bf16 widened into a buffer that
//         stays in L2; f32 storage is read in place)
//   S   = Q~ K^T                 [rows][nb]
//   P   = online softmax of scale * S (running max m, sum l, alpha)
//   O   = alpha O + P V          V = K's first d_c columns of the same rows
// then O / l per chunk, and the chunks merged by (m, l) in chunk order. The two products,
// the softmax step and the rescale are decode's Highway kernels (decode_simd.hpp), fed with
// the block's row pointers, so V needs nothing but a narrower width over the same rows.
// cblas_sgemm for the two products won only at one head (2 threads, bf16, n_kv = 65536,
// best of 3 interleaved rounds, ms, sgemm vs these kernels): H = 1 5.2 vs 5.9, 4 6.7 vs 6.6,
// 8 10.4 vs 9.5, 16 20.3 vs 14.8, 32 31.2 vs 25.8, 64 53.9 vs 51.0, 128 107.0 vs 96.5;
// OpenBLAS re-packs the whole key block on every call.
#include <algorithm>
#include <climits>
#include <cstring>
#include <limits>
#include <vector>

#include <fmt/format.h>
#include <hwy/aligned_allocator.h>
#include <omp.h>

#include "attnkit/mla.hpp"
#include "kernels/decode_micro.hpp"
#include "kernels/decode_simd.hpp"
#include "kernels/flash.hpp"
#include "kernels/mla_internal.hpp"
#include "kernels/online_softmax.hpp"

namespace attnkit {

namespace {

using softmax::kNegInf;

// Query rows per tile: a decode step of DeepSeek-V2 (128 heads) is one tile, so every latent
// row is read once. Q~ (128 x 576 f32, 288 KiB), the f32 key block (288 KiB), S (64 KiB) and
// O (256 KiB) just fit Zen 4's 1 MiB L2.
constexpr int64_t kRowTile = 128;
constexpr int64_t kBlock = decode::kTileKeys;  // keys per block: the softmax step's tile
// Fewer (row tile, chunk) items than this split the keys into chunks (split-KV), so that
// every thread has work; the split depends on the shapes only.
constexpr int64_t kMinItems = 32;

struct Plan {
  int64_t n, nq, heads, rows, width, d_c;
  int64_t row_tiles, blocks, chunk_blocks, chunks;
  float scale;
  const unsigned char* keys;  // [n][width] in `dtype`
  DType dtype;
  const float* q;  // [rows][width], rows = nq * heads (row t * heads + h)
};

// The last key query row r sees (bottom-right causal).
int64_t row_limit(const Plan& p, int64_t r) { return p.n - p.nq + r / p.heads; }

struct Workspace {
  hwy::AlignedFreeUniquePtr<float[]> k, s, bias, m, l, alpha;
  std::vector<const float*> krows = std::vector<const float*>(kBlock);  // the block's key rows
  explicit Workspace(const Plan& p)
      : k(alloc(p.dtype == DType::f32 ? 0 : kBlock * p.width)),
        s(alloc(kRowTile * kBlock)),
        bias(alloc(kRowTile * kBlock)),
        m(alloc(kRowTile)),
        l(alloc(kRowTile)),
        alpha(alloc(kRowTile)) {}
  static hwy::AlignedFreeUniquePtr<float[]> alloc(int64_t n) {
    auto ptr = hwy::AllocateAligned<float>(static_cast<size_t>(std::max<int64_t>(n, 1)));
    if (!ptr) throw std::bad_alloc();
    return ptr;
  }
};

// One work item: the rows [r0, r0 + rows) against the key blocks of one chunk, leaving the
// normalised partial o [rows][d_c] and its m, l.
void run_item(const Plan& p, const decode::SimdOps& ops, const flash::SimdOps& fops, Workspace& w, int64_t r0,
              int64_t rows, int64_t chunk, float* o, float* m, float* l) {
  std::fill(o, o + rows * p.d_c, 0.0f);
  std::fill(m, m + rows, kNegInf);
  std::fill(l, l + rows, 0.0f);
  const int64_t last_visible = row_limit(p, r0 + rows - 1), first_limit = row_limit(p, r0);
  const int64_t b_end = std::min((chunk + 1) * p.chunk_blocks, p.blocks);
  for (int64_t blk = chunk * p.chunk_blocks; blk < b_end; ++blk) {
    const int64_t j0 = blk * kBlock, nb = std::min(kBlock, p.n - j0);
    if (j0 > last_visible) break;  // no row of the tile sees these keys
    const float* k = reinterpret_cast<const float*>(p.keys) + j0 * p.width;
    if (p.dtype == DType::bf16) {
      fops.bf16_to_f32(reinterpret_cast<const uint16_t*>(p.keys) + j0 * p.width, w.k.get(), nb * p.width);
      k = w.k.get();
    }
    const float* bias = nullptr;
    if (j0 + nb - 1 > first_limit) {  // some row's last visible key lies inside the block
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < nb; ++j) w.bias[r * kBlock + j] = j0 + j <= row_limit(p, r0 + r) ? 0.0f : kNegInf;
      bias = w.bias.get();
    }
    for (int64_t j = 0; j < nb; ++j) w.krows[static_cast<size_t>(j)] = k + j * p.width;
    ops.scores_f32(p.q + r0 * p.width, rows, p.width, w.krows.data(), nb, w.s.get());
    ops.softmax_tile(w.s.get(), rows, nb, decode::SoftmaxParams{p.scale, 0}, bias, m, l, w.alpha.get());
    ops.rescale_rows(o, rows, p.d_c, w.alpha.get());
    ops.pv_f32(w.s.get(), rows, w.krows.data(), nb, p.d_c, o);  // V_j = the first d_c values of K_j
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = softmax::finish_row(m[r], l[r]).inv;
    for (int64_t c = 0; c < p.d_c; ++c) o[r * p.d_c + c] *= inv;
  }
}

void check_query_views(const MlaCache& cache, const TensorView& q, const MutTensorView& o, const MutTensorView& lse,
                       int64_t n) {
  const MlaCacheConfig& c = cache.config();
  check(q.rank() == 3 && q.size(2) == c.width() && q.size(1) >= 1, [&] {
    return fmt::format("q must have shape [Nq, H, d_c + d_r] with d_c + d_r = {} and H >= 1, got {}", c.width(),
                       q.rank() == 0 ? std::string("no tensor") : q.shape_string());
  });
  check(q.size(0) <= n, [&] {
    return fmt::format("q: Nq ({}) must be at most the sequence's {} cached tokens (its newest tokens' queries)",
                       q.size(0), n);
  });
  check(q.size(0) * q.size(1) <= INT_MAX,
        [&] { return fmt::format("q: Nq * H ({} * {}) is too many rows", q.size(0), q.size(1)); });
  const std::vector<int64_t> want_o = {q.size(0), q.size(1), c.d_c};
  check(o.rank() == 3 && o.shape() == want_o, [&] {
    return fmt::format("o must have shape [Nq, H, d_c] = [{}], got {}", fmt::join(want_o, ", "),
                       o.rank() == 0 ? std::string("no tensor") : o.shape_string());
  });
  if (lse.rank() != 0) {
    const std::vector<int64_t> want = {q.size(0), q.size(1)};
    check(lse.rank() == 2 && lse.shape() == want && lse.dtype() == DType::f32, [&] {
      return fmt::format("lse must be f32 with shape [Nq, H] = [{}], got {} {}", fmt::join(want, ", "),
                         dtype_name(lse.dtype()), lse.shape_string());
    });
  }
}

}  // namespace

double mla_decode_flops(int64_t nq, int64_t heads, int64_t n, int64_t d_c, int64_t d_r) {
  // S: 2 (d_c + d_r) and PV: 2 d_c per (row, key), every key of the cache (causal rows of a
  // chunked prefill see slightly fewer; a decode step sees all).
  return 2.0 * double(nq) * double(heads) * double(n) * double(2 * d_c + d_r);
}

int64_t mla_decode_bytes_read(const MlaCache& cache, int64_t seq) {
  const MlaCacheConfig& c = cache.config();
  return cache.length(seq) * c.width() * (c.storage == KvStorage::f32 ? 4 : 2);
}

void mla_decode_attention(const MlaCache& cache, int64_t layer, int64_t seq, const TensorView& q, double scale,
                          const MutTensorView& o, const MutTensorView& lse) {
  const TensorView keys = cache.keys(seq, layer);  // checks seq, layer and that it is stored
  const int64_t n = keys.size(2);
  check_query_views(cache, q, o, lse, n);
  check(std::isfinite(scale) && scale > 0,
        [&] { return fmt::format("scale ({}) must be finite and > 0 (MLA's 1/sqrt(d_nope + d_r))", scale); });
  const MlaCacheConfig& c = cache.config();
  const mla::F32Array q32(q);
  Plan p{};
  p.n = n;
  p.nq = q.size(0);
  p.heads = q.size(1);
  p.rows = p.nq * p.heads;
  p.width = c.width();
  p.d_c = c.d_c;
  p.scale = static_cast<float>(scale);
  p.keys = static_cast<const unsigned char*>(keys.data());
  p.dtype = keys.dtype();
  p.q = q32.data();
  if (p.rows == 0) return;
  p.row_tiles = (p.rows + kRowTile - 1) / kRowTile;
  p.blocks = (n + kBlock - 1) / kBlock;
  const int64_t want_chunks = std::clamp<int64_t>((kMinItems + p.row_tiles - 1) / p.row_tiles, 1, p.blocks);
  p.chunk_blocks = (p.blocks + want_chunks - 1) / want_chunks;
  p.chunks = (p.blocks + p.chunk_blocks - 1) / p.chunk_blocks;

  // Partials of every item: o [items][kRowTile][d_c] (normalised), m and l [items][kRowTile].
  const int64_t items = p.row_tiles * p.chunks;
  std::vector<float> part_o(static_cast<size_t>(items * kRowTile * p.d_c));
  std::vector<float> part_m(static_cast<size_t>(items * kRowTile)), part_l(part_m.size());
  const decode::SimdOps ops = decode::simd_ops();
  const flash::SimdOps fops = flash::simd_ops();
  const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), items));
  std::vector<std::unique_ptr<Workspace>> spaces;
  for (int t = 0; t < threads; ++t) spaces.push_back(std::make_unique<Workspace>(p));
  softmax::for_each_item(items, threads, [&](int64_t item, int thread) {
    const int64_t rt = item / p.chunks, chunk = item % p.chunks;
    const int64_t r0 = rt * kRowTile, rows = std::min(kRowTile, p.rows - r0);
    const size_t at = static_cast<size_t>(item * kRowTile);
    run_item(p, ops, fops, *spaces[static_cast<size_t>(thread)], r0, rows, chunk, part_o.data() + at * p.d_c,
             part_m.data() + at, part_l.data() + at);
  });

  // Each row merges its chunks in chunk order: the result does not depend on the threads.
  std::vector<float> out(static_cast<size_t>(p.rows * p.d_c)), out_lse(static_cast<size_t>(p.rows));
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < p.rows; ++r) {
    const int64_t rt = r / kRowTile, in_tile = r % kRowTile;
    auto slot = [&](int64_t chunk) { return static_cast<size_t>((rt * p.chunks + chunk) * kRowTile + in_tile); };
    softmax::merge_chunks(
        p.chunks, p.d_c, [&](int64_t ch) { return part_o.data() + slot(ch) * p.d_c; },
        [&](int64_t ch) { return part_m[slot(ch)]; }, [&](int64_t ch) { return part_l[slot(ch)]; },
        out.data() + r * p.d_c, out_lse[static_cast<size_t>(r)]);
  }
  mla::store_f32(o, out.data());
  if (lse.rank() != 0) mla::store_f32(lse, out_lse.data());
}

void mla_decode(const MlaConfig& cfg, const MlaWeights& w, MlaCache& cache, int64_t layer, int64_t seq,
                const TensorView& x, const MutTensorView& out) {
  w.validate(cfg);
  const MlaCacheConfig& cc = cache.config();
  check(cc.d_c == cfg.d_c && cc.d_r == cfg.d_r, [&] {
    return fmt::format("cache: its rows are d_c + d_r = {} + {}, the config's {} + {}", cc.d_c, cc.d_r, cfg.d_c,
                       cfg.d_r);
  });
  check(x.rank() == 2 && x.size(1) == cfg.d_model && x.size(0) >= 1, [&] {
    return fmt::format("x must have shape [T, d_model] with T >= 1 and d_model = {}, got {}", cfg.d_model,
                       x.rank() == 0 ? std::string("no tensor") : x.shape_string());
  });
  const int64_t t_new = x.size(0), n = cache.length(seq);
  check(t_new <= n, [&] {
    return fmt::format("x: T ({}) exceeds the sequence's {} tokens; append(seq, T) before decoding them", t_new, n);
  });
  const std::vector<int64_t> want = {t_new, cfg.heads, cfg.d_v};
  check(out.rank() == 3 && out.shape() == want, [&] {
    return fmt::format("out must have shape [T, H, d_v] = [{}], got {}", fmt::join(want, ", "),
                       out.rank() == 0 ? std::string("no tensor") : out.shape_string());
  });
  std::vector<int64_t> pos(static_cast<size_t>(t_new));
  for (int64_t t = 0; t < t_new; ++t) pos[static_cast<size_t>(t)] = n - t_new + t;
  const mla::Weights32 w32(w);
  const mla::F32Array x32(x);
  const mla::Projected p = mla::project(cfg, w32, x32.data(), t_new, pos.data());
  cache.store(seq, layer, TensorView(p.latent.data(), DType::f32, {t_new, cfg.latent_width()}));
  const std::vector<float> qt = mla::absorb_queries(cfg, w32, p.q.data(), t_new);
  std::vector<float> ot(static_cast<size_t>(t_new * cfg.heads * cfg.d_c));
  std::vector<float> result(static_cast<size_t>(t_new * cfg.heads * cfg.d_v));
  mla_decode_attention(cache, layer, seq, TensorView(qt.data(), DType::f32, {t_new, cfg.heads, cfg.latent_width()}),
                       cfg.softmax_scale(), MutTensorView(ot.data(), DType::f32, {t_new, cfg.heads, cfg.d_c}));
  mla::up_project_values(cfg, w32, ot.data(), t_new, result.data());
  mla::store_f32(out, result.data());
}

}  // namespace attnkit
