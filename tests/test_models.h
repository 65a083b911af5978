// Small synthetic models for tests, written once per test process with `flashstar synth`.
#pragma once
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

namespace flashstar::test_models {

// Path of a tiny-preset model made with `binary synth --seed seed`, or "" when synth failed.
inline const std::string& synth_tiny_model(const std::string& binary, int seed) {
  static std::map<int, std::string> made;
  auto it = made.find(seed);
  if (it != made.end()) return it->second;
  std::string p = (std::filesystem::temp_directory_path() /
                   ("fs_test_tiny_" + std::to_string(::getpid()) + "_" + std::to_string(seed) + ".gguf"))
                      .string();
  const std::string cmd = binary + " synth --preset tiny --seed " + std::to_string(seed) + " -o " + p + " >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) p.clear();
  return made.emplace(seed, p).first->second;
}

}  // namespace flashstar::test_models
