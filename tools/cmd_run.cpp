// flashstar run: text in, text out. One-shot prompts, an interactive chat, and ds4-compatible debug dumps
// (--dump-tokens, --dump-logprobs, --dump-logits).
#include <editline/readline.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <memory>

#include "commands.h"
#include "common/error.h"
#include "common/file_util.h"
#include "engine/sampling.h"
#include "engine/session.h"
#include "gguf/gguf.h"
#include "text/chat.h"
#include "text/tokenizer.h"
#include "text/utf8.h"
#include "tool_util.h"

namespace flashstar::tools {

namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted.store(true); }

// SIGINT stops the current generation only while one runs; at the chat prompt it ends the program.
class InterruptScope {
 public:
  InterruptScope() {
    g_interrupted.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_);
  }
  ~InterruptScope() { sigaction(SIGINT, &old_, nullptr); }

 private:
  struct sigaction old_ {};
};

struct Opts {
  std::string model, prompt, prompt_file, system = text::kDefaultSystem, pretok = "ds4";
  std::string dump_logprobs, dump_logits;
  std::vector<std::string> stops;
  bool have_prompt = false, have_system = false, chat = false, dump_tokens = false, raw = false;
  bool nothink = false, think = false, think_max = false;
  int n_predict = 512, top_k = 0, logprobs_top_k = 20;
  float temp = 1.0f, top_p = 1.0f, min_p = 0.05f;
  uint64_t seed = 0;
  uint32_t ctx = 32768;
  SessionCli session;
};

// JSON string for token text: valid UTF-8 raw, invalid bytes as \u00XX (the "bytes" array is authoritative).
std::string json_text(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const size_t n = text::utf8_seq_len(s, i);
    const uint8_t c = static_cast<uint8_t>(s[i]);
    if (n > 1) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c >= 0x7F) {
      out += strfmt("\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
    ++i;
  }
  return out + "\"";
}

std::string token_json(const text::Tokenizer& tok, int32_t id) {
  const std::string& b = tok.token_bytes(id);
  std::string out = strfmt("{\"id\":%d,\"text\":", id) + json_text(b) + ",\"bytes\":[";
  for (size_t i = 0; i < b.size(); ++i) out += strfmt(i ? ",%u" : "%u", static_cast<uint8_t>(b[i]));
  return out + "]}";
}

text::ThinkMode think_mode(const Opts& o) {
  if (o.nothink + o.think + o.think_max > 1) fail("choose one of --nothink, --think, --think-max");
  if (o.nothink) return text::ThinkMode::None;
  if (o.think_max) return text::ThinkMode::Max;
  return text::ThinkMode::High;
}

std::string load_prompt(const Opts& o) {
  std::string p;
  if (!o.prompt_file.empty()) {
    if (o.have_prompt) fail("use either -p or --prompt-file, not both");
    p = read_file(o.prompt_file);
  } else {
    p = o.prompt;
  }
  size_t bad = 0;
  if (!text::utf8_valid(p, &bad)) fail("the prompt is not valid UTF-8 (first bad byte at offset %zu)", bad);
  return p;
}

// ds4's CLI: a prompt that already starts with the BOS string is a fully rendered transcript and is
// tokenized special-aware; anything else is wrapped in the chat template with plain-tokenized text.
std::vector<int32_t> build_prompt(const Opts& o, const text::Tokenizer& tok, const std::string& prompt,
                                  text::ThinkMode mode) {
  if (o.raw) return tok.encode(prompt);
  if (prompt.rfind(text::kBos, 0) == 0) return tok.encode_rendered(prompt);
  return text::encode_cli_prompt(tok, o.system, prompt, mode);
}

void progress(size_t done, size_t total) {
  const int width = 40;
  const int fill = total ? static_cast<int>(width * done / total) : width;
  std::fprintf(stderr, "\rprefill [%.*s%*s] %zu/%zu", fill, "########################################", width - fill,
               "", done, total);
  if (done == total) std::fprintf(stderr, "\r%*s\r", width + 40, "");
  std::fflush(stderr);
}

