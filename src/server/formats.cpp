#include "server/formats.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>

namespace flashstar::server {

std::string dump(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string random_hex(size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string raw(n, '\0');
  bool ok = false;
  if (int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC); fd >= 0) {
    ok = ::read(fd, raw.data(), n) == static_cast<ssize_t>(n);
    ::close(fd);
  }
  if (!ok) {
    static std::atomic<uint64_t> ctr{0};
    std::mt19937_64 g(std::chrono::steady_clock::now().time_since_epoch().count() ^ (ctr++ * 0x9E3779B97F4A7C15ull));
    for (char& c : raw) c = static_cast<char>(g());
  }
  std::string out(n, '0');
  for (size_t i = 0; i < n; ++i) out[i] = kHex[static_cast<uint8_t>(raw[i]) & 15];
  return out;
}

std::string prom_sample(const std::string& name_labels, double v) {
  char num[64];
  std::snprintf(num, sizeof num, "%.17g", v);
  return name_labels + " " + num + "\n";
}

std::string prom_metric(const char* name, const char* type, const char* help, double v) {
  return std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + prom_sample(name, v);
}

std::string new_tool_call_id(Dialect d) { return (d == Dialect::Anthropic ? "toolu_" : "call_") + random_hex(32); }

ojson usage_openai(const Usage& u) {
  return ojson{{"prompt_tokens", u.prompt},
               {"completion_tokens", u.completion},
               {"total_tokens", u.prompt + u.completion},
               {"prompt_tokens_details", {{"cached_tokens", u.cached}, {"cache_write_tokens", u.prompt - u.cached}}}};
}
ojson usage_anthropic(const Usage& u) {
  return ojson{{"input_tokens", 0},
               {"output_tokens", u.completion},
               {"cache_read_input_tokens", u.cached},
               {"cache_creation_input_tokens", u.prompt - u.cached}};
}
ojson usage_responses(const Usage& u) {
  return ojson{{"input_tokens", u.prompt},
               {"input_tokens_details", {{"cached_tokens", u.cached}, {"cache_write_tokens", u.prompt - u.cached}}},
               {"output_tokens", u.completion},
               {"output_tokens_details", {{"reasoning_tokens", 0}}},
               {"total_tokens", u.prompt + u.completion}};
}

namespace {

std::string sse(const ojson& j) { return "data: " + dump(j) + "\n\n"; }
std::string sse_event(const char* name, const ojson& j) { return std::string("event: ") + name + "\ndata: " + dump(j) + "\n\n"; }

ojson bytes_of(const std::string& s) {
  ojson a = ojson::array();
  for (char c : s) a.push_back(static_cast<uint8_t>(c));
  return a;
}
ojson logprob_json(const TokenLogprob& t) {
  ojson top = ojson::array();
  for (const auto& [tok, lp] : t.top) top.push_back({{"token", tok}, {"logprob", lp}, {"bytes", bytes_of(tok)}});
  return ojson{{"token", t.token}, {"logprob", t.logprob}, {"bytes", bytes_of(t.token)}, {"top_logprobs", top}};
}
ojson logprobs_block(const std::vector<TokenLogprob>& v) {
  ojson c = ojson::array();
  for (const auto& t : v) c.push_back(logprob_json(t));
  return ojson{{"content", c}};
}

ojson openai_tool_calls(const std::vector<text::ToolCall>& calls, bool with_index) {
  ojson a = ojson::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    ojson c = ojson::object();
    if (with_index) c["index"] = i;
    c["id"] = calls[i].id;
    c["type"] = "function";
    c["function"] = {{"name", calls[i].name}, {"arguments", calls[i].arguments}};
    a.push_back(std::move(c));
  }
  return a;
}

const char* anthropic_stop(const std::string& f) {
  return f == "length" ? "max_tokens" : f == "tool_calls" ? "tool_use" : "end_turn";
}

ojson tool_input(const std::string& args) {
  ojson in = ojson::parse(args, nullptr, false);
  return in.is_object() ? in : ojson::object();
}

// ---------------- OpenAI chat ----------------
// The end of an OpenAI stream (chat and completions alike): the usage chunk when asked for, then [DONE].
void end_openai_stream(const SseWriter& out, ojson envelope, const Outcome& o, bool include_usage) {
  if (include_usage) {
    envelope["choices"] = ojson::array();
    envelope["usage"] = usage_openai(o.usage);
    out(sse(envelope));
  }
  out("data: [DONE]\n\n");
}
void openai_stream_error(const SseWriter& out, const std::string& msg) {
  out(sse_event("error", {{"error", {{"message", msg}, {"type", "server_error"}}}}));
}

class ChatStream : public EventSink {
 public:
  ChatStream(const GenRequest& r, const ReplyMeta& m, SseWriter out) : r_(r), m_(m), out_(std::move(out)) {}
  void start() override { chunk({{"role", "assistant"}, {"content", ""}}); }
  void reasoning(std::string_view s) override { chunk({{"reasoning_content", s}}); }
  void content(std::string_view s) override { chunk({{"content", s}}); }
  void logprob(const TokenLogprob& t) override { pending_.push_back(t); }
  void finish(const Outcome& o) override {
    if (!o.calls.empty()) chunk({{"tool_calls", openai_tool_calls(o.calls, true)}});
    chunk(ojson::object(), o.finish);
    end_openai_stream(out_, envelope(), o, r_.include_usage);
  }
  void fail(const std::string& msg) override { openai_stream_error(out_, msg); }

