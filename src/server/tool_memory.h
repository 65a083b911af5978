// Tool-call id -> the exact DSML block the model sampled (interfaces.md §3.15), so a later request that
// replays those calls renders the same bytes and keeps its KV prefix. Bounded by id count and bytes,
// pruned least-recently-touched first. Thread-safe.
#pragma once
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "text/chat.h"

namespace flashstar::server {

class ToolMemory {
 public:
  explicit ToolMemory(size_t max_ids = 100000, size_t max_bytes = 512ull << 20) : max_ids_(max_ids), max_bytes_(max_bytes) {}
  void remember(const std::vector<std::string>& ids, const std::string& dsml);
  std::optional<std::string> find(const std::string& id);
  bool contains(const std::string& id);
  // Sets raw_dsml on assistant messages whose call ids all map to one known block; returns how many
  // messages got their exact block back, and lists the ids nothing is known about.
  size_t apply(std::vector<text::Message>& msgs, std::vector<std::string>* unknown_ids = nullptr);
  size_t size();

 private:
  struct Entry {
    std::shared_ptr<const std::string> dsml;
    std::list<std::string>::iterator lru;
  };
  void touch(Entry& e, const std::string& id);
  size_t max_ids_, max_bytes_, bytes_ = 0;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> map_;
  std::list<std::string> lru_;  // front: most recent
};

}  // namespace flashstar::server
