// flashstar serve: the OpenAI, Anthropic and Responses HTTP APIs over one engine session.
#include <pthread.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>
#include <thread>

#include "commands.h"
#include "common/error.h"
#include "engine/session.h"
#include "server/disk_store.h"
#include "server/engine.h"
#include "server/http_server.h"
#include "text/tokenizer.h"
#include "tool_util.h"

namespace flashstar::tools {

namespace {

struct Opts {
  std::string model, pretok = "ds4";
  uint32_t ctx = 32768;
  int64_t n_predict = 393216;
  SessionCli session;
  server::ServerOptions http;
  size_t max_body_mb = 64;
  size_t tool_memory_max_ids = 100000;
  bool disable_replay = false, test_hooks = false;
  std::string kv_dir;
  uint64_t kv_space_mb = 4096;
  server::DiskPolicyOptions kv;
};

std::mutex g_log_mu;
void log_line(const std::string& s) {
  const std::time_t t = std::time(nullptr);
  char ts[32];
  std::strftime(ts, sizeof ts, "%H:%M:%S", std::localtime(&t));
  std::lock_guard<std::mutex> lk(g_log_mu);
  std::fprintf(stderr, "serve %s: %s\n", ts, s.c_str());
  std::fflush(stderr);
}

void serve(Opts& o) {
  // Signals go to one thread that shuts down in order, so they are blocked before any thread starts
  // (threads inherit the mask). A broken client socket must not kill the process either.
  std::signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  o.session.prepare();
  if (o.ctx < 16) fail("--ctx must be at least 16");
  if (o.n_predict < 1) fail("-n must be >= 1");
  if (o.http.port < 0 || o.http.port > 65535) fail("--port must be between 0 and 65535");
  if (o.max_body_mb < 1) fail("--max-body-mb must be at least 1");
  o.http.max_body_bytes = o.max_body_mb << 20;
  o.http.exact_dsml_replay = !o.disable_replay;
  if (const char* k = std::getenv("FLASHSTAR_API_KEY"); k && o.http.api_key.empty()) o.http.api_key = k;

  auto model = Model::load(o.model);
  const text::Tokenizer tok = load_tokenizer(*model, o.model, o.pretok);
  auto session = make_session(*model, o.session.options(o.ctx), o.session.backend);
  const std::string backend = session->backend_name();

  std::unique_ptr<server::DiskStore> disk;
  if (!o.kv_dir.empty()) disk = server::make_disk_store(*model, tok, o.kv_dir, o.kv_space_mb, o.ctx, o.kv, log_line);
  else if (o.kv.any_set) fail("the --kv-cache-* options need --kv-disk-dir");

  server::EngineOptions eo;
  eo.ctx = o.ctx;
  eo.default_max_tokens = o.n_predict;
  eo.test_hooks = o.test_hooks;
  eo.tool_memory_max_ids = o.tool_memory_max_ids;
  eo.log = log_line;
  server::Engine engine(tok, std::move(session), eo, disk.get());
  server::HttpServer http(engine, o.http);
  const int port = http.bind();
  log_line(strfmt("%s backend, ctx %u, listening on http://%s:%d%s", backend.c_str(), o.ctx, o.http.host.c_str(), port,
                  o.http.api_key.empty() ? "" : " (API key required)"));

  std::thread signals([&] {
    int sig = 0;
    sigwait(&set, &sig);
    log_line("shutting down (a second signal exits at once)");
    std::thread([set]() mutable {
      int s2 = 0;
      sigwait(&set, &s2);
      _exit(130);
    }).detach();
    engine.shutdown();
    http.stop();
  });
  http.run();
  // run() also returns when the listener fails; make sure the signal thread can finish.
  if (signals.joinable()) {
    pthread_kill(signals.native_handle(), SIGTERM);
    signals.join();
  }
  engine.shutdown();
  log_line("stopped");
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("serve", "Serve the OpenAI, Anthropic and Responses HTTP APIs");
  cmd->add_option("-m,--model", o->model, "GGUF model file")->required();
  cmd->add_option("-c,--ctx", o->ctx, "context size in tokens (default 32768)");
  cmd->add_option("-n,--tokens", o->n_predict, "default and maximum output tokens per request (default 393216)");
  add_session_options(cmd, o->session,
                      "prefill chunk size in tokens; a hang-up is noticed between chunks (default 4096)");
  cmd->add_option("--pretokenizer", o->pretok, "ds4 (default) or deepseek-v3");
  cmd->add_option("--host", o->http.host, "address to listen on (default 127.0.0.1; 0.0.0.0 for all)");
  cmd->add_option("--port", o->http.port, "port (default 8000; 0 picks a free one)");
  cmd->add_option("--api-key", o->http.api_key,
                  "require this key as 'Authorization: Bearer KEY' or 'x-api-key: KEY' (also FLASHSTAR_API_KEY)");
  cmd->add_option("--max-body-mb", o->max_body_mb, "largest request body in MiB (default 64)");
  cmd->add_flag("--cors", o->http.cors, "send CORS headers");
  cmd->add_option("--alias", o->http.aliases,
                  "another model name to accept besides deepseek-v4-flash (repeatable; '*' accepts any)");
  cmd->add_option("--keepalive-seconds", o->http.keepalive_seconds, "SSE comment interval while prefilling (default 5)")
      ->check(CLI::Range(1, 3600));
  cmd->add_option("--kv-disk-dir", o->kv_dir, "directory of the disk KV cache (off by default)");
  cmd->add_option("--kv-disk-space-mb", o->kv_space_mb, "disk KV cache budget in MiB (default 4096)");
  add_disk_policy_options(cmd, o->kv);
  cmd->add_flag("--disable-exact-dsml-tool-replay", o->disable_replay, "always render tool-call history canonically");
  cmd->add_option("--tool-memory-max-ids", o->tool_memory_max_ids, "tool-call ids remembered for exact replay (default 100000)");
  cmd->add_flag("--test-hooks", o->test_hooks,
                "tests only: honour a request's \"flashstar_forced_reply\" text in place of sampling");
  cmd->callback([o] { serve(*o); });
}

}  // namespace flashstar::tools