// Feeds tokens, in steps large enough to keep throughput and small enough to show progress on long prompts.
void prefill(Session& s, const std::vector<int32_t>& toks, size_t from) {
  const size_t n = toks.size() - from;
  const bool bar = n >= 512 && isatty(STDERR_FILENO);
  const size_t step = bar ? std::max<size_t>(256, n / 40) : n;
  for (size_t done = 0; done < n;) {
    const size_t k = std::min(step, n - done);
    s.eval(std::span<const int32_t>(toks.data() + from + done, k), nullptr);
    done += k;
    if (bar) progress(done, n);
  }
}

struct GenResult {
  size_t n_tokens = 0;
  double seconds = 0;
  bool eos = false;
};

// Generates until EOS, -n, the context end, a stop string, a closed DSML tool block, or Ctrl-C.
GenResult generate(const Opts& o, Session& s, const text::Tokenizer& tok, Sampler& sampler, bool thinking,
                   std::vector<int32_t>* out_ids) {
  GenResult r;
  Stopwatch sw;
  StopMatcher stops(o.stops);
  text::Utf8Stream stream;
  std::string generated, shown;
  const bool color = isatty(STDOUT_FILENO);
  bool in_think = thinking;
  if (in_think && color) std::fputs("\x1b[90m", stdout);
  size_t printed = 0;  // bytes of `generated` already written (stop-string hold-back)
  size_t dsml_from = 0;                   // DSML counts only after the reasoning
  size_t block_at = std::string::npos;    // where a tool_calls block starts, once seen
  InterruptScope scope;
  for (int i = 0; i < o.n_predict && !g_interrupted.load(); ++i) {
    if (s.tokens().size() >= s.options().ctx) break;
    const std::vector<float>& logits = s.last_logits();
    // Inside DSML, tags and JSON punctuation are sampled greedily; string payloads keep the settings.
    const bool greedy = !in_think && block_at != std::string::npos &&
                        text::dsml_greedy(text::dsml_state(std::string_view(generated).substr(block_at)));
    const int32_t id = sampler.sample(logits, greedy);
    if (id == tok.special().eos) {
      r.eos = true;
      break;
    }
    if (out_ids) out_ids->push_back(id);
    ++r.n_tokens;
    if (id == tok.special().think_close && in_think) {
      in_think = false;
      if (color) std::fputs("\x1b[0m", stdout);
      std::string tail = stream.flush();
      std::fwrite(tail.data(), 1, tail.size(), stdout);
      std::fputs(color ? "\n" : "\n</think>\n", stdout);
      dsml_from = generated.size() + tok.token_bytes(id).size();
      generated += tok.token_bytes(id);
      printed = generated.size();
    } else {
      const size_t bytes_before = generated.size();
      generated += tok.token_bytes(id);
      const size_t stop_at = stops.find(generated);
      const size_t limit = stop_at != std::string::npos ? stop_at : generated.size() - stops.partial_suffix(generated);
      if (limit > printed) {
        std::string piece = stream.push(std::string_view(generated).substr(printed, limit - printed));
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        printed = limit;
      }
      if (stop_at != std::string::npos) break;
      if (!in_think && block_at == std::string::npos) {
        // Only the newly added bytes (plus a marker's length) need scanning, which keeps long replies linear.
        const size_t from = std::max(dsml_from, bytes_before >= 32 ? bytes_before - 32 : size_t{0});
        const size_t hit = generated.find("tool_calls>", from);
        if (hit != std::string::npos) block_at = std::max(dsml_from, hit >= 16 ? hit - 16 : 0);
      }
      if (block_at != std::string::npos && text::dsml_block_closed(std::string_view(generated).substr(block_at))) break;
    }
    std::fflush(stdout);
    if (s.tokens().size() + 1 > s.options().ctx) break;
    s.decode(id);
  }
  std::string tail = stream.flush();
  std::fwrite(tail.data(), 1, tail.size(), stdout);
  if (in_think && color) std::fputs("\x1b[0m", stdout);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  if (g_interrupted.load()) std::fprintf(stderr, "[interrupted]\n");
  r.seconds = sw.seconds();
  return r;
}

