#include "server/reply_stream.h"

#include <algorithm>

#include "text/tokenizer.h"

namespace flashstar::server {

namespace {

constexpr std::string_view kMarkers[] = {"<｜DSML｜tool_calls>", "<DSML｜tool_calls>", "<tool_calls>"};
constexpr std::string_view kClose = "</think>";

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Length of the longest proper prefix of lit that s ends with.
size_t partial_suffix(std::string_view s, std::string_view lit) {
  for (size_t n = std::min(lit.size() - 1, s.size()); n > 0; --n)
    if (s.substr(s.size() - n) == lit.substr(0, n)) return n;
  return 0;
}

}  // namespace

size_t utf8_safe_end(std::string_view s, size_t from, size_t limit) {
  // Look back at most 3 bytes for a lead byte whose character runs past limit.
  for (size_t back = 1; back <= 3 && back <= limit - from; ++back) {
    const uint8_t c = static_cast<uint8_t>(s[limit - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 1;
    return need > back && c >= 0xC2 ? limit - back : limit;
  }
  return limit;
}

ReplyStream::ReplyStream(bool thinking, bool tools, std::vector<std::string> stops, EventSink* sink)
    : thinking_(thinking), tools_(tools), stops_(std::move(stops)), sink_(sink) {}

size_t ReplyStream::stop_partial() const {
  size_t hold = 0;
  for (const std::string& s : stops_) hold = std::max(hold, partial_suffix(gen_, s));
  return hold;
}

bool ReplyStream::push(std::string_view bytes) {
  const size_t old = gen_.size();
  gen_ += bytes;
  // Stop strings: only the new bytes (plus a stop's length) can complete one.
  for (const std::string& s : stops_) {
    const size_t from = old >= s.size() ? old - s.size() + 1 : 0;
    const size_t at = gen_.find(s, from);
    if (at != std::string::npos) {
      gen_.resize(at);
      stop_hit_ = true;
    }
  }
  if (stop_hit_) {  // the cut may fall before a tool marker or a </think> seen earlier
    if (block_at_ != std::string::npos && block_at_ >= gen_.size()) block_at_ = std::string::npos;
    content_from_ = std::min(content_from_, gen_.size());
    c_emitted_ = std::min(c_emitted_, gen_.size());
  }
  if (thinking_ && !think_done_) {
    const size_t at = gen_.find(kClose, old >= kClose.size() ? old - kClose.size() + 1 : 0);
    if (at != std::string::npos) {
      think_done_ = true;
      think_end_ = at;
      content_from_ = c_emitted_ = at + kClose.size();
    }
  }
  if (thinking_ && !think_done_) {
    emit_reasoning(gen_.size() - std::max(partial_suffix(gen_, kClose), stop_partial()), false);
    return stop_hit_;
  }
  if (thinking_) emit_reasoning(think_end_, true);
  if (tools_ && block_at_ == std::string::npos) {
    const size_t from = std::max(content_from_, old >= 40 ? old - 40 : 0);
    for (std::string_view m : kMarkers) {
      const size_t at = gen_.find(m, from);
      if (at != std::string::npos && at < block_at_) block_at_ = at;
    }
  }
  if (block_at_ != std::string::npos) {
    size_t end = block_at_;
    while (end > c_emitted_ && is_ws(gen_[end - 1])) --end;
    emit_content(end, false);
    if (text::dsml_block_closed(std::string_view(gen_).substr(block_at_))) block_closed_ = true;
    return stop_hit_ || block_closed_;
  }
  size_t hold = stop_partial();
  if (tools_) {
    // A '<' in the last 80 bytes that may still grow into a tool-block marker.
    const size_t lt = gen_.rfind('<');
    if (lt != std::string::npos && lt >= content_from_ && gen_.size() - lt <= 80) {
      const std::string_view tail = std::string_view(gen_).substr(lt);
      for (std::string_view m : kMarkers)
        if (m.substr(0, std::min(m.size(), tail.size())) == tail.substr(0, std::min(m.size(), tail.size())))
          hold = std::max(hold, tail.size());
    }
    // The whitespace before a held marker (or at the end) may turn out to precede a tool block, which
    // the final content does not include.
    size_t h = gen_.size() - std::min(hold, gen_.size() - content_from_);
    while (h > content_from_ && is_ws(gen_[h - 1])) --h;
    hold = gen_.size() - h;
  }
  emit_content(gen_.size() - std::min(hold, gen_.size()), false);
  return stop_hit_;
}

void ReplyStream::emit_reasoning(size_t limit, bool final) {
  if (r_emitted_ == 0 && gen_.compare(0, 7, "<think>") == 0) r_emitted_ = 7;
  if (limit <= r_emitted_) return;
  const size_t end = final ? limit : utf8_safe_end(gen_, r_emitted_, limit);
  if (end > r_emitted_) sink_->reasoning(std::string_view(gen_).substr(r_emitted_, end - r_emitted_));
  r_emitted_ = std::max(r_emitted_, end);
}

void ReplyStream::emit_content(size_t limit, bool final) {
  if (limit <= c_emitted_) return;
  const size_t end = final ? limit : utf8_safe_end(gen_, c_emitted_, limit);
  if (end > c_emitted_) sink_->content(std::string_view(gen_).substr(c_emitted_, end - c_emitted_));
  c_emitted_ = std::max(c_emitted_, end);
}

void ReplyStream::finish(bool tool_block_ok) {
  if (thinking_ && !think_done_) {
    emit_reasoning(gen_.size(), true);
    return;
  }
  if (block_at_ != std::string::npos && tool_block_ok) {
    size_t end = block_at_;
    while (end > c_emitted_ && is_ws(gen_[end - 1])) --end;
    emit_content(end, true);
    return;
  }
  emit_content(gen_.size(), true);
}

}  // namespace flashstar::server
