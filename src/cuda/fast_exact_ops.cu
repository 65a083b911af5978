// Small ops of the fused_ops route that the reference runs with one thread per row or per token and
// that decode pays for as serial latency: the FP8/FP4 simulations of cached rows (a block per row), the
// indexer query rounding (a block per vector) and the hyper-connection split with 16 lanes per token. Each computes exactly what the reference computes, element for element (same operations
// on the same values; the butterflies of one Hadamard stage are independent, a block maximum does not
// depend on its order), and this file is compiled without FMA contraction like the reference: the results
// are bitwise equal, which the kernel tests check.
#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/ref_numerics.cuh"

namespace flashstar::cuda::fast {
namespace {

constexpr int kRowThreads = 128;
constexpr int kMaxRowDim = 4096;  // floats of one row held in shared memory

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

__global__ void __launch_bounds__(kRowThreads) finish_rows_par(float* x, int64_t row_stride, int64_t dim, int n_rot,
                                                               RowKind kind) {
  __shared__ float row[kMaxRowDim];
  __shared__ float red[kRowThreads / 32];
  float* g = x + blockIdx.x * row_stride;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) row[i] = g[i];
  __syncthreads();
  if (kind == RowKind::Attention) fp8_blocks_par(row, dim - n_rot, 64, red);
  else indexer_qat_par(row, dim, red);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) g[i] = f16_round(row[i]);
}

__global__ void __launch_bounds__(kRowThreads) indexer_qat_par_kernel(float* x, int64_t dim) {
  __shared__ float row[kMaxRowDim];
  __shared__ float red[kRowThreads / 32];
  float* g = x + blockIdx.x * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) row[i] = g[i];
  __syncthreads();
  indexer_qat_par(row, dim, red);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) g[i] = row[i];
}

// hc_split_kernel of ref_ops.cu for N = 4 streams with 16 lanes per token, lane (a, b) holding M[a][b]:
// each row or column sum gathers the four values by shuffles and adds them in the reference's order, and
// each lane divides its own element, so the Sinkhorn walk's chain of divisions is 16 times shorter.
__global__ void hc_split_lanes4(const float* mix, int64_t ms, const float* scale, const float* base, int iters,
                                float eps, float* split, int64_t n_tok) {
  constexpr int N = 4;
  const int lane = threadIdx.x & 31, sub = lane & 15, a = sub / N, b = sub % N, g = lane & 16;
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 16;
  const bool valid = t < n_tok;
  const int64_t tc = valid ? t : n_tok - 1;  // every lane takes part in the shuffles
  const float* m = mix + tc * ms;
  float* out = split + tc * (2 * N + N * N);
  if (valid && sub < N) out[sub] = d_hc_pre(m[sub], scale[0], base[sub], eps);
  if (valid && sub >= N && sub < 2 * N) out[sub] = d_hc_post(m[sub], scale[1], base[sub]);
  auto at = [&](float v, int aa, int bb) { return __shfl_sync(0xffffffffu, v, g + aa * N + bb); };
  float v = m[2 * N + a * N + b] * scale[2] + base[2 * N + a * N + b];
  float mx = -INFINITY;
  for (int j = 0; j < N; ++j) mx = fmaxf(mx, at(v, a, j));
  v = expf(v - mx);
  float sum = 0;
  for (int j = 0; j < N; ++j) sum += at(v, a, j);
  v = v / sum + eps;
  for (int it = 0; it < iters; ++it) {
    if (it > 0) {
      float rs = 0;
      for (int j = 0; j < N; ++j) rs += at(v, a, j);
      v /= (rs + eps);
    }
    float cs = 0;
    for (int i = 0; i < N; ++i) cs += at(v, i, b);
    v /= (cs + eps);
  }
  if (valid) out[2 * N + sub] = v;
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
