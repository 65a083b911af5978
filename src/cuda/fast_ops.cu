// Small ops of the fused_ops route: the MoE router (sqrt-softplus probabilities, hash or biased top-k,
// normalised weights) with a block per token where the reference runs a thread per token (same math and
// the same tie rule, the lower expert id wins, so the choices match); RMS norm with a whole block
// streaming float4s into independent double partial sums (the reference's one-value-per-iteration loop is
// latency-bound at decode). The norm's sum has another fixed order than the reference's: both are double
// sums of float squares, so the scale rounds to the same float almost always.
#include <algorithm>

#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/ref_numerics.cuh"
#include "cuda/row_rms.cuh"
#include "cuda/route_block.cuh"
#include "cuda/row_sim_par.cuh"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

// A block per token, a thread per expert: each pick is a block-wide argmax (two shuffle rounds), so a
// decode step's router is a few short rounds instead of one warp walking every expert per pick (14 us).
// Picks, probabilities and the normalising sum (taken in pick order) are those of the reference.
__global__ void __launch_bounds__(kMaxExperts) route_block_kernel(float* logits, const float* bias,
                                                                  const int32_t* tid2eid, const int32_t* tokens, int E,
                                                                  int k, bool norm, float scale, int32_t* sel,
                                                                  float* weights) {
  pdl_wait();
  route_token(logits, bias, tid2eid, tokens, E, k, norm, scale, sel, weights, blockIdx.x);
}

__global__ void __launch_bounds__(kNormThreads) rms_norm_vec(const float* x, int64_t xs, const float* w, float* y,
                                                             int64_t ys, int64_t dim, float eps) {
  pdl_wait();
  __shared__ double red[kNormThreads / 32];
  const float4* xr = reinterpret_cast<const float4*>(x + blockIdx.x * xs);
  float4* yr = reinterpret_cast<float4*>(y + blockIdx.x * ys);
  const float scale = row_rms_scale(xr, dim, eps, red);
  const float4* wr = reinterpret_cast<const float4*>(w);
  for (int64_t j = threadIdx.x; j < dim / 4; j += blockDim.x) yr[j] = scaled(xr[j], scale, wr, j);
}

// rms_norm_vec, then rope_kernel's rotation of the row's last n_rot values (the same roundings: products
// and sums rounded one by one, as the reference file compiles them), then for a cached attention row the
// FP8 simulation and f16 storage of finish_rows: one launch per row group instead of two or three.
constexpr int kMaxFusedDim = 2048;
__device__ void norm_rope_row(float* x, int64_t dim, const float* w, float eps, int64_t pos, int n_rot,
                              const double* freq, bool fp8) {
  __shared__ double red[kNormThreads / 32];
  __shared__ __align__(16) float row[kMaxFusedDim];
  float4* xr = reinterpret_cast<float4*>(x);
  float4* r4 = reinterpret_cast<float4*>(row);
  const float scale = row_rms_scale(xr, dim, eps, red);
  const float4* wr = reinterpret_cast<const float4*>(w);
  for (int64_t j = threadIdx.x; j < dim / 4; j += blockDim.x) r4[j] = scaled(xr[j], scale, wr, j);
  __syncthreads();
  float* tail = row + dim - n_rot;
  for (int p = threadIdx.x; p < n_rot / 2; p += blockDim.x)
    d_rope_pair(tail[2 * p], tail[2 * p + 1], static_cast<double>(pos) * freq[p], false);
  __syncthreads();
  if (fp8) {
    fp8_blocks_par(row, dim - n_rot, 64);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) row[i] = f16_round(row[i]);
    __syncthreads();
  }
  for (int64_t j = threadIdx.x; j < dim / 4; j += blockDim.x) xr[j] = r4[j];
}

// One or two row sets of the same width in one launch (decode: the query heads and the cached kv row;
// norm_rope_rows: set b empty): blocks below a.rows take set a, the others set b.
__global__ void __launch_bounds__(kNormThreads) norm_rope_pair_kernel(NormRopeJob a, NormRopeJob b, int64_t dim,
                                                                      float eps, int n_rot, const double* freq,
                                                                      int64_t pos0, const int64_t* pos_dev) {
  pdl_wait();
  if (pos_dev) pos0 = *pos_dev;
  const bool in_a = blockIdx.x < a.rows;
  const NormRopeJob& j = in_a ? a : b;
  const int64_t r = in_a ? blockIdx.x : blockIdx.x - a.rows;
  norm_rope_row(j.x + r * dim, dim, j.w, eps, pos0 + r / j.rows_per_pos, n_rot, freq, j.fp8);
}


// Prefill's query heads (262 144 rows of 512 at 4 096 tokens): norm_rope_pair_kernel gives each row a
// block of 128 threads, one float4 each, three block barriers, and a 32-thread RoPE step while the other
// 96 wait, so it ran at ~2.2 TB/s. Here a warp takes a row, 8 rows a block: lane l holds float4s
// l, l + 32, ... (those of the block kernel's threads l, l + 32, ...), so each of the block kernel's warp
// sums is formed by the same xor tree over the same 32 values and they are added in the same order from
// 0: the scale, the scaled row and the rotation (d_rope_pair on the same values) are bitwise the block
// kernel's. Rows of 128 K values with no FP8 finish (the block kernel's one-float4-a-thread case).
constexpr int kRopeWarps = 8;
template <int K>
__global__ void __launch_bounds__(32 * kRopeWarps) norm_rope_warp_kernel(NormRopeJob j, float eps, int n_rot,
                                                                         const double* freq, int64_t pos0) {
  pdl_wait();
  constexpr int kDim = 128 * K;
  __shared__ __align__(16) float rows[kRopeWarps][kDim];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRopeWarps + warp;
  if (r >= j.rows) return;  // warp-uniform; nothing below synchronises the block
  float4* xr = reinterpret_cast<float4*>(j.x + r * kDim);
  float4 v[K];
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = xr[k * 32 + lane];
  double ss = 0;
#pragma unroll
  for (int k = 0; k < K; ++k) {  // row_rms_scale of thread k * 32 + lane, then its warp's tree
    double acc[4] = {0, 0, 0, 0};
    acc[0] += static_cast<double>(v[k].x) * v[k].x + static_cast<double>(v[k].y) * v[k].y +
              static_cast<double>(v[k].z) * v[k].z + static_cast<double>(v[k].w) * v[k].w;
    double t = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (int off = 16; off > 0; off >>= 1) t += __shfl_xor_sync(0xffffffffu, t, off);
    ss += t;
  }
  const float scale = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(kDim) + eps));
  const float4* wr = reinterpret_cast<const float4*>(j.w);
  float4* r4 = reinterpret_cast<float4*>(rows[warp]);
