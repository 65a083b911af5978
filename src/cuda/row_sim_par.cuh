// The FP8 block and FP4 indexer simulations of a row held in shared memory, by all threads of a block:
// element for element what the reference's serial fp8_e4m3_roundtrip_blocks and indexer_qat_row compute
// (the butterflies of one Hadamard stage are independent; a block maximum does not depend on its order).
// They hold no multiply-add pair for contraction to fuse (scales are powers of two, roundings go through
// rint), so they are bitwise equal in every file that includes them; FastSmallOps.* checks it.
#pragma once
#include "cuda/ref_numerics.cuh"

namespace flashstar::cuda::fast {
namespace {

__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// Block maximum of |x| over [b0, b1) for one scale block; every thread gets it. `red` holds a value per warp.
__device__ float block_amax(const float* x, int64_t b0, int64_t b1, float* red) {
  float m = 0.0f;
  for (int64_t i = b0 + threadIdx.x; i < b1; i += blockDim.x) m = fmaxf(m, fabsf(x[i]));
  m = warp_max(m);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
  __syncthreads();
  float r = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) r = fmaxf(r, red[w]);
  __syncthreads();
  return r;
}

// fp8_e4m3_roundtrip_blocks of quant_sim.h with the block's threads.
__device__ void fp8_blocks_par(float* x, int64_t n, int64_t block, float* red) {
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    const int64_t b1 = b0 + block < n ? b0 + block : n;
    const float scale = fp8_block_scale(block_amax(x, b0, b1, red));
    for (int64_t i = b0 + threadIdx.x; i < b1; i += blockDim.x) x[i] = fp8_roundtrip(x[i], scale);
    __syncthreads();
  }
}

// indexer_qat_row of quant_sim.h with the block's threads (n a power of two).
__device__ void indexer_qat_par(float* x, int64_t n, float* red) {
  for (int64_t h = 1; h < n; h *= 2) {
    for (int64_t p = threadIdx.x; p < n / 2; p += blockDim.x) {
      const int64_t j = (p / h) * 2 * h + p % h;  // the p-th butterfly of this stage
      const float a = x[j], b = x[j + h];
      x[j] = a + b;
      x[j + h] = a - b;
    }
    __syncthreads();
  }
  const float s = hadamard_scale(n);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] *= s;
  __syncthreads();
  for (int64_t b0 = 0; b0 < n; b0 += 32) {
    const int64_t b1 = b0 + 32 < n ? b0 + 32 : n;
    const float scale = fp4_block_scale(block_amax(x, b0, b1, red));
    for (int64_t i = b0 + threadIdx.x; i < b1; i += blockDim.x) x[i] = fp4_roundtrip(x[i], scale);
    __syncthreads();
  }
}

}  // namespace
}  // namespace flashstar::cuda::fast
