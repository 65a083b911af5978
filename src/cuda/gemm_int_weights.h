// Quantized weights as exact FP16 integers for the prefill tensor-core products (fast_gemm.cu). Every
// block format here is "small integer times a block scale, minus a block minimum": the integer is exact
// in FP16, so the weight operand needs one term where the dequantized float needs two (hi + lo), and a
// product needs two mma per step (W_int x_hi + W_int x_lo) instead of three. The scale and minimum
// depend only on the row and the 32-column k-tile (Q2_K's minimum on the 16-column half), so they are
// applied when a k-tile's partial sum is promoted into the running fp32 sum:
//   y += scale * sum_k(W_int x) - min_0 * sum_{first 16} x - min_1 * sum_{last 16} x.
// scale * W_int - min equals dq<T>() of dequant.cuh bitwise (each of scale * W_int, min is an exact
// float product). Host-compilable, so that CPU tests replay the decoding and the promotion.
#pragma once
#include <cstdint>
#include <cstring>

#include "common/half.h"
#include "cuda/int8_digits.h"
#include "quant/quant.h"
#include "quant/types.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define GI_HD __host__ __device__ __forceinline__
#define GI_UNROLL _Pragma("unroll")
#else
#define GI_HD inline
#define GI_UNROLL
#endif

namespace flashstar::cuda::gemm_int {

// Weight types taken as integers, and how many minimum terms a k-tile carries (0: none; 1: one for the
// whole 32 columns, Q4_K; 2: one per 16 columns, Q2_K).
template <GgmlType T>
struct Traits {
  static constexpr bool kInt = false;
  static constexpr int kMins = 0;
};
template <>
struct Traits<GgmlType::Q8_0> {
  static constexpr bool kInt = true;
  static constexpr int kMins = 0;
};
template <>
struct Traits<GgmlType::IQ2_XXS> {
  static constexpr bool kInt = true;
  static constexpr int kMins = 0;
};
template <>
struct Traits<GgmlType::Q4_K> {
  static constexpr bool kInt = true;
  static constexpr int kMins = 1;
};
template <>
struct Traits<GgmlType::Q2_K> {
  static constexpr bool kInt = true;
  static constexpr int kMins = 2;
};

// 16 consecutive weights of a row: h[i] holds elements 2i (low half) and 2i + 1 as FP16 integers.
struct Piece {
  uint32_t h[8];
  float scale;  // of the whole 32-column k-tile
  float min;    // of these 16 columns (0 where the format has none)
};

using digits::half_f32;
using digits::ld16;
using digits::ld32;
GI_HD uint32_t ld32_2(const uint8_t* p) { return ld16(p) | (ld16(p + 2) << 16); }  // 2-byte aligned
GI_HD float f16(const uint8_t* p) { return half_f32(ld16(p)); }

// The byte permute shared with the INT8 digit kernels (its selectors here have bit 3 of each nibble clear).
using digits::prmt;

// Two FP16 values minus the same bias (exact here: integers below 2048).
GI_HD uint32_t hsub2_bits(uint32_t a, uint32_t bias2) {
#ifdef __CUDA_ARCH__
  const __half2 r = __hsub2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&bias2));
  return *reinterpret_cast<const uint32_t*>(&r);
#else
  const float lo = f16_to_f32(static_cast<uint16_t>(a & 0xffff)) - f16_to_f32(static_cast<uint16_t>(bias2 & 0xffff));
  const float hi = f16_to_f32(static_cast<uint16_t>(a >> 16)) - f16_to_f32(static_cast<uint16_t>(bias2 >> 16));
  return static_cast<uint32_t>(f32_to_f16(lo)) | (static_cast<uint32_t>(f32_to_f16(hi)) << 16);
#endif
}

