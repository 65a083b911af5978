// CUDA device discovery. The backend proper arrives with the CUDA issue; this keeps the CUDA toolchain
// part of every build so that breakage shows up in CI (compile and link only there).
#include <cuda_runtime.h>

#include <string>

#include "common/error.h"
#include "cuda/device_info.h"

namespace flashstar::cuda {

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return out;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    out.push_back({i, p.name, static_cast<size_t>(p.totalGlobalMem), p.major, p.minor, p.multiProcessorCount});
  }
  return out;
}

int current_sm_count() {
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      throw Error("cannot query the CUDA device's multiprocessor count");
    return n;
  }();
  return sms;
}

}  // namespace flashstar::cuda