 private:
  ojson envelope() const {
    return ojson{{"id", m_.id}, {"object", "chat.completion.chunk"}, {"created", m_.created}, {"model", r_.model}};
  }
  void chunk(ojson delta, const std::string& finish = {}) {
    ojson j = envelope();
    ojson choice{{"index", 0}, {"delta", std::move(delta)}};
    if (r_.logprobs) {
      choice["logprobs"] = pending_.empty() ? ojson(nullptr) : logprobs_block(pending_);
      pending_.clear();
    }
    choice["finish_reason"] = finish.empty() ? ojson(nullptr) : ojson(finish);
    j["choices"] = ojson::array({std::move(choice)});
    out_(sse(j));
  }
  const GenRequest& r_;
  ReplyMeta m_;
  SseWriter out_;
  std::vector<TokenLogprob> pending_;
};

// ---------------- OpenAI completions ----------------
class CompletionStream : public EventSink {
 public:
  CompletionStream(const GenRequest& r, const ReplyMeta& m, SseWriter out) : r_(r), m_(m), out_(std::move(out)) {}
  void content(std::string_view s) override { chunk(s, {}); }
  void finish(const Outcome& o) override {
    chunk("", o.finish);
    end_openai_stream(out_, envelope(), o, r_.include_usage);
  }
  void fail(const std::string& msg) override { openai_stream_error(out_, msg); }