void dump_tokens(const Opts& o) {
  auto file = gguf::File::open(o.model);
  const text::Tokenizer tok = text::Tokenizer::from_gguf(*file, text::parse_pretokenizer(o.pretok));
  const std::string prompt = load_prompt(o);
  const std::vector<int32_t> ids = tok.encode_rendered(prompt);
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += strfmt(i ? ", %d" : "%d", ids[i]);
  out += "]\n";
  for (int32_t id : ids) out += strfmt("%6d  ", id) + tok.token_text(id) + "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
}

void check_prompt(const std::vector<int32_t>& ids, uint32_t ctx) {
  if (ids.empty()) fail("the prompt is empty");
  if (ids.size() >= ctx)
    fail("the prompt has %zu tokens but the context holds %u (raise --ctx)", ids.size(), ctx);
}

void dump_logits(const Opts& o, Session& s, const text::Tokenizer& tok, const std::vector<int32_t>& ids) {
  (void)tok;
  const std::vector<float>& l = s.last_logits();
  std::string out = "{\"model\":" + json_text(o.model) + ",\"backend\":" + json_text(s.backend_name()) +
                    strfmt(",\"prompt_tokens\":%zu,\"ctx\":%u,\"vocab\":%zu,\"argmax\":%d,\"logits\":[", ids.size(),
                           s.options().ctx, l.size(), argmax(l));
  // JSON has no NaN or infinity: non-finite logits are written as null, as ds4 does.
  for (size_t i = 0; i < l.size(); ++i) {
    if (i) out += ',';
    out += std::isfinite(l[i]) ? strfmt("%.9g", static_cast<double>(l[i])) : std::string("null");
  }
  out += "]}\n";
  write_file_atomic(o.dump_logits, out);
  std::fprintf(stderr, "run: logits of %zu prompt tokens -> %s\n", ids.size(), o.dump_logits.c_str());
}