// Four bytes as four FP16 integers without the integer-to-float converter: the FP16 number 0x64XX is
// 1024 + XX exactly, so subtracting 1024 (unsigned bytes) or 1152 (signed bytes flipped to XX = q + 128)
// leaves the integer.
GI_HD void bytes_u(uint32_t w, uint32_t& lo, uint32_t& hi) {
  lo = hsub2_bits(prmt(w, 0x64646464u, 0x4140u), 0x64006400u);
  hi = hsub2_bits(prmt(w, 0x64646464u, 0x4342u), 0x64006400u);
}
GI_HD void bytes_s(uint32_t w, uint32_t& lo, uint32_t& hi) {
  w ^= 0x80808080u;
  lo = hsub2_bits(prmt(w, 0x64646464u, 0x4140u), 0x64806480u);
  hi = hsub2_bits(prmt(w, 0x64646464u, 0x4342u), 0x64806480u);
}
// 0xFF in byte i where bit i of s4 (0..15) is set: the multiply puts bit i at 9i, with no carries.
GI_HD uint32_t sign_bytes(uint32_t s4) { return ((s4 * 0x00204081u) & 0x01010101u) * 0xFFu; }

// Columns [c0, c0 + 16) of the row at `row` (c0 % 16 == 0). IQ2_XXS reads grid/signs (kIq2xxsGrid,
// kIq2xsSigns or a copy in shared memory); the other formats ignore them.
template <GgmlType T>
GI_HD void piece(const uint8_t* row, int c0, const uint64_t* grid, const uint8_t* signs, Piece& p);

template <>
GI_HD void piece<GgmlType::Q8_0>(const uint8_t* row, int c0, const uint64_t*, const uint8_t*, Piece& p) {
  const uint8_t* b = row + (c0 >> 5) * 34;
  const uint8_t* q = b + 2 + (c0 & 16);
  p.scale = f16(b), p.min = 0.0f;
  GI_UNROLL
  for (int i = 0; i < 4; ++i) bytes_s(ld32_2(q + 4 * i), p.h[2 * i], p.h[2 * i + 1]);
}
template <>
GI_HD void piece<GgmlType::Q2_K>(const uint8_t* row, int c0, const uint64_t*, const uint8_t*, Piece& p) {
  const uint8_t* b = row + (c0 >> 8) * 84;
  const int j = c0 & 255, h = j >> 7, step = (j & 127) >> 5, l0 = j & 16;
  const uint32_t sc = b[8 * h + 2 * step + (l0 >> 4)];
  // The 4-bit sub-block scale goes into the integer (q * sc <= 45, one byte, no carry between bytes),
  // which leaves one scale d for the whole k-tile.
  p.scale = f16(b + 80), p.min = f16(b + 82) * static_cast<float>(sc >> 4);
  GI_UNROLL
  for (int i = 0; i < 4; ++i) {
    const uint32_t q = (ld32(b + 16 + 32 * h + l0 + 4 * i) >> (2 * step)) & 0x03030303u;
    bytes_u(q * (sc & 15), p.h[2 * i], p.h[2 * i + 1]);
  }
}
template <>
GI_HD void piece<GgmlType::Q4_K>(const uint8_t* row, int c0, const uint64_t*, const uint8_t*, Piece& p) {
  const uint8_t* b = row + (c0 >> 8) * 144;
  const int j = c0 & 255, c = j >> 6, hi = (j & 63) >> 5, l0 = j & 16;
  int sc, m;
  quant::q4_K_scale_min(b + 4, 2 * c + hi, &sc, &m);
  p.scale = f16(b) * static_cast<float>(sc), p.min = f16(b + 2) * static_cast<float>(m);
  GI_UNROLL
  for (int i = 0; i < 4; ++i) {
    const uint32_t q = (ld32(b + 16 + 32 * c + l0 + 4 * i) >> (4 * hi)) & 0x0f0f0f0fu;
    bytes_u(q, p.h[2 * i], p.h[2 * i + 1]);
  }
}
template <>
GI_HD void piece<GgmlType::IQ2_XXS>(const uint8_t* row, int c0, const uint64_t* grid, const uint8_t* signs, Piece& p) {
  const uint8_t* b = row + (c0 >> 8) * 66;
  const int j = c0 & 255, g = j >> 5, k0 = (j & 31) >> 3;
  const uint32_t a = ld32_2(b + 2 + 8 * g), s = ld32_2(b + 6 + 8 * g);
  p.scale = f16(b) * (0.5f + static_cast<float>(s >> 28)) * 0.25f, p.min = 0.0f;
  GI_UNROLL
  for (int k = 0; k < 2; ++k) {
    const uint64_t gv = grid[(a >> (8 * (k0 + k))) & 255];
    const uint32_t sg = signs[(s >> (7 * (k0 + k))) & 127];
    GI_UNROLL
    for (int w = 0; w < 2; ++w) {
      // Grid bytes are 8, 25 or 43: (g ^ 0xFF) + 1 = -g in a byte without a carry into the next.
      const uint32_t m = sign_bytes((sg >> (4 * w)) & 15);
      const uint32_t v = (static_cast<uint32_t>(gv >> (32 * w)) ^ m) + (m & 0x01010101u);
      bytes_s(v, p.h[4 * k + 2 * w], p.h[4 * k + 2 * w + 1]);
    }
  }
}

