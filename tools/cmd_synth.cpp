#include "commands.h"
#include "common/error.h"

namespace flashstar::tools {

void add_synth_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("synth", "(not yet implemented)");
  cmd->callback([] { fail("synth: not implemented yet"); });
}

}  // namespace flashstar::tools
