// Dequantization of short runs of consecutive weights for the fast kernels: four elements at a time
// from a buffer that starts on a block boundary (a chunk staged in shared memory, or global memory).
// The values equal dq<T>() of dequant.cuh up to fused multiply-add contraction.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "common/half.h"
#include "quant/quant.h"
#include "quant/types.h"

namespace flashstar::cuda::fast {

// IQ2_XXS tables in shared memory: lanes index them divergently, which constant memory serialises.
struct Iq2Tables {
  uint64_t grid[256];
  uint8_t signs[128];
};

template <GgmlType T>
struct QuantTraits;
template <>
struct QuantTraits<GgmlType::Q8_0> {
  static constexpr int kBlock = 32, kBytes = 34, kChunk = 1024;
};
template <>
struct QuantTraits<GgmlType::Q2_K> {
  static constexpr int kBlock = 256, kBytes = 84, kChunk = 1024;
};
template <>
struct QuantTraits<GgmlType::Q4_K> {
  static constexpr int kBlock = 256, kBytes = 144, kChunk = 1024;
};
template <>
struct QuantTraits<GgmlType::IQ2_XXS> {
  static constexpr int kBlock = 256, kBytes = 66, kChunk = 2048;
};

__device__ __forceinline__ uint32_t lds_u16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ uint32_t lds_u32_2(const uint8_t* p) { return lds_u16(p) | (lds_u16(p + 2) << 16); }
__device__ __forceinline__ float h2f(uint32_t h) { return __half2float(__ushort_as_half(static_cast<unsigned short>(h))); }
// Plain float rows (F32, F16, BF16): four consecutive weights from element e (16 / 8 aligned), read
// straight from global memory.
template <GgmlType T, typename Index>
__device__ __forceinline__ void load_float4w(const uint8_t* row, Index e, float (&w)[4]) {
  if constexpr (T == GgmlType::F32) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(row) + e / 4);
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  } else {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(row + 2 * e));
    const uint32_t h[4] = {v.x & 0xffff, v.x >> 16, v.y & 0xffff, v.y >> 16};
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = T == GgmlType::F16 ? h2f(h[i]) : __uint_as_float(h[i] << 16);
  }
}
// Exact floats of small integers without the integer-to-float converter (an eighth of the FMA rate on
// Hopper, which made the dequantizing kernels compute-bound): 2^23 + u has u in its mantissa.
__device__ __forceinline__ float u2f(uint32_t u) { return __int_as_float(0x4B000000u | u) - 8388608.0f; }  // u < 2^23
// Byte i of w as a float, unsigned (0..255) or as int8 (-128..127).
__device__ __forceinline__ float byte_u(uint32_t w, int i) {
  return __int_as_float(__byte_perm(w, 0x4B00u, 0x5440u + i)) - 8388608.0f;
}
__device__ __forceinline__ float byte_s(uint32_t w, int i) {
  return __int_as_float(__byte_perm(w ^ 0x80808080u, 0x4B00u, 0x5440u + i)) - 8388736.0f;  // 2^23 + 128
}

// w[0..3] = elements e..e+3 (e % 4 == 0) of the run starting at `base` (a block boundary).
template <GgmlType T>
__device__ __forceinline__ void dq4(const uint8_t* base, int e, float (&w)[4], const Iq2Tables* tab);

template <>
__device__ __forceinline__ void dq4<GgmlType::Q8_0>(const uint8_t* base, int e, float (&w)[4], const Iq2Tables*) {
  const uint8_t* b = base + (e >> 5) * 34;
  const int j = e & 31;
  const float d = h2f(lds_u16(b));
  const uint32_t q = lds_u32_2(b + 2 + j);
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = byte_s(q, i) * d;
}
template <>
__device__ __forceinline__ void dq4<GgmlType::Q2_K>(const uint8_t* base, int e, float (&w)[4], const Iq2Tables*) {
  const uint8_t* b = base + (e >> 8) * 84;
  const int j = e & 255, h = j >> 7, step = (j & 127) >> 5, l = j & 31;
  const uint32_t sc = b[8 * h + 2 * step + (l >= 16)];
  const float d = h2f(lds_u16(b + 80)), dmin = h2f(lds_u16(b + 82));
  const float dl = d * u2f(sc & 15), ml = dmin * u2f(sc >> 4);
  const uint32_t q = *reinterpret_cast<const uint32_t*>(b + 16 + 32 * h + l) >> (2 * step);
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = dl * u2f((q >> (8 * i)) & 3) - ml;
}
template <>
__device__ __forceinline__ void dq4<GgmlType::Q4_K>(const uint8_t* base, int e, float (&w)[4], const Iq2Tables*) {
  const uint8_t* b = base + (e >> 8) * 144;
  const int j = e & 255, c = j >> 6, hi = (j & 63) >> 5, l = j & 31;
  int sc, m;
  quant::q4_K_scale_min(b + 4, 2 * c + hi, &sc, &m);
  const float d = h2f(lds_u16(b)), dmin = h2f(lds_u16(b + 2));
  const float dl = d * u2f(static_cast<uint32_t>(sc)), ml = dmin * u2f(static_cast<uint32_t>(m));
  const uint32_t q = *reinterpret_cast<const uint32_t*>(b + 16 + 32 * c + l) >> (4 * hi);
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = dl * u2f((q >> (8 * i)) & 15) - ml;
}
template <>
__device__ __forceinline__ void dq4<GgmlType::IQ2_XXS>(const uint8_t* base, int e, float (&w)[4], const Iq2Tables* tab) {
  const uint8_t* b = base + (e >> 8) * 66;
  const int j = e & 255, g = j >> 5, k = (j & 31) >> 3, half = (j & 7) >> 2;
  const uint32_t a = lds_u32_2(b + 2 + 8 * g), s = lds_u32_2(b + 6 + 8 * g);
  const float d = h2f(lds_u16(b));
  const float db = d * (0.5f + u2f(s >> 28)) * 0.25f;
  const uint32_t grid = static_cast<uint32_t>(tab->grid[(a >> (8 * k)) & 255] >> (32 * half));
  const uint32_t signs = tab->signs[(s >> (7 * k)) & 127] >> (4 * half);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float v = db * byte_u(grid, i);
    w[i] = (signs >> i) & 1 ? -v : v;
  }
}

}  // namespace flashstar::cuda::fast
