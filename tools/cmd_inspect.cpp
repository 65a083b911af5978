#include "commands.h"
#include "common/error.h"

namespace flashstar::tools {

void add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Print a GGUF file's header, metadata and tensor table");
  cmd->callback([] { fail("inspect: not implemented yet"); });
}

}  // namespace flashstar::tools
