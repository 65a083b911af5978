// Reference matrix products: each block owns one weight row and a tile of tokens; every weight element
// is dequantized in the kernel and multiplied in fp32; the block reduction is a fixed tree.
#include "common/error.h"
#include "cuda/cuda_util.h"
#include "cuda/dequant.cuh"
#include "cuda/ref_kernels.h"
#include "cuda/weight_dispatch.h"
#include "quant/quant.h"
#include "cuda/pdl.cuh"

namespace flashstar::cuda {

void init_quant_tables() {
  static bool done = false;
  if (done) return;
  FS_CUDA_CHECK(cudaMemcpyToSymbol(c_iq2xxs_grid, quant::kIq2xxsGrid, sizeof(c_iq2xxs_grid)));
  FS_CUDA_CHECK(cudaMemcpyToSymbol(c_iq2xs_signs, quant::kIq2xsSigns, sizeof(c_iq2xs_signs)));
  done = true;
}

namespace {

constexpr int kThreads = 256;
constexpr int kTile = 16;  // tokens per block

// Sums each of the kTile per-thread accumulators over the block in a fixed order; results in out[].
__device__ void block_reduce_tile(float (&acc)[kTile], float* smem /* [kThreads/32][kTile] */, int nt) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int t = 0; t < kTile; ++t) {
    float v = acc[t];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) smem[warp * kTile + t] = v;
  }
  __syncthreads();
  if (threadIdx.x < nt) {
    float v = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) v += smem[w * kTile + threadIdx.x];
    acc[0] = v;  // thread t holds token t's total
  }
}

template <GgmlType T>
__global__ void __launch_bounds__(kThreads) matmul_kernel(const uint8_t* W, size_t row_bytes, int64_t cols, int64_t row0,
                                                          const float* X, int64_t n_tok, int64_t xs, float* Y, int64_t ys) {
  pdl_wait();
  __shared__ float smem[(kThreads / 32) * kTile];
  const int64_t r = blockIdx.x;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int nt = static_cast<int>(n_tok - t0 < kTile ? n_tok - t0 : kTile);
  const uint8_t* row = W + static_cast<size_t>(row0 + r) * row_bytes;
  float acc[kTile];
#pragma unroll
  for (int t = 0; t < kTile; ++t) acc[t] = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += kThreads) {
    const float w = dq<T>(row, i);
#pragma unroll
    for (int t = 0; t < kTile; ++t)
      if (t < nt) acc[t] += w * X[(t0 + t) * xs + i];
  }
  block_reduce_tile(acc, smem, nt);
  if (threadIdx.x < nt) Y[(t0 + threadIdx.x) * ys + r] = acc[0];
}

template <GgmlType T>
__global__ void __launch_bounds__(kThreads) matmul_items_kernel(const uint8_t* W, size_t row_bytes, int64_t cols,
                                                                int64_t rows_per_mat, const int32_t* mat_of_item,
                                                                int32_t src_div, const float* X, int64_t xs, int64_t item0,
                                                                float* Y, int64_t ys) {
  pdl_wait();
  __shared__ float smem[(kThreads / 32) * kTile];
  const int64_t r = blockIdx.x, item = item0 + blockIdx.y;
  const uint8_t* row = W + static_cast<size_t>(mat_of_item[item] * rows_per_mat + r) * row_bytes;
  const float* x = X + (item / src_div) * xs;
  float acc[kTile];
#pragma unroll
  for (int t = 0; t < kTile; ++t) acc[t] = 0.0f;
  for (int64_t i = threadIdx.x; i < cols; i += kThreads) acc[0] += dq<T>(row, i) * x[i];
  block_reduce_tile(acc, smem, 1);
  if (threadIdx.x == 0) Y[item * ys + r] = acc[0];
}


template <GgmlType T>
struct MatmulLaunch {
  static void run(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
                  int64_t ys, cudaStream_t s) {
    const int64_t tiles = (n_tok + kTile - 1) / kTile;
    for (int64_t tb = 0; tb < tiles; tb += 65535) {
      const int64_t nt = std::min<int64_t>(65535, tiles - tb);
      dim3 grid(static_cast<unsigned>(n_rows), static_cast<unsigned>(nt));
      matmul_kernel<T><<<grid, kThreads, 0, s>>>(W.data, W.row_bytes, W.cols, row0, X + tb * kTile * xs,
                                                  n_tok - tb * kTile, xs, Y + tb * kTile * ys, ys);
      FS_CUDA_LAUNCH_CHECK();
    }
  }
};

template <GgmlType T>
struct ItemsLaunch {
  static void run(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                  int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s) {
    for (int64_t i0 = 0; i0 < n_items; i0 += 65535) {
      dim3 grid(static_cast<unsigned>(rows_per_mat), static_cast<unsigned>(std::min<int64_t>(65535, n_items - i0)));
      matmul_items_kernel<T><<<grid, kThreads, 0, s>>>(W.data, W.row_bytes, W.cols, rows_per_mat, mat_of_item, src_div,
                                                        X, xs, i0, Y, ys);
      FS_CUDA_LAUNCH_CHECK();
    }
  }
};

}  // namespace

void matmul(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
            int64_t ys, cudaStream_t s) {
  if (n_rows <= 0 || n_tok <= 0) return;
  dispatch_weight_type<MatmulLaunch>(W.type, W, row0, n_rows, X, n_tok, xs, Y, ys, s);
}

void matmul_items(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                  int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s) {
  if (n_items <= 0) return;
  dispatch_weight_type<ItemsLaunch>(W.type, W, rows_per_mat, mat_of_item, src_div, X, xs, n_items, Y, ys, s);
}

namespace {
template <GgmlType T>
__global__ void embed_kernel(const uint8_t* E, size_t row_bytes, int64_t d, const int32_t* tokens, int n_hc, float* X) {
  pdl_wait();
  const int64_t t = blockIdx.x;
  const uint8_t* row = E + static_cast<size_t>(tokens[t]) * row_bytes;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = dq<T>(row, i);
    for (int s = 0; s < n_hc; ++s) X[(t * n_hc + s) * d + i] = v;
  }
}
template <GgmlType T>
struct EmbedLaunch {
  static void run(const DMat& E, const int32_t* tokens, int64_t n, int n_hc, float* X, cudaStream_t s) {
    embed_kernel<T><<<static_cast<unsigned>(n), 256, 0, s>>>(E.data, E.row_bytes, E.cols, tokens, n_hc, X);
    FS_CUDA_LAUNCH_CHECK();
  }
};
}  // namespace

void embed(const DMat& E, const int32_t* tokens, int64_t n, int n_hc, float* X, cudaStream_t s) {
  if (n > 0) dispatch_weight_type<EmbedLaunch>(E.type, E, tokens, n, n_hc, X, s);
}

}  // namespace flashstar::cuda
