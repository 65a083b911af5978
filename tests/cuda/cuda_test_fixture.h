// The fixture every CUDA kernel test uses: skip without a GPU, fresh random inputs, host/device copies,
// NaN-poisoned outputs, and the relative error that judges a kernel against the CPU reference.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "cuda/cuda_session.h"
#include "cuda/cuda_util.h"
#include "cuda/ref_kernels.h"

namespace flashstar::cuda_test {

class CudaKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
    cuda::init_quant_tables();
    rng_.seed(std::random_device{}());
  }
  std::vector<float> randn(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng_);
    return v;
  }
  template <typename T>
  cuda::DeviceArray<T> up(const std::vector<T>& v) {
    cuda::DeviceArray<T> d(v.size());
    FS_CUDA_CHECK(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
  }
  template <typename T>
  std::vector<T> down(const cuda::DeviceArray<T>& d) {
    FS_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> v(d.size());
    FS_CUDA_CHECK(cudaMemcpy(v.data(), d.get(), d.bytes(), cudaMemcpyDeviceToHost));
    return v;
  }
  template <typename T>
  cuda::DeviceArray<T> poisoned(size_t n) {
    cuda::DeviceArray<T> d(n);
    FS_CUDA_CHECK(cudaMemset(d.get(), 0xff, d.bytes()));  // NaN for floats
    return d;
  }
  // ||a - b|| / ||b||; infinite when any value is not finite (an unwritten, poisoned output).
  static double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
      num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      den += double(b[i]) * b[i];
    }
    return std::sqrt(num / std::max(den, 1e-30));
  }
  std::mt19937 rng_;
};

}  // namespace flashstar::cuda_test
