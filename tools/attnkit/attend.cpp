// attnkit attend: attention over .npy inputs, written to .npy outputs; with --grad-out, the
// backward too (dO in, dQ / dK / dV / dsink out). Options and output paths are checked
// before the inputs are read; every output is written in full before any replaces an
// existing file. Not for: timing (attnkit bench) or formats other than .npy.
#include <cmath>
#include <deque>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "attnkit/atomic_file.hpp"
#include "attnkit/attention.hpp"
#include "attnkit/backward.hpp"
#include "attnkit/method.hpp"
#include "attnkit/npy.hpp"
#include "command.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

struct AttendArgs {
  std::string q, k, v, out, lse, pattern = "none", kernel = "auto", alibi, out_dtype = "f32", scale;
  std::string grad_out, dq, dk, dv, dsink, sink_logits;
  std::string method = "softmax", e, f, de, df;  // a linear-cost method; Linformer's projections
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

// A comma-separated list of numbers for `flag` (--alibi: "auto", the standard slopes,
// needs the head count and is resolved once the inputs are read).
std::vector<double> parse_list(const std::string& text, std::string_view flag) {
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
          [&] { return fmt::format("{}: '{}' is not a number (give one per query head)", flag, printable(item)); });
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

// A linear-cost method (method.hpp): the same files in and out, no LSE (there is no
// softmax), causal from --pattern causal, Linformer's E / F from --e / --f or its seed.
int run_method(const AttendArgs& a, Method method) {
  check(method.family != MethodFamily::mla, [] {
    return std::string("--method mla: MLA is a layer with its own projections, not a function of Q, K and V; "
                       "run it with `attnkit mla`");
  });
  check(a.pattern == "none" || a.pattern == "causal", [&] {
    return fmt::format("--pattern (\"{}\"): --method {} takes none or causal", printable(a.pattern), method.name());
  });
  const bool causal = a.pattern == "causal";
  method.linear.causal = causal, method.linformer.causal = causal;
  for (auto [given, flag] : {std::pair<bool, const char*>{!a.lse.empty(), "--lse"}, {a.softcap != 0, "--softcap"},
                             {!a.alibi.empty(), "--alibi"}, {!a.sink_logits.empty(), "--sink-logits"},
                             {!a.dsink.empty(), "--dsink"}})
    check(!given, [&] { return fmt::format("{} is a softmax option; --method {} has none", flag, method.name()); });
  const bool linformer = method.family == MethodFamily::linformer;
  check(linformer || (a.e.empty() && a.f.empty() && a.de.empty() && a.df.empty()),
        [] { return std::string("--e/--f/--de/--df are Linformer's projections; give them with --method linformer:..."); });
  check(a.kernel == "auto" || a.kernel == "ref",
        [&] { return fmt::format("--kernel ({}): --method {} takes auto or ref", printable(a.kernel), method.name()); });
  const Kernel kernel = parse_kernel(a.kernel);
  method.linear.kernel = kernel, method.linformer.kernel = kernel;
  if (!a.scale.empty()) {
    check(method.family == MethodFamily::linear && method.linear.kind != LinearKind::linear, [&] {
      return fmt::format("--scale: --method {} has no scale (linear elu+1 normalises it away; Linformer uses 1/sqrt(Dk))",
                         method.name());
    });
    method.linear.scale = parse_scale(a.scale);
  }
  check_choice("--out-dtype", a.out_dtype, {"f32", "f64", "f16"});
  const DType o_dtype = parse_dtype(a.out_dtype);
  const bool backward = !a.grad_out.empty();
  check(backward || (a.dq.empty() && a.dk.empty() && a.dv.empty() && a.de.empty() && a.df.empty()),
        [] { return std::string("--dq/--dk/--dv/--de/--df need --grad-out (the gradient dLoss/dO, .npy like --out)"); });
  check(!backward || !(a.dq.empty() && a.dk.empty() && a.dv.empty() && a.de.empty() && a.df.empty()),
        [] { return std::string("--grad-out: give at least one of --dq, --dk, --dv (--de, --df) to write"); });
  const std::vector<OutputPath> outputs = {{a.out, "--out"}, {a.dq, "--dq"}, {a.dk, "--dk"},
                                           {a.dv, "--dv"},   {a.de, "--de"}, {a.df, "--df"}};
  check_outputs(outputs);

  const Tensor q = read_npy(a.q, "--q"), k = read_npy(a.k, "--k"), v = read_npy(a.v, "--v");
  for (auto [t, flag, path] : {std::tuple<const Tensor*, const char*, const std::string*>{&q, "--q", &a.q},
                               {&k, "--k", &a.k}, {&v, "--v", &a.v}})
    check(t->shape().size() == 4 && t->shape()[2] > 0,
          [&] { return fmt::format("{}: shape {} must be [B, H, N, D] with N >= 1", label(flag, *path), t->view().shape_string()); });
  LinformerProjections proj;
  check(!linformer || !method.linformer.shares_ef() || (a.f.empty() && a.df.empty()), [&] {
    return fmt::format("--f/--df: with sharing={} F is E; give --e (and --de, which receives dE + dF)",
                       linformer_sharing_name(method.linformer.sharing));
  });
  if (linformer) {
    const int64_t hkv = k.shape()[1], n = k.shape()[2];
    proj = make_linformer_projections(method.linformer, hkv, n);
    for (auto [path, flag, t] : {std::tuple<const std::string*, const char*, Tensor*>{&a.e, "--e", &proj.e},
                                 {&a.f, "--f", &proj.f}}) {
      if (path->empty()) continue;
      *t = read_npy(*path, flag);
      check(t->shape().size() == 3 && t->shape()[1] == method.linformer.k && t->shape()[2] == n, [&] {
        return fmt::format("{}: shape {} must be [P, k = {}, N = {}]: the projection spans the whole sequence",
                           label(flag, *path), t->view().shape_string(), method.linformer.k, n);
      });
    }
  }
  Tensor d_o;
  if (backward) d_o = read_npy(a.grad_out, "--grad-out");
  const std::vector<int64_t> o_shape = {q.shape()[0], q.shape()[1], q.shape()[2], v.shape()[3]};
  check(!backward || d_o.shape() == o_shape, [&] {
    return fmt::format("{}: shape {} must be O's [B, Hq, N, Dv] = [{}]", label("--grad-out", a.grad_out),
                       d_o.view().shape_string(), fmt::join(o_shape, ", "));
  });
  Tensor o(DType::f32, o_shape);
  const auto with_files = [&](auto&& f) {  // the library names q/k/v; the user knows the files
    try {
      f();
    } catch (const Error& e) {
      throw Error(fmt::format("--q/--k/--v ({}, {}, {}): {}", printable(a.q, 240), printable(a.k, 240),
                              printable(a.v, 240), e.what()));
    }
  };
  with_files([&] {
    if (linformer)
      linformer_attend_into(q.view(), k.view(), v.view(), proj.e.view(), linformer_f(method.linformer, proj), method.linformer, o.mut());
    else
      linear_attend_into(q.view(), k.view(), v.view(), method.linear, o.mut());
  });
  Tensor dq(DType::f32, q.shape()), dk(DType::f32, k.shape()), dv(DType::f32, v.shape()), de, df;
  if (backward) {
    if (linformer) {
      de = Tensor(DType::f32, proj.e.shape());
      if (!method.linformer.shares_ef()) df = Tensor(DType::f32, proj.f.shape());
    }
    with_files([&] {
      if (linformer)
        linformer_attend_backward_into(q.view(), k.view(), v.view(), proj.e.view(), linformer_f(method.linformer, proj), d_o.view(),
                                       method.linformer, dq.mut(), dk.mut(), dv.mut(), de.mut(), method.linformer.shares_ef() ? MutTensorView() : df.mut());
      else
        linear_attend_backward_into(q.view(), k.view(), v.view(), d_o.view(), method.linear, dq.mut(), dk.mut(), dv.mut());
    });
  }
  std::deque<AtomicFile> files;  // every file is complete before any is renamed into place
  for (auto [path, flag, t] : {std::tuple<const std::string*, const char*, const Tensor*>{&a.out, "--out", &o},
                               {&a.dq, "--dq", &dq}, {&a.dk, "--dk", &dk}, {&a.dv, "--dv", &dv},
                               {&a.de, "--de", &de}, {&a.df, "--df", &df}}) {
    if (path->empty()) continue;
    files.emplace_back(*path, label(flag, *path));
    write_npy(files.back(), t->to(o_dtype).view());
  }
  for (AtomicFile& file : files) file.commit();
  fmt::print("attend: method={} {} -> {} {}{}\n", method.to_string(), causal ? "causal" : "non-causal",
             printable(a.out, 240), o.view().shape_string(), backward ? " + gradients" : "");
  return 0;
}

int run(const AttendArgs& a) {
  // Every option and both outputs are checked before the inputs are read.
  apply_threads(a.threads);
  const Method method = parse_option("--method", a.method, [](const std::string& t) { return parse_method(t); });
  if (method.family != MethodFamily::softmax) return run_method(a, method);
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
  const std::vector<double> alibi_list = a.alibi == "auto" ? std::vector<double>{} : parse_list(a.alibi, "--alibi");
  opts.sink_logits = parse_list(a.sink_logits, "--sink-logits");
  const bool backward = !a.grad_out.empty();
  check(backward || (a.dq.empty() && a.dk.empty() && a.dv.empty() && a.dsink.empty()),
        [] { return std::string("--dq/--dk/--dv/--dsink need --grad-out (the gradient dLoss/dO, .npy like --out)"); });
  check(!backward || !(a.dq.empty() && a.dk.empty() && a.dv.empty() && a.dsink.empty()),
        [] { return std::string("--grad-out: give at least one of --dq, --dk, --dv, --dsink to write"); });
  check(a.dsink.empty() || !opts.sink_logits.empty(),
        [] { return std::string("--dsink needs --sink-logits (the learned sink logits to differentiate)"); });
  const std::vector<OutputPath> outputs = {{a.out, "--out"}, {a.lse, "--lse"}, {a.dq, "--dq"},
                                           {a.dk, "--dk"},   {a.dv, "--dv"},   {a.dsink, "--dsink"}};
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
  check(opts.sink_logits.empty() || static_cast<int64_t>(opts.sink_logits.size()) == shape.q_heads, [&] {
    return fmt::format("--sink-logits: {} logits given; one per query head ({}) is needed", opts.sink_logits.size(),
                       shape.q_heads);
  });
  Tensor d_o;
  if (backward) {
    d_o = read_npy(a.grad_out, "--grad-out");
    const std::vector<int64_t> want = {shape.batch, shape.q_heads, shape.q_len, shape.d_v};
    check(d_o.shape() == want, [&] {
      return fmt::format("{}: shape {} must be O's [B, Hq, Nq, Dv] = [{}]", label("--grad-out", a.grad_out),
                         d_o.view().shape_string(), fmt::join(want, ", "));
    });
  }
  for (auto [t, name] : {std::pair<const Tensor*, const char*>{&q, "q"}, {&k, "k"}, {&v, "v"}, {&d_o, "grad-out"}})
    if (const int64_t bad = t->numel() > 0 ? count_nonfinite(t->view()) : 0)
      fmt::print(stderr, "attnkit: warning: {} holds {} NaN/inf values; the rows they reach will be NaN\n", name, bad);
  // The backward starts from the f32 forward, whatever --out-dtype writes.
  const Output out = attend(q.view(), k.view(), v.view(), opts, backward ? DType::f32 : o_dtype);
  Gradients grads;
  if (backward) grads = attend_backward(q.view(), k.view(), v.view(), out.o.view(), out.lse.view(), d_o.view(), opts);
  // Every file is complete before any is renamed into place.
  std::deque<AtomicFile> files;  // not movable: a deque keeps them in place
  const auto stage = [&](const std::string& path, std::string_view flag, const Tensor& t) {
    if (path.empty()) return;
    files.emplace_back(path, label(flag, path));
    write_npy(files.back(), (t.dtype() == o_dtype ? t : t.to(o_dtype)).view());
  };
  stage(a.out, "--out", out.o);
  if (!a.lse.empty()) {
    files.emplace_back(a.lse, label("--lse", a.lse));
    write_npy(files.back(), out.lse.view());
  }
  stage(a.dq, "--dq", grads.dq);
  stage(a.dk, "--dk", grads.dk);
  stage(a.dv, "--dv", grads.dv);
  stage(a.dsink, "--dsink", grads.dsink);
  for (AtomicFile& f : files) f.commit();
  fmt::print("attend: {} pattern={} kernel={} -> {} {}{}{}\n", shape.to_string(), opts.pattern.to_string(),
             kernel_name(opts.kernel), printable(a.out, 240), out.o.view().shape_string(),
             a.lse.empty() ? "" : " + " + printable(a.lse, 240), backward ? " + gradients" : "");
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
                  sub.add_option("--sink-logits", a->sink_logits,
                                 "learned attention-sink logits, one per query head, comma-separated (gpt-oss)");
                  sub.add_option("--grad-out", a->grad_out,
                                 "dLoss/dO .npy [B, Hq, Nq, Dv]: run the backward after the forward");
                  sub.add_option("--dq", a->dq, "with --grad-out: write dQ .npy [B, Hq, Nq, Dqk]");
                  sub.add_option("--dk", a->dk, "with --grad-out: write dK .npy [B, Hkv, Nkv, Dqk]");
                  sub.add_option("--dv", a->dv, "with --grad-out: write dV .npy [B, Hkv, Nkv, Dv]");
                  sub.add_option("--dsink", a->dsink, "with --grad-out and --sink-logits: write dsink .npy [Hq]");
                  sub.add_option("--kernel", a->kernel, "auto (flash) | flash | ref (the f64 oracle)")->capture_default_str();
                  sub.add_option("--method", a->method,
                                 "softmax | linear[:eps=E] | performer[:m=M,seed=S] | retention[:gamma=G] | "
                                 "linformer:k=K[,sharing=none|headwise|kv|layerwise,seed=S] (docs/linear.md)")
                      ->capture_default_str();
                  sub.add_option("--e", a->e, "--method linformer: E .npy [P, k, N] (default: drawn from its seed)");
                  sub.add_option("--f", a->f, "--method linformer: F .npy [P, k, N] (default: drawn from its seed)");
                  sub.add_option("--de", a->de, "--method linformer with --grad-out: write dE .npy");
                  sub.add_option("--df", a->df, "--method linformer with --grad-out: write dF .npy");
                  sub.add_option("--out-dtype", a->out_dtype, "f32 | f64 | f16")->capture_default_str();
                  add_threads(sub, a->threads);
                  sub.footer(kCausalNote);
                  return [a] { return run(*a); };
                });

}  // namespace

const char* causal_alignment_note() { return kCausalNote; }

}  // namespace attnkit::cli
