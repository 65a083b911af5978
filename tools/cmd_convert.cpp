#include "commands.h"
#include "common/error.h"

namespace flashstar::tools {

void add_convert_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "(not yet implemented)");
  cmd->callback([] { fail("convert: not implemented yet"); });
}

}  // namespace flashstar::tools
