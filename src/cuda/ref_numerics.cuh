// Device versions of the CPU reference's scalar numerics (src/cpu/ops.cpp), same operations in the
// same order; compiled without FMA contraction so they round like the CPU code.
#pragma once
#include <cstdint>

#include "common/half.h"

namespace flashstar::cuda {

__device__ __forceinline__ float d_sigmoid(float x) {
  if (x >= 0) return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}
__device__ __forceinline__ float d_softplus(float x) {
  if (x > 20.0f) return x;
  if (x < -20.0f) return expf(x);
  return log1pf(expf(x));
}
__device__ __forceinline__ float d_silu(float x) { return x * d_sigmoid(x); }

__device__ __forceinline__ float d_pow2_ceil(float y) {
  int e;
  const float m = frexpf(y, &e);
  return ldexpf(1.0f, m == 0.5f ? e - 1 : e);
}

__device__ __forceinline__ float d_e4m3_round(float v) {
  const float a = fminf(fabsf(v), 448.0f);
  float q;
  if (a < 0.015625f) {
    q = rintf(a * 512.0f) / 512.0f;
  } else {
    int e;
    frexpf(a, &e);
    const float quantum = ldexpf(1.0f, e - 4);
    q = rintf(a / quantum) * quantum;
  }
  q = fminf(q, 448.0f);
  return signbit(v) ? -q : q;
}

__device__ __forceinline__ float d_e2m1_round(float v) {
  const float mags[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float a = fminf(fabsf(v), 6.0f);
  int best = 0;
  float best_d = a;
  for (int i = 1; i < 8; ++i) {
    const float d = fabsf(a - mags[i]);
    if (d < best_d || (d == best_d && (i % 2 == 0) && (best % 2 != 0))) {
      best = i;
      best_d = d;
    }
  }
  return signbit(v) ? -mags[best] : mags[best];
}

// Serial (one thread) versions of the row transforms: the reference path favours the obvious code.
__device__ inline void d_fp8_blocks(float* x, int64_t n, int64_t block) {
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    const int64_t b1 = b0 + block < n ? b0 + block : n;
    float amax = 0;
    for (int64_t i = b0; i < b1; ++i) amax = fmaxf(amax, fabsf(x[i]));
    amax = fmaxf(amax, 1e-4f);
    const float scale = d_pow2_ceil(amax / 448.0f);
    for (int64_t i = b0; i < b1; ++i) {
      const float v = fminf(fmaxf(x[i] / scale, -448.0f), 448.0f);
      x[i] = d_e4m3_round(v) * scale;
    }
  }
}

__device__ inline void d_indexer_qat(float* x, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float s = static_cast<float>(1.0 / sqrt(static_cast<double>(n)));
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
  for (int64_t b0 = 0; b0 < n; b0 += 32) {
    const int64_t b1 = b0 + 32 < n ? b0 + 32 : n;
    float amax = 0;
    for (int64_t i = b0; i < b1; ++i) amax = fmaxf(amax, fabsf(x[i]));
    amax = fmaxf(amax, 7.052966104933725e-38f);
    const float scale = d_pow2_ceil(amax / 6.0f);
    for (int64_t i = b0; i < b1; ++i) x[i] = d_e2m1_round(fminf(fmaxf(x[i] / scale, -6.0f), 6.0f)) * scale;
  }
}

}  // namespace flashstar::cuda
