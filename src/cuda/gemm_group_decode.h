// Fewer-instruction decoders of IQ2_XXS and Q2_K k-tiles for the grouped wgmma kernel
// (gemm_group_wgmma.cu, FLASHSTAR_GEMM_GROUP_DECODE=1, the default). Why: that kernel is issue-bound, not
// tensor-bound (docs/PERFORMANCE.md, eighth session): per warp and k-tile the IQ2_XXS decode of
// gemm_v2::Decode took ~190 of ~580 issue slots. The tile holds exact FP16 integers (gemm_int_weights.h),
// so any decode giving the same integer bits in the same positions gives the same products bit for bit;
// these produce gemm_v2::Decode<T>::run's Tile32 exactly (same h[], scale, minima; test_gemm_group_decode.cpp
// checks every IQ2_XXS grid entry and sign pattern and random blocks of both formats).
//
// SASS, the k-tile loop body of the wgmma kernel (scripts/sass-ktile-count.py build/.../gemm_group_wgmma.cu.o;
// sm_90a, CUDA 13; old = FLASHSTAR_GEMM_GROUP_DECODE=0):
//   IQ2_XXS  decode 188 -> 101 instructions, whole loop body 578 -> 486 (162 registers both, no C7511)
//   Q2_K     decode 116 -> 116, loop body 810 -> 810 (199 registers both): v2's Q2_K decode was already
//            ~7 instructions a word; the new one is 5 a word but pays ~12 a k-tile for its multipliers.
//
// IQ2_XXS: the weights of a grid entry are +-8, +-25 or +-43: FP16 0x4800, 0x4E40, 0x5160 (sign in bit
// 15). Their low bytes (0x00, 0x40, 0x60) use bits 5, 6 only and their high bytes are 0x40 | (bits 0..4),
// so one code byte per element (kIq2Code) carries both. Two tables in shared memory: per grid entry the 8
// code bytes (64 bits), per 7-bit sign index 8 bytes 0x40 | 0x80 if negative (the parity is the 8th
// sign, as kIq2xsSigns). For 4 elements: low bytes = code & 0x60 (LOP3), high bytes = (code & 0x1F) |
// sign byte (one LOP3), and each FP16 pair is a byte interleave of the two (PRMT). An entry (8 weights)
// is then 4 index instructions, 2 LDS.64, 4 LOP3 and 4 PRMT, against ~28 for v2's selector, PRMT,
// HFMA2 and sign multiply per entry; no magic-number subtraction, no sign XOR, no constant registers.
//
// Q2_K: a k-tile takes bits 2 step of each qs byte, times the 4-bit sub-block scale sc. Masking the word
// in place (no shift) leaves q 4^step in each byte; PRMT puts it under 0x64 (the FP16 1024 + q 4^step)
// and one HFMA2 with the multiplier sc 4^-step and addend -1024 sc 4^-step gives q sc exactly (every
// operand is exact in FP16 and the exact result, an integer <= 45, is one rounding away: itself; a zero
// comes out +0 as v2's 1024 - 1024). A word of 4 weights: LDS, LOP3, 2 PRMT, 2 HFMA2 (v2: + SHF + IMAD,
// HADD2 for HFMA2).
//
// Registers: the IQ2_XXS kernel runs 3 blocks an SM (168 registers at most) with 128 accumulators in
// flight across the decode; a decode that keeps a few more values live makes ptxas serialise the wgmma
// (C7511 in the build log, 32 WARPGROUP syncs a k-tile in the SASS). Hence chunk-by-chunk output (the
// sink below) and the scale-only row store of decode_row. Tried and dropped for the same reason: PRMT
// with its sign-replicate mode picking from 8 constant bytes (one PRMT a pair, but a constant register),
// Q2_K's two multipliers packed in one HFMA2 and broadcast by .H0_H0 / .H1_H1 operands.
#pragma once
#include <cstdint>

#include "cuda/gemm_group_v2.h"

