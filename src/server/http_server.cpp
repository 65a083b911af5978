#include "server/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <httplib.h>

#include <cstdlib>
#include <ctime>

#include "common/error.h"
#include "server/requests.h"

namespace flashstar::server {

namespace {

// Depth of [ and { outside strings exceeds `limit`.
bool nesting_exceeds(std::string_view body, int limit) {
  int depth = 0;
  bool in_str = false, esc = false;
  for (char c : body) {
    if (in_str) {
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

using Clock = std::chrono::steady_clock;

std::string openai_error_body(const ApiError& e) {
  ojson err{{"message", e.what()}, {"type", e.status == 401 ? "authentication_error" : "invalid_request_error"}};
  err["param"] = e.param.empty() ? ojson(nullptr) : ojson(e.param);
  err["code"] = e.code.empty() ? ojson(nullptr) : ojson(e.code);
  for (auto it = e.extra.begin(); it != e.extra.end(); ++it) err[it.key()] = it.value();
  return dump(ojson{{"error", err}});
}

}  // namespace

std::string error_type_for(int status, Dialect d) {
  if (d != Dialect::Anthropic) return status == 401 ? "authentication_error" : "invalid_request_error";
  switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

std::string error_body(Dialect d, const ApiError& e) {
  if (d != Dialect::Anthropic) return openai_error_body(e);
  ojson err{{"type", error_type_for(e.status, d)}, {"message", e.what()}};
  for (auto it = e.extra.begin(); it != e.extra.end(); ++it) err[it.key()] = it.value();
  return dump(ojson{{"type", "error"}, {"error", err}});
}

namespace {

Dialect dialect_of_path(const std::string& path) {
  return path.find("/messages") != std::string::npos ? Dialect::Anthropic : Dialect::Chat;
}

// httplib does not hand the socket to handlers; the connection is found by its address pair instead,
// so the worker can notice a hang-up while it prefills and nothing is being written.
int find_client_fd(const httplib::Request& req) {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (!end || *end || fd < 0) continue;
    struct stat st {};
    if (::fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage peer{}, local{};
    socklen_t pl = sizeof(peer), ll = sizeof(local);
    if (::getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (::getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    char addr[INET6_ADDRSTRLEN] = {0};
    int pport = -1, lport = -1;
    if (peer.ss_family == AF_INET) {
      auto* p = reinterpret_cast<sockaddr_in*>(&peer);
      ::inet_ntop(AF_INET, &p->sin_addr, addr, sizeof(addr));
      pport = ntohs(p->sin_port);
      lport = ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
    } else if (peer.ss_family == AF_INET6) {
      auto* p = reinterpret_cast<sockaddr_in6*>(&peer);
      ::inet_ntop(AF_INET6, &p->sin6_addr, addr, sizeof(addr));
      pport = ntohs(p->sin6_port);
      lport = ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port);
    } else {
      continue;
    }
    if (pport == req.remote_port && lport == req.local_port && req.remote_addr == addr) {
      found = static_cast<int>(fd);
      break;
    }
  }
  ::closedir(d);
  return found;
}

bool key_equal(const std::string& a, const std::string& b) {
  // Constant time in the key's length, so response timing does not reveal a matching prefix.
  unsigned diff = a.size() != b.size();
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(i < b.size() ? b[i] : 0);
  return diff == 0;
}

std::string render_prompt(const GenRequest& g, text::ThinkMode mode) {
  if (g.dialect != Dialect::Completions) return text::render_chat(g.messages, g.tools_active ? g.tool_schemas : std::vector<std::string>{}, mode);
  std::string s = text::kBos;
  if (mode == text::ThinkMode::Max) s += text::kThinkMaxPrefix;
  s += "You are a helpful assistant";
  s += text::kUser;
  s += g.prompt;
  s += text::kAssistant;
  s += mode != text::ThinkMode::None ? text::kThinkOpen : text::kThinkClose;
  return s;
}

}  // namespace

struct HttpServer::Impl {
  Engine& engine;
  ServerOptions opts;
  httplib::Server svr;
  std::atomic<uint64_t> seq{0};
  std::mutex ep_mu;
  std::map<std::string, uint64_t> endpoint_counts;

  Impl(Engine& e, ServerOptions o) : engine(e), opts(std::move(o)) {}

  void send_error(httplib::Response& res, Dialect d, const ApiError& e) {
    res.status = e.status;
    res.set_content(error_body(d, e), "application/json");
  }

  void check_model(const GenRequest& g) {
    if (g.model.empty() || g.model == opts.model_id || g.model == "deepseek-chat" || g.model == "deepseek-reasoner") return;
    for (const auto& a : opts.aliases)
      if (a == "*" || a == g.model) return;
    throw ApiError(404, "The model '" + g.model + "' does not exist", "model_not_found", "model");
  }

  ojson model_object() const {
    const int64_t ctx = engine.ctx();
    return ojson{{"id", opts.model_id},
                 {"object", "model"},
                 {"created", 1767225600},
                 {"owned_by", "flashstar"},
                 {"name", "DeepSeek V4 Flash"},
                 {"context_length", ctx},
                 {"top_provider", {{"context_length", ctx}, {"max_completion_tokens", ctx}, {"is_moderated", false}}},
                 {"supported_parameters",
                  {"tools", "tool_choice", "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed",
                   "stream", "reasoning_effort", "logprobs", "top_logprobs"}}};
  }

  // Parses, renders and tokenizes a request body; throws ApiError for anything the client got wrong.
  std::shared_ptr<Job> prepare(const httplib::Request& req, Dialect d, bool count_only) {
    // Serializing a value recurses once per level: refuse deep nesting before anything is parsed.
    if (nesting_exceeds(req.body, 256)) throw ApiError(400, "JSON nested deeper than 256 levels");
    ojson body = ojson::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) throw ApiError(400, "invalid JSON request");
    auto job = std::make_shared<Job>();
    GenRequest& g = job->req;
    switch (d) {
      case Dialect::Chat: g = parse_chat_request(body, req.body); break;
      case Dialect::Completions: g = parse_completions_request(body); break;
      case Dialect::Anthropic: g = parse_anthropic_request(body, req.body); break;
      case Dialect::Responses: g = parse_responses_request(body, req.body); break;
    }
    check_model(g);
    if (g.model.empty()) g.model = opts.model_id;
    if (opts.exact_dsml_replay && d != Dialect::Completions) {
      std::vector<std::string> unknown;
      engine.tool_memory().apply(g.messages, &unknown);
      if (!unknown.empty() && engine.disk()) {
        auto found = engine.disk()->find_tool_ids(unknown);
        for (const auto& [id, dsml] : found) engine.tool_memory().remember({id}, dsml);
        if (!found.empty()) engine.tool_memory().apply(g.messages);
      }
    }
    g.think = text::effective_think_mode(g.think, engine.ctx());
    job->rendered = render_prompt(g, g.think);
    job->ids = engine.tokenizer().encode_rendered(job->rendered);
    if (!count_only && job->ids.size() >= engine.ctx()) {
      const char* param = d == Dialect::Completions ? "prompt" : d == Dialect::Responses ? "input" : "messages";
      throw ApiError(400,
                     "Prompt has " + std::to_string(job->ids.size()) + " tokens, but the configured context size is " +
                         std::to_string(engine.ctx()) + " tokens",
                     d == Dialect::Anthropic ? "" : "context_length_exceeded", d == Dialect::Anthropic ? "" : param,
                     json{{"n_prompt_tokens", job->ids.size()}, {"n_ctx", engine.ctx()}});
    }
    const uint64_t n = ++seq;
    job->meta.created = static_cast<int64_t>(std::time(nullptr));
    switch (d) {
      case Dialect::Chat:
      case Dialect::Anthropic: job->meta.id = "chatcmpl-" + std::to_string(n); break;
      case Dialect::Completions: job->meta.id = "cmpl-" + std::to_string(n); break;
      case Dialect::Responses: job->meta.id = "resp_" + random_hex(24); break;
    }
    return job;
  }

  static void cancel(Job& job) {
    job.cancelled = true;
    job.fd = -1;
  }

  void generate(const httplib::Request& req, httplib::Response& res, Dialect d) {
    std::shared_ptr<Job> job = prepare(req, d, false);
    job->fd = find_client_fd(req);
    if (job->req.stream) {
      Job* raw = job.get();
      job->sink = make_stream_formatter(job->req, job->meta, [raw](std::string s) {
        raw->out += s;  // the worker holds raw->mu
        raw->cv.notify_all();
      });
    }
    engine.submit(job);
    if (job->req.stream) return stream(res, job);
    for (;;) {
      std::unique_lock<std::mutex> lk(job->mu);
      if (job->cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return job->done; })) break;
      lk.unlock();
      if (peer_gone(job->fd)) {
        cancel(*job);
        res.status = 499;
        return;
      }
    }
    job->fd = -1;
    const Outcome& o = job->outcome;
    if (job->failed_early)
      throw ApiError(o.error == "server shutting down" ? 503 : 500, o.error.empty() ? "generation failed" : o.error);
    std::string body;
    switch (d) {
      case Dialect::Chat: body = chat_response(job->req, o, job->meta); break;
      case Dialect::Completions: body = completion_response(job->req, o, job->meta); break;
      case Dialect::Anthropic: body = anthropic_response(job->req, o, job->meta); break;
      case Dialect::Responses: body = responses_response(job->req, o, job->meta); break;
    }
    res.set_content(body, "application/json");
  }

  void stream(httplib::Response& res, const std::shared_ptr<Job>& job) {
    res.set_header("Cache-Control", "no-cache");
    const auto keepalive = std::chrono::seconds(opts.keepalive_seconds);
    auto last_write = Clock::now();
    res.set_chunked_content_provider(
        "text/event-stream",
        [job, keepalive, last_write](size_t, httplib::DataSink& sink) mutable -> bool {
          std::string chunk;
          bool done;
          {
            std::unique_lock<std::mutex> lk(job->mu);
            job->cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return !job->out.empty() || job->done; });
            chunk.swap(job->out);
            done = job->done;
          }
          const auto now = Clock::now();
          // A comment line keeps proxies and clients from timing out while a long prompt is prefilled.
          if (chunk.empty() && !done && now - last_write >= keepalive) chunk = ": prefill\n\n";
          if (!chunk.empty()) {
            if (!sink.write(chunk.data(), chunk.size())) {
              cancel(*job);
              return false;
            }
            last_write = now;
          }
          if (done) {
            sink.done();
            return true;
          }
          if (peer_gone(job->fd)) {
            cancel(*job);
            return false;
          }
          return true;
        },
        [job](bool success) {
          if (!success) job->cancelled = true;
          job->fd = -1;
        });
  }

