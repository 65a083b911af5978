// The FP8 block and FP4 indexer simulations of a row held in shared memory, by all threads of a block:
// element for element what the reference's serial fp8_e4m3_roundtrip_blocks and indexer_qat_row compute
// (the butterflies of one Hadamard stage are independent; a block maximum does not depend on its order).
// They hold no multiply-add pair for contraction to fuse (scales are powers of two, roundings go through
// rint), so they are bitwise equal in every file that includes them; FastSmallOps.* checks it.
#pragma once
#include "cuda/ref_numerics.cuh"
#include "cuda/warp_reduce.cuh"

namespace flashstar::cuda::fast {
namespace {

// fp8_e4m3_roundtrip_blocks of quant_sim.h with the block's threads: a warp per scale block, all blocks at
// once (one block after another, with two barriers each, made a cached row's finish several microseconds).
// blockDim.x a multiple of 32.
__device__ void fp8_blocks_par(float* x, int64_t n, int64_t block) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  for (int64_t b0 = warp * block; b0 < n; b0 += n_warps * block) {
    const int64_t b1 = b0 + block < n ? b0 + block : n;
    float m = 0.0f;
    for (int64_t i = b0 + lane; i < b1; i += 32) m = fmaxf(m, fabsf(x[i]));
    const float scale = fp8_block_scale(warp_max(m));
    for (int64_t i = b0 + lane; i < b1; i += 32) x[i] = fp8_roundtrip(x[i], scale);
  }
  __syncthreads();
}

// indexer_qat_row of quant_sim.h with the block's threads (n a power of two; blockDim.x a multiple of 32).
__device__ void indexer_qat_par(float* x, int64_t n) {
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
  // FP4 blocks of 32: a warp per block, a lane per element
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  for (int64_t b0 = warp * 32; b0 < n; b0 += n_warps * 32) {
    const bool in = b0 + lane < n;
    const float v = in ? x[b0 + lane] : 0.0f;
    const float scale = fp4_block_scale(warp_max(fabsf(v)));
    if (in) x[b0 + lane] = fp4_roundtrip(v, scale);
  }
  __syncthreads();
}

}  // namespace
}  // namespace flashstar::cuda::fast