 private:
  ojson envelope() const {
    return ojson{{"id", m_.id}, {"object", "text_completion"}, {"created", m_.created}, {"model", r_.model}};
  }
  void chunk(std::string_view text, const std::string& finish) {
    ojson j = envelope();
    j["choices"] = ojson::array(
        {{{"text", text}, {"index", 0}, {"finish_reason", finish.empty() ? ojson(nullptr) : ojson(finish)}}});
    out_(sse(j));
  }
  const GenRequest& r_;
  ReplyMeta m_;
  SseWriter out_;
};

// ---------------- Anthropic messages ----------------
class AnthropicStream : public EventSink {
 public:
  AnthropicStream(const GenRequest& r, const ReplyMeta& m, SseWriter out) : r_(r), m_(m), out_(std::move(out)) {}
  void start() override {
    ojson msg{{"id", m_.id},         {"type", "message"},         {"role", "assistant"},
              {"model", r_.model},   {"content", ojson::array()}, {"stop_reason", nullptr},
              {"stop_sequence", nullptr}, {"usage", usage_anthropic(Usage{})}};
    out_(sse_event("message_start", {{"type", "message_start"}, {"message", msg}}));
  }
  void reasoning(std::string_view s) override {
    if (!thinking_open_) {
      thinking_open_ = true;
      block_start({{"type", "thinking"}, {"thinking", ""}, {"signature", ""}});
    }
    delta({{"type", "thinking_delta"}, {"thinking", s}});
  }
  void content(std::string_view s) override {
    close_thinking();
    if (!text_open_) {
      text_open_ = sent_text_ = true;
      block_start({{"type", "text"}, {"text", ""}});
    }
    delta({{"type", "text_delta"}, {"text", s}});
  }
  void finish(const Outcome& o) override {
    close_thinking();
    if (!sent_text_ && o.calls.empty()) {
      block_start({{"type", "text"}, {"text", ""}});
      text_open_ = true;
    }
    close_text();
    for (const auto& c : o.calls) {
      block_start({{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", ojson::object()}});
      delta({{"type", "input_json_delta"}, {"partial_json", dump(tool_input(c.arguments))}});
      block_stop();
    }
    ojson usage = usage_anthropic(o.usage);
    out_(sse_event("message_delta", {{"type", "message_delta"},
                                     {"delta", {{"stop_reason", anthropic_stop(o.finish)}, {"stop_sequence", nullptr}}},
                                     {"usage", usage}}));
    out_(sse_event("message_stop", {{"type", "message_stop"}}));
  }
  void fail(const std::string& msg) override {
    out_(sse_event("error", {{"type", "error"}, {"error", {{"type", "api_error"}, {"message", msg}}}}));
  }

 private:
  void block_start(ojson block) {
    out_(sse_event("content_block_start",
                   {{"type", "content_block_start"}, {"index", index_}, {"content_block", std::move(block)}}));
  }
  void delta(ojson d) {
    out_(sse_event("content_block_delta", {{"type", "content_block_delta"}, {"index", index_}, {"delta", std::move(d)}}));
  }
  void block_stop() {
    out_(sse_event("content_block_stop", {{"type", "content_block_stop"}, {"index", index_}}));
    ++index_;
  }
  void close_thinking() {
    if (!thinking_open_) return;
    thinking_open_ = false;
    delta({{"type", "signature_delta"}, {"signature", m_.id}});
    block_stop();
  }
  void close_text() {
    if (!text_open_) return;
    text_open_ = false;
    block_stop();
  }
  const GenRequest& r_;
  ReplyMeta m_;
  SseWriter out_;
  int index_ = 0;
  bool thinking_open_ = false, text_open_ = false, sent_text_ = false;
};

}  // namespace

std::string chat_response(const GenRequest& r, const Outcome& o, const ReplyMeta& m) {
  ojson msg{{"role", "assistant"}, {"content", o.content}};
  if (o.reasoning && !o.reasoning->empty()) msg["reasoning_content"] = *o.reasoning;
  if (!o.calls.empty()) msg["tool_calls"] = openai_tool_calls(o.calls, false);
  ojson choice{{"index", 0}, {"message", msg}};
  if (r.logprobs) choice["logprobs"] = logprobs_block(o.logprobs);
  choice["finish_reason"] = o.finish;
  ojson j{{"id", m.id}, {"object", "chat.completion"}, {"created", m.created}, {"model", r.model},
          {"choices", ojson::array({choice})}, {"usage", usage_openai(o.usage)}};
  return dump(j);
}

std::string completion_response(const GenRequest& r, const Outcome& o, const ReplyMeta& m) {
  ojson j{{"id", m.id},
          {"object", "text_completion"},
          {"created", m.created},
          {"model", r.model},
          {"choices", ojson::array({{{"text", o.raw}, {"index", 0}, {"finish_reason", o.finish}}})},
          {"usage", usage_openai(o.usage)}};
  return dump(j);
}

std::string anthropic_response(const GenRequest& r, const Outcome& o, const ReplyMeta& m) {
  ojson content = ojson::array();
  if (o.reasoning && !o.reasoning->empty())
    content.push_back({{"type", "thinking"}, {"thinking", *o.reasoning}, {"signature", m.id}});
  if (!o.content.empty()) content.push_back({{"type", "text"}, {"text", o.content}});
  for (const auto& c : o.calls)
    content.push_back({{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", tool_input(c.arguments)}});
  if (o.content.empty() && o.calls.empty()) content.push_back({{"type", "text"}, {"text", ""}});
  ojson j{{"id", m.id},
          {"type", "message"},
          {"role", "assistant"},
          {"model", r.model},
          {"content", content},
          {"stop_reason", anthropic_stop(o.finish)},
          {"stop_sequence", nullptr},
          {"usage", usage_anthropic(o.usage)}};
  return dump(j);
}

std::unique_ptr<EventSink> make_responses_stream(const GenRequest& r, const ReplyMeta& m, SseWriter out);

std::unique_ptr<EventSink> make_stream_formatter(const GenRequest& r, const ReplyMeta& m, SseWriter out) {
  switch (r.dialect) {
    case Dialect::Chat: return std::make_unique<ChatStream>(r, m, std::move(out));
    case Dialect::Completions: return std::make_unique<CompletionStream>(r, m, std::move(out));
    case Dialect::Anthropic: return std::make_unique<AnthropicStream>(r, m, std::move(out));
    case Dialect::Responses: return make_responses_stream(r, m, std::move(out));
  }
  return nullptr;
}

}  // namespace flashstar::server
