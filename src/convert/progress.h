// Throttled progress line on stderr, fed from any thread.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace flashstar {

class Progress {
 public:
  Progress(const char* verb, uint64_t total_bytes, bool enabled);
  // Adds finished bytes; prints at most every interval (thread-safe, never blocks on the print).
  void add(uint64_t bytes);
  void set_label(const std::string& label);
  // Final line with totals and the average rate.
  void finish();
  double seconds() const;
  uint64_t done() const { return done_.load(); }

 private:
  void print(bool final);
  const char* verb_;
  uint64_t total_;
  bool enabled_, tty_;
  std::atomic<uint64_t> done_{0};
  std::chrono::steady_clock::time_point start_, last_;
  std::mutex mu_;
  std::string label_;
};

}  // namespace flashstar
