// attnkit convert: a trained model (attnkit train's checkpoint) written as a llama2.c .bin
// (model/llama2c.hpp), or a llama2.c .bin as an attnkit checkpoint. Not for: other formats.
#include <filesystem>

#include <fmt/format.h>

#include "attnkit/atomic_file.hpp"
#include "attnkit/error.hpp"
#include "command.hpp"
#include "model/llama2c.hpp"
#include "model/train.hpp"
#include "options.hpp"

namespace attnkit::cli {
namespace {

struct Options {
  std::string model, out;
};

bool is_bin(const std::string& p) { return p.size() > 4 && p.compare(p.size() - 4, 4, ".bin") == 0; }

int run(const Options& o) {
  namespace fs = std::filesystem;
  const std::string in = fs::is_directory(o.model) ? o.model + "/model.safetensors" : o.model;
  check_outputs(std::vector<OutputPath>{{o.out, "--out", false}});
  if (is_bin(o.out)) {
    const model::TrainState st = model::load_checkpoint(in, nullptr);
    model::export_llama2c(st.model, o.out);
  } else {
    check(is_bin(in), [] { return std::string("--model: give a .bin to convert to a checkpoint, or --out a .bin"); });
    const model::TrainState st{model::load_llama2c(in), {}, 0};
    model::save_checkpoint(o.out, st, {});
  }
  fmt::print("wrote {}\n", o.out);
  return 0;
}

std::function<int()> setup(CLI::App& sub) {
  auto o = std::make_shared<Options>();
  sub.add_option("--model", o->model, "an attnkit checkpoint (or its folder), or a llama2.c .bin")->required();
  sub.add_option("--out", o->out, "FILE.bin: llama2.c format; else an attnkit checkpoint (safetensors)")->required();
  return [o] { return run(*o); };
}

ATTNKIT_COMMAND("convert", "convert between attnkit checkpoints and llama2.c .bin files", setup);

}  // namespace
}  // namespace attnkit::cli
