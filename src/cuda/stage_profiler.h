// Per-stage GPU time of a session (FLASHSTAR_PROFILE=1): events around named stages of the forward
// pass, summed per name and printed to stderr when the session ends. Off by default: no events, no cost.
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "cuda/cuda_util.h"

namespace flashstar::cuda {

class StageProfiler {
 public:
  explicit StageProfiler(bool on) : on_(on) {}
  static bool requested() {  // FLASHSTAR_PROFILE=1
    const char* v = std::getenv("FLASHSTAR_PROFILE");
    return v && *v && *v != '0';
  }
  ~StageProfiler() {
    if (!on_) return;
    collect();
    double total = 0;
    for (auto& [k, v] : ms_) total += v;
    std::fprintf(stderr, "GPU stage profile (%.1f ms in all):\n", total);
    for (auto& [k, v] : ms_) std::fprintf(stderr, "  %-20s %10.2f ms  %5.1f%%\n", k.c_str(), v, 100.0 * v / total);
    for (auto& m : marks_) cudaEventDestroy(m.ev);
  }
  bool on() const { return on_; }
  // Starts stage `name`, ending the previous one; stop() ends the current one.
  void stage(const char* name, cudaStream_t s) {
    if (!on_) return;
    cudaEvent_t ev;
    FS_CUDA_CHECK(cudaEventCreate(&ev));
    FS_CUDA_CHECK(cudaEventRecord(ev, s));
    marks_.push_back({ev, name ? prefix_ + name : std::string()});
  }
  void stop(cudaStream_t s) { stage(nullptr, s); }
  // Prefix of the next stages' names (e.g. prefill and decode steps kept apart).
  void set_prefix(const char* p) { prefix_ = p; }
  // Folds the recorded marks into the totals (synchronises).
  void collect() {
    if (!on_ || marks_.empty()) return;
    FS_CUDA_CHECK(cudaEventSynchronize(marks_.back().ev));
    for (size_t i = 0; i + 1 < marks_.size(); ++i) {
      if (marks_[i].name.empty()) continue;
      float ms = 0;
      FS_CUDA_CHECK(cudaEventElapsedTime(&ms, marks_[i].ev, marks_[i + 1].ev));
      ms_[marks_[i].name] += ms;
    }
    for (auto& m : marks_) cudaEventDestroy(m.ev);
    marks_.clear();
  }

 private:
  struct Mark {
    cudaEvent_t ev;
    std::string name;
  };
  bool on_;
  std::string prefix_;
  std::vector<Mark> marks_;
  std::map<std::string, double> ms_;
};

}  // namespace flashstar::cuda
