// `flashstar convert HF_DIR -o OUT.gguf [--outtype ...] [--experts ...] [--name NAME]`.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "common/error.h"
#include "convert/convert.h"

namespace flashstar::tools {
namespace {

const char* kFooter =
    "Reads config.json and the safetensors shards (model.safetensors.index.json, or model.safetensors) of a\n"
    "DeepSeek V4 checkpoint, with official names (layers.N.attn.wq_a.weight, ...) or the same under\n"
    "`model.`. BF16/F16/F32/F64 weights, I64/I32 tid2eid; FP8/FP4 block-scaled weights are not supported yet.\n"
    "\n"
    "Types: 1-D tensors (norms, sinks, hc base/scale, exp_probs_b) stay F32, compressor APE stays F32 (F16\n"
    "under ds4), tid2eid is I32. --outtype sets every other (matrix) tensor; with q8_0 the router\n"
    "(ffn_gate_inp) and the hyper-connection fn matrices stay F32, because routing top-k and Sinkhorn\n"
    "mixing are sensitive to rounding. --outtype ds4 reproduces ds4's published per-tensor types (F16\n"
    "embedding/router/hc/compressor/indexer, Q8_0 attention/shared experts/output) with routed experts\n"
    "per --experts (default iq2_xxs-q2_k). --experts sets the routed experts alone: q8_0, q4_k (gate, up\n"
    "and down) or iq2_xxs-q2_k (gate/up IQ2_XXS, down Q2_K); default: the outtype. A row length that a\n"
    "block type cannot tile falls back to q8_0 (from k-quants) or f32, with a note.\n"
    "\n"
    "The tokenizer is a placeholder vocabulary (ds4's special tokens, the 256 byte tokens, fillers).";

struct Opts {
  std::string input, output, name, outtype = "f16", experts;
};

void run(const Opts& o) {
  convert::ConvertOptions c;
  c.input = o.input;
  c.output = o.output;
  c.name = o.name;
  auto ot = convert::parse_outtype(o.outtype);
  if (!ot) fail("convert: unknown --outtype %s (f32, f16, bf16, q8_0 or ds4)", o.outtype.c_str());
  c.outtype = *ot;
  if (!o.experts.empty()) {
    auto e = convert::parse_expert_recipe(o.experts);
    if (!e) fail("convert: unknown --experts %s (q8_0, q4_k or iq2_xxs-q2_k)", o.experts.c_str());
    c.experts = *e;
  }
  const auto r = convert::convert_checkpoint(c);
  std::fprintf(stderr, "convert: wrote %s: %zu tensors, %.3f GB of tensor data in %.1f s\n", o.output.c_str(),
               r.n_tensors, static_cast<double>(r.data_bytes) / 1e9, r.seconds);
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("convert", "Convert a Hugging Face / official safetensors checkpoint to GGUF");
  cmd->add_option("input", opts->input, "Checkpoint directory (config.json + *.safetensors)")->required();
  cmd->add_option("-o,--output", opts->output, "Output .gguf path")->required();
  cmd->add_option("--outtype", opts->outtype, "f32, f16, bf16, q8_0 or ds4 (default f16)");
  cmd->add_option("--experts", opts->experts, "Routed expert type: q8_0, q4_k or iq2_xxs-q2_k");
  cmd->add_option("--name", opts->name, "general.name (default: from config.json or the directory name)");
  cmd->footer(kFooter);
  cmd->callback([opts] { run(*opts); });
}

}  // namespace flashstar::tools
