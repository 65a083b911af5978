// The OpenAI Responses dialect (what Codex CLI speaks): the response object and its event stream.
#include "server/formats.h"

namespace flashstar::server {

namespace {

const char* item_status(const std::string& finish) {
  return finish == "length" || finish == "error" ? "incomplete" : "completed";
}

ojson reasoning_item(const std::string& id, const std::string& text, const char* status) {
  ojson summary = ojson::array();
  if (!text.empty()) summary.push_back({{"type", "summary_text"}, {"text", text}});
  return ojson{{"id", id}, {"type", "reasoning"}, {"status", status}, {"summary", summary}};
}

ojson text_part(const std::string& text) {
  return ojson{{"type", "output_text"}, {"text", text}, {"annotations", ojson::array()}};
}

ojson message_item(const std::string& id, const std::string& text, const char* status, bool with_content = true) {
  return ojson{{"id", id},
               {"type", "message"},
               {"status", status},
               {"role", "assistant"},
               {"content", with_content ? ojson::array({text_part(text)}) : ojson::array()}};
}

ojson call_item(const GenRequest& r, const text::ToolCall& c, const std::string& id, const char* status,
                bool with_args = true) {
  std::string name = c.name, ns;
  for (const auto& w : r.wire_names)
    if (w.model_name == c.name) {
      name = w.name;
      ns = w.ns;
      break;
    }
  if (c.name == "tool_search" && ns.empty() && name == "tool_search") {
    ojson args = ojson::parse(c.arguments, nullptr, false);
    return ojson{{"id", id},          {"type", "tool_search_call"}, {"status", status}, {"call_id", c.id},
                 {"execution", "client"}, {"arguments", args.is_discarded() ? ojson::object() : args}};
  }
  ojson it{{"id", id}, {"type", "function_call"}, {"status", status}, {"name", name}};
  if (!ns.empty()) it["namespace"] = ns;
  it["call_id"] = c.id;
  it["arguments"] = with_args ? c.arguments : "";
  return it;
}

ojson response_object(const GenRequest& r, const ReplyMeta& m, const char* status, ojson output, const Outcome* o) {
  ojson j{{"id", m.id}, {"object", "response"}, {"created_at", m.created}, {"status", status}, {"model", r.model}};
  j["error"] = nullptr;
  j["incomplete_details"] = nullptr;
  if (o && o->finish == "error") j["error"] = {{"code", "server_error"}, {"message", "generation failed"}};
  if (o && o->finish == "length") j["incomplete_details"] = {{"reason", "max_output_tokens"}};
  j["output"] = std::move(output);
  j["parallel_tool_calls"] = true;
  j["tool_choice"] = "auto";
  j["tools"] = ojson::array();
  j["usage"] = o ? usage_responses(o->usage) : ojson(nullptr);
  return j;
}

const char* terminal_status(const std::string& finish) {
  return finish == "length" ? "incomplete" : finish == "error" ? "failed" : "completed";
}

class ResponsesStream : public EventSink {
 public:
  ResponsesStream(const GenRequest& r, const ReplyMeta& m, SseWriter out) : r_(r), m_(m), out_(std::move(out)) {}