  void count_tokens(const httplib::Request& req, httplib::Response& res) {
    std::shared_ptr<Job> job = prepare(req, Dialect::Anthropic, true);
    res.set_content(dump(ojson{{"input_tokens", job->ids.size()}}), "application/json");
  }

  std::string metrics_text() {
    Metrics& m = engine.metrics();
    std::string s;
    auto metric = [&](const char* name, const char* type, const char* help, double v) {
      s += prom_metric(name, type, help, v);
    };
    metric("flashstar_requests_total", "counter", "Generation requests accepted into the queue.", m.requests.load());
    metric("flashstar_requests_completed_total", "counter", "Generations that finished normally.", m.completed.load());
    metric("flashstar_requests_cancelled_total", "counter", "Generations stopped because the client left.", m.cancelled.load());
    metric("flashstar_requests_failed_total", "counter", "Generations that failed.", m.failed.load());
    metric("flashstar_requests_rejected_total", "counter", "Requests refused while shutting down.", m.rejected.load());
    metric("flashstar_queue_depth", "gauge", "Requests waiting for the engine.", static_cast<double>(engine.queue_depth()));
    metric("flashstar_busy", "gauge", "1 while the engine runs a request.", m.busy.load());
    metric("flashstar_prompt_tokens_total", "counter", "Effective prompt tokens of all requests.", m.prompt_tokens.load());
    metric("flashstar_prefill_tokens_total", "counter", "Prompt tokens actually evaluated.", m.prefill_tokens.load());
    metric("flashstar_cached_prompt_tokens_total", "counter", "Prompt tokens reused from a cache.", m.cached_tokens.load());
    metric("flashstar_completion_tokens_total", "counter", "Generated tokens.", m.completion_tokens.load());
    metric("flashstar_prefill_seconds_total", "counter", "Time spent in prefill.", m.prefill_us.load() / 1e6);
    metric("flashstar_decode_seconds_total", "counter", "Time spent generating.", m.decode_us.load() / 1e6);
    metric("flashstar_prefill_tokens_per_second", "gauge", "Prefill speed of the last request.", m.last_prefill_tps.load());
    metric("flashstar_decode_tokens_per_second", "gauge", "Generation speed of the last request.", m.last_decode_tps.load());
    s += "# HELP flashstar_cache_hits_total Requests that reused a prefix, by source.\n"
         "# TYPE flashstar_cache_hits_total counter\n";
    s += prom_sample("flashstar_cache_hits_total{source=\"memory-token\"}", m.hits_memory_token.load());
    s += prom_sample("flashstar_cache_hits_total{source=\"memory-text\"}", m.hits_memory_text.load());
    s += prom_sample("flashstar_cache_hits_total{source=\"disk\"}", m.hits_disk.load());
    metric("flashstar_cache_misses_total", "counter", "Requests that reused nothing.", m.misses.load());
    metric("flashstar_tool_memory_ids", "gauge", "Tool-call ids with a remembered DSML block.",
           static_cast<double>(engine.tool_memory().size()));
    {
      std::lock_guard<std::mutex> lk(ep_mu);
      s += "# HELP flashstar_http_requests_total HTTP requests by endpoint.\n# TYPE flashstar_http_requests_total counter\n";
      for (const auto& [ep, n] : endpoint_counts)
        s += prom_sample("flashstar_http_requests_total{endpoint=\"" + ep + "\"}", static_cast<double>(n));
    }
    if (engine.disk()) s += engine.disk()->metrics();
    return s;
  }

