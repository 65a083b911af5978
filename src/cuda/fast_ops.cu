// Small ops of the fused_ops route: the MoE router (sqrt-softplus probabilities, hash or biased top-k,
// normalised weights) with a warp per token where the reference runs a thread per token (same math and
// the same tie rule, the lower expert id wins, so the choices match); RMS norm with a whole block
// streaming float4s into independent double partial sums (the reference's one-value-per-iteration loop is
// latency-bound at decode). The norm's sum has another fixed order than the reference's: both are double
// sums of float squares, so the scale rounds to the same float almost always.
#include <algorithm>

#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/ref_numerics.cuh"

namespace flashstar::cuda::fast {
namespace {

constexpr int kMaxPerLane = 32;  // up to 1024 experts

// Every value a step needs stays in registers and moves by shuffles: a decode step runs one warp, so
// each dependent global load (the hash table, the picks, their probabilities) would add a full memory
// latency to the layer.
__global__ void route_warp_kernel(float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens,
                                  int64_t n, int E, int k, bool norm, float scale, int32_t* sel, float* weights) {
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (t >= n) return;
  float* p = logits + t * E;
  // the hash layers' picks, one per lane, loaded while the probabilities are computed
  const int hashed = tid2eid && lane < k ? tid2eid[static_cast<int64_t>(tokens[t]) * k + lane] : -1;
  float pr[kMaxPerLane], v[kMaxPerLane];
  unsigned taken = 0;  // bit j: expert lane + 32 j already chosen
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int e = lane + 32 * j;
    pr[j] = 0.0f, v[j] = -INFINITY;
    if (e < E) {
      pr[j] = sqrtf(d_softplus(p[e]));
      p[e] = pr[j];
      v[j] = pr[j] + (bias ? bias[e] : 0.0f);
    }
  }
  int mine = -1;     // lane i keeps the i-th pick
  float my_p = 0.0f, sum = 0.0f;
  for (int i = 0; i < k; ++i) {
    int best;
    if (tid2eid) {
      best = __shfl_sync(0xffffffffu, hashed, i);
    } else {
      float bv = -INFINITY;
      best = -1;
#pragma unroll
      for (int j = 0; j < kMaxPerLane; ++j) {
        const int e = lane + 32 * j;
        if (e < E && !((taken >> j) & 1) && (best < 0 || v[j] > bv)) bv = v[j], best = e;
      }
      for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
        const int oe = __shfl_xor_sync(0xffffffffu, best, off);
        if (oe >= 0 && (best < 0 || ov > bv || (ov == bv && oe < best))) bv = ov, best = oe;
      }
      if (best >= 0 && (best & 31) == lane) taken |= 1u << (best >> 5);
    }
    // the pick's probability, from the lane that holds it (the same sum order as the reference: i = 0..k-1)
    float own = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxPerLane; ++j)
      if ((best >> 5) == j) own = pr[j];
    const float pb = __shfl_sync(0xffffffffu, own, best & 31);
    sum += pb;
    if (lane == i) mine = best, my_p = pb;
  }
  if (lane < k) {
    const float denom = norm ? fmaxf(sum, 6.103515625e-5f) : 1.0f;
    sel[t * k + lane] = mine;
    weights[t * k + lane] = my_p / denom * scale;
  }
}

constexpr int kNormThreads = 512;

__global__ void __launch_bounds__(kNormThreads) rms_norm_vec(const float* x, int64_t xs, const float* w, float* y,
                                                             int64_t ys, int64_t dim, float eps) {
  __shared__ double red[kNormThreads / 32];
  const float4* xr = reinterpret_cast<const float4*>(x + blockIdx.x * xs);
  float4* yr = reinterpret_cast<float4*>(y + blockIdx.x * ys);
  const int64_t n4 = dim / 4;
  double acc[4] = {0, 0, 0, 0};
  const int64_t nt = blockDim.x;
  int64_t i = threadIdx.x;
  for (; i + 3 * nt < n4; i += 4 * nt) {
    float4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = xr[i + u * nt];
#pragma unroll
    for (int u = 0; u < 4; ++u)
      acc[u] += static_cast<double>(v[u].x) * v[u].x + static_cast<double>(v[u].y) * v[u].y +
                static_cast<double>(v[u].z) * v[u].z + static_cast<double>(v[u].w) * v[u].w;
  }
  for (; i < n4; i += nt) {
    const float4 v = xr[i];
    acc[0] += static_cast<double>(v.x) * v.x + static_cast<double>(v.y) * v.y + static_cast<double>(v.z) * v.z +
              static_cast<double>(v.w) * v.w;
  }
  double t = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (int off = 16; off > 0; off >>= 1) t += __shfl_xor_sync(0xffffffffu, t, off);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = t;
  __syncthreads();
  double ss = 0;
  for (int k = 0; k < static_cast<int>(nt / 32); ++k) ss += red[k];
  const float scale = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
  const float4* wr = reinterpret_cast<const float4*>(w);
  for (int64_t j = threadIdx.x; j < n4; j += nt) {
    float4 v = xr[j];
    if (w) {
      const float4 g = wr[j];
      v.x = v.x * scale * g.x, v.y = v.y * scale * g.y, v.z = v.z * scale * g.z, v.w = v.w * scale * g.w;
    } else {
      v.x *= scale, v.y *= scale, v.z *= scale, v.w *= scale;
    }
    yr[j] = v;
  }
}

}  // namespace

bool rms_norm_rows(const float* x, int64_t xs, const float* w, float* y, int64_t ys, int64_t n_rows, int64_t dim,
                   float eps, cudaStream_t s) {
  auto al = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (dim % 4 || xs % 4 || ys % 4 || !al(x) || !al(y) || (w && !al(w)) || n_rows > 0x7fffffff) return false;
  if (n_rows <= 0) return true;
  // a thread per float4 of the row, up to kNormThreads (the sum order depends on the row width alone)
  const int threads = static_cast<int>(std::min<int64_t>(kNormThreads, std::max<int64_t>(32, (dim / 4 + 31) / 32 * 32)));
  rms_norm_vec<<<static_cast<unsigned>(n_rows), threads, 0, s>>>(x, xs, w, y, ys, dim, eps);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool route_supported(int n_expert, int k) { return n_expert <= 32 * kMaxPerLane && k <= n_expert && k <= 32; }

void route(float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens, int64_t n, int n_expert,
           int k, bool norm, float scale, int32_t* sel, float* weights, cudaStream_t s) {
  if (n <= 0) return;
  route_warp_kernel<<<static_cast<unsigned>((n * 32 + 127) / 128), 128, 0, s>>>(logits, bias, tid2eid, tokens, n,
                                                                                 n_expert, k, norm, scale, sel, weights);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace flashstar::cuda::fast