namespace flashstar::cuda::gemm_v2 {

// gemm_int::prmt as the compiler's __byte_perm (the compiler then knows what it does); the same PRMT.
GI_HD uint32_t bperm(uint32_t a, uint32_t b, uint32_t s) {
#ifdef __CUDA_ARCH__
  return __byte_perm(a, b, s);
#else
  return gemm_int::prmt(a, b, s);
#endif
}

// Two consecutive words of a table (8-byte aligned): one LDS.64 on the device.
GI_HD void ld_pair(const uint32_t* p, uint32_t& x, uint32_t& y) {
#ifdef __CUDA_ARCH__
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  x = v.x, y = v.y;
#else
  x = p[0], y = p[1];
#endif
}

// ---- IQ2_XXS tables. Grid value 8, 25, 43 -> FP16 0x4800, 0x4E40, 0x5160: low bytes 0x00, 0x40, 0x60
// (bits 5, 6 only), high bytes 0x48, 0x4E, 0x51 (0x40 plus bits 0..4). One code byte per element carries
// both, c = low | (high & 0x1F) = 0x08, 0x4E, 0x71: its bits 5, 6 are the low byte, its bits 0..4 the
// high byte's.
constexpr uint32_t kIq2Code[3] = {0x08u, 0x4Eu, 0x71u};
constexpr uint32_t kIq2LoBits = 0x60606060u, kIq2HiBits = 0x1F1F1F1Fu;
// Layout of the table (words): [0, 512) grid entries (2 words each: code bytes of elements 0..3, 4..7),
// [512, 768) sign indices (2 words each: byte i = 0x40 | 0x80 if element i is negative, i.e. the high
// byte's constant bit and its sign; the 8th sign is the parity, as kIq2xsSigns).
constexpr int kIq2FastSigns = 512, kIq2FastWords = 768;

inline bool iq2_fast_table(uint32_t (&out)[kIq2FastWords]) {
  for (int e = 0; e < 256; ++e) {
    uint64_t t = 0;
    for (int j = 0; j < 8; ++j) {
      const uint32_t b = static_cast<uint32_t>(quant::kIq2xxsGrid[e] >> (8 * j)) & 255;
      const int c = b == 8 ? 0 : b == 25 ? 1 : b == 43 ? 2 : -1;
      if (c < 0) return false;
      t |= static_cast<uint64_t>(kIq2Code[c]) << (8 * j);
    }
    out[2 * e] = static_cast<uint32_t>(t), out[2 * e + 1] = static_cast<uint32_t>(t >> 32);
  }
  for (uint32_t s = 0; s < 128; ++s) {
    const uint32_t s8 = iq2_signs(s);
    uint64_t t = 0;
    for (int j = 0; j < 8; ++j) t |= static_cast<uint64_t>(0x40u | (((s8 >> j) & 1) << 7)) << (8 * j);
    out[kIq2FastSigns + 2 * s] = static_cast<uint32_t>(t);
    out[kIq2FastSigns + 2 * s + 1] = static_cast<uint32_t>(t >> 32);
  }
  return true;
}

// The same arguments as Decode<T>::run plus the output: run(rw, a2, j, tab, scale, min0, min1, sink) calls
// sink(c, w0, w1, w2, w3) with 16-byte chunk c (columns 8 c .. 8 c + 7: Tile32::h[4 c .. 4 c + 3]) as soon
// as it is made, so that the kernel can store it at once and keep few output registers live (see
// Registers above: with this and decode_row's one-word row store the IQ2_XXS kernel compiles without
// C7511; with a float4 row store it did not). decode_fast collects the chunks into a Tile32 (CPU tests).
// tab: IQ2_XXS's iq2_fast_table (shared memory), ignored by Q2_K.
template <GgmlType T>
struct DecodeFast;

template <GgmlType T>
GI_HD void decode_fast(const uint32_t* rw, int a2, int j, const uint32_t* tab, Tile32& o) {
  auto sink = [&](int c, uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
    o.h[4 * c] = w0, o.h[4 * c + 1] = w1, o.h[4 * c + 2] = w2, o.h[4 * c + 3] = w3;
  };
  DecodeFast<T>::run(rw, a2, j, tab, o.scale, o.min0, o.min1, sink);
}

template <>
struct DecodeFast<GgmlType::IQ2_XXS> {
  template <class Sink>
  static GI_HD void run(const uint32_t* rw, int a2, int j, const uint32_t* tab, float& scale, float& min0, float& min1,
                        Sink&& sink) {
    uint32_t qs, sg;
    float d;
    iq2_sub(rw, a2, j, qs, sg, d);
    // v2's d (0.5 + s) 0.25 as d ((2 s + 1) / 8): the same float (the factor 0.25 is a power of two and
    // d (0.5 + s) >= 2^-25, far from float's subnormals), with s from the bits (2^23 + s, then 2^21 + s/4
    // + (0.125 - 2^21) in one exact FMA) instead of I2F, FADD, FMUL.
    const float s23 = digits::as_f32(0x4B000000u | (sg >> 28));
#ifdef __CUDA_ARCH__
    scale = d * __fmaf_rn(s23, 0.25f, 0.125f - 2097152.0f);
#else
    scale = d * __builtin_fmaf(s23, 0.25f, 0.125f - 2097152.0f);
#endif
    min0 = min1 = 0.0f;
    GI_UNROLL
    for (int e = 0; e < 4; ++e) {  // grid entry e: columns 8 e .. 8 e + 7, chunk e
      uint32_t g0, g1, s0, s1;
      ld_pair(tab + 2 * ((qs >> (8 * e)) & 255u), g0, g1);
      ld_pair(tab + kIq2FastSigns + 2 * ((sg >> (7 * e)) & 127u), s0, s1);
      // Per 4 elements: the low bytes (code & 0x60) and the high bytes ((code & 0x1F) | 0x40 | sign), one
      // LOP3 each; then each FP16 pair is a byte interleave of the two, one PRMT.
      const uint32_t lo0 = g0 & kIq2LoBits, hi0 = (g0 & kIq2HiBits) | s0;
      const uint32_t lo1 = g1 & kIq2LoBits, hi1 = (g1 & kIq2HiBits) | s1;
      sink(e, bperm(lo0, hi0, 0x5140u), bperm(lo0, hi0, 0x7362u), bperm(lo1, hi1, 0x5140u), bperm(lo1, hi1, 0x7362u));
    }
  }
};

template <>
struct DecodeFast<GgmlType::Q2_K> {
  template <class Sink>
  static GI_HD void run(const uint32_t* rw, int, int j, const uint32_t*, float& scale, float& min0, float& min1,
                        Sink&& sink) {
    // Block and fields as Decode<Q2_K>: scales [16] at 0, qs [64] at 16, d at 80, dmin at 82.
    const int h = j >> 2, step = j & 3;
    const uint32_t scw = rw[2 * h + (step >> 1)] >> (16 * (step & 1));
    const uint32_t sc0 = scw & 255u, sc1 = (scw >> 8) & 255u;
    const uint32_t dd = rw[20];
    const float dmin = half_f32(dd >> 16);
    scale = half_f32(dd & 0xffffu);
    min0 = dmin * static_cast<float>(sc0 >> 4), min1 = dmin * static_cast<float>(sc1 >> 4);
    // sc_c 4^-step = (1024 + sc_c) 4^-step - 1024 4^-step in both lanes (the FP16 exponent down 2 a step),
    // exact; the addend -1024 times that, exact.
    const uint32_t st = static_cast<uint32_t>(step) * 0x08000800u;
    const uint32_t p4 = 0x3C003C00u - st, nb4 = 0xE400E400u - st;
    uint32_t mul[2], add[2];
    const uint32_t scs[2] = {sc0 & 15u, sc1 & 15u};
    GI_UNROLL
    for (int c = 0; c < 2; ++c) {
      mul[c] = hfma2_bits(0x64006400u | (scs[c] * 0x00010001u), p4, nb4);
      add[c] = hfma2_bits(mul[c], 0xE400E400u, 0u);
    }
    const uint32_t mask = 0x03030303u << (2 * step);
    GI_UNROLL
    for (int c = 0; c < 4; ++c) {  // chunk c: qs words 2 c, 2 c + 1 (columns 8 c .. 8 c + 7)
      uint32_t w[4];
      GI_UNROLL
      for (int k = 0; k < 2; ++k) {
        const uint32_t q = rw[4 + 8 * h + 2 * c + k] & mask;  // bytes q 4^step <= 192
        w[2 * k] = hfma2_bits(gemm_int::prmt(q, 0x64646464u, 0x4140u), mul[c >> 1], add[c >> 1]);
        w[2 * k + 1] = hfma2_bits(gemm_int::prmt(q, 0x64646464u, 0x4342u), mul[c >> 1], add[c >> 1]);
      }
      sink(c, w[0], w[1], w[2], w[3]);
    }
  }
};

}  // namespace flashstar::cuda::gemm_v2
