// CUDA error handling, device memory ownership, and the kernel switches' environment and device checks.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdlib>
#include <utility>

#include "common/error.h"

#define FS_CUDA_CHECK(expr)                                                                          \
  do {                                                                                               \
    cudaError_t fs_err_ = (expr);                                                                    \
    if (fs_err_ != cudaSuccess)                                                                      \
      ::flashstar::fail("CUDA error %s at %s:%d: %s", cudaGetErrorName(fs_err_), __FILE__, __LINE__, \
                        cudaGetErrorString(fs_err_));                                                \
  } while (0)

// Checks the launch itself; execution errors surface at the next synchronising call.
#define FS_CUDA_LAUNCH_CHECK() FS_CUDA_CHECK(cudaGetLastError())

namespace flashstar::cuda {

// A plain cudaMalloc'd array (never managed memory). Moves, never copies.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) { resize(n); }
  ~DeviceArray() { release(); }
  DeviceArray(DeviceArray&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  void resize(size_t n) {
    release();
    if (n) FS_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
    n_ = n;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

 private:
  void release() {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  size_t n_ = 0;
};

// A kernel switch from the environment: on unless `name` is set and starts with '0' (callers read it
// once, into their flag).
inline bool env_on(const char* name) {
  const char* v = std::getenv(name);
  return !(v && v[0] == '0');
}

// A kernel switch with values lo..hi from the environment (read once by callers): fallback when `name` is
// unset or out of range.
inline int env_choice(const char* name, int lo, int hi, int fallback) {
  const char* v = std::getenv(name);
  const int n = v ? std::atoi(v) : fallback;
  return n >= lo && n <= hi ? n : fallback;
}

// Whether the current device is a Hopper (9.0) and `kernel` was built for it (binary version 90): the
// warpgroup-MMA kernels exist only in the sm_90a code and trap elsewhere.
inline bool sm90_kernel(const void* kernel) {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) return false;
  cudaFuncAttributes fa{};
  if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess) return false;
  return major == 9 && minor == 0 && fa.binaryVersion == 90;
}

}  // namespace flashstar::cuda
