// The hyper-connection split (hc_split_kernel of ref_ops.cu) for N = 4 streams with 16 lanes per token,
// shared by the kernels that run it (fast_exact_ops.cu, fast_hc_pre.cu). Every file that includes this
// must be compiled with --fmad=false (src/CMakeLists.txt): the logits m * scale + base would otherwise
// contract to an FMA, and the split would no longer equal the reference's bitwise.
#pragma once
#include "cuda/ref_numerics.cuh"

namespace flashstar::cuda::fast {
namespace {

constexpr int kHc = 4, kSplit = 2 * kHc + kHc * kHc;

// Lane (a, b) of a half warp holds M[a][b]: each row or column sum gathers the four values by shuffles and
// adds them in the reference's order, and each lane divides its own element, so the Sinkhorn walk's chain
// of divisions is 16 times shorter. Token t's split, by the 16 lanes of a half warp (all 32 lanes of the
// warp call it; `valid` false: the lanes take part in the shuffles and write nothing). m, scale, base and
// out may be in global or shared memory.
__device__ __forceinline__ void hc_split_half_warp(const float* m, const float* scale, const float* base, int iters,
                                                   float eps, bool valid, float* out) {
  constexpr int N = kHc;
  const int lane = threadIdx.x & 31, sub = lane & 15, a = sub / N, b = sub % N, g = lane & 16;
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
}  // namespace flashstar::cuda::fast
