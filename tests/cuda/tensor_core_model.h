// A model of the tensor cores' FP16 accumulation for CPU tests that replay a kernel's arithmetic:
// products exact, every addend (and the accumulator) aligned to the largest one's exponent and cut to
// its 24 bits toward zero, the sum cut again (one mma.sync / wgmma k-step).
#pragma once
#include <algorithm>
#include <cmath>

#include "common/half.h"

namespace flashstar::cuda_test {

// One k-step: c plus the n products prod[0..n).
inline float mma_model(float c, const double* prod, int n) {
  double amax = std::fabs(static_cast<double>(c));
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(prod[i]));
  if (amax == 0.0) return c;
  const double g = std::ldexp(1.0, std::ilogb(amax) - 23);
  double s = std::trunc(c / g) * g;
  for (int i = 0; i < n; ++i) s += std::trunc(prod[i] / g) * g;  // exact: multiples of g below 2^30 g
  if (s == 0.0) return 0.0f;
  const double g2 = std::ldexp(1.0, std::ilogb(std::fabs(s)) - 23);
  return static_cast<float>(std::trunc(s / g2) * g2);
}

// to_f16's split of an activation: hi = fp16(x), lo = fp16(x - hi).
inline void split16(float x, float& hi, float& lo) {
  hi = f16_to_f32(f32_to_f16(x));
  lo = f16_to_f32(f32_to_f16(x - hi));
}

}  // namespace flashstar::cuda_test
