#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace flashstar::cuda {

struct DeviceInfo {
  int index;
  std::string name;
  size_t total_memory;
  int cc_major, cc_minor;
  int sm_count;
};

// Empty when no CUDA device (or driver) is present.
std::vector<DeviceInfo> list_devices();

}  // namespace flashstar::cuda
