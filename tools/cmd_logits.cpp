// flashstar logits: float32 rows [T][vocab], row t = logits after tokens[0..t].
#include <nlohmann/json.hpp>

#include <cstdio>

#include "commands.h"
#include "common/error.h"
#include "common/file_util.h"
#include "engine/session.h"
#include "tool_util.h"

namespace flashstar::tools {

void add_logits_command(CLI::App& app) {
  struct Opts {
    std::string model, tokens, out, ties, numerics = "official";
    uint32_t ctx = 0;
    int64_t decode_from = -1;
    bool last_only = false;
    SessionCli session;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("logits", "Write next-token logits for every position of a token list");
  cmd->add_option("-m,--model", o->model, "GGUF model file")->required();
  cmd->add_option("--tokens", o->tokens, "JSON file: {\"tokens\": [...]} or a plain array")->required();
  cmd->add_option("-o,--output", o->out, "output: float32 little-endian [T][vocab]")->required();
  add_session_options(cmd, o->session, "prefill chunk size (results do not depend on it)");
  cmd->add_option("--decode-from", o->decode_from, "prefill this many tokens, then decode one token at a time")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--numerics", o->numerics, "official (FP8 KV, FP4 indexer, f16 cache rows) or clean")
      ->check(CLI::IsMember({"official", "clean"}));
  cmd->add_option("--ctx", o->ctx, "context size (default: enough for the tokens)");
  cmd->add_flag("--last-only", o->last_only, "write only the final row (long prompts: no [T][vocab] buffer)");
  cmd->add_option("--ties", o->ties,
                  "write a JSON list of near-ties: indexer top-k and MoE routing boundaries within 1e-4 relative, "
                  "roundings of cached rows within 1e-5 of the magnitude sharing their scale");
  cmd->callback([o] {
    o->session.prepare();
    const std::vector<int32_t> toks = read_tokens_json(o->tokens);
    if (toks.empty()) fail("%s: no tokens", o->tokens.c_str());
    auto model = Model::load(o->model);
    SessionOptions so = o->session.options(o->ctx ? o->ctx : static_cast<uint32_t>(toks.size() + 1));
    so.numerics = o->numerics == "clean" ? Numerics::Clean : Numerics::Official;
    TieLog ties;
    if (!o->ties.empty()) so.ties = &ties;
    auto session = make_session(*model, so, o->session.backend);
    const size_t V = model->config().n_vocab, T = toks.size();
    std::vector<float> rows(o->last_only ? 0 : T * V);
    float* out = o->last_only ? nullptr : rows.data();
    const size_t P = o->decode_from < 0 ? T : std::min<size_t>(T, static_cast<size_t>(o->decode_from));
    Stopwatch sw;
    if (P > 0) session->eval(std::span<const int32_t>(toks.data(), P), out);
    const double prefill_secs = sw.seconds();
    for (size_t t = P; t < T; ++t)
      session->eval(std::span<const int32_t>(toks.data() + t, 1), out ? out + t * V : nullptr);
    if (o->last_only) rows = session->last_logits();
    const double secs = sw.seconds();
    if (!o->ties.empty()) {
      nlohmann::json j = nlohmann::json::array();
      for (const NearTie& t : ties.sorted())
        j.push_back({{"pos", t.pos}, {"layer", t.layer}, {"kind", t.kind}, {"last_in", t.last_in}, {"first_out", t.first_out}, {"index", t.index}, {"scale", t.scale}});
      write_file_atomic(o->ties, j.dump(1) + "\n");
    }
    write_file_atomic(o->out, std::string_view(reinterpret_cast<const char*>(rows.data()), rows.size() * sizeof(float)));
    std::fprintf(stderr,
                 "logits: %zu tokens in %.2f s: prefill %zu at %.1f tok/s, decode %zu at %.2f tok/s; backend %s -> %s\n",
                 T, secs, P, P / std::max(prefill_secs, 1e-9), T - P, (T - P) / std::max(secs - prefill_secs, 1e-9),
                 session->backend_name(), o->out.c_str());
  });
}

}  // namespace flashstar::tools
