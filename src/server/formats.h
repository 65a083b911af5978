// Response bodies and SSE event sequences of the four dialects (interfaces.md §3.6-3.9).
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "server/api.h"

namespace flashstar::server {

// Identity of one response: the id clients see and the creation time.
struct ReplyMeta {
  std::string id;  // chatcmpl-N, cmpl-N, resp_<hex>
  int64_t created = 0;
};

std::string chat_response(const GenRequest& r, const Outcome& o, const ReplyMeta& m);
std::string completion_response(const GenRequest& r, const Outcome& o, const ReplyMeta& m);
std::string anthropic_response(const GenRequest& r, const Outcome& o, const ReplyMeta& m);
std::string responses_response(const GenRequest& r, const Outcome& o, const ReplyMeta& m);

ojson usage_openai(const Usage& u);
ojson usage_anthropic(const Usage& u);
ojson usage_responses(const Usage& u);

// A streaming formatter writes complete SSE events through `out` (never a partial event).
using SseWriter = std::function<void(std::string)>;
std::unique_ptr<EventSink> make_stream_formatter(const GenRequest& r, const ReplyMeta& m, SseWriter out);

// Tool-call ids for a dialect: call_<32 hex> or toolu_<32 hex>.
std::string new_tool_call_id(Dialect d);

}  // namespace flashstar::server
