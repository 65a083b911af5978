// Small ops of the fused_ops route that the reference runs with one thread per row or per token and
// that decode pays for as serial latency: the FP8/FP4 simulations of cached rows (a block per row), the
// indexer query rounding (a lane quad per vector of 128, else a block per vector) and the
// hyper-connection split with 16 lanes per token. Each computes exactly what the reference computes,
// element for element (same operations on the same values; the butterflies of one Hadamard stage are
// independent, a block maximum does not depend on its order, the FP4 rounding of row_qat_quad.cuh is the
// reference's bit for bit), and this file is compiled without FMA contraction like the reference: the
// results are bitwise equal, which the kernel tests check.
#include "cuda/cuda_util.h"
#include "cuda/device_info.h"
#include "cuda/fast_kernels.h"
#include "cuda/hc_split.cuh"
#include "cuda/ref_numerics.cuh"
#include "cuda/pdl.cuh"
#include "cuda/row_qat_quad.cuh"
#include "cuda/row_sim_par.cuh"

namespace flashstar::cuda::fast {
namespace {

constexpr int kRowThreads = 128;
constexpr int kMaxRowDim = 4096;  // floats of one row held in shared memory

__global__ void __launch_bounds__(kRowThreads) finish_rows_par(float* x, int64_t row_stride, int64_t dim, int n_rot,
                                                               RowKind kind) {
  pdl_wait();
  __shared__ float row[kMaxRowDim];
  float* g = x + blockIdx.x * row_stride;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) row[i] = g[i];
  __syncthreads();
  if (kind == RowKind::Attention) fp8_blocks_par(row, dim - n_rot, 64);
  else indexer_qat_par(row, dim);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) g[i] = f16_round(row[i]);
}

__global__ void __launch_bounds__(kRowThreads) indexer_qat_par_kernel(float* x, int64_t dim) {
  pdl_wait();
  __shared__ float row[kMaxRowDim];
  float* g = x + blockIdx.x * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) row[i] = g[i];
  __syncthreads();
  indexer_qat_par(row, dim);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) g[i] = row[i];
}

// indexer_qat_par_kernel for rows of 128 at memory speed: a lane quad per row in registers
// (row_qat_quad.cuh), 64 rows a block, no shared memory or barriers (a block per row took 638 us for a
// 4 096-token prefill's 262 144 rows).
constexpr int kQuadThreads = 256, kQuadRows = kQuadThreads / 4;
__global__ void __launch_bounds__(kQuadThreads) indexer_qat_quad_kernel(float* x, int64_t n_rows) {
  pdl_wait();
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kQuadRows + threadIdx.x / 4;
  const bool valid = row < n_rows;  // every lane takes part in the shuffles
  float4* g = reinterpret_cast<float4*>(x + (valid ? row : n_rows - 1) * kQuadRowDim) + (threadIdx.x & 3);
  float4 v[kQuadRegs];
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m) v[m] = g[4 * m];
  qat_row_quad(v);
  if (!valid) return;
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m) g[4 * m] = v[m];
}

// hc_split_kernel of ref_ops.cu, a half warp per token (hc_split.cuh).
__global__ void hc_split_lanes4(const float* mix, int64_t ms, const float* scale, const float* base, int iters,
                                float eps, float* split, int64_t n_tok) {
  pdl_wait();
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 16;
  const bool valid = t < n_tok;
  const int64_t tc = valid ? t : n_tok - 1;  // every lane takes part in the shuffles
  hc_split_half_warp(mix + tc * ms, scale, base, iters, eps, valid, split + tc * kSplit);
}

// grid (token, slice of the row): each block computes its token's split (first half warp, into shared
// memory; slice 0 also stores it), then the weighted sum of the 4 streams (hc_sum_kernel's order) over its
// slice: one launch instead of two. The streams' values are loaded before the split is known.
constexpr int kSumThreads = 256, kSumPer = 4;  // a block covers kSumThreads * kSumPer values of the row
__global__ void __launch_bounds__(kSumThreads) hc_split_sum4(const float* mix, int64_t ms, const float* scale,
                                                             const float* base, int iters, float eps, float* split,
                                                             const float* X, int64_t d, float* out) {
  pdl_wait();
  __shared__ float sp[kSplit];
  const int64_t t = blockIdx.x;
  float x[kSumPer][kHc];
#pragma unroll
  for (int u = 0; u < kSumPer; ++u) {
    const int64_t i = (static_cast<int64_t>(blockIdx.y) * kSumPer + u) * kSumThreads + threadIdx.x;
#pragma unroll
    for (int s = 0; s < kHc; ++s) x[u][s] = i < d ? X[(t * kHc + s) * d + i] : 0.0f;
  }
  if (threadIdx.x < 32) {
    hc_split_half_warp(mix + t * ms, scale, base, iters, eps, threadIdx.x < 16, sp);
    __syncwarp();
    if (blockIdx.y == 0 && threadIdx.x < kSplit) split[t * kSplit + threadIdx.x] = sp[threadIdx.x];
  }
  __syncthreads();
#pragma unroll
  for (int u = 0; u < kSumPer; ++u) {
    const int64_t i = (static_cast<int64_t>(blockIdx.y) * kSumPer + u) * kSumThreads + threadIdx.x;
    float acc = 0;
    for (int s = 0; s < kHc; ++s) acc += sp[s] * x[u][s];
    if (i < d) out[t * d + i] = acc;
  }
}

