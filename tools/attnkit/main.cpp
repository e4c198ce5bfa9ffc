// attnkit: command-line entry point. Subcommands live one per file and register
// themselves (command.hpp); this file parses, dispatches and maps errors to exit codes.
#include <cstdio>
#include <exception>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "command.hpp"

namespace attnkit::cli {
namespace {
struct Entry {
  std::string name, description;
  Setup setup;
};
std::vector<Entry>& registry() {
  static std::vector<Entry> r;
  return r;
}
}  // namespace

bool add_command(std::string name, std::string description, Setup setup) {
  registry().push_back({std::move(name), std::move(description), std::move(setup)});
  return true;
}

}  // namespace attnkit::cli

int main(int argc, char** argv) {
  using namespace attnkit::cli;
  CLI::App app{"attnkit: efficient attention, measured. Run 'attnkit <command> --help'."};
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, std::function<int()>>> actions;
  try {
    auto& entries = registry();
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    for (auto& e : entries) {
      CLI::App* sub = app.add_subcommand(e.name, e.description);
      actions.emplace_back(sub, e.setup(*sub));
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "attnkit: internal error while setting up commands: {}\n", e.what());
    return 1;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitBadInput;
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const attnkit::Error& e) {
    fmt::print(stderr, "attnkit: error: {}\n", e.what());
    return kExitBadInput;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "attnkit: error: out of memory (the requested sizes are too large for this machine)\n");
    return kExitBadInput;
  } catch (const std::exception& e) {
    fmt::print(stderr, "attnkit: internal error: {}\n", e.what());
    return 1;
  }
  return 0;
}
