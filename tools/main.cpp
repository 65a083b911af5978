// flashstar: one binary, many subcommands.
#include <cstdio>
#include <cstring>
#include <exception>

#include "commands.h"
#include "common/env_switches.h"
#include "common/error.h"
#ifdef FLASHSTAR_HAVE_CUDA
#include "cuda/kernel_trace.h"
#endif

int main(int argc, char** argv) {
  CLI::App app{"Flashstar: DeepSeek V4 Flash inference engine (CPU reference, CUDA)"};
  app.set_version_flag("--version", std::string("flashstar ") + FLASHSTAR_VERSION);
  app.require_subcommand(1);
  using namespace flashstar::tools;
  add_inspect_command(app);
  add_convert_command(app);
  add_synth_command(app);
  add_logits_command(app);
  add_compare_command(app);
  add_dump_tensor_command(app);
  add_run_command(app);
  add_serve_command(app);
  add_drift_command(app);
  add_bench_command(app);
  add_trace_command(app);
  // ds4's multi-letter short flag, which CLI11 cannot declare: -sys is --system.
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "-sys") == 0) argv[i] = const_cast<char*>("--system");
  try {
    flashstar::check_env_switches();  // a bad FLASHSTAR_* value would be read as some other setting
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "flashstar: %s (see --help)\n", e.what());
    return 2;
  } catch (const flashstar::Error& e) {
    std::fprintf(stderr, "flashstar: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "flashstar: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "flashstar: internal error: %s\n", e.what());
    return 1;
  }
#ifdef FLASHSTAR_HAVE_CUDA
  flashstar::cuda::kernel_trace_flush();  // FLASHSTAR_KTRACE's CSV (an exit hook writes it on the error paths)
#endif
  return 0;
}
