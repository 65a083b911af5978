#include "commands.h"
#include "common/error.h"

namespace flashstar::tools {

void add_logits_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "(not yet implemented)");
  cmd->callback([] { fail("logits: not implemented yet"); });
}

}  // namespace flashstar::tools
