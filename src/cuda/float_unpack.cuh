// 16-byte units of float weights (F32 / F16 / BF16) unpacked to floats in column order: the float
// matrix-vector kernel (fast_matvec_float.cu) and the prefill mixer product that must equal it bitwise
// (prefill_small.cu) read the same elements the same way.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "quant/types.h"

namespace flashstar::cuda::fast {
namespace {

template <GgmlType T>
constexpr int kElems = T == GgmlType::F32 ? 4 : 8;  // elements per 16-byte unit

template <GgmlType T>
__device__ __forceinline__ void unpack(const uint4& v, float (&w)[kElems<T>]) {
  if constexpr (T == GgmlType::F32) {
    w[0] = __uint_as_float(v.x), w[1] = __uint_as_float(v.y), w[2] = __uint_as_float(v.z), w[3] = __uint_as_float(v.w);
  } else {
    const uint32_t p[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (T == GgmlType::F16) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&p[i]));
        w[2 * i] = f.x, w[2 * i + 1] = f.y;
      } else {
        w[2 * i] = __uint_as_float(p[i] << 16), w[2 * i + 1] = __uint_as_float(p[i] & 0xffff0000u);
      }
    }
  }
}

}  // namespace
}  // namespace flashstar::cuda::fast
