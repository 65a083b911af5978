// Turns sampled token bytes into reasoning and content deltas as they arrive (interfaces.md §3.7):
// held back are partial UTF-8 characters, a possible partial </think>, partial stop strings, and, when
// tools are offered, trailing whitespace and a partial tool-block marker; once a tool block starts its
// bytes are not streamed as content (the parsed calls are reported at the end instead).
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "server/api.h"

namespace flashstar::server {

class ReplyStream {
 public:
  // thinking: the prompt ended in <think>, so the reply starts as reasoning.
  ReplyStream(bool thinking, bool tools, std::vector<std::string> stops, EventSink* sink);

  // Adds one token's bytes. Returns true when generation must stop here (a stop string or a closed
  // tool block); the text is then cut before the stop string.
  bool push(std::string_view bytes);
  // Flushes what is still held. tool_block_ok: the tool block parsed (its bytes stay unstreamed);
  // otherwise they are released as content, as ds4 does for an invalid tool call.
  void finish(bool tool_block_ok);

  const std::string& text() const { return gen_; }
  bool stopped_by_string() const { return stop_hit_; }
  bool in_reasoning() const { return thinking_ && !think_done_; }
  size_t block_start() const { return block_at_; }  // npos when no tool block started
  bool block_closed() const { return block_closed_; }

 private:
  void emit_reasoning(size_t limit, bool final);
  void emit_content(size_t limit, bool final);
  size_t stop_partial() const;

  bool thinking_, tools_;
  std::vector<std::string> stops_;
  EventSink* sink_;
  std::string gen_;
  bool think_done_ = false, stop_hit_ = false, block_closed_ = false;
  size_t think_end_ = 0, content_from_ = 0;
  size_t r_emitted_ = 0, c_emitted_ = 0;
  size_t block_at_ = std::string::npos;
};

// Largest end <= limit (and >= from) that does not cut a well-formed UTF-8 character in two.
size_t utf8_safe_end(std::string_view s, size_t from, size_t limit);

}  // namespace flashstar::server
