// attnkit attend: attention over .npy inputs, written to .npy outputs. Options and output
// paths are checked before the inputs are read; both outputs are written in full before
// either replaces an existing file. Not for: timing (attnkit bench) or formats other than .npy.
#include <cmath>
#include <optional>

#include <fmt/format.h>

#include "attnkit/atomic_file.hpp"
#include "attnkit/attention.hpp"
#include "attnkit/npy.hpp"
#include "command.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

struct AttendArgs {
  std::string q, k, v, out, lse, pattern = "none", kernel = "auto", alibi, out_dtype = "f32", scale;
  double softcap = 0;
  int threads = 0;
};

// --scale: absent means 1/sqrt(Dqk); given, it must be a finite number.
double parse_scale(const std::string& text) {
  if (text.empty()) return NAN;
  size_t used = 0;
  double x = NAN;
  try {
    x = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used == text.size() && std::isfinite(x),
        [&] { return fmt::format("--scale: '{}' is not a finite number", printable(text)); });
  return x;
}

// A comma-separated list of slopes ("auto", the standard slopes, needs the head count and
// is resolved once the inputs are read).
std::vector<double> parse_alibi(const std::string& text) {
  if (text.empty()) return {};
  std::vector<double> slopes;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    size_t used = 0;
    double x = 0;
    try {
      x = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used == item.size() && !item.empty(),
          [&] { return fmt::format("--alibi: '{}' is not a number (give 'auto' or one slope per query head)", printable(item)); });
    slopes.push_back(x);
    start = comma + 1;
  }
  return slopes;
}

// Counts NaN/inf so the user learns why rows came out NaN; they are not an error.
int64_t count_nonfinite(const TensorView& t) {
  int64_t n = 0;
  for (int64_t i = 0; i < t.numel(); ++i) n += !std::isfinite(t.load(i));
  return n;
}

std::string label(std::string_view flag, const std::string& path) {
  return fmt::format("{} ({})", flag, printable(path, 240));
}

int run(const AttendArgs& a) {
  // Every option and both outputs are checked before the inputs are read.
  apply_threads(a.threads);
  AttendOptions opts;
  opts.pattern = parse_option("--pattern", a.pattern, [](const std::string& t) { return Pattern::parse(t); });
  opts.scale = parse_scale(a.scale);
  check(std::isfinite(a.softcap) && a.softcap >= 0,
        [&] { return fmt::format("--softcap ({}) must be finite and >= 0 (0 disables it)", a.softcap); });
  opts.softcap = a.softcap;
  opts.kernel = parse_option("--kernel", a.kernel, [](const std::string& t) { return parse_kernel(t); });
  // bf16 has no numpy dtype, so .npy outputs are f32, f64 or f16.
  check_choice("--out-dtype", a.out_dtype, {"f32", "f64", "f16"});
  const DType o_dtype = parse_dtype(a.out_dtype);
  const std::vector<double> alibi_list = a.alibi == "auto" ? std::vector<double>{} : parse_alibi(a.alibi);
  const std::vector<OutputPath> outputs = {{a.out, "--out"}, {a.lse, "--lse"}};
  check_outputs(outputs);

  const Tensor q = read_npy(a.q, "--q"), k = read_npy(a.k, "--k"), v = read_npy(a.v, "--v");
  AttnShape shape;
  try {
    shape = AttnShape::from_views(q.view(), k.view(), v.view(), opts.scale);
  } catch (const Error& e) {  // name the files, not just the library's fields
    throw Error(fmt::format("--q/--k/--v ({}, {}, {}): {}", printable(a.q, 240), printable(a.k, 240),
                            printable(a.v, 240), e.what()));
  }
  check(shape.q_len > 0, [&] { return fmt::format("{}: the query sequence (dim 2) is empty", label("--q", a.q)); });
  check(shape.kv_len > 0, [&] { return fmt::format("{}: the key sequence (dim 2) is empty", label("--k", a.k)); });
  opts.alibi_slopes = a.alibi == "auto" ? alibi_slopes(shape.q_heads) : alibi_list;
  check(opts.alibi_slopes.empty() || static_cast<int64_t>(opts.alibi_slopes.size()) == shape.q_heads, [&] {
    return fmt::format("--alibi: {} slopes given; one per query head ({}) is needed, or 'auto'",
                       opts.alibi_slopes.size(), shape.q_heads);
  });
  for (auto [t, name] : {std::pair{&q, "q"}, std::pair{&k, "k"}, std::pair{&v, "v"}})
    if (const int64_t bad = count_nonfinite(t->view()))
      fmt::print(stderr, "attnkit: warning: {} holds {} NaN/inf values; the rows they reach will be NaN\n", name, bad);
  const Output out = attend(q.view(), k.view(), v.view(), opts, o_dtype);
  // Both files are complete before either is renamed into place.
  AtomicFile o_file(a.out, label("--out", a.out));
  write_npy(o_file, out.o.view());
  std::optional<AtomicFile> lse_file;
  if (!a.lse.empty()) {
    lse_file.emplace(a.lse, label("--lse", a.lse));
    write_npy(*lse_file, out.lse.view());
  }
  o_file.commit();
  if (lse_file) lse_file->commit();
  fmt::print("attend: {} pattern={} kernel={} -> {} {}{}\n", shape.to_string(), opts.pattern.to_string(),
             kernel_name(opts.kernel), printable(a.out, 240), out.o.view().shape_string(),
             a.lse.empty() ? "" : " + " + printable(a.lse, 240));
  return 0;
}

