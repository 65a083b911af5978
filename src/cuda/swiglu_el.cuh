// One element of the reference swiglu (ref_ops.cu's swiglu_kernel, compiled without contraction) for
// kernels that fuse the swiglu into another launch and must match it bitwise: every rounding is spelled
// out, so that a file compiled with contraction cannot fuse expf's last product into the 1 + e.
#pragma once

namespace flashstar::cuda {

__device__ __forceinline__ float swiglu_el(float g, float u, float lim) {
  const float gg = fminf(g, lim), uu = fminf(fmaxf(u, -lim), lim);
  float sg;
  if (gg >= 0) {
    sg = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-gg)));
  } else {
    const float e = expf(gg);
    sg = __fdiv_rn(e, __fadd_rn(1.0f, e));
  }
  return __fmul_rn(__fmul_rn(gg, sg), uu);
}

}  // namespace flashstar::cuda