// sum_slots_kernel then hc_post_kernel of ref_ops.cu for one element of each stream, through the same
// element functions (ref_numerics.cuh): the FFN output of the element and the 4 streams' new values.
__global__ void sum_slots_post4(const float* slot, const float* shared, int k, float* X, const float* split, int64_t d,
                                int64_t n_tok) {
  pdl_wait();
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n_tok * d) return;
  const int64_t t = idx / d, i = idx % d;
  d_hc_post_element(d_slot_sum(slot, shared, k, d, t, i), X, split + t * kSplit, kHc, d, t, i);
}

}  // namespace

bool finish_rows(float* x, int64_t n_rows, int64_t row_stride, int64_t dim, int n_rot, RowKind kind, bool official,
                 cudaStream_t s) {
  if (dim > kMaxRowDim || (kind == RowKind::Indexer && (dim & (dim - 1)) != 0) || n_rows > 0x7fffffff) return false;
  if (!official || n_rows <= 0) return true;
  finish_rows_par<<<static_cast<unsigned>(n_rows), kRowThreads, 0, s>>>(x, row_stride, dim, n_rot, kind);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool indexer_qat(float* x, int64_t n_vec, int64_t dim, cudaStream_t s) {
  if (dim != kQuadRowDim || !aligned16(x) || n_vec > 0x7fffffff) return indexer_qat_block(x, n_vec, dim, s);
  if (n_vec <= 0) return true;
  indexer_qat_quad_kernel<<<static_cast<unsigned>((n_vec + kQuadRows - 1) / kQuadRows), kQuadThreads, 0, s>>>(x, n_vec);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool indexer_qat_block(float* x, int64_t n_vec, int64_t dim, cudaStream_t s) {
  if (dim > kMaxRowDim || (dim & (dim - 1)) != 0 || n_vec > 0x7fffffff) return false;
  if (n_vec <= 0) return true;
  indexer_qat_par_kernel<<<static_cast<unsigned>(n_vec), kRowThreads, 0, s>>>(x, dim);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool hc_split(const float* mix, int64_t ms, const float* scale, const float* base, int n_hc, int iters, float eps,
              float* split, int64_t n, cudaStream_t s) {
  if (n_hc != 4) return false;
  if (n <= 0) return true;
  hc_split_lanes4<<<static_cast<unsigned>((n * 16 + 127) / 128), 128, 0, s>>>(mix, ms, scale, base, iters, eps, split, n);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace flashstar::cuda::fast

namespace flashstar::cuda::fast {

bool hc_split_sum(const float* mix, int64_t ms, const float* scale, const float* base, int n_hc, int iters, float eps,
                  float* split, const float* X, int64_t d, float* out, int64_t n, cudaStream_t s) {
  if (n_hc != kHc || n > 0x7fffffff || d <= 0) return false;
  if (n <= 0) return true;
  const int64_t slices = (d + kSumThreads * kSumPer - 1) / (kSumThreads * kSumPer);
  if (slices > 65535) return false;
  hc_split_sum4<<<dim3(static_cast<unsigned>(n), static_cast<unsigned>(slices)), kSumThreads, 0, s>>>(
      mix, ms, scale, base, iters, eps, split, X, d, out);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool sum_slots_post(const float* slot, const float* shared, int k, float* X, const float* split, int n_hc, int64_t d,
                    int64_t n, cudaStream_t s) {
  if (n_hc != kHc) return false;
  if (n <= 0) return true;
  const int64_t total = n * d;
  sum_slots_post4<<<static_cast<unsigned>((total + 255) / 256), 256, 0, s>>>(slot, shared, k, X, split, d, n);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace flashstar::cuda::fast