// A k-tile's partial sum promoted into the running sum: one rounding for the scale (fused), one per
// minimum term. s0, s1: the token's activation sums over the tile's first and last 16 columns; neg_min0,
// neg_min1: the row's minima, negated (Q4_K: neg_min0 for all 32 columns).
template <int kMins>
GI_HD float promote(float acc, float part, float scale, float neg_min0, float neg_min1, float s0, float s1) {
#ifdef __CUDA_ARCH__
  acc = __fmaf_rn(scale, part, acc);
  if constexpr (kMins == 1) acc = __fmaf_rn(neg_min0, s0 + s1, acc);
  if constexpr (kMins == 2) acc = __fmaf_rn(neg_min1, s1, __fmaf_rn(neg_min0, s0, acc));
#else
  acc = __builtin_fmaf(scale, part, acc);
  if constexpr (kMins == 1) acc = __builtin_fmaf(neg_min0, s0 + s1, acc);
  if constexpr (kMins == 2) acc = __builtin_fmaf(neg_min1, s1, __builtin_fmaf(neg_min0, s0, acc));
#endif
  (void)neg_min0, (void)neg_min1, (void)s0, (void)s1;
  return acc;
}

// The activation sum of 8 columns from their FP16 terms: (hi + lo) per column, then a fixed pairwise tree.
GI_HD float sum8(const uint32_t (&hi)[4], const uint32_t (&lo)[4]) {
  float e[8];
  GI_UNROLL
  for (int i = 0; i < 4; ++i) {
    e[2 * i] = half_f32(hi[i] & 0xffff) + half_f32(lo[i] & 0xffff);
    e[2 * i + 1] = half_f32(hi[i] >> 16) + half_f32(lo[i] >> 16);
  }
  return ((e[0] + e[1]) + (e[2] + e[3])) + ((e[4] + e[5]) + (e[6] + e[7]));
}

// sum8's first (or last) 4 columns, sum8's expression: sum8(hi, lo) is sum4(hi[0..1], lo[0..1]) +
// sum4(hi[2..3], lo[2..3]) bit for bit, so a writer holding 4 columns a thread (swiglu_f16's token sums)
// forms sum8 with one add across two threads.
GI_HD float sum4(const uint32_t (&hi)[2], const uint32_t (&lo)[2]) {
  float e[4];
  GI_UNROLL
  for (int i = 0; i < 2; ++i) {
    e[2 * i] = half_f32(hi[i] & 0xffff) + half_f32(lo[i] & 0xffff);
    e[2 * i + 1] = half_f32(hi[i] >> 16) + half_f32(lo[i] >> 16);
  }
  return (e[0] + e[1]) + (e[2] + e[3]);
}

}  // namespace flashstar::cuda::gemm_int
