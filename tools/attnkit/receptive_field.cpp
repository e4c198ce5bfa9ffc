// attnkit receptive-field: how far back a stack of sliding-window layers can see, per layer
// and in total, by the convention of attnkit/receptive_field.hpp (the query counts inside
// its window of W). Not for: masks or the cost of a pattern.
#include <functional>
#include <memory>
#include <set>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "attnkit/atomic_file.hpp"
#include "attnkit/receptive_field.hpp"
#include "command.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

struct Options {
  int64_t layers = 0, window = 0, dilation = 1;
  JsonOutput json;
};

int run(const Options& o) {
  const ReceptiveField rf = receptive_field(o.layers, o.window, o.dilation);
  const std::vector<OutputPath> outputs = {{o.json.target(), "--json", true}};
  check_outputs(outputs);
  if (o.json.given()) {
    nlohmann::json reach = nlohmann::json::array();
    for (int64_t k = 1; k <= rf.layers; ++k) reach.push_back(rf.reach(k));
    const nlohmann::json out = {
        {"layers", rf.layers},
        {"window", rf.window},
        {"dilation", rf.dilation},
        {"convention", "query i sees keys i - j*dilation for j = 0..window-1 (the query counts in its window)"},
        {"reach_per_layer", rf.reach_per_layer()},
        {"reach", reach},
        {"span", rf.span()},
        {"reachable_tokens", rf.reachable_tokens()}};
    write_json(o.json, out);
    if (o.json.to_stdout()) return 0;
  }
  if (rf.dilation > 1)
    fmt::print("dilated window W={}: the query and {} earlier keys spaced {} apart, {} layers\n", rf.window,
               rf.window - 1, rf.dilation, rf.layers);
  else
    fmt::print("sliding window W={}: the query and the {} tokens before it (window(left {}, right 0)), {} layers\n",
               rf.window, rf.window - 1, rf.window - 1, rf.layers);
  // A few layers show the linear growth; all of them are in --json.
  const int64_t L = rf.layers;
  std::set<int64_t> shown;
  for (int64_t k : {int64_t{1}, int64_t{2}, int64_t{3}, L / 4, L / 2, 3 * L / 4, L})
    if (k >= 1 && k <= L) shown.insert(k);
  fmt::print("\n{:>7} {:>16}\n", "layer", "tokens back");
  int64_t previous = 0;
  for (int64_t k : shown) {
    if (k > previous + 1) fmt::print("{:>7}\n", "...");
    fmt::print("{:>7} {:>16}\n", k, rf.reach(k));
    previous = k;
  }
  fmt::print("\ntheoretical span: {} tokens = L*(W-1){}+1, from the farthest token to the query\n", rf.span(),
             rf.dilation > 1 ? "*D" : "");
  if (rf.dilation > 1)
    fmt::print("distinct tokens reachable: {} = L*(W-1)+1 (positions a multiple of {} back; undilated heads fill the gaps)\n",
               rf.reachable_tokens(), rf.dilation);
  fmt::print("(Mistral's \"k x W\" counts positions i-W..i, W+1 keys; a window of W keys reaches k*(W-1).)\n");
  return 0;
}

std::function<int()> setup(CLI::App& sub) {
  auto o = std::make_shared<Options>();
  add_int(sub, "--layers", o->layers, "Stacked attention layers")->required();
  add_int(sub, "--window", o->window, "Window of W keys per query, the query included")->required();
  add_int(sub, "--dilation", o->dilation, "Gap between window keys, as Longformer's dilation (default 1)");
  add_json(sub, o->json, "the reach of every layer");
  return [o] { return run(*o); };
}

ATTNKIT_COMMAND("receptive-field", "How far back stacked sliding-window layers can see", setup);

}  // namespace
}  // namespace attnkit::cli
