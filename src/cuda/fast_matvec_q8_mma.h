// Internal to the Q8_0 matrix-vector products (fast_matvec_q8.cu, fast_matvec_q8_mma.cu): the INT8 tensor
// core kernel's entry points, and its per-lane fragment mapping as host/device functions so that a CPU
// test (tests/cuda/test_matvec_q8.cpp, Q8MmaLanes) can simulate a warp's mma steps with the very same code.
//
// The fragment layouts are those of PTX "Matrix Fragments for mma.m16n8k32" (.s8), as used by the expert
// kernel (fast_expert_mma.cu): lane (g = lane / 4, t = lane % 4) holds A rows g and g + 8 at k-slots
// 4t..4t+3 (registers a0 / a1) and 16+4t..16+4t+3 (a2 / a3), B column g at the same k-slots (b0, b1), and
// C rows g / g + 8 at columns 2t, 2t + 1 (c0, c1 / c2, c3). The k-slots are a permutation of a Q8_0
// block's 32 columns chosen per lane so that every weight register is one aligned 32-bit shared load (see
// pair_a); the activation digits are stored in the same permuted order (x_cols).
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/half.h"
#include "cuda/int8_digits.h"
#include "cuda/ref_kernels.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define Q8M_HD __host__ __device__ __forceinline__
#define Q8M_UNROLL _Pragma("unroll")
#else
#define Q8M_HD inline
#define Q8M_UNROLL
#endif

namespace flashstar::cuda::fast {

// Same contracts as q8_matvec / q8_matvec_items (fast_matvec_q8.h) for n_tok <= 2 / one activation row
// per item; false, launching nothing, where this kernel does not take the call (the caller then uses the
// fp32 streaming kernel): more than 2 tokens, activation digits that do not fit in shared memory, items
// whose blocks would need too many distinct activation rows, no device. The caller has already checked
// the layout conditions (fast_matvec_q8.cu, takes()).
bool q8_mma_matvec(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
                   int64_t ys, cudaStream_t s);
bool q8_mma_items(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                  int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s);
// The kernel with its block and warp cuts formed once in 32-bit arithmetic instead of 64-bit divisions at
// every use (FLASHSTAR_Q8_LEAN, default 1, or q8_set_lean; measured faster): the same cuts, so the same bits.
void q8_set_lean(bool on);
bool q8_lean();
bool q8_last_launch_lean();  // whether the last launch took the lean kernel (tests)
// An item-to-matrix array that stays as uploaded while registered (the session's out_a group ids; on = false
// takes it back, before its memory is freed). With FLASHSTAR_Q8_CONST_ITEMS=1 (or q8_set_const_items; off
// until measured) an items launch with a registered array fetches its first weight stages before the PDL
// wait, as plain products do: its rows do not depend on the kernel before. The same copies: the same bits.
void q8_constant_items(const int32_t* mat, bool on);
void q8_set_const_items(bool on);
bool q8_const_items();

namespace q8m {

constexpr int kPieceCols = 256, kPieceBytes = 272;  // 8 Q8_0 blocks, 16-byte aligned in every row
constexpr int kRows = 16;                           // rows of a tile (mma M)
constexpr int kStageBytes = kRows * kPieceBytes;    // one 256-column piece of 16 rows, rows packed
constexpr int kDigitBytes = 1024;  // one activation row's digits for one piece: [block 8][digit 4][t 4][8 bytes]

using digits::as_f32;
using digits::as_u32;
using digits::ld32;
using digits::prmt;
Q8M_HD float half_lo(uint32_t w) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xFFFFu)));
#else
  return f16_to_f32(static_cast<uint16_t>(w & 0xFFFFu));
#endif
}
Q8M_HD float half_hi(uint32_t w) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
#else
  return f16_to_f32(static_cast<uint16_t>(w >> 16));
#endif
}

