// Small helpers shared by the subcommands.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace flashstar::tools {

// Reads {"tokens": [...]} or a bare JSON array of non-negative integers.
std::vector<int32_t> read_tokens_json(const std::string& path);
// Reads a float32 little-endian file whose size must be a multiple of `row` floats (row > 0).
std::vector<float> read_f32_rows(const std::string& path, size_t row);

class Stopwatch {
 public:
  Stopwatch() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

 private:
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace flashstar::tools
