// `flashstar synth --preset tiny|flash [--layers N] [--recipe q2|q4] [--seed S] [--threads N]
//  [--well-conditioned] [--residual-scale F] -o OUT.gguf`.
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "commands.h"
#include "common/error.h"
#include "common/parallel.h"
#include "synth/synth.h"

namespace flashstar::tools {
namespace {

const char* kFooter =
    "Writes a random-weight DeepSeek V4 GGUF in ds4's exact layout: the same tensor names, shapes, types\n"
    "(non-expert tensors as in ds4's published files; routed experts IQ2_XXS gate/up + Q2_K down for q2,\n"
    "Q4_K for q4), metadata keys and a placeholder tokenizer. flash = the published configuration\n"
    "(optionally fewer layers, same schedule); tiny = tiny-a's dimensions (hidden 256, 8 experts, ...),\n"
    "where a block type that cannot tile a row falls back to q8_0. Quantized blocks are generated\n"
    "directly (random codes and scales), not quantized. The same seed gives the same file whatever\n"
    "--threads is.\n"
    "\n"
    "--well-conditioned makes a model whose logits are insensitive to rounding, for drift gates between\n"
    "implementations (GPU routes vs reference, GPU vs CPU). On a plain random model a rounding-level change\n"
    "now and then flips an MoE routing or indexer top-k pick and that position's logits jump far beyond\n"
    "rounding, so its drift floor is large and noisy. This option (1) scales the residual branches down:\n"
    "the output projections that write into the residual stream (attn_output_b, routed ffn_down_exps and\n"
    "shared ffn_down_shexp) get --residual-scale (default 0.1) times their usual std, so the embedding\n"
    "dominates and any flipped pick changes the logits by little; (2) spreads the router biases\n"
    "(exp_probs_b) 4.0 apart in a seeded random order per layer, far more than the router scores' range,\n"
    "so each biased layer routes every token to the same top-6 experts by a wide margin and rounding\n"
    "cannot flip a pick (hash layers keep their token-id tables). The model name gets a -conditioned\n"
    "suffix. Like the plain file it depends only on --seed. --residual-scale alone does (1) only.";

struct Opts {
  std::string preset = "tiny", recipe = "q2", output;
  int layers = 0, threads = 0;
  uint64_t seed = 1;
  bool dry_run = false, well_conditioned = false;
  float residual_scale = 0;  // 0: 1, or 0.1 with --well-conditioned
};

void run(const Opts& o) {
  synth::SynthOptions s;
  if (o.preset == "tiny") s.preset = synth::Preset::Tiny;
  else if (o.preset == "flash") s.preset = synth::Preset::Flash;
  else fail("synth: unknown --preset %s (tiny or flash)", o.preset.c_str());
  if (o.recipe == "q2") s.recipe = synth::Recipe::Q2;
  else if (o.recipe == "q4") s.recipe = synth::Recipe::Q4;
  else fail("synth: unknown --recipe %s (q2 or q4)", o.recipe.c_str());
  s.layers = o.layers;
  s.seed = o.seed;
  s.output = o.output;
  if (o.residual_scale != 0) s.residual_scale = o.residual_scale;
  else if (o.well_conditioned) s.residual_scale = 0.1f;
  if (o.well_conditioned) s.router_bias_step = 4.0f;
  if (o.threads < 0) fail("synth: --threads must be positive");
  if (o.threads > 0) set_num_threads(o.threads);

  if (o.dry_run) {
    const auto plan = synth::plan_synth(s);
    std::map<std::string, std::pair<size_t, uint64_t>> by_type;
    for (const auto& t : plan.tensors) {
      auto& e = by_type[type_name(t.type)];
      ++e.first;
      e.second += t.nbytes;
    }
    for (const auto& n : convert::summarize_notes(plan.notes)) std::printf("note: %s\n", n.c_str());
    std::printf("preset %s, %u layers, recipe %s\n", o.preset.c_str(), plan.cfg.n_layer, o.recipe.c_str());
    for (const auto& [name, e] : by_type)
      std::printf("  %-8s %5zu tensors %18llu B\n", name.c_str(), e.first, static_cast<unsigned long long>(e.second));
    std::printf("tensors: %zu\n", plan.tensors.size());
    std::printf("tensor data: %llu B (each tensor padded to 32 B)\n", static_cast<unsigned long long>(plan.data_bytes));
    std::printf("file size: ~%llu B (%.2f GiB; header and metadata estimated)\n",
                static_cast<unsigned long long>(plan.data_bytes + plan.header_bytes),
                static_cast<double>(plan.data_bytes + plan.header_bytes) / (1024.0 * 1024.0 * 1024.0));
    return;
  }
  if (o.output.empty()) fail("synth: -o OUT.gguf is required (or --dry-run)");
  const auto r = synth::synthesize(s);
  std::fprintf(stderr, "synth: wrote %s: %zu tensors, %.3f GB in %.1f s (%.2f GB/s)\n", o.output.c_str(), r.n_tensors,
               static_cast<double>(r.bytes_written) / 1e9, r.seconds,
               r.seconds > 0 ? static_cast<double>(r.bytes_written) / 1e9 / r.seconds : 0.0);
}

}  // namespace

void add_synth_command(CLI::App& app) {
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("synth", "Write a random-weight DeepSeek V4 GGUF in ds4's layout");
  cmd->add_option("--preset", opts->preset, "tiny or flash (default tiny)");
  cmd->add_option("--layers", opts->layers, "Number of layers (default: 6 tiny, 43 flash)");
  cmd->add_option("--recipe", opts->recipe, "Routed experts: q2 (IQ2_XXS gate/up, Q2_K down) or q4 (Q4_K)");
  cmd->add_option("--seed", opts->seed, "Random seed (default 1)");
  cmd->add_option("--threads", opts->threads, "Worker threads (default: all cores)");
  cmd->add_option("-o,--output", opts->output, "Output .gguf path");
  cmd->add_flag("--well-conditioned", opts->well_conditioned,
                "small residual branches and wide router-bias margins: rounding cannot flip discrete picks (below)");
  cmd->add_option("--residual-scale", opts->residual_scale,
                  "std multiplier for attn_output_b, ffn_down_exps, ffn_down_shexp\n(default 1; 0.1 with --well-conditioned)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--dry-run", opts->dry_run, "Print the planned tensor count and file size; write nothing");
  cmd->footer(kFooter);
  cmd->callback([opts] { run(*opts); });
}

}  // namespace flashstar::tools
