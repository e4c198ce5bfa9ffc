// attnkit attend: attention over .npy inputs, written to .npy outputs. Not for: timing
// (attnkit bench) or formats other than .npy.
#include <cmath>

#include <fmt/format.h>

#include "attnkit/attention.hpp"
#include "attnkit/npy.hpp"
#include "command.hpp"

namespace attnkit::cli {
namespace {

struct AttendArgs {
  std::string q, k, v, out, lse, pattern = "none", kernel = "auto", alibi, out_dtype = "f32", scale;
  double softcap = 0;
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
  check(used == text.size() && std::isfinite(x), [&] { return fmt::format("--scale: '{}' is not a finite number", text); });
  return x;
}

// "auto" gives the standard slopes for the query heads; otherwise a comma-separated list.
std::vector<double> parse_alibi(const std::string& text, int64_t heads) {
  if (text.empty()) return {};
  if (text == "auto") return alibi_slopes(heads);
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
          [&] { return fmt::format("--alibi: '{}' is not a number (give 'auto' or one slope per query head)", item); });
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

int run(const AttendArgs& a) {
  const Tensor q = read_npy(a.q, "--q"), k = read_npy(a.k, "--k"), v = read_npy(a.v, "--v");
  AttendOptions opts;
  opts.pattern = Pattern::parse(a.pattern);
  opts.scale = parse_scale(a.scale);
  check(std::isfinite(a.softcap) && a.softcap >= 0,
        [&] { return fmt::format("--softcap ({}) must be finite and >= 0 (0 disables it)", a.softcap); });
  opts.softcap = a.softcap;
  opts.kernel = parse_kernel(a.kernel);
  AttnShape shape;
  try {
    shape = AttnShape::from_views(q.view(), k.view(), v.view(), opts.scale);
  } catch (const Error& e) {  // name the files, not just the library's fields
    throw Error(fmt::format("--q/--k/--v ({}, {}, {}): {}", a.q, a.k, a.v, e.what()));
  }
  check(shape.q_len > 0, [&] { return fmt::format("--q ({}): the query sequence (dim 2) is empty", a.q); });
  check(shape.kv_len > 0, [&] { return fmt::format("--k ({}): the key sequence (dim 2) is empty", a.k); });
  opts.alibi_slopes = parse_alibi(a.alibi, shape.q_heads);
  check(opts.alibi_slopes.empty() || static_cast<int64_t>(opts.alibi_slopes.size()) == shape.q_heads, [&] {
    return fmt::format("--alibi: {} slopes given; one per query head ({}) is needed, or 'auto'",
                       opts.alibi_slopes.size(), shape.q_heads);
  });
  const DType o_dtype = parse_dtype(a.out_dtype);
  check(o_dtype != DType::bf16, [] { return std::string("--out-dtype: bf16 has no .npy type; use f32, f64 or f16"); });
  for (auto [t, name] : {std::pair{&q, "q"}, std::pair{&k, "k"}, std::pair{&v, "v"}})
    if (const int64_t bad = count_nonfinite(t->view()))
      fmt::print(stderr, "attnkit: warning: {} holds {} NaN/inf values; the rows they reach will be NaN\n", name, bad);
  const Output out = attend(q.view(), k.view(), v.view(), opts, o_dtype);
  write_npy(a.out, out.o.view());
  if (!a.lse.empty()) write_npy(a.lse, out.lse.view());
  fmt::print("attend: {} pattern={} kernel={} -> {} {}{}\n", shape.to_string(), opts.pattern.to_string(),
             kernel_name(opts.kernel), a.out, out.o.view().shape_string(), a.lse.empty() ? "" : " + " + a.lse);
  return 0;
}

ATTNKIT_COMMAND("attend", "Attention over .npy inputs Q [B,Hq,Nq,Dqk], K [B,Hkv,Nkv,Dqk], V [B,Hkv,Nkv,Dv]",
                [](CLI::App& sub) -> std::function<int()> {
                  auto a = std::make_shared<AttendArgs>();
                  sub.add_option("--q", a->q, "queries .npy [B, Hq, Nq, Dqk] (f32, f64 or f16)")->required();
                  sub.add_option("--k", a->k, "keys .npy [B, Hkv, Nkv, Dqk]")->required();
                  sub.add_option("--v", a->v, "values .npy [B, Hkv, Nkv, Dv]")->required();
                  sub.add_option("--out", a->out, "output O .npy [B, Hq, Nq, Dv]")->required();
                  sub.add_option("--lse", a->lse, "also write LSE .npy [B, Hq, Nq] (f32, natural log)");
                  sub.add_option("--pattern", a->pattern, "mask pattern, see docs/patterns.md")->capture_default_str();
                  sub.add_option("--scale", a->scale, "softmax scale (default 1/sqrt(Dqk))");
                  sub.add_option("--softcap", a->softcap, "tanh soft-capping of scores (0 = off)");
                  sub.add_option("--alibi", a->alibi, "ALiBi slopes: 'auto' or one per query head, comma-separated");
                  sub.add_option("--kernel", a->kernel, "auto (flash) | flash | ref (the f64 oracle)")->capture_default_str();
                  sub.add_option("--out-dtype", a->out_dtype, "f32 | f64 | f16")->capture_default_str();
                  return [a] { return run(*a); };
                });

}  // namespace
}  // namespace attnkit::cli
