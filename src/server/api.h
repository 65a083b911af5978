// Types shared by the serve pieces: one request in the engine's terms (whatever dialect it came in),
// its outcome, and the event sink a dialect's streaming formatter implements.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/sampling.h"
#include "text/chat.h"

namespace flashstar::server {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

enum class Dialect { Chat, Completions, Anthropic, Responses };

// A client error with its HTTP status. `extra` members are merged into the error object (e.g. the
// context-length fields). Thrown by the parsers, caught by the HTTP layer.
struct ApiError : std::runtime_error {
  int status;
  std::string code, param;
  json extra;
  ApiError(int st, const std::string& msg, std::string c = {}, std::string p = {}, json x = json::object())
      : std::runtime_error(msg), status(st), code(std::move(c)), param(std::move(p)), extra(std::move(x)) {}
};

// A Responses function tool from a namespace: the model sees NS+name, the client gets both back.
struct WireName {
  std::string model_name, name, ns;
};

struct GenRequest {
  Dialect dialect = Dialect::Chat;
  std::string model;  // echoed back
  std::vector<text::Message> messages;
  std::vector<std::string> tool_schemas;  // raw JSON lines (§2.4)
  bool tools_active = false;              // schemas present and tool_choice is not "none"
  std::vector<WireName> wire_names;       // Responses namespaces
  std::string prompt;                     // Completions: the client's prompt text
  text::ThinkMode think = text::ThinkMode::High;
  SamplingParams sampling;
  int64_t max_tokens = -1;  // -1: the server default
  std::vector<std::string> stops;
  bool stream = false, include_usage = false;
  bool logprobs = false;
  int top_logprobs = 0;
  bool reasoning_summary = false;  // Responses: the client opted in to reasoning output
  std::string forced_reply;        // test hook (--test-hooks): sampled tokens replaced by this text
};

struct TokenLogprob {
  std::string token;
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
};

struct Usage {
  size_t prompt = 0;      // P: effective prompt tokens of this request
  size_t cached = 0;      // C: reused from the live session or the disk cache
  size_t completion = 0;  // O
};

// What a finished generation produced, in dialect-neutral terms.
struct Outcome {
  std::string finish = "stop";  // stop | length | tool_calls | error
  std::string error;            // message when finish == error
  std::string raw;              // the generated text (cut at a stop string)
  std::optional<std::string> reasoning;
  std::string content;
  std::vector<text::ToolCall> calls;  // ids assigned
  Usage usage;
  std::vector<TokenLogprob> logprobs;
  std::string cache_source = "none";
};

// Receives a generation as it happens (worker thread). A streaming formatter turns these into SSE text.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void start() {}
  virtual void reasoning(std::string_view) {}
  virtual void content(std::string_view) {}
  virtual void logprob(const TokenLogprob&) {}
  virtual void finish(const Outcome&) {}
  // Fails the request after headers were sent (prefill error, shutdown).
  virtual void fail(const std::string&) {}
};

// Shape of a non-streaming error body for the dialect (OpenAI's or Anthropic's).
std::string error_body(Dialect d, const ApiError& e);
std::string error_type_for(int status, Dialect d);
// Compact JSON; invalid UTF-8 from a noisy model becomes U+FFFD instead of an exception.
std::string dump(const ojson& j);
std::string dump(const json& j);
// One Prometheus metric: HELP and TYPE lines, then `name value` (labels: a sample's `{...}` part).
std::string prom_metric(const char* name, const char* type, const char* help, double v);
std::string prom_sample(const std::string& name_labels, double v);
// "call_" / "toolu_" + 32 lowercase hex, from /dev/urandom (fallback: a seeded generator).
std::string random_hex(size_t n);

}  // namespace flashstar::server
