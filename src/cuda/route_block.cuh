// The MoE router's picks for one token by one block (fast_ops.cu's route kernel, and the decode router
// product's last block with FLASHSTAR_ROUTER_FUSED: fast_matvec_float.cu): sqrt-softplus probabilities
// (written back over the logits), the hash table's or the biased top-k picks (a block-wide argmax per
// pick, the lower expert on ties), normalised weights. Both files are compiled with the same flags, so
// the same values. A thread per expert: blockDim.x >= E, all threads call it.
#pragma once
#include <cstdint>

#include "cuda/ref_numerics.cuh"

namespace flashstar::cuda::fast {
namespace {

constexpr int kMaxExperts = 1024;

// (value, expert) of the better candidate: the larger value, the lower expert on ties; -1 = none.
__device__ __forceinline__ void better_of(float& bv, int& be, float ov, int oe) {
  if (oe >= 0 && (be < 0 || ov > bv || (ov == bv && oe < be))) bv = ov, be = oe;
}
__device__ __forceinline__ void warp_best(float& bv, int& be) {
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
    const int oe = __shfl_xor_sync(0xffffffffu, be, off);
    better_of(bv, be, ov, oe);
  }
}

// Token t's picks: logits at logits + t E.
__device__ __forceinline__ void route_token(float* logits, const float* bias, const int32_t* tid2eid,
                                            const int32_t* tokens, int E, int k, bool norm, float scale,
                                            int32_t* sel, float* weights, int64_t t) {
  __shared__ float s_pr[kMaxExperts];
  __shared__ float s_bv[32];
  __shared__ int s_be[32];
  __shared__ int s_pick[32];
  const int e = threadIdx.x, lane = e & 31, warp = e >> 5, n_warps = blockDim.x >> 5;
  float* p = logits + t * E;
  float v = -INFINITY;
  if (e < E) {
    const float pr = sqrtf(d_softplus(p[e]));
    p[e] = pr;
    s_pr[e] = pr;
    v = pr + (bias ? bias[e] : 0.0f);
  }
  if (tid2eid) {
    if (e < k) s_pick[e] = tid2eid[static_cast<int64_t>(tokens[t]) * k + e];
  } else {
    bool taken = false;
    for (int i = 0; i < k; ++i) {
      float bv = -INFINITY;
      int be = -1;
      if (e < E && !taken) bv = v, be = e;
      warp_best(bv, be);
      if (lane == 0) s_bv[warp] = bv, s_be[warp] = be;
      __syncthreads();
      if (warp == 0) {
        bv = lane < n_warps ? s_bv[lane] : -INFINITY;
        be = lane < n_warps ? s_be[lane] : -1;
        warp_best(bv, be);
        if (lane == 0) s_pick[i] = be;
      }
      __syncthreads();
      if (s_pick[i] == e) taken = true;
    }
  }
  __syncthreads();
  if (e < k) {
    auto prob = [&](int x) { return x >= 0 && x < E ? s_pr[x] : 0.0f; };
    float sum = 0.0f;
    for (int i = 0; i < k; ++i) sum += prob(s_pick[i]);
    const float denom = norm ? fmaxf(sum, 6.103515625e-5f) : 1.0f;
    sel[t * k + e] = s_pick[e];
    weights[t * k + e] = prob(s_pick[e]) / denom * scale;
  }
}

}  // namespace
}  // namespace flashstar::cuda::fast
