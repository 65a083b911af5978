#pragma once
#include <cstddef>
#include <cstdint>
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

// Multiprocessors of the current device, asked once per process (kernels size their grids by it).
int current_sm_count();

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace flashstar::cuda