  void start() override {
    event("response.created", {{"response", response_object(r_, m_, "in_progress", ojson::array(), nullptr)}});
  }
  void reasoning(std::string_view s) override {
    if (!r_.reasoning_summary) return;
    if (!rs_open_) {
      rs_open_ = true;
      rs_id_ = "rs_" + random_hex(24);
      event("response.output_item.added",
            {{"output_index", output_.size()}, {"item", reasoning_item(rs_id_, "", "in_progress")}});
      event("response.reasoning_summary_part.added", {{"item_id", rs_id_},
                                                      {"output_index", output_.size()},
                                                      {"summary_index", 0},
                                                      {"part", {{"type", "summary_text"}, {"text", ""}}}});
    }
    rs_text_ += s;
    event("response.reasoning_summary_text.delta",
          {{"item_id", rs_id_}, {"output_index", output_.size()}, {"summary_index", 0}, {"delta", s}});
  }
  void content(std::string_view s) override {
    close_reasoning("completed");
    if (!msg_open_) {
      msg_open_ = true;
      msg_id_ = "msg_" + random_hex(24);
      event("response.output_item.added",
            {{"output_index", output_.size()}, {"item", message_item(msg_id_, "", "in_progress", false)}});
      event("response.content_part.added",
            {{"item_id", msg_id_}, {"output_index", output_.size()}, {"content_index", 0}, {"part", text_part("")}});
    }
    text_ += s;
    event("response.output_text.delta", {{"item_id", msg_id_},
                                         {"output_index", output_.size()},
                                         {"content_index", 0},
                                         {"delta", s},
                                         {"logprobs", ojson::array()}});
  }
  void finish(const Outcome& o) override {
    const char* st = item_status(o.finish);
    close_reasoning(st);
    if (msg_open_) {
      msg_open_ = false;
      const size_t idx = output_.size();
      event("response.output_text.done", {{"item_id", msg_id_},
                                          {"output_index", idx},
                                          {"content_index", 0},
                                          {"text", text_},
                                          {"logprobs", ojson::array()}});
      event("response.content_part.done",
            {{"item_id", msg_id_}, {"output_index", idx}, {"content_index", 0}, {"part", text_part(text_)}});
      output_.push_back(message_item(msg_id_, text_, st));
      event("response.output_item.done", {{"output_index", idx}, {"item", output_.back()}});
    }
    for (const auto& c : o.calls) {
      const std::string id = "fc_" + random_hex(24);
      const size_t idx = output_.size();
      ojson added = call_item(r_, c, id, "in_progress", false);
      event("response.output_item.added", {{"output_index", idx}, {"item", added}});
      if (added["type"] == "function_call") {
        event("response.function_call_arguments.delta", {{"item_id", id}, {"output_index", idx}, {"delta", c.arguments}});
        event("response.function_call_arguments.done",
              {{"item_id", id}, {"output_index", idx}, {"arguments", c.arguments}});
      }
      output_.push_back(call_item(r_, c, id, st));
      event("response.output_item.done", {{"output_index", idx}, {"item", output_.back()}});
    }
    const char* term = terminal_status(o.finish);
    event((std::string("response.") + term).c_str(), {{"response", response_object(r_, m_, term, output_, &o)}});
  }
  void fail(const std::string& msg) override {
    event("error", {{"code", "server_error"}, {"message", msg}, {"param", nullptr}});
  }

 private:
  // Every event carries "type" then "sequence_number" first (ds4's order), then its own members.
  void event(const std::string& type, const ojson& body) {
    ojson j{{"type", type}, {"sequence_number", seq_++}};
    for (auto it = body.begin(); it != body.end(); ++it) j[it.key()] = it.value();
    out_("data: " + dump(j) + "\n\n");
  }
  void close_reasoning(const char* status) {
    if (!rs_open_) return;
    rs_open_ = false;
    const size_t idx = output_.size();
    event("response.reasoning_summary_text.done",
          {{"item_id", rs_id_}, {"output_index", idx}, {"summary_index", 0}, {"text", rs_text_}});
    event("response.reasoning_summary_part.done", {{"item_id", rs_id_},
                                                   {"output_index", idx},
                                                   {"summary_index", 0},
                                                   {"part", {{"type", "summary_text"}, {"text", rs_text_}}}});
    output_.push_back(reasoning_item(rs_id_, rs_text_, status));
    event("response.output_item.done", {{"output_index", idx}, {"item", output_.back()}});
  }

  const GenRequest& r_;
  ReplyMeta m_;
  SseWriter out_;
  int64_t seq_ = 0;
  ojson output_ = ojson::array();
  bool rs_open_ = false, msg_open_ = false;
  std::string rs_id_, rs_text_, msg_id_, text_;
};

}  // namespace

std::string responses_response(const GenRequest& r, const Outcome& o, const ReplyMeta& m) {
  const char* st = item_status(o.finish);
  ojson output = ojson::array();
  if (r.reasoning_summary && o.reasoning && !o.reasoning->empty())
    output.push_back(reasoning_item("rs_" + random_hex(24), *o.reasoning, st));
  if (!o.content.empty()) output.push_back(message_item("msg_" + random_hex(24), o.content, st));
  for (const auto& c : o.calls) output.push_back(call_item(r, c, "fc_" + random_hex(24), st));
  return dump(response_object(r, m, terminal_status(o.finish), std::move(output), &o));
}

std::unique_ptr<EventSink> make_responses_stream(const GenRequest& r, const ReplyMeta& m, SseWriter out) {
  return std::make_unique<ResponsesStream>(r, m, std::move(out));
}

}  // namespace flashstar::server
