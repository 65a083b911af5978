// Each subcommand lives in its own cmd_*.cpp and registers itself on the top-level CLI11 app.
// A registration adds the subcommand with its options and a callback that does the work; the callback
// throws flashstar::Error for bad input (main prints it as one line and exits 1).
#pragma once
#include <CLI/CLI.hpp>

namespace flashstar::tools {

void add_inspect_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_synth_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_compare_command(CLI::App& app);
void add_dump_tensor_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_drift_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_trace_command(CLI::App& app);

}  // namespace flashstar::tools
