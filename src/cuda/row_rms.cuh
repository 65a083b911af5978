// The fast RMS norm's row scale (rms_norm_vec of fast_ops.cu), shared with the prefill kernels that fuse
// the norm into a neighbour (prefill_small.cu): the same function on the same values gives the same
// scale, so those kernels equal the separate launches bitwise. The sum of squares is fp64 of float
// squares (exact products, so contraction into DFMA cannot change it) in an order fixed by the row width
// and the block size alone: a kernel that uses it must run norm_threads(dim) threads a row.
#pragma once
#include <algorithm>
#include <cstdint>

namespace flashstar::cuda::fast {
namespace {

constexpr int kNormThreads = 512;

// 1 / rms of the row (double partial sums of float squares in a fixed order that depends on the row
// width and the block size alone); every thread gets it.
__device__ float row_rms_scale(const float4* xr, int64_t dim, float eps, double* red) {
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
  return static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
}
__device__ __forceinline__ float4 scaled(float4 v, float scale, const float4* wr, int64_t j) {
  if (wr) {
    const float4 g = wr[j];
    v.x = v.x * scale * g.x, v.y = v.y * scale * g.y, v.z = v.z * scale * g.z, v.w = v.w * scale * g.w;
  } else {
    v.x *= scale, v.y *= scale, v.z *= scale, v.w *= scale;
  }
  return v;
}

inline int norm_threads(int64_t dim) {
  // a thread per float4 of the row, up to kNormThreads (the sum order depends on the row width alone)
  return static_cast<int>(std::min<int64_t>(kNormThreads, std::max<int64_t>(32, (dim / 4 + 31) / 32 * 32)));
}

}  // namespace
}  // namespace flashstar::cuda::fast