#pragma unroll
  for (int k = 0; k < K; ++k) r4[k * 32 + lane] = scaled(v[k], scale, wr, k * 32 + lane);
  __syncwarp();
  float* tail = rows[warp] + kDim - n_rot;
  const int64_t pos = pos0 + r / j.rows_per_pos;
  for (int p = lane; p < n_rot / 2; p += 32)
    d_rope_pair(tail[2 * p], tail[2 * p + 1], static_cast<double>(pos) * freq[p], false);
  __syncwarp();
#pragma unroll
  for (int k = 0; k < K; ++k) xr[k * 32 + lane] = r4[k * 32 + lane];
}

}  // namespace

bool rms_norm_rows(const float* x, int64_t xs, const float* w, float* y, int64_t ys, int64_t n_rows, int64_t dim,
                   float eps, cudaStream_t s) {
  auto al = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (dim % 4 || xs % 4 || ys % 4 || !al(x) || !al(y) || (w && !al(w)) || n_rows > 0x7fffffff) return false;
  if (n_rows <= 0) return true;
  rms_norm_vec<<<static_cast<unsigned>(n_rows), norm_threads(dim), 0, s>>>(x, xs, w, y, ys, dim, eps);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool norm_rope_pair(const NormRopeJob& a, const NormRopeJob& b, int64_t dim, float eps, int n_rot, const double* freq,
                    int64_t pos0, const int64_t* pos_dev, cudaStream_t s) {
  auto al = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  auto ok = [&](const NormRopeJob& j) { return al(j.x) && (!j.w || al(j.w)) && j.rows_per_pos >= 1 && j.rows >= 0; };
  if (dim % 4 || dim > kMaxFusedDim || !ok(a) || !ok(b) || n_rot < 0 || n_rot % 2 || n_rot > dim ||
      a.rows + b.rows > 0x7fffffff)
    return false;
  if (a.rows + b.rows <= 0) return true;
  norm_rope_pair_kernel<<<static_cast<unsigned>(a.rows + b.rows), norm_threads(dim), 0, s>>>(a, b, dim, eps, n_rot,
                                                                                             freq, pos0, pos_dev);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool norm_rope_rows(float* x, int64_t n_rows, int64_t dim, const float* w, float eps, int rows_per_pos, int n_rot,
                    const double* freq, int64_t pos0, const int64_t* pos_dev, bool fp8_rows, cudaStream_t s) {
  NormRopeJob a;
  a.x = x, a.rows = n_rows, a.w = w, a.rows_per_pos = rows_per_pos, a.fp8 = fp8_rows;
  return norm_rope_pair(a, NormRopeJob{}, dim, eps, n_rot, freq, pos0, pos_dev, s);
}

bool norm_rope_pair_prefill(const NormRopeJob& a, const NormRopeJob& b, int64_t dim, float eps, int n_rot,
                            const double* freq, int64_t pos0, cudaStream_t s) {
  auto al = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  // norm_rope_pair's conditions for b alone (it then takes b), and the warp kernel's for a
  const bool b_ok = dim % 4 == 0 && dim <= kMaxFusedDim && al(b.x) && (!b.w || al(b.w)) && b.rows_per_pos >= 1 &&
                    b.rows >= 0 && b.rows <= 0x7fffffff && n_rot >= 0 && n_rot % 2 == 0 && n_rot <= dim;
  const bool a_ok = dim == 512 && !a.fp8 && al(a.x) && (!a.w || al(a.w)) && a.rows_per_pos >= 1 && a.rows > 0 &&
                    (a.rows + kRopeWarps - 1) / kRopeWarps <= 0x7fffffff;
  if (!a_ok || !b_ok) return norm_rope_pair(a, b, dim, eps, n_rot, freq, pos0, nullptr, s);
  norm_rope_warp_kernel<4><<<static_cast<unsigned>((a.rows + kRopeWarps - 1) / kRopeWarps), 32 * kRopeWarps, 0, s>>>(
      a, eps, n_rot, freq, pos0);
  FS_CUDA_LAUNCH_CHECK();
  return norm_rope_pair(NormRopeJob{}, b, dim, eps, n_rot, freq, pos0, nullptr, s);
}

bool route_supported(int n_expert, int k) { return n_expert <= kMaxExperts && k <= n_expert && k <= 32; }

void route(float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens, int64_t n, int n_expert,
           int k, bool norm, float scale, int32_t* sel, float* weights, cudaStream_t s) {
  if (n <= 0) return;
  if (n > 0x7fffffff) fail("route: too many tokens");
  const int threads = (n_expert + 31) / 32 * 32;
  route_block_kernel<<<static_cast<unsigned>(n), threads, 0, s>>>(logits, bias, tid2eid, tokens, n_expert, k, norm,
                                                                   scale, sel, weights);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace flashstar::cuda::fast
