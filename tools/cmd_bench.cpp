// flashstar bench: ds4-bench compatible throughput walk (src/engine/bench.h), CSV out, optional plot.
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "common/error.h"
#include "common/file_util.h"
#include "common/parallel.h"
#include "engine/bench.h"
#include "engine/routes.h"
#include "text/chat.h"
#include "text/tokenizer.h"
#include "text/utf8.h"
#include "tool_util.h"
#ifdef FLASHSTAR_HAVE_CUDA
#include "cuda/device_info.h"
#endif

namespace flashstar::tools {
namespace {

const char* kFooter =
    "Walks one token sequence to context frontiers (ctx-start, +step-incr or x step-mul, ..., ctx-max). Each\n"
    "row prefills only the tokens new since the previous frontier (prefill_tps covers that interval), saves\n"
    "a snapshot (its size is kvcache_bytes), times --gen-tokens greedy decode steps that never pick EOS,\n"
    "and restores the snapshot; snapshot work is not timed. Token source: --prompt-file (plain BPE),\n"
    "--chat-prompt-file (one non-thinking user turn after --system), or --random-tokens SEED (the default\n"
    "when neither file is given, e.g. for models without a tokenizer). The sequence must hold >= ctx-max\n"
    "tokens. CSV columns: ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,backend,\n"
    "card,routes (the CPU backend ignores the route set). --plot runs scripts/plot_bench.py (python3 +\n"
    "matplotlib); without --csv the CSV goes next to the plot.";

struct Opts {
  std::string model, prompt_file, chat_prompt_file, system = "You are a helpful assistant.";
  std::string csv, plot;
  uint64_t random_seed = 0;
  bench::BenchOptions b;
  SessionCli session;
};

// Single-quoted for /bin/sh.
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The script ships in the source tree; the binary normally sits in <tree>/<build>/tools/.
std::string find_plot_script() {
  if (const char* dir = std::getenv("FLASHSTAR_SCRIPTS_DIR")) {
    const auto p = std::filesystem::path(dir) / "plot_bench.py";
    if (std::filesystem::exists(p)) return p.string();
  }
  std::error_code ec;
  auto dir = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  for (int up = 0; up < 4 && !ec && !dir.empty(); ++up, dir = dir.parent_path()) {
    const auto p = dir / "scripts" / "plot_bench.py";
    if (std::filesystem::exists(p)) return p.string();
  }
  fail("--plot: scripts/plot_bench.py not found near the binary (set FLASHSTAR_SCRIPTS_DIR)");
}

std::string card_name(const std::string& backend) {
#ifdef FLASHSTAR_HAVE_CUDA
  if (backend == "cuda") {
    const auto devs = cuda::list_devices();
    if (!devs.empty()) return devs[0].name;
    return "cuda (unknown device)";
  }
#endif
  (void)backend;
  return strfmt("cpu (%d threads)", num_threads());
}

std::string read_text(const std::string& path) {
  std::string t = read_file(path);
  size_t bad = 0;
  if (!text::utf8_valid(t, &bad)) fail("%s is not valid UTF-8 (first bad byte at offset %zu)", path.c_str(), bad);
  return t;
}

void run(const Opts& o, const CLI::App* cmd) {
  const bool random = cmd->count("--random-tokens") > 0;
  if ((!o.prompt_file.empty()) + (!o.chat_prompt_file.empty()) + random > 1)
    fail("give only one of --prompt-file, --chat-prompt-file and --random-tokens");
  bench::BenchOptions bo = o.b;
  bench::validate(bo);
  const std::string backend = o.session.prepare();
  std::string csv_path = o.csv, plot_script;
  if (!o.plot.empty()) {
    // Fail before the long run, not after it.
    if (std::system("python3 -c 'import matplotlib' >/dev/null 2>&1") != 0)
      fail("--plot needs python3 with matplotlib (pip install matplotlib)");
    plot_script = find_plot_script();
    if (csv_path.empty()) csv_path = std::filesystem::path(o.plot).replace_extension(".csv").string();
  }

  auto model = Model::load(o.model);
  const uint32_t n_vocab = model->config().n_vocab;
  const bool has_tokenizer = model->file().find("tokenizer.ggml.tokens") != nullptr;
  std::unique_ptr<text::Tokenizer> tok;
  if (has_tokenizer) tok = std::make_unique<text::Tokenizer>(text::Tokenizer::from_gguf(model->file()));
  std::vector<int32_t> ids;
  std::string source;
  if (!o.prompt_file.empty() || !o.chat_prompt_file.empty()) {
    if (!tok) fail("%s has no tokenizer: use --random-tokens SEED", o.model.c_str());
    if (!o.prompt_file.empty()) {
      ids = tok->encode(read_text(o.prompt_file));
      source = o.prompt_file;
    } else {
      ids = text::encode_cli_prompt(*tok, o.system, read_text(o.chat_prompt_file), text::ThinkMode::None);
      source = o.chat_prompt_file + " (chat)";
    }
    if (ids.size() < bo.ctx_max)
      fail("the prompt has %zu tokens but --ctx-max is %u (use a longer prompt, a smaller --ctx-max or --random-tokens)",
           ids.size(), bo.ctx_max);
  } else {
    ids = bench::random_tokens(o.random_seed, bo.ctx_max, 0, static_cast<int32_t>(n_vocab));
    source = strfmt("random ids, seed %llu", static_cast<unsigned long long>(o.random_seed));
  }
  const int32_t eos = tok ? tok->special().eos : -1;

  const SessionOptions so = o.session.options(bo.ctx_alloc);
  auto session = make_session(*model, so, backend);
  const std::string card = card_name(backend), routes = describe_routes(so.routes);

  FILE* out = stdout;
  if (!csv_path.empty()) {
    out = std::fopen(csv_path.c_str(), "w");
    if (!out) fail("cannot write %s", csv_path.c_str());
  }
  std::fprintf(out, "%s\n", bench::csv_header().c_str());
  std::fflush(out);
  std::fprintf(stderr, "bench: %s, backend %s, card %s, routes %s%s; tokens: %s\n", o.model.c_str(),
               session->backend_name(), card.c_str(), routes.c_str(), backend == "cpu" ? " (ignored by cpu)" : "", source.c_str());
  std::fprintf(stderr, "%10s %10s %12s %8s %10s %12s\n", "ctx", "prefill", "prefill t/s", "gen", "gen t/s", "kv MiB");
  try {
    bench::run(*session, ids, bo, eos, [&](const bench::BenchRow& r) {
      std::fprintf(out, "%s\n", bench::csv_row(r, backend, card, routes).c_str());
      std::fflush(out);
      std::fprintf(stderr, "%10u %10u %12.2f %8u %10.2f %12.2f\n", r.ctx_tokens, r.prefill_tokens, r.prefill_tps(),
                   r.gen_tokens, r.gen_tps(), static_cast<double>(r.kvcache_bytes) / (1024.0 * 1024.0));
    });
  } catch (...) {
    if (out != stdout) std::fclose(out);
    throw;
  }
  if (out != stdout && std::fclose(out) != 0) fail("cannot write %s", csv_path.c_str());
  if (!plot_script.empty()) {
    const std::string c = "python3 " + shell_quote(plot_script) + " " + shell_quote(csv_path) + " " + shell_quote(o.plot);
    if (std::system(c.c_str()) != 0) fail("--plot: %s failed", plot_script.c_str());
    std::fprintf(stderr, "bench: plot -> %s (data %s)\n", o.plot.c_str(), csv_path.c_str());
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("bench", "ds4-bench: prefill and decode throughput at growing context frontiers");
  cmd->add_option("-m,--model", o->model, "GGUF model file")->required();
  cmd->add_option("--prompt-file", o->prompt_file, "benchmark text, tokenized as plain text");
  cmd->add_option("--chat-prompt-file", o->chat_prompt_file, "benchmark text as one non-thinking chat user turn");
  cmd->add_option("--system", o->system,
                  "system text for --chat-prompt-file; -sys works too (default \"You are a helpful assistant.\")");
  cmd->add_option("--random-tokens", o->random_seed, "SEED: seeded uniform random ids instead of a prompt");
  add_session_options(cmd, o->session);
  cmd->add_option("--ctx-start", o->b.ctx_start, "first frontier (default 2048)");
  cmd->add_option("--ctx-max", o->b.ctx_max, "last frontier (default 32768)");
  cmd->add_option("--ctx-alloc", o->b.ctx_alloc, "session context (default ctx-max + gen-tokens + 1)");
  cmd->add_option("--step-mul", o->b.step_mul, "> 1: next frontier = ceil(frontier x F) (default 1: use --step-incr)");
  cmd->add_option("--step-incr", o->b.step_incr, "frontier increment when --step-mul is 1 (default 2048)");
  cmd->add_option("-n,--gen-tokens,--tokens", o->b.gen_tokens, "greedy decode steps per frontier (default 128)");
  cmd->add_option("--csv", o->csv, "write the CSV here (default: stdout)");
  cmd->add_option("--plot", o->plot, "also plot tok/s vs context to this PNG (python3 + matplotlib)");
  cmd->footer(std::string(kFooter) + "\n\n" + routes_help());
  cmd->callback([o, cmd] { run(*o, cmd); });
}

}  // namespace flashstar::tools
