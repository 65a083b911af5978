// indexer_qat_row of quant_sim.h (Hadamard butterflies, the 1/sqrt(128) scale, FP4 in blocks of 32) for
// 128-float rows held in registers by the four lanes of a lane quad (lanes 4i..4i+3), without shared
// memory or barriers: fast::indexer_qat (fast_exact_ops.cu) and the decode indexer's query
// (fast_indexer_decode.cu). Element for element what indexer_qat_par computes: each butterfly is a + b and
// a - b of the same two values (the stages in the same order; within a stage they are independent), the
// scale one product, a block's maximum the same set's (fmaxf in any order), its scale fp4_block_scale of
// it, and the rounding fp4_roundtrip_pow2, which is fp4_roundtrip bit for bit (quant_sim.h). No product
// here meets a sum, so multiply-add contraction cannot change the bits either.
#pragma once
#include "common/quant_sim.h"

namespace flashstar::cuda {

// A row's layout: lane j (0..3) of the quad holds the float4s j, 4 + j, ..., 28 + j of the row (v[m] =
// float4 4 m + j: values 16 m + 4 j .. 16 m + 4 j + 3), so each v[m]'s load or store by the quad covers 64
// contiguous bytes. Value e's butterfly partner e ^ h is in the same float4 (h = 1, 2), in lane j ^ 1 or
// j ^ 2 (h = 4, 8), or in v[m ^ 1], v[m ^ 2], v[m ^ 4] (h = 16, 32, 64); its FP4 block e / 32 is v[2b] and
// v[2b + 1] of the four lanes (b = m / 2).
constexpr int kQuadRowDim = 128, kQuadRegs = 8;

__device__ __forceinline__ void qat_bfly(float& a, float& b) {
  const float x = a, y = b;
  a = x + y;
  b = x - y;
}
__device__ __forceinline__ void qat_bfly4(float4& a, float4& b) {
  qat_bfly(a.x, b.x), qat_bfly(a.y, b.y), qat_bfly(a.z, b.z), qat_bfly(a.w, b.w);
}
// A stage across the quad: the lane with lane bit O clear holds a = x[e], its partner b = x[e + h].
template <int O>
__device__ __forceinline__ float qat_bfly_lanes(float v, bool upper) {
  const float p = __shfl_xor_sync(0xffffffffu, v, O);
  return upper ? p - v : v + p;
}
template <int O>
__device__ __forceinline__ void qat_bfly_lanes4(float4& v, bool upper) {
  v.x = qat_bfly_lanes<O>(v.x, upper), v.y = qat_bfly_lanes<O>(v.y, upper);
  v.z = qat_bfly_lanes<O>(v.z, upper), v.w = qat_bfly_lanes<O>(v.w, upper);
}
// A stage between the registers (h = 16 R).
template <int R>
__device__ __forceinline__ void qat_bfly_regs(float4 (&v)[kQuadRegs]) {
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m)
    if (!(m & R)) qat_bfly4(v[m], v[m + R]);
}
__device__ __forceinline__ float qat_amax4(float m, float4 v) {
  return fmaxf(fmaxf(fmaxf(m, fabsf(v.x)), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
}
__device__ __forceinline__ float4 qat_fp4(float4 v, float scale, float inv) {
  return make_float4(fp4_roundtrip_pow2(v.x, scale, inv), fp4_roundtrip_pow2(v.y, scale, inv),
                     fp4_roundtrip_pow2(v.z, scale, inv), fp4_roundtrip_pow2(v.w, scale, inv));
}

// The row of this lane's quad in place. All 32 lanes of the warp must call it (the shuffles name the
// whole warp, which keeps them plain; each stays within its quad).
__device__ __forceinline__ void qat_row_quad(float4 (&v)[kQuadRegs]) {
  const int j = threadIdx.x & 3;
  constexpr unsigned kAll = 0xffffffffu;
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m) qat_bfly(v[m].x, v[m].y), qat_bfly(v[m].z, v[m].w);  // h = 1
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m) qat_bfly(v[m].x, v[m].z), qat_bfly(v[m].y, v[m].w);  // h = 2
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m) qat_bfly_lanes4<1>(v[m], j & 1);  // h = 4
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m) qat_bfly_lanes4<2>(v[m], j & 2);  // h = 8
  qat_bfly_regs<1>(v), qat_bfly_regs<2>(v), qat_bfly_regs<4>(v);  // h = 16, 32, 64
  const float s = hadamard_scale(kQuadRowDim);
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m) v[m].x *= s, v[m].y *= s, v[m].z *= s, v[m].w *= s;
  // block b's maximum in every lane; lane j forms block j's scale and its inverse, the quad shares them
  float amax[4];
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    amax[b] = qat_amax4(qat_amax4(0.0f, v[2 * b]), v[2 * b + 1]);
    amax[b] = fmaxf(amax[b], __shfl_xor_sync(kAll, amax[b], 1));
    amax[b] = fmaxf(amax[b], __shfl_xor_sync(kAll, amax[b], 2));
  }
  const float mine = j == 0 ? amax[0] : j == 1 ? amax[1] : j == 2 ? amax[2] : amax[3];
  const float scale = fp4_block_scale(mine), inv = 1.0f / scale;
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    const float sb = __shfl_sync(kAll, scale, b, 4), ib = __shfl_sync(kAll, inv, b, 4);
    v[2 * b] = qat_fp4(v[2 * b], sb, ib);
    v[2 * b + 1] = qat_fp4(v[2 * b + 1], sb, ib);
  }
}

}  // namespace flashstar::cuda