// Shared with `pattern --help`: the alignment PyTorch users trip over.
constexpr const char* kCausalNote =
    "Causal alignment: attnkit's causal (like every structured pattern) is bottom-right aligned: query i sits at "
    "position i + Nkv - Nq, so the last query sees the last key (decoding, chunked prefill). PyTorch's "
    "scaled_dot_product_attention(is_causal=True) is top-left aligned: query i sees keys 0..i. The two agree when "
    "Nq == Nkv. For top-left causal with Nq < Nkv no query sees a key past Nq - 1: pass K and V cut to their first "
    "Nq rows with --pattern causal.";

ATTNKIT_COMMAND("attend", "Attention over .npy inputs Q [B,Hq,Nq,Dqk], K [B,Hkv,Nkv,Dqk], V [B,Hkv,Nkv,Dv]",
                [](CLI::App& sub) -> std::function<int()> {
                  auto a = std::make_shared<AttendArgs>();
                  sub.add_option("--q", a->q, "queries .npy [B, Hq, Nq, Dqk] (f32, f64 or f16)")->required();
                  sub.add_option("--k", a->k, "keys .npy [B, Hkv, Nkv, Dqk]")->required();
                  sub.add_option("--v", a->v, "values .npy [B, Hkv, Nkv, Dv]")->required();
                  sub.add_option("--out", a->out,
                                 "output O .npy [B, Hq, Nq, Dv]; written to a temporary file and renamed into place")
                      ->required();
                  sub.add_option("--lse", a->lse, "also write LSE .npy [B, Hq, Nq] (f32, natural log)");
                  sub.add_option("--pattern", a->pattern, "mask pattern, see docs/patterns.md (causal: bottom-right)")
                      ->capture_default_str();
                  sub.add_option("--scale", a->scale, "softmax scale (default 1/sqrt(Dqk))");
                  sub.add_option("--softcap", a->softcap, "tanh soft-capping of scores (0 = off)");
                  sub.add_option("--alibi", a->alibi, "ALiBi slopes: 'auto' or one per query head, comma-separated");
                  sub.add_option("--kernel", a->kernel, "auto (flash) | flash | ref (the f64 oracle)")->capture_default_str();
                  sub.add_option("--out-dtype", a->out_dtype, "f32 | f64 | f16")->capture_default_str();
                  add_threads(sub, a->threads);
                  sub.footer(kCausalNote);
                  return [a] { return run(*a); };
                });

}  // namespace

const char* causal_alignment_note() { return kCausalNote; }

}  // namespace attnkit::cli
