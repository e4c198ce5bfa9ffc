// The trade-off report's two halves, shared by report.cpp (plan, training, measurement,
// results.json) and report_markdown.cpp (README.md from results.json).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace attnkit::cli {

// DIR/README.md's text: one table per question with a sentence that reads it, from the
// results report.cpp gathered. `plots` lists the PNG files that exist and `pages` the other
// markdown files beside it (names, no folder), which it links.
std::string report_markdown(const nlohmann::json& results, const std::vector<std::string>& plots,
                            const std::vector<std::string>& pages);

}  // namespace attnkit::cli
