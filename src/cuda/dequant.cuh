// Element-wise dequantization on the device, the same float operations (in the same order) as the CPU
// reference (src/quant/dequant.cpp), so that a dequantized weight is bit-identical on both sides.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "common/half.h"
#include "quant/quant.h"
#include "quant/types.h"

namespace flashstar::cuda {

// Without relocatable device code each translation unit has its own copy of these tables; a unit that
// launches kernels using dq<> fills its copy with upload_dequant_tables() (see init_quant_tables()).
static __constant__ uint64_t c_iq2xxs_grid[256];
static __constant__ uint8_t c_iq2xs_signs[128];

__device__ __forceinline__ uint16_t ld_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
__device__ __forceinline__ uint32_t ld_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

template <GgmlType T>
__device__ __forceinline__ float dq(const uint8_t* row, int64_t i);

template <>
__device__ __forceinline__ float dq<GgmlType::F32>(const uint8_t* row, int64_t i) {
  return reinterpret_cast<const float*>(row)[i];
}
template <>
__device__ __forceinline__ float dq<GgmlType::F16>(const uint8_t* row, int64_t i) {
  return f16_to_f32(ld_u16(row + 2 * i));
}
template <>
__device__ __forceinline__ float dq<GgmlType::BF16>(const uint8_t* row, int64_t i) {
  return bf16_to_f32(ld_u16(row + 2 * i));
}
template <>
__device__ __forceinline__ float dq<GgmlType::Q8_0>(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 32) * 34;
  return static_cast<float>(static_cast<int8_t>(b[2 + i % 32])) * f16_to_f32(ld_u16(b));
}
template <>
__device__ __forceinline__ float dq<GgmlType::Q2_K>(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 256) * 84;
  const int j = static_cast<int>(i % 256), h = j / 128, step = (j % 128) / 32, l = j % 32;
  const uint8_t sc = b[8 * h + 2 * step + (l >= 16)];
  const float d = f16_to_f32(ld_u16(b + 80)), dmin = f16_to_f32(ld_u16(b + 82));
  const float dl = d * static_cast<float>(sc & 15);
  const float ml = dmin * static_cast<float>(sc >> 4);
  return dl * static_cast<float>((b[16 + 32 * h + l] >> (2 * step)) & 3) - ml;
}
template <>
__device__ __forceinline__ float dq<GgmlType::Q4_K>(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 256) * 144;
  const int j = static_cast<int>(i % 256), c = j / 64, hi = (j % 64) / 32, l = j % 32;
  int sc, m;
  quant::q4_K_scale_min(b + 4, 2 * c + hi, &sc, &m);
  const float d = f16_to_f32(ld_u16(b)), dmin = f16_to_f32(ld_u16(b + 2));
  const float dl = d * static_cast<float>(sc);
  const float ml = dmin * static_cast<float>(m);
  return dl * static_cast<float>((b[16 + 32 * c + l] >> (4 * hi)) & 15) - ml;
}
template <>
__device__ __forceinline__ float dq<GgmlType::IQ2_XXS>(const uint8_t* row, int64_t i) {
  const uint8_t* b = row + (i / 256) * 66;
  const int j = static_cast<int>(i % 256), g = j / 32, k = (j % 32) / 8, e = j % 8;
  const uint32_t a = ld_u32(b + 2 + 8 * g), s = ld_u32(b + 2 + 8 * g + 4);
  const float d = f16_to_f32(ld_u16(b));
  const float db = d * (0.5f + static_cast<float>(s >> 28)) * 0.25f;
  const uint64_t grid = c_iq2xxs_grid[(a >> (8 * k)) & 255];
  const uint8_t signs = c_iq2xs_signs[(s >> (7 * k)) & 127];
  const float v = db * static_cast<float>((grid >> (8 * e)) & 255);
  return v * ((signs >> e) & 1 ? -1.0f : 1.0f);
}

}  // namespace flashstar::cuda
