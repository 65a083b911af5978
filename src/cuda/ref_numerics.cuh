// Device versions of the CPU reference's scalar numerics (src/cpu/ops.cpp), same operations in the
// same order; compiled without FMA contraction so they round like the CPU code.
#pragma once
#include <cstdint>

#include "common/half.h"
#include "common/quant_sim.h"

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
// Hyper-connection gates of one stream from its mixer logit m: mixing in (pre) and mixing out (post).
__device__ __forceinline__ float d_hc_pre(float m, float scale, float base, float eps) {
  return d_sigmoid(m * scale + base) + eps;
}
__device__ __forceinline__ float d_hc_post(float m, float scale, float base) { return 2.0f * d_sigmoid(m * scale + base); }
// RoPE of one pair (a, b) by angle th (negated for the inverse), rounded step by step so that files compiled
// with and without multiply-add contraction rotate alike.
__device__ __forceinline__ float2 d_rope_cs(double th, bool inverse) {
  return make_float2(static_cast<float>(cos(th)), static_cast<float>(inverse ? -sin(th) : sin(th)));
}
__device__ __forceinline__ void d_rotate(float& a, float& b, float2 cs) {
  const float x = a, y = b;
  a = __fsub_rn(__fmul_rn(x, cs.x), __fmul_rn(y, cs.y));
  b = __fadd_rn(__fmul_rn(x, cs.y), __fmul_rn(y, cs.x));
}
__device__ __forceinline__ void d_rope_pair(float& a, float& b, double th, bool inverse) {
  d_rotate(a, b, d_rope_cs(th, inverse));
}

// The FFN output of element i of token t: its k routed slots in order, then the shared expert (may be null).
__device__ __forceinline__ float d_slot_sum(const float* slot, const float* shared, int k, int64_t d, int64_t t,
                                            int64_t i) {
  float acc = 0;
  for (int s = 0; s < k; ++s) acc += slot[(t * k + s) * d + i];
  if (shared) acc += shared[t * d + i];
  return acc;
}
// Hyper-connection post of element i of token t (n <= 16 streams, sp: the token's split): stream b becomes
// post[b] f + sum_a comb[a][b] old[a].
__device__ __forceinline__ void d_hc_post_element(float f, float* X, const float* sp, int n, int64_t d, int64_t t,
                                                  int64_t i) {
  const float* post = sp + n;
  const float* comb = sp + 2 * n;
  float old[16];
  for (int a = 0; a < n; ++a) old[a] = X[(t * n + a) * d + i];
  for (int b = 0; b < n; ++b) {
    float acc = post[b] * f;
    for (int a = 0; a < n; ++a) acc += comb[a * n + b] * old[a];
    X[(t * n + b) * d + i] = acc;
  }
}

// Row transforms of the official numerics, run by one thread (src/common/quant_sim.h).
__device__ inline void d_fp8_blocks(float* x, int64_t n, int64_t block) { fp8_e4m3_roundtrip_blocks(x, n, block); }
__device__ inline void d_indexer_qat(float* x, int64_t n) { indexer_qat_row(x, n); }

}  // namespace flashstar::cuda