  void count(const std::string& ep) {
    std::lock_guard<std::mutex> lk(ep_mu);
    ++endpoint_counts[ep];
  }

  void routes() {
    // `ep` names the route in /metrics (never the raw path, which the client chooses).
    auto wrap = [this](const std::string& ep, Dialect d, std::function<void(const httplib::Request&, httplib::Response&)> fn) {
      return [this, ep, d, fn](const httplib::Request& req, httplib::Response& res) {
        count(ep);
        try {
          fn(req, res);
        } catch (const ApiError& e) {
          send_error(res, d, e);
        } catch (const std::exception& e) {
          send_error(res, d, ApiError(500, e.what()));
        }
      };
    };
    for (const std::string prefix : {"/v1", ""}) {
      svr.Post(prefix + "/chat/completions", wrap("/v1/chat/completions", Dialect::Chat, [this](auto& q, auto& s) { generate(q, s, Dialect::Chat); }));
      svr.Post(prefix + "/completions", wrap("/v1/completions", Dialect::Chat, [this](auto& q, auto& s) { generate(q, s, Dialect::Completions); }));
      svr.Post(prefix + "/messages", wrap("/v1/messages", Dialect::Anthropic, [this](auto& q, auto& s) { generate(q, s, Dialect::Anthropic); }));
      svr.Post(prefix + "/messages/count_tokens", wrap("/v1/messages/count_tokens", Dialect::Anthropic, [this](auto& q, auto& s) { count_tokens(q, s); }));
      svr.Post(prefix + "/responses", wrap("/v1/responses", Dialect::Chat, [this](auto& q, auto& s) { generate(q, s, Dialect::Responses); }));
      svr.Get(prefix + "/models", wrap("/v1/models", Dialect::Chat, [this](auto&, auto& s) {
        s.set_content(dump(ojson{{"object", "list"}, {"data", ojson::array({model_object()})}}), "application/json");
      }));
      svr.Get(prefix + "/models/(.+)", wrap("/v1/models/{id}", Dialect::Chat, [this](auto& q, auto& s) {
        const std::string id = q.matches[1];
        if (id != opts.model_id) throw ApiError(404, "The model '" + id + "' does not exist", "model_not_found", "model");
        s.set_content(dump(model_object()), "application/json");
      }));
    }
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump(ojson{{"status", "ok"}, {"queue", engine.queue_depth()}}), "application/json");
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
    svr.Options(".*", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (opts.cors) {
        res.set_header("Access-Control-Allow-Origin", "*");
        res.set_header("Access-Control-Allow-Headers", "*");
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      }
      // The body limit holds only for bodies with a length: no chunked or compressed uploads.
      if (req.method == "POST" && (req.has_header("Transfer-Encoding") || !req.has_header("Content-Length"))) {
        send_error(res, dialect_of_path(req.path), ApiError(411, "a request body needs a Content-Length"));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (req.method == "POST" && req.has_header("Content-Encoding") &&
          req.get_header_value("Content-Encoding") != "identity") {
        send_error(res, dialect_of_path(req.path), ApiError(415, "compressed request bodies are not accepted"));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (opts.api_key.empty() || req.path == "/health" || req.method == "OPTIONS") return httplib::Server::HandlerResponse::Unhandled;
      std::string given = req.get_header_value("x-api-key");
      const std::string auth = req.get_header_value("Authorization");
      if (given.empty() && auth.rfind("Bearer ", 0) == 0) given = auth.substr(7);
      if (key_equal(given, opts.api_key)) return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, dialect_of_path(req.path), ApiError(401, "invalid or missing API key", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    });
    // Errors httplib produces itself (unknown path, oversized or malformed request) get a JSON body too.
    svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      const std::string msg = res.status == 404 ? "unknown endpoint" : "bad HTTP request";
      res.set_content(error_body(dialect_of_path(req.path), ApiError(res.status, msg)), "application/json");
      return httplib::Server::HandlerResponse::Handled;
    }));
    svr.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
      send_error(res, dialect_of_path(req.path), ApiError(500, "internal error"));
    });
  }
};

HttpServer::HttpServer(Engine& engine, ServerOptions opts) : impl_(std::make_unique<Impl>(engine, std::move(opts))) {
  Impl& s = *impl_;
  const int threads = std::max(4, s.opts.threads);
  s.svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.svr.set_payload_max_length(s.opts.max_body_bytes);
  s.svr.set_read_timeout(10, 0);
  s.svr.set_write_timeout(5, 0);
  s.svr.set_keep_alive_timeout(5);
  s.svr.set_tcp_nodelay(true);
  s.routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  Impl& s = *impl_;
  if (s.opts.port == 0) {
    const int p = s.svr.bind_to_any_port(s.opts.host);
    if (p <= 0) fail("cannot listen on %s (any port)", s.opts.host.c_str());
    return p;
  }
  if (!s.svr.bind_to_port(s.opts.host, s.opts.port)) fail("cannot listen on %s:%d", s.opts.host.c_str(), s.opts.port);
  return s.opts.port;
}

void HttpServer::run() { impl_->svr.listen_after_bind(); }
void HttpServer::stop() { impl_->svr.stop(); }

}  // namespace flashstar::server