// ---- weights: A registers of one row for a pair of blocks (2m, 2m + 1) of a piece ----
// The pair is 68 bytes at a 4-byte aligned offset, as 17 words W0..W16: W0 = d(2m), q0 q1 of block 2m;
// W1..W7 = its q2..q29; W8 = its q30 q31, d(2m+1); W9..W16 = q0..q31 of block 2m + 1. Lane t takes, for
// the odd block, W(9+t) and W(13+t) (columns 4t.. and 16+4t..: the natural order), for the even block
// W(1+t) (columns 2+4t..5+4t) and W(5+t) (columns 18+4t..21+4t), except lane 3, whose W8 holds only two
// columns: it takes q0 q1 q30 q31 instead, one PRMT of W8 with W0 (identity for lanes 0-2). Every load is
// aligned; across the warp the words of rows g (68 words apart, = 4 g mod 32 banks) and lanes t (+t) fall
// in distinct banks: each load is one wavefront.
Q8M_HD uint32_t even_hi_sel(int t) { return t == 3 ? 0x1076u : 0x3210u; }
struct PairA {
  uint32_t lo[2], hi[2];  // [even / odd block]: k-slots 4t.. and 16+4t..
  float d[2];
};
// p: the pair's first byte in the row; pt = p + 4 t (two base registers, every offset an immediate).
Q8M_HD PairA pair_a(const uint8_t* p, const uint8_t* pt, uint32_t sel) {
  const uint32_t w0 = ld32(p), w8 = ld32(p + 32);
  PairA a;
  a.lo[0] = ld32(pt + 4);
  a.hi[0] = prmt(ld32(pt + 20), w0, sel);
  a.lo[1] = ld32(pt + 36);
  a.hi[1] = ld32(pt + 52);
  a.d[0] = half_lo(w0), a.d[1] = half_hi(w8);
  return a;
}

// ---- activations: per 256-column piece an exponent E of its largest |x|, Y = rint(x 2^(29-E)) (|Y| <= 2^30)
// as four signed base-256 digits (bytes of Y + 0x80808080, each xor 0x80). Digit k of a block's columns in
// the lanes' k-slot order: [digit k][lane t][8 bytes: b0, b1]. Conversion lane (j = lane / 4, t = lane % 4)
// of a piece packs block j's bytes of mma lane t: the 8 columns below (x[0..3] -> b0, x[4..7] -> b1).
struct XCols {
  int lo, hi_a, hi_b;  // columns (in the block) lo..lo+3, then hi_a, hi_a+1, hi_b, hi_b+1
};
Q8M_HD XCols x_cols(int j, int t) {
  if (j & 1) return {4 * t, 16 + 4 * t, 18 + 4 * t};
  if (t < 3) return {2 + 4 * t, 18 + 4 * t, 20 + 4 * t};
  return {14, 0, 30};
}
// E, floored so that every scale below is a normal float (2^(E-29) >= 2^-125, 2^(29-E) <= 2^125).
constexpr int kExpFloor = -96;
Q8M_HD int piece_exponent(float amax) { return digits::exponent_of(amax, kExpFloor); }
using digits::lane_digits;  // int8_digits.h (shared with the expert kernel)
// Weight of lane half h's combined sums (digits 2h, 2h+1): x = 2^(E-29) Y.
Q8M_HD float digit_scale(int E, int h) { return as_f32(static_cast<uint32_t>(98 + E + 16 * h) << 23); }
// Byte offset of lane (g, t)'s B registers in a block's 128 digit bytes (token / slot added apart).
Q8M_HD int b_offset(int g, int t) { return (g & 3) * 32 + 8 * t; }

// ---- results: columns 2t, 2t+1 of C are digits 2h, 2h+1 (h = t & 1) of token t / 2; |c| <= 32 * 128 * 128 =
// 2^19, so c_even + 256 c_odd is exact in int32 and its float rounds like an fp32 sum.
Q8M_HD float combine(uint32_t c_even, uint32_t c_odd) {
  return static_cast<float>(static_cast<int32_t>(c_even + (c_odd << 8)));
}

}  // namespace q8m
}  // namespace flashstar::cuda::fast
