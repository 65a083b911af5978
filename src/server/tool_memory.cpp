#include "server/tool_memory.h"

namespace flashstar::server {

void ToolMemory::touch(Entry& e, const std::string& id) {
  lru_.erase(e.lru);
  lru_.push_front(id);
  e.lru = lru_.begin();
}

void ToolMemory::remember(const std::vector<std::string>& ids, const std::string& dsml) {
  if (ids.empty() || max_ids_ == 0) return;
  auto block = std::make_shared<const std::string>(dsml);
  std::lock_guard<std::mutex> lk(mu_);
  for (const std::string& id : ids) {
    auto it = map_.find(id);
    if (it != map_.end()) {
      bytes_ -= it->second.dsml->size();
      it->second.dsml = block;
      touch(it->second, id);
    } else {
      lru_.push_front(id);
      map_.emplace(id, Entry{block, lru_.begin()});
    }
    bytes_ += dsml.size();
  }
  // Blocks shared by several ids are counted once per id: a conservative bound.
  while (!lru_.empty() && (map_.size() > max_ids_ || bytes_ > max_bytes_)) {
    auto it = map_.find(lru_.back());
    bytes_ -= it->second.dsml->size();
    map_.erase(it);
    lru_.pop_back();
  }
}

std::optional<std::string> ToolMemory::find(const std::string& id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = map_.find(id);
  if (it == map_.end()) return std::nullopt;
  touch(it->second, id);
  return *it->second.dsml;
}

bool ToolMemory::contains(const std::string& id) {
  std::lock_guard<std::mutex> lk(mu_);
  return map_.count(id) > 0;
}

size_t ToolMemory::apply(std::vector<text::Message>& msgs, std::vector<std::string>* unknown_ids) {
  size_t replayed = 0;
  for (text::Message& m : msgs) {
    if (m.role != "assistant" || m.tool_calls.empty()) continue;
    std::optional<std::string> block;
    bool same = true;
    for (const text::ToolCall& c : m.tool_calls) {
      auto b = c.id.empty() ? std::nullopt : find(c.id);
      if (!b) {
        if (unknown_ids && !c.id.empty()) unknown_ids->push_back(c.id);
        same = false;
        continue;
      }
      if (block && *block != *b) same = false;
      block = std::move(b);
    }
    if (same && block) {
      m.raw_dsml = *block;
      ++replayed;
    }
  }
  return replayed;
}

size_t ToolMemory::size() {
  std::lock_guard<std::mutex> lk(mu_);
  return map_.size();
}

}  // namespace flashstar::server
