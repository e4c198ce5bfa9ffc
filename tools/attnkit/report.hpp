// The trade-off report's two halves, shared by report.cpp (plan, training, measurement,
// results.json) and report_markdown.cpp (README.md from results.json).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace attnkit::cli {

// DIR/README.md's text: one table per question with a sentence that reads it, from the
// results report.cpp gathered. `plots` lists the PNG files that exist and `pages` the other
// markdown files beside it (names, no folder), which it links.
std::string report_markdown(const nlohmann::json& results, const std::vector<std::string>& plots,
                            const std::vector<std::string>& pages);

// Each linear-cost method's distance from exact causal softmax attention on the same random
// inputs (the model's heads, head width and context), and Performer's against its feature
// count m over several feature draws (report_linear.cpp).
nlohmann::json approximation(int64_t heads, int64_t head_dim, int64_t n, bool quick);

}  // namespace attnkit::cli
