// Small ops of the fused_ops route that ran one thread per token in the reference: the MoE router
// (sqrt-softplus probabilities, hash or biased top-k, normalised weights) with a warp per token. Same
// math and the same tie rule (the lower expert id wins), so the choices match the reference.
#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/ref_numerics.cuh"

namespace flashstar::cuda::fast {
namespace {

constexpr int kMaxPerLane = 32;  // up to 1024 experts

__global__ void route_warp_kernel(float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens,
                                  int64_t n, int E, int k, bool norm, float scale, int32_t* sel, float* weights) {
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (t >= n) return;
  float* p = logits + t * E;
  float v[kMaxPerLane];
  unsigned taken = 0;  // bit j: expert lane + 32 j already chosen
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int e = lane + 32 * j;
    v[j] = -INFINITY;
    if (e < E) {
      const float pr = sqrtf(d_softplus(p[e]));
      p[e] = pr;
      v[j] = pr + (bias ? bias[e] : 0.0f);
    }
  }
  __syncwarp();
  int32_t* s = sel + t * k;
  for (int i = 0; i < k; ++i) {
    int best;
    if (tid2eid) {
      best = tid2eid[static_cast<int64_t>(tokens[t]) * k + i];
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
    if (lane == 0) s[i] = best;
  }
  __syncwarp();
  if (lane == 0) {
    float sum = 0;
    for (int i = 0; i < k; ++i) sum += p[s[i]];
    const float denom = norm ? fmaxf(sum, 6.103515625e-5f) : 1.0f;
    for (int i = 0; i < k; ++i) weights[t * k + i] = p[s[i]] / denom * scale;
  }
}

}  // namespace

bool route_supported(int n_expert, int k) { return n_expert <= 32 * kMaxPerLane && k <= n_expert; }

void route(float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens, int64_t n, int n_expert,
           int k, bool norm, float scale, int32_t* sel, float* weights, cudaStream_t s) {
  if (n <= 0) return;
  route_warp_kernel<<<static_cast<unsigned>((n * 32 + 127) / 128), 128, 0, s>>>(logits, bias, tid2eid, tokens, n,
                                                                                 n_expert, k, norm, scale, sel, weights);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace flashstar::cuda::fast
