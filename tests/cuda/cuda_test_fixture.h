// The fixture every CUDA kernel test uses: skip without a GPU, fresh random inputs, host/device copies,
// NaN-poisoned outputs, and the relative error that judges a kernel against the CPU reference.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "common/half.h"
#include "cuda/cuda_session.h"
#include "cuda/cuda_util.h"
#include "cuda/ref_kernels.h"
#include "quant/quant.h"

namespace flashstar::cuda_test {

// A kernel switch (its setter and its value now) put back when the scope ends, also when an assertion
// ends a test early.
template <class Set>
struct RestoreOnExit {
  Set set;
  bool on;
  ~RestoreOnExit() { set(on); }
};
template <class Set>
RestoreOnExit(Set, bool) -> RestoreOnExit<Set>;

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
  // Device time, in ms, of what f enqueues on the default stream: two timing events around it, waited for.
  class DeviceTimer {
   public:
    DeviceTimer() {
      FS_CUDA_CHECK(cudaEventCreate(&e0_));
      FS_CUDA_CHECK(cudaEventCreate(&e1_));
    }
    ~DeviceTimer() {
      cudaEventDestroy(e0_);
      cudaEventDestroy(e1_);
    }
    DeviceTimer(const DeviceTimer&) = delete;
    DeviceTimer& operator=(const DeviceTimer&) = delete;
    template <class F>
    float ms(F&& f) {
      FS_CUDA_CHECK(cudaEventRecord(e0_));
      f();
      FS_CUDA_CHECK(cudaEventRecord(e1_));
      FS_CUDA_CHECK(cudaEventSynchronize(e1_));
      float t = 0;
      FS_CUDA_CHECK(cudaEventElapsedTime(&t, e0_, e1_));
      return t;
    }

   private:
    cudaEvent_t e0_ = nullptr, e1_ = nullptr;
  };
  // Microseconds a call, over reps calls launched back to back after warm unmeasured ones (call(i) gets the
  // call's index, e.g. to rotate weight sets so that they come from memory): the timing tests' loop.
  template <class F>
  static double back_to_back_us(int warm, int reps, F&& call) {
    for (int i = 0; i < warm; ++i) call(i);
    DeviceTimer timer;
    return 1000.0 * timer.ms([&] {
      for (int i = 0; i < reps; ++i) call(i);
    }) / reps;
  }
  // The timing tests' measure: once(set) called for every set as a warm-up, then `runs` times with the
  // sets rotating (so that a run does not find its inputs in L2 from the one before), each timed by
  // device events; the median in ms.
  template <class F>
  static float median_ms(int sets, int runs, F&& once) {
    DeviceTimer timer;
    for (int s = 0; s < sets; ++s) once(s);
    std::vector<float> ms(static_cast<size_t>(runs));
    for (int r = 0; r < runs; ++r) ms[r] = timer.ms([&] { once(r % sets); });
    std::sort(ms.begin(), ms.end());
    return ms[runs / 2];
  }
  // RoPE frequencies 10000^(-2p / n_rot), p < n_rot / 2 (the model's base), as the session's tables.
  static std::vector<double> rope_freqs(int n_rot) {
    std::vector<double> freq(static_cast<size_t>(n_rot / 2));
    for (int p = 0; p < n_rot / 2; ++p) freq[static_cast<size_t>(p)] = std::pow(10000.0, -2.0 * p / n_rot);
    return freq;
  }
  // sets groups of k distinct values of 0..n-1, concatenated (e.g. the experts of successive timed calls,
  // each group drawn afresh so that consecutive calls read other weights).
  std::vector<int32_t> distinct_sets(int64_t n, int64_t k, int sets) {
    std::vector<int32_t> out, all(static_cast<size_t>(n));
    std::iota(all.begin(), all.end(), 0);
    for (int s = 0; s < sets; ++s) {
      std::shuffle(all.begin(), all.end(), rng_);
      out.insert(out.end(), all.begin(), all.begin() + k);
    }
    return out;
  }
  // Gaussian activations with heavy tails inside the FP16 range (the tensor-core products' split copy):
  // one in 256 a thousand times larger, four in 256 thirty times, one in 256 zero.
  std::vector<float> tailed_acts(size_t n) {
    auto x = randn(n);
    std::uniform_int_distribution<int> pick(0, 255);
    for (auto& v : x) {
      const int k = pick(rng_);
      if (k == 0) v *= 1000.0f;
      else if (k < 5) v *= 30.0f;
      else if (k == 255) v = 0.0f;
    }
    return x;
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
  // rows x cols weights of type t: random codes (every bit pattern of the quant codes occurs), scales drawn so dequantized values are O(0.05).
  std::vector<uint8_t> random_weights(GgmlType t, int64_t rows, int64_t cols) {
    const size_t rb = row_bytes(t, cols);
    std::vector<uint8_t> w(rb * rows);
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> sc(0.5f, 1.5f);
    std::bernoulli_distribution neg(0.5);
    auto put_f16 = [&](uint8_t* p, float v) {
      const uint16_t h = f32_to_f16(v);
      std::memcpy(p, &h, 2);
    };
    if (t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16) {
      const auto f = randn(static_cast<size_t>(rows * cols), 0.05f);
      for (int64_t r = 0; r < rows; ++r) quant::quantize_row(t, f.data() + r * cols, w.data() + r * rb, cols);
      return w;
    }
    for (auto& b : w) b = static_cast<uint8_t>(byte(rng_));
    const int64_t bb = type_info(t).block_bytes, nb = static_cast<int64_t>(w.size()) / bb;
    for (int64_t i = 0; i < nb; ++i) {
      uint8_t* b = w.data() + i * bb;
      const float s = sc(rng_) * (neg(rng_) ? -1.0f : 1.0f);
      switch (t) {
        case GgmlType::Q8_0: put_f16(b, 4e-4f * s); break;
        case GgmlType::Q2_K: put_f16(b + 80, 4e-3f * s), put_f16(b + 82, 2e-3f * sc(rng_)); break;
        case GgmlType::Q4_K: put_f16(b, 8e-4f * s), put_f16(b + 2, 8e-4f * sc(rng_)); break;
        case GgmlType::IQ2_XXS: put_f16(b, 4e-3f * s); break;
        default: break;
      }
    }
    return w;
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
