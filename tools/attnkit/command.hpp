// The CLI's subcommand registry. Each tools/attnkit/<name>.cpp registers one subcommand
// with a static ATTNKIT_COMMAND; main.cpp knows none of them by name.
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace attnkit::cli {

// setup() declares the subcommand's options on `sub` and returns the action to run
// after parsing; the action's return value is the process exit code.
using Setup = std::function<std::function<int()>(CLI::App& sub)>;

bool add_command(std::string name, std::string description, Setup setup);

// Exit code for bad input (arguments, files); 1 is kept for internal failures.
constexpr int kExitBadInput = 2;

// The note on causal alignment (bottom-right here, top-left in PyTorch) that `attend --help`
// and `pattern --help` end with.
const char* causal_alignment_note();

}  // namespace attnkit::cli

#define ATTNKIT_CLI_CONCAT2(a, b) a##b
#define ATTNKIT_CLI_CONCAT(a, b) ATTNKIT_CLI_CONCAT2(a, b)
#define ATTNKIT_COMMAND(name, description, setup_fn) \
  static const bool ATTNKIT_CLI_CONCAT(attnkit_cmd_, __LINE__) = ::attnkit::cli::add_command(name, description, setup_fn)
