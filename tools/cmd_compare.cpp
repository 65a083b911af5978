#include "commands.h"
#include "common/error.h"

namespace flashstar::tools {

void add_compare_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("compare", "(not yet implemented)");
  cmd->callback([] { fail("compare: not implemented yet"); });
}

}  // namespace flashstar::tools