void dump_logprobs(const Opts& o, Session& s, const text::Tokenizer& tok, const std::vector<int32_t>& ids) {
  const int k = o.logprobs_top_k;
  if (k < 1 || k > 128) fail("--logprobs-top-k must be between 1 and 128");
  std::string out = strfmt("{\"source\":\"flashstar\",\"prompt_tokens\":%zu,\"ctx\":%u,\"top_k\":%d,\"steps\":[",
                           ids.size(), s.options().ctx, k);
  std::vector<float> lp;
  for (int step = 0; step < o.n_predict && s.tokens().size() < s.options().ctx; ++step) {
    const std::vector<float>& l = s.last_logits();
    log_softmax(l, lp);
    std::vector<int32_t> order(l.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
    const size_t kk = std::min<size_t>(k, order.size());
    std::partial_sort(order.begin(), order.begin() + kk, order.end(), [&](int32_t a, int32_t b) {
      return l[a] != l[b] ? l[a] > l[b] : a < b;
    });
    const int32_t sel = order[0];
    out += strfmt(step ? ",{\"step\":%d,\"selected\":" : "{\"step\":%d,\"selected\":", step) + token_json(tok, sel) +
           ",\"top_logprobs\":[";
    for (size_t j = 0; j < kk; ++j)
      out += (j ? ",{\"token\":" : "{\"token\":") + token_json(tok, order[j]) +
             strfmt(",\"logit\":%.9g,\"logprob\":%.9g}", static_cast<double>(l[order[j]]),
                    static_cast<double>(lp[order[j]]));
    out += "]}";
    if (sel == tok.special().eos || s.tokens().size() + 1 >= s.options().ctx) break;
    s.decode(sel);
  }
  out += "]}\n";
  write_file_atomic(o.dump_logprobs, out);
  std::fprintf(stderr, "run: logprobs -> %s\n", o.dump_logprobs.c_str());
}

void report(size_t n_prompt, double t_prompt, const GenResult& g) {
  std::fprintf(stderr, "prefill: %zu tokens in %.2f s (%.1f tok/s); generation: %zu tokens in %.2f s (%.1f tok/s)\n",
               n_prompt, t_prompt, n_prompt / std::max(t_prompt, 1e-9), g.n_tokens, g.seconds,
               g.n_tokens / std::max(g.seconds, 1e-9));
}

void chat_loop(const Opts& o, Session& s, const text::Tokenizer& tok, Sampler& sampler, text::ThinkMode mode) {
  std::vector<int32_t> transcript{tok.special().bos};
  if (mode == text::ThinkMode::Max) tok.encode_append(text::kThinkMaxPrefix, transcript);
  tok.encode_append(o.system, transcript);
  std::fprintf(stderr, "chat: type a message; Ctrl-C stops a reply, Ctrl-D or /quit leaves, /reset clears.\n");
  for (;;) {
    char* line = readline("> ");
    if (!line) break;
    std::string text(line);
    std::free(line);
    if (text.empty()) continue;
    add_history(text.c_str());
    if (text == "/quit" || text == "/exit") break;
    if (text == "/reset") {
      s.reset();
      transcript.resize(1);
      if (mode == text::ThinkMode::Max) tok.encode_append(text::kThinkMaxPrefix, transcript);
      tok.encode_append(o.system, transcript);
      continue;
    }
    size_t bad = 0;
    if (!text::utf8_valid(text, &bad)) {
      std::fprintf(stderr, "flashstar: that line is not valid UTF-8\n");
      continue;
    }
    std::vector<int32_t> next = transcript;
    text::append_cli_user_turn(tok, text, mode, next);
    if (next.size() + 1 >= s.options().ctx) {
      std::fprintf(stderr, "flashstar: the conversation no longer fits the context (%u tokens); /reset\n",
                   s.options().ctx);
      continue;
    }
    const size_t have = s.tokens().size();
    Stopwatch sw;
    prefill(s, next, have);
    const double tp = sw.seconds();
    std::vector<int32_t> reply;
    const GenResult g = generate(o, s, tok, sampler, mode != text::ThinkMode::None, &reply);
    report(next.size() - have, tp, g);
    next.insert(next.end(), reply.begin(), reply.end());
    // ds4's REPL keeps the reasoning in history and closes every turn with EOS, even a cut-off one.
    next.push_back(tok.special().eos);
    transcript = next;
    if (s.tokens().size() < transcript.size() && transcript.size() < s.options().ctx) prefill(s, transcript, s.tokens().size());
  }
}

void run(const Opts& o) {
  if (o.dump_tokens) {
    if (!o.have_prompt && o.prompt_file.empty()) fail("--dump-tokens needs -p or --prompt-file");
    dump_tokens(o);
    return;
  }
  o.session.prepare();
  if (!o.chat && !o.have_prompt && o.prompt_file.empty()) fail("give a prompt with -p or --prompt-file, or use --chat");
  if (o.chat && (o.have_prompt || !o.prompt_file.empty())) fail("--chat takes no -p or --prompt-file");
  if (o.n_predict < 0) fail("-n must be >= 0");
  if (o.ctx < 2) fail("--ctx must be at least 2");
  const text::ThinkMode asked = think_mode(o);
  const text::ThinkMode mode = text::effective_think_mode(asked, o.ctx);
  if (asked != mode)
    std::fprintf(stderr, "run: --think-max needs --ctx >= %u; using --think\n", text::kThinkMaxMinContext);
  std::string prompt;
  if (!o.chat) prompt = load_prompt(o);
  if (!o.chat && prompt.empty()) fail("the prompt is empty");

  auto model = Model::load(o.model);
  const text::Tokenizer tok = load_tokenizer(*model, o.model, o.pretok);
  auto session = make_session(*model, o.session.options(o.ctx), o.session.backend);
  SamplingParams sp;
  sp.temperature = o.temp;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  sp.min_p = o.min_p;
  sp.seed = o.seed;
  Sampler sampler(sp);

  if (o.chat) {
    chat_loop(o, *session, tok, sampler, mode);
    return;
  }
  const std::vector<int32_t> ids = build_prompt(o, tok, prompt, mode);
  check_prompt(ids, o.ctx);
  Stopwatch sw;
  prefill(*session, ids, 0);
  const double tp = sw.seconds();
  if (!o.dump_logits.empty()) dump_logits(o, *session, tok, ids);
  if (!o.dump_logprobs.empty()) dump_logprobs(o, *session, tok, ids);
  if (!o.dump_logits.empty() || !o.dump_logprobs.empty()) return;
  const bool thinking = !o.raw && mode != text::ThinkMode::None && prompt.rfind(text::kBos, 0) != 0;
  const GenResult g = generate(o, *session, tok, sampler, thinking, nullptr);
  report(ids.size(), tp, g);
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("run", "Generate text from a prompt, chat, or dump tokens/logits/logprobs");
  cmd->add_option("-m,--model", o->model, "GGUF model file")->required();
  cmd->add_option("-p,--prompt", o->prompt, "prompt text (wrapped in the DS4 chat template)");
  cmd->add_option("--prompt-file", o->prompt_file, "read the prompt from a file");
  cmd->add_flag("--chat", o->chat, "interactive chat with history and line editing");
  cmd->add_option("-n,--tokens", o->n_predict, "maximum tokens to generate (default 512)");
  cmd->add_option("--temp", o->temp, "temperature; 0 = greedy (default 1)");
  cmd->add_option("--top-p", o->top_p, "nucleus sampling threshold (default 1 = off)");
  cmd->add_option("--top-k", o->top_k, "keep the k most likely tokens (default 0 = off)");
  cmd->add_option("--min-p", o->min_p, "drop tokens below min-p x the top probability (default 0.05)");
  cmd->add_option("--seed", o->seed, "random seed (default: from the clock)");
  cmd->add_option("--stop", o->stops, "stop when this text is generated (repeatable)");
  cmd->add_option("-s,--system", o->system, "system text (default \"You are a helpful assistant\")");
  cmd->add_flag("--nothink", o->nothink, "non-thinking mode");
  cmd->add_flag("--think", o->think, "thinking mode (default)");
  cmd->add_flag("--think-max", o->think_max, "Think Max (needs --ctx >= 393216)");
  cmd->add_flag("--raw", o->raw, "no chat template: tokenize the prompt as plain text");
  cmd->add_option("-c,--ctx", o->ctx, "context size in tokens (default 32768)");
  add_session_options(cmd, o->session);
  cmd->add_flag("--dump-tokens", o->dump_tokens,
                "print the prompt's ids (special strings recognised) as a JSON array, then exit");
  cmd->add_option("--pretokenizer", o->pretok, "ds4 (default, matches ds4) or deepseek-v3 (the HF regexes)");
  cmd->add_option("--dump-logprobs", o->dump_logprobs, "greedy-decode and write top-k logprobs per step (JSON)");
  cmd->add_option("--logprobs-top-k", o->logprobs_top_k, "alternatives per step for --dump-logprobs (default 20)");
  cmd->add_option("--dump-logits", o->dump_logits, "write the next-token logits after the prompt (JSON)");
  cmd->callback([o, cmd] {
    o->have_prompt = cmd->count("--prompt") > 0;
    run(*o);
  });
}

}  // namespace flashstar::tools
