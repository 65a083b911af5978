// The serving engine: one worker thread owns the model session and runs jobs strictly FIFO
// (interfaces.md §3.12). It picks the longest reusable prefix (live tokens, live text, disk), prefills
// in chunks, samples, and reports through the job's event sink. A job whose client went away stops
// within one prefill chunk or one token. Batching later means a scheduler in place of run_job's loop;
// jobs and sinks already carry everything a scheduler would need.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engine/session.h"
#include "server/api.h"
#include "server/formats.h"
#include "server/tool_memory.h"
#include "text/tokenizer.h"

namespace flashstar::server {

// The disk KV cache seen through what the engine needs (see disk_store.cpp for the real one).
struct DiskRestore {
  uint32_t tokens = 0, text_bytes = 0;
  std::string file;
  std::vector<std::pair<std::string, std::string>> tool_ids;  // id -> exact DSML
};
class DiskStore {
 public:
  virtual ~DiskStore() = default;
  virtual uint32_t min_tokens() const = 0;
  virtual std::optional<uint32_t> cold_target(std::span<const int32_t> prompt, uint32_t cached) const = 0;
  virtual bool continued_due(uint32_t live, uint32_t last_frontier, bool inside_tool_call) const = 0;
  // Loads the longest stored prefix of `text` into the session (reset on a failed candidate).
  virtual std::optional<DiskRestore> restore(std::string_view text, Session& s) = 0;
  virtual void store(const Session& s, std::string_view text, const char* reason,
                     const std::vector<std::pair<std::string, std::string>>& tool_ids) = 0;
  virtual std::vector<std::pair<std::string, std::string>> find_tool_ids(const std::vector<std::string>& ids) = 0;
  virtual std::string metrics() = 0;  // Prometheus lines
};

struct Job {
  GenRequest req;
  std::string rendered;      // prompt text
  std::vector<int32_t> ids;  // its tokens (special-aware)
  ReplyMeta meta;
  std::atomic<int> fd{-1};          // client socket, polled for a hang-up; -1 once the handler left
  std::atomic<bool> cancelled{false};
  std::chrono::steady_clock::time_point enqueued = std::chrono::steady_clock::now();

  std::mutex mu;
  std::condition_variable cv;
  std::string out;        // SSE bytes the connection thread has not written yet
  bool in_prefill = false;  // worker state, for keepalive comments
  bool done = false;
  bool failed_early = false;  // failed before any output (non-streaming: answer 500)
  Outcome outcome;
  std::unique_ptr<EventSink> sink;  // streaming formatter writing into `out`; null when not streaming
};

struct EngineOptions {
  uint32_t ctx = 32768;
  int64_t default_max_tokens = 393216;
  bool test_hooks = false;
  size_t tool_memory_max_ids = 100000;
  std::function<void(const std::string&)> log;
};

struct Metrics {
  std::atomic<uint64_t> requests{0}, completed{0}, cancelled{0}, failed{0}, rejected{0};
  std::atomic<uint64_t> prompt_tokens{0}, prefill_tokens{0}, cached_tokens{0}, completion_tokens{0};
  std::atomic<uint64_t> hits_memory_token{0}, hits_memory_text{0}, hits_disk{0}, misses{0};
  std::atomic<uint64_t> prefill_us{0}, decode_us{0};
  std::atomic<double> last_prefill_tps{0}, last_decode_tps{0};
  std::atomic<int> busy{0};
};

class Engine {
 public:
  Engine(const text::Tokenizer& tok, std::unique_ptr<Session> session, EngineOptions opts, DiskStore* disk);
  ~Engine();

  // Queues a job; throws ApiError(503) once shutting down.
  void submit(const std::shared_ptr<Job>& job);
  // Stops accepting, ends running generations (finish "error"), drains, writes the shutdown checkpoint.
  void shutdown();
  size_t queue_depth();
  Metrics& metrics() { return metrics_; }
  ToolMemory& tool_memory() { return tools_; }
  const text::Tokenizer& tokenizer() const { return tok_; }
  uint32_t ctx() const { return opts_.ctx; }
  DiskStore* disk() { return disk_; }

 private:
  void worker();
  void run_job(Job& job);
  // Chooses what to reuse and returns the tokens still to evaluate; sets usage.cached and the source.
  std::vector<int32_t> reuse_prefix(Job& job, Outcome& o);
  bool should_stop(Job& job) const;
  // Evaluates todo in chunks; returns false when stopped early. `done` counts the tokens evaluated.
  bool prefill(Job& job, const std::vector<int32_t>& todo, size_t cached, size_t& done);
  void log(const std::string& s) const {
    if (opts_.log) opts_.log(s);
  }

  const text::Tokenizer& tok_;
  std::unique_ptr<Session> session_;
  EngineOptions opts_;
  DiskStore* disk_;
  ToolMemory tools_;
  Metrics metrics_;
  // Tool ids sampled into the live session (their blocks go into its disk checkpoints).
  std::vector<std::pair<std::string, std::string>> live_tool_ids_;
  uint32_t last_stored_frontier_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::atomic<bool> stopping_{false};
  bool worker_done_ = false;
  std::thread thread_;
};

// True when the peer of a connected socket has hung up (orderly close or error). Never blocks.
bool peer_gone(int fd);

}  // namespace flashstar::server
