// attnkit: command-line entry point. Subcommands live one per file and register
// themselves (command.hpp); this file parses, dispatches, prints errors (escaped, see
// print_error) and maps them to exit codes. Not for: any command's options or work.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/version.hpp"
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

namespace {

using namespace attnkit::cli;

// The first argument that is not an option names the command; CLI11 alone would answer an
// unknown one with "A subcommand is required".
std::string command_problem(int argc, char** argv, const std::vector<std::string>& names) {
  const std::string list = fmt::format("commands are: {}", fmt::join(names, ", "));
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (!arg.empty() && arg[0] == '-') continue;
    if (std::find(names.begin(), names.end(), arg) != names.end()) return {};
    return fmt::format("unknown command '{}'; {}", attnkit::printable(arg), list);
  }
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]).rfind("-", 0) == 0) return {};  // --help, --version, or CLI11's own message
  return fmt::format("a command is required; {} (attnkit <command> --help for each)", list);
}

// Every message is escaped once more as it is printed: a library message that quotes user
// text without printable() still cannot reach the terminal with its control bytes, nor
// run on for pages. Text already escaped passes unchanged (Printable::message).
void print_error(std::string_view what) {
  constexpr size_t kMaxMessageBytes = 4096;
  fmt::print(stderr, "attnkit: error: {}\n", attnkit::printable(what, kMaxMessageBytes, attnkit::Printable::message));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"attnkit: efficient attention, measured. Run 'attnkit <command> --help'."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "attnkit " ATTNKIT_VERSION_STRING, "print the version and exit");
  std::vector<std::pair<CLI::App*, std::function<int()>>> actions;
  std::vector<std::string> names;
  try {
    auto& entries = registry();
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    for (auto& e : entries) {
      CLI::App* sub = app.add_subcommand(e.name, e.description);
      actions.emplace_back(sub, e.setup(*sub));
      names.push_back(e.name);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "attnkit: internal error while setting up commands: {}\n", e.what());
    return 1;
  }
  if (const std::string problem = command_problem(argc, argv, names); !problem.empty()) {
    print_error(problem);
    return kExitBadInput;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    print_error(e.what());
    const auto parsed = app.get_subcommands();
    fmt::print(stderr, "Run 'attnkit{} --help' for more information.\n",
               parsed.empty() ? std::string() : " " + parsed.front()->get_name());
    return kExitBadInput;
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const attnkit::Error& e) {
    print_error(e.what());
    return kExitBadInput;
  } catch (const std::bad_alloc&) {
    print_error("out of memory (the requested sizes are too large for this machine)");
    return kExitBadInput;
  } catch (const std::exception& e) {
    fmt::print(stderr, "attnkit: internal error: {}\n",
               attnkit::printable(e.what(), 4096, attnkit::Printable::message));
    return 1;
  }
  return 0;
}
