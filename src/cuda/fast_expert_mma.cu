// Routed-expert matrix-vector products on the INT8 tensor cores (docs/PERFORMANCE.md, "IQ2_XXS and Q2_K
// experts"). The fp32 kernel spends ~4 instructions per weight decoding; here a weight is an exact int8
// fed to mma.m16n8k32 and the decoding left is table lookups and byte masks, ~2 instructions per weight.
//
// Activations: per 256 columns a power-of-two scale s (|x| < 64 s), Y = rint(x / s * 2^24) (|Y| <= 2^30)
// split into four signed base-256 digits (bytes of Y + 0x80808080, each xor 0x80), one digit per B column
// (columns 4-7 are zero). The integer sums are exact; the only rounding is Y's, at most
// 2^-30 of the block's largest |x|. Weights: IQ2_XXS grid bytes are 8, 25 or 43, so four signed weights
// are one PRMT from the bytes (8, 25, 43) and (-8, -25, -43) with a selector = grid codes | sign bits,
// both looked up as words (the sub-block factor 2 ls + 1 then scales the int32 sums, d / 8 and s the
// float once per 256 columns). Q2_K: q * sc as int8 (one u32 multiply for four bytes), the mins in float
// from per-16-column sums of x.
//
// Shared memory bandwidth (128 bytes a clock) is the tighter limit, not issue: lookups with random
// indices must not conflict, so each table word is stored 32 times, lane L reading copy L (bank L).
// Per 16-weight step a lane issues ~33 instructions and the warp ~11 shared-memory wavefronts.
//
// A k32 step is one IQ2_XXS sub-block (Q2_K: 32 columns). Lane (g = lane / 4, t = lane % 4) holds rows g
// and g + 8 of the warp's 16; its A k-slots 4t..4t+3 and 16+4t..16+4t+3 carry the step's weights 8t..8t+7
// (one grid entry), so its B registers are 8 consecutive digit bytes. Fragment layouts: PTX ISA "Matrix
// Fragments for mma.m16n8k32" (.s8), equal to CuTe's SM80_16x8x32_S32S8S8S32_TN traits.
//
// Work (fast_expert_plan.h): a block takes up to 8 items that share one activation row (src_div),
// converts that row once, and gives each warp one (item, 16-row tile, column part); each warp streams its
// rows chunk by chunk (4 blocks, 16-byte cp.async pieces) into its own buffers. Column parts are added in
// part order in shared memory. Nothing is atomic: results are bitwise reproducible. IQ2_XXS runs one
// 24-warp block an SM (tables stored once a block, no alignment padding): gate / up at decode take 6 items
// x 4 parts of 1024 columns, so a warp's chain is 32 steps and an SM holds 24 warps (was 64 and 12).
//
// Gate + up + swiglu in one launch (expert_gate_up_fused): at decode the gate and up launches read the same
// activation row and are each bound by their latency (about 18 us for 13 MB), and the swiglu launch
// between them and down costs a launch of its own. Fused, one launch ramp instead of three and twice the
// bytes in flight. A row's sum depends only on the column parts (fast_expert_plan.h: plan_pair keeps the
// plain plan's), so each matrix's sums are those of its own launch and the swiglu is cuda::swiglu's
// element (swiglu_el.cuh): the output is bitwise that of the three launches. Mode 1 puts both matrices'
// warps in a block (the sums meet in shared memory); mode 2 gives each matrix its own blocks of one launch
// and the later of a row group's two blocks (a ticket, last_block.cuh) reads both back from L2.
//
// Versions (FLASHSTAR_EXPERT_V = the kernel's kVer; docs/PERFORMANCE.md, "expert kernel versions"): V0's
// SASS is the first kernel's; V1 / V2 stage line windows (eplan::Lines) and avoid V0's bank conflicts and
// index math. Same bytes in the same registers, same order of sums: outputs bitwise those of V0.
#include "cuda/fast_expert_mma.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>
#include <vector>

#include "common/half.h"
#include "cuda/cuda_util.h"
#include "cuda/fast_expert_plan.h"
#include "cuda/fast_kernels.h"
#include "cuda/int8_digits.h"
#include "quant/quant.h"
#include "cuda/last_block.cuh"
#include "cuda/pdl.cuh"
#include "cuda/stream_lanes.h"
#include "cuda/swiglu_el.cuh"

namespace flashstar::cuda::fast {
// Named (not anonymous) so that a host-side check of the lane mapping can include this file.
namespace emma {

#define EMMA_HD __host__ __device__ __forceinline__

using eplan::Fmt;
using eplan::kRows;

using digits::as_f32;
using digits::as_u32;
using digits::half_f32;
using digits::ld16;
using digits::ld32;
using digits::prmt;
// Low 32 bits of (hi:lo) >> (n & 31).
EMMA_HD uint32_t fshr(uint32_t lo, uint32_t hi, uint32_t n) {
#ifdef __CUDA_ARCH__
  return __funnelshift_r(lo, hi, n);
#else
  return static_cast<uint32_t>(((static_cast<uint64_t>(hi) << 32) | lo) >> (n & 31));
#endif
}
// Per-lane constants of the fragment mapping.
struct Lane {
  int g, t;
  uint32_t n_odd, n_even, lo_even;  // IQ2_XXS: funnel shifts that put sign index t at bits 7..13
  uint32_t sel[2];                  // Q2_K: PRMT selectors of this lane's scale byte (even, odd step)
  uint32_t one;                     // 1, from a kernel argument: (x & 0x1E) | one is one LOP3
};
EMMA_HD Lane lane_consts(int lane, uint32_t one) {
  Lane L;
  L.g = lane >> 2, L.t = lane & 3;
  const uint32_t t = static_cast<uint32_t>(L.t), tp = t >> 1;
  // Odd blocks: the sign word is 4-byte aligned, a rotation of it. Even blocks: it sits at bit 16 of the
  // word before (lane 3's field lies wholly in the word after, so lane 3 reads that one twice).
  L.n_odd = (7 * t + 25) & 31, L.n_even = (9 + 7 * t) & 31, L.lo_even = t == 3 ? 6 : 2;
  // Lanes t < 2 take scale byte 2 step of their half, t >= 2 byte 2 step + 1 (columns 16..31 of the step).
  L.sel[0] = 0x4440u | tp, L.sel[1] = 0x4440u | (2 + tp);
  L.one = one;
  return L;
}

// ---- activations: 256 columns per warp, 8 per lane ----
// Exponent E of the block's largest |x| (floored so that every scale below is a normal float); the digits
// themselves: int8_digits.h.
constexpr int kExpFloor = -98;
using digits::lane_digits;
// Digit bytes: 128 per 32-column step, [digit][32 columns]. Call for lanes g < 4 only: columns 4-7 stay
// zero, and skipping the other half-warp halves the shared-memory wavefronts.
EMMA_HD void b_frag(const uint8_t* terms, int step, const Lane& L, uint32_t& b0, uint32_t& b1) {
  const uint8_t* p = terms + step * 128 + L.g * 32 + 8 * L.t;
#ifdef __CUDA_ARCH__
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  b0 = v.x, b1 = v.y;
#else
  b0 = ld32(p), b1 = ld32(p + 4);
#endif
}

// ---- IQ2_XXS: one row's A registers for one sub-block (q = its 8 bytes; block b of a 16-aligned row) ----
// Tables of words, 32 copies each ([entry][lane]): grid entry -> PRMT nibbles of its bytes' codes (8, 25,
// 43 -> 0, 1, 2; bytes 0-3 in the low half, 4-7 in the high half); sign index -> bit 2 of the nibble of each
// negative byte. Device: this lane's grid copy at shared address g, its sign copy at s0 + s with s = 4 lane,
// so that (index * 128) | s is one LOP3 with the mask and s0 (uniform) the load's base register: no
// alignment padding. Host: pointers to the lane's copies.
struct Tabs {
  uint32_t g, s, s0;
  const uint8_t *hg, *hs;
};
constexpr uint32_t kPos = 0x002B1908u, kNeg = 0x00D5E7F8u;  // bytes 8, 25, 43 and their negations
// Word at byte offset off of a table (device: base + (lane | off) with lane and off sharing no bits, or
// lane + off).
EMMA_HD uint32_t tab_word(uint32_t base, uint32_t lane, const uint8_t* host, uint32_t off, bool disjoint) {
#ifdef __CUDA_ARCH__
  uint32_t v;
  asm("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(disjoint ? base + (lane | off) : base + lane + off));
  return v;
#else
  return ld32(host + off);
#endif
}
struct Iq2Row {
  uint32_t a_lo, a_hi, f;  // signed grid bytes of weights 8t..8t+3 / 8t+4..8t+7, 2 ls + 1
};
template <bool kOdd>
EMMA_HD Iq2Row iq2_row(const uint8_t* q, const Lane& L, const Tabs& T) {
  Iq2Row o;
  const uint32_t idx = q[L.t];
  uint32_t lo, hi, n;
  if constexpr (kOdd) {
    lo = hi = ld32(q + 4), n = L.n_odd;
    o.f = (hi >> 27) | 1u;  // bit 27 (a sign bit) lands in bit 0
  } else {
    lo = ld32(q + L.lo_even), hi = ld32(q + 6), n = L.n_even;
    o.f = ((hi >> 11) & 0x1Eu) | L.one;
  }
  const uint32_t field = fshr(lo, hi, n) & 0x3F80u;  // sign index * 128
  const uint32_t sel = tab_word(0, T.g, T.hg, idx * 128, false) | tab_word(T.s0, T.s, T.hs, field, true);
  o.a_lo = prmt(kPos, kNeg, sel), o.a_hi = prmt(kPos, kNeg, sel >> 16);
  return o;
}

// ---- Q2_K: one row's block (scales and mins masked, this lane's quant words, d, dmin) ----
struct Q2Row {
  uint32_t sc[4], q[4];
  float d, dmin;
  float mins;  // sum over sub-blocks 4t..4t+3 of m * (sum of their 16 x)
};
EMMA_HD float byte_f32(uint32_t w, int i) { return as_f32(prmt(w, 0x4B00u, 0x5440u + i)) - 8388608.0f; }
// sums: the block's 16 per-sub-block sums of x. kSwap (V >= 1): lanes t >= 2 load each pair of quant words
// in the other order: in order, a row's lanes read words 2 apart and rows 4 words apart (CS / 16 odd) meet in
// a bank (2-way); swapped, words 0, 2, 5, 7 past the row's (then 1, 3, 4, 6): 32 banks. Same registers.
template <bool kSwap>
EMMA_HD void q2_load(const uint8_t* blk, const float* sums, const Lane& L, Q2Row& r) {
#pragma unroll
  for (int j = 0; j < 4; ++j) r.sc[j] = ld32(blk + 4 * j) & 0x0F0F0F0Fu;
  if constexpr (kSwap) {
    const bool sw = L.t >= 2;
    const uint8_t* w = blk + 16 + 8 * L.t;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t a = ld32(w + 32 * h + (sw ? 4 : 0)), b = ld32(w + 32 * h + (sw ? 0 : 4));
      r.q[2 * h] = sw ? b : a, r.q[2 * h + 1] = sw ? a : b;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) r.q[j] = ld32(blk + 16 + 32 * (j >> 1) + 8 * L.t + 4 * (j & 1));
  }
  const uint32_t dd = ld32(blk + 80), mn = (ld32(blk + 4 * L.t) >> 4) & 0x0F0F0F0Fu;
  r.d = half_f32(dd & 0xFFFFu), r.dmin = half_f32(dd >> 16);
  const float* s = sums + 4 * L.t;
  r.mins = byte_f32(mn, 0) * s[0];
#pragma unroll
  for (int i = 1; i < 4; ++i) r.mins = fmaf(byte_f32(mn, i), s[i], r.mins);
}
// Step s (columns 32 s..32 s + 31): q * sc for the lane's two words.
EMMA_HD void q2_step(const Q2Row& r, int s, const Lane& L, uint32_t& a_lo, uint32_t& a_hi) {
  const int h = s >> 2, st = s & 3, j = 2 * h + (st >> 1);
  const uint32_t sc = prmt(r.sc[j], 0, L.sel[st & 1]);
  a_lo = ((r.q[2 * h] >> (2 * st)) & 0x03030303u) * sc;  // bytes <= 45: no carries
  a_hi = ((r.q[2 * h + 1] >> (2 * st)) & 0x03030303u) * sc;
}

__device__ __forceinline__ void mma(uint32_t (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The tables' words (one copy each; the kernel stores 32).
inline void build_tables(uint32_t (&grid)[256], uint32_t (&sign)[128]) {
  for (int i = 0; i < 256; ++i) {
    grid[i] = 0;
    for (int e = 0; e < 8; ++e) {
      const uint32_t v = (quant::kIq2xxsGrid[i] >> (8 * e)) & 255;
      grid[i] |= (v == 8 ? 0u : v == 25 ? 1u : 2u) << (4 * (e & 3) + 16 * (e >> 2));
    }
  }
  for (int i = 0; i < 128; ++i) {
    sign[i] = 0;
    for (int e = 0; e < 8; ++e) sign[i] |= ((quant::kIq2xsSigns[i] >> e) & 1u) << (4 * (e & 3) + 16 * (e >> 2) + 2);
  }
}

__device__ uint32_t g_grid[256];
__device__ uint32_t g_sign[128];

struct Params : eplan::Split {
  const uint8_t* W;
  size_t row_bytes;
  int64_t rpm, n_items, xs, ys, y0;  // y0: first block-y of this launch (launches are sliced at 65535)
  const int32_t* mat;
  const float* X;
  float* Y;
  int src_div, nb;  // nb: 256-column blocks per row
  bool fast;        // rows 16-byte aligned: whole chunks by 16-byte copies
  uint32_t one;     // 1 (see Lane::one)
  // Fused gate + up (after the plain product's fields, which keep their offsets):
  const uint8_t* W2;  // the up matrix (W the gate; same type, width and row bytes)
  float* Y2;          // mode 2: the up rows, read back by the row group's last block
  const float* w;     // weight per item (may be null)
  float lim;          // the swiglu clamp
  int lane;           // mode 2: the ticket lane of the launch's stream (stream_lanes.h)
  int ver;            // FLASHSTAR_EXPERT_V: which kernel version the launch picks (expert_mma_kernel's kVer)
  uint32_t wmap[eplan::kRegWarps];  // V >= 1: each warp's eplan::warp_word
};

template <int N>  // 16 (bypassing L1) or 4 bytes
__device__ __forceinline__ void cp_async(void* d, const void* s) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(d));
  if constexpr (N == 16) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(s));
  else asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(a), "l"(s));
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Waits until at most n (0..15) of this thread's copy groups are pending, then syncs the warp's view.
template <int N = 15>
__device__ __forceinline__ void wait_pending(int n) {
  if constexpr (N > 0) {
    if (n < N) return wait_pending<N - 1>(n);
  }
  cp_async_wait<N>();
  __syncwarp();
}

// The same wait by binary search (4 compares for 0..15, where wait_pending walks down from 15).
template <int kLo, int kHi>
__device__ __forceinline__ void wait_count(int n) {
  if constexpr (kLo == kHi) {
    cp_async_wait<kLo>();
    __syncwarp();
  } else {
    constexpr int kMid = (kLo + kHi) / 2;
    if (n <= kMid) wait_count<kLo, kMid>(n);
    else wait_count<kMid + 1, kHi>(n);
  }
}

__device__ __forceinline__ int64_t lmin(int64_t a, int64_t b) { return a < b ? a : b; }

// Chunk c of the warp's 16 rows (16-byte aligned rows) by Lines<T, kLpr>: copy group m is window m of every
// row (the wait before a block: Lines::need).
template <GgmlType T, int kLpr>
__device__ __forceinline__ void stage_lines(const Params& p, const uint8_t* rows, int64_t r0, int c, uint8_t* dst,
                                            int lane) {
  using F = Fmt<T>;
  using Ln = eplan::Lines<T, kLpr>;
  const size_t coff = static_cast<size_t>(c) * p.CB * F::kBytes - F::delta(c);
  // Shared addresses converted once (cp_async converts each generic pointer: 3 more instructions a copy).
  const uint32_t dst_s = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const uint8_t* src[Ln::kGroups];
  uint32_t d[Ln::kGroups];
  int e[Ln::kGroups];
#pragma unroll
  for (int q = 0; q < Ln::kGroups; ++q) {
    const int r = Ln::row(q, lane);
    const int64_t row = r0 + r < p.rpm ? r0 + r : p.rpm - 1;
    const uint8_t* s = rows + static_cast<size_t>(row) * p.row_bytes + coff;
    e[q] = Ln::lane_piece(lane, reinterpret_cast<uintptr_t>(s));
    src[q] = s + 16 * e[q], d[q] = dst_s + r * p.CS + 16 * e[q];
  }
#pragma unroll
  for (int m = 0; m < Ln::kWindows; ++m) {
#pragma unroll
    for (int q = 0; q < Ln::kGroups; ++q)
      if (Ln::copies(m, e[q]))
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d[q] + 16 * kLpr * m),
                     "l"(src[q] + 16 * kLpr * m));
    asm volatile("cp.async.commit_group;\n" ::);
  }
}

// Copies chunk c of the warp's 16 rows (row index clamped to the matrix) into dst, rows CS bytes apart, as
// kChunk copy groups, group i holding what block i needs beyond the earlier groups (fast_expert_plan.h): a
// warp computes each block as soon as it has landed. Whole 16-byte aligned rows: the chunk lands at
// dst + Fmt::delta(c).
template <GgmlType T, int kVer>
__device__ __forceinline__ void stage(const Params& p, const uint8_t* rows, int64_t r0, int c, uint8_t* dst, int lane) {
  using F = Fmt<T>;
  constexpr int kChunk = F::kChunk, kBytes = F::kBytes;
  const size_t coff = static_cast<size_t>(c) * p.CB * kBytes;
  if constexpr (kVer != 0) {
    if (p.fast) return stage_lines<T, kVer == 2 ? 4 : 8>(p, rows, r0, c, dst, lane);
  }
  if (p.fast) {  // lane: row lane % 16, every other 16-byte piece: fixed addresses, immediate offsets
    const int r = lane & 15, h = lane >> 4;
    const int64_t row = r0 + r < p.rpm ? r0 + r : p.rpm - 1;
    const uint8_t* src = rows + static_cast<size_t>(row) * p.row_bytes + coff - F::delta(c);
    uint8_t* d = dst + r * p.CS;
#pragma unroll
    for (int i = 0; i < kChunk; ++i) {
#pragma unroll
      for (int k = F::first(i); k < F::first(i + 1); ++k)
        if ((k & 1) == h) cp_async<16>(d + 16 * k, src + 16 * k);
      asm volatile("cp.async.commit_group;\n" ::);
    }
    return;
  }
  // Unaligned rows (widths that are not whole chunks): 4-byte copies, or 2-byte loads and stores, all in
  // the first group.
  const int bytes = (min(p.nb, (c + 1) * p.CB) - c * p.CB) * kBytes;
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = r0 + r < p.rpm ? r0 + r : p.rpm - 1;
    const uint8_t* src = rows + static_cast<size_t>(row) * p.row_bytes + coff;
    uint8_t* d = dst + r * p.CS;
    if (((reinterpret_cast<uintptr_t>(src) | bytes) & 3) == 0) {
      for (int o = 4 * lane; o < bytes; o += 128) cp_async<4>(d + o, src + o);
    } else {
      for (int o = 2 * lane; o < bytes; o += 64)
        *reinterpret_cast<uint16_t*>(d + o) = __ldg(reinterpret_cast<const unsigned short*>(src + o));
    }
  }
#pragma unroll
  for (int i = 0; i < kChunk; ++i) asm volatile("cp.async.commit_group;\n" ::);
}

// One 256-column block of the warp's 16 rows into acc (rows g / g + 8, columns 2t / 2t + 1).
template <bool kOdd>
__device__ __forceinline__ void iq2_block(const uint8_t* pg, const uint8_t* pg8, const uint8_t* terms, int kb,
                                          float scale, const Lane& L, const Tabs& T, float (&acc)[4]) {
  const float dg = half_f32(ld16(pg)) * scale, dg8 = half_f32(ld16(pg8)) * scale;
  uint32_t ci[4] = {0, 0, 0, 0}, b0 = 0, b1 = 0;
#pragma unroll
  for (int sb = 0; sb < 8; ++sb) {
    if (L.g < 4) b_frag(terms, kb * 8 + sb, L, b0, b1);
    const Iq2Row x = iq2_row<kOdd>(pg + 2 + 8 * sb, L, T);
    const Iq2Row y = iq2_row<kOdd>(pg8 + 2 + 8 * sb, L, T);
    uint32_t c[4] = {0, 0, 0, 0};
    mma(c, x.a_lo, y.a_lo, x.a_hi, y.a_hi, b0, b1);
    ci[0] += x.f * c[0], ci[1] += x.f * c[1], ci[2] += y.f * c[2], ci[3] += y.f * c[3];
  }
  // |ci| <= 31 * 8 * 32 * 43 * 128 < 2^26: int -> float rounds like fp32 accumulation would.
  acc[0] = fmaf(dg, static_cast<float>(static_cast<int>(ci[0])), acc[0]);
  acc[1] = fmaf(dg, static_cast<float>(static_cast<int>(ci[1])), acc[1]);
  acc[2] = fmaf(dg8, static_cast<float>(static_cast<int>(ci[2])), acc[2]);
  acc[3] = fmaf(dg8, static_cast<float>(static_cast<int>(ci[3])), acc[3]);
}

// Q2_K: acc as above; mins[0 / 1] gather rows g / g + 8's dmin * m * (sums of x) of this lane's sub-blocks.
template <bool kSwap>
__device__ __forceinline__ void q2_block(const uint8_t* pg, const uint8_t* pg8, const uint8_t* terms,
                                         const float* sums, int kb, float scale, const Lane& L, float (&acc)[4],
                                         float (&mins)[2]) {
  Q2Row rg, rg8;
  q2_load<kSwap>(pg, sums + kb * 16, L, rg);
  q2_load<kSwap>(pg8, sums + kb * 16, L, rg8);
  uint32_t c[4] = {0, 0, 0, 0}, b0 = 0, b1 = 0;
#pragma unroll
  for (int s = 0; s < 8; ++s) {
    uint32_t lo, hi, lo8, hi8;
    if (L.g < 4) b_frag(terms, kb * 8 + s, L, b0, b1);
    q2_step(rg, s, L, lo, hi);
    q2_step(rg8, s, L, lo8, hi8);
    mma(c, lo, lo8, hi, hi8, b0, b1);
  }
  // |c| <= 256 * 45 * 128 < 2^22: exact in float.
  const float sg = rg.d * scale, sg8 = rg8.d * scale;
#pragma unroll
  for (int i = 0; i < 4; ++i) acc[i] = fmaf(i < 2 ? sg : sg8, static_cast<float>(static_cast<int>(c[i])), acc[i]);
  mins[0] = fmaf(rg.dmin, rg.mins, mins[0]), mins[1] = fmaf(rg8.dmin, rg8.mins, mins[1]);
}

// Row-group tickets of fused mode 2 (a gate block and an up block each), zero between launches; one set
// per ticket lane (stream_lanes.h), so launches on a decode fork's two streams never share one.
constexpr int kMaxTickets = 16384;
__device__ int g_pair_tickets[kTicketLanes * kMaxTickets];

// The fused launch's swiglu over the block's G T 16 rows, after every warp's sums are stored: mode 1 reads
// both matrices' sums from res (gate rows first), mode 2 runs in the last of the row group's two blocks and
// reads both from global memory (L2, where the other block's fenced stores are). The element is
// cuda::swiglu's, times the item's weight as that kernel multiplies it.
template <int kPair>
__device__ __forceinline__ void pair_swiglu(const Params& p, const float* res, int64_t i0, int64_t i1, int64_t bx,
                                            int64_t by) {
  int* ticket = g_pair_tickets + p.lane * kMaxTickets + by * (gridDim.x >> 1) + bx;
  if constexpr (kPair == 1) __syncthreads();
  else if (!last_to_finish(ticket, 2)) return;
  const int n = p.G * p.T * kRows;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int q = i / kRows;
    const int64_t item = i0 + q / p.T, r = (bx * p.T + q % p.T) * kRows + i % kRows;
    if (item >= i1 || r >= p.rpm) continue;
    const int64_t o = item * p.ys + r;
    const float g = kPair == 1 ? res[i] : __ldcg(p.Y + o), u = kPair == 1 ? res[n + i] : __ldcg(p.Y2 + o);
    const float y = swiglu_el(g, u, p.lim);
    p.Y[o] = p.w ? __fmul_rn(y, p.w[item]) : y;  // the reference multiplies by 1 without a weight: exact
  }
  if (kPair == 2 && threadIdx.x == 0) *ticket = 0;
}

// kPair 0: Y = W x per item. 1 and 2 (fused): Y = swiglu(W x, W2 x), each matrix's sums bitwise those of a
// kPair 0 launch (same column parts, fast_expert_plan.h: plan_pair); 1: a block's warps are (matrix, item,
// tile, part), 2: block 2 x computes the gate rows of row group x, block 2 x + 1 the up rows.
template <GgmlType T, int kPair, int kVer>
__global__ void __launch_bounds__((kVer == 0 ? eplan::kMaxWarps<T> : eplan::kRegWarps) * 32, 1)
    expert_mma_kernel(const Params p) {
  pdl_wait();
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr bool kIq2 = T == GgmlType::IQ2_XXS;
  uint8_t* terms = smem + p.off_terms;
  float* sx = reinterpret_cast<float*>(smem + p.off_sx);
  float* sums = reinterpret_cast<float*>(smem + p.off_sum);
  float* part = reinterpret_cast<float*>(smem + p.off_part);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;

  // Block and warp coordinates. V >= 1: 32-bit block math (the launch checks the range), the warp's job
  // from the host's table (eplan::warp_word): no 64-bit division, four fewer 32-bit ones before the copies.
  int64_t by, grp, i0, i1, bx, item, r0;
  int kp, qm, m;
  if constexpr (kVer == 0) {  // the first kernel's statements, verbatim
    by = p.y0 + blockIdx.y, grp = by / p.cpg;
    const int64_t g0 = grp * p.src_div;
    i0 = g0 + (by % p.cpg) * p.G;
    i1 = lmin(lmin(i0 + p.G, g0 + p.src_div), p.n_items);
    kp = warp % p.KS, qm = warp / p.KS;
    const int gt = p.G * p.T;
    m = kPair == 1 ? qm / gt : kPair == 2 ? static_cast<int>(blockIdx.x & 1) : 0;  // 1: the up matrix
    const int q = kPair == 1 ? qm % gt : qm;
    bx = kPair == 2 ? blockIdx.x >> 1 : blockIdx.x;
    item = i0 + q / p.T, r0 = (bx * p.T + q % p.T) * kRows;
  } else {
    const uint32_t b32 = static_cast<uint32_t>(p.y0) + blockIdx.y, c = static_cast<uint32_t>(p.cpg);
    const uint32_t g32 = b32 / c;
    by = b32, grp = g32;
    const int64_t g0 = grp * p.src_div;
    i0 = g0 + static_cast<int64_t>(b32 - g32 * c) * p.G;
    i1 = lmin(lmin(i0 + p.G, g0 + p.src_div), p.n_items);
    const eplan::WarpJob wj = eplan::warp_job(p.wmap[warp]);
    kp = wj.kp, qm = wj.qm, m = kPair == 2 ? static_cast<int>(blockIdx.x & 1) : wj.m;
    bx = kPair == 2 ? blockIdx.x >> 1 : blockIdx.x;
    item = i0 + wj.qi, r0 = (bx * p.T + wj.qt) * kRows;
  }
  const bool live = item < i1 && r0 < p.rpm;
  const int c0 = kp * p.cpp, nc = live ? max(0, min(p.nchunk, c0 + p.cpp) - c0) : 0;
  uint8_t* ring = smem + p.off_ring + static_cast<size_t>(warp) * p.NS * kRows * p.CS;
  const uint8_t* W = m ? p.W2 : p.W;
  const uint8_t* rows = live ? W + static_cast<size_t>(p.mat[item]) * p.rpm * p.row_bytes : W;
  // V >= 1: the other global loads (first table words, first activation piece) issued with the weight
  // index's: their latencies overlap instead of following the staging (and each other) one by one.
  constexpr int kTab = (128 + 256) * 8, kPre = kIq2 && kVer != 0 ? 4 : 0;
  uint32_t tw[kPre > 0 ? kPre : 1];
  float4 xu = make_float4(0.0f, 0.0f, 0.0f, 0.0f), xv = xu;
  if constexpr (kVer != 0) {
#pragma unroll
    for (int k = 0; k < kPre; ++k) {
      const int i = threadIdx.x + k * blockDim.x;
      tw[k] = i < 128 * 8 ? g_sign[i >> 3] : i < kTab ? g_grid[(i >> 3) - 128] : 0u;
    }
    if (i0 < i1 && warp < p.nb) {
      const float* x0 = p.X + grp * p.xs + warp * 256 + 8 * lane;
      xu = __ldg(reinterpret_cast<const float4*>(x0)), xv = __ldg(reinterpret_cast<const float4*>(x0 + 4));
    }
  }
  for (int j = 0; j < min(nc, p.NS); ++j) stage<T, kVer>(p, rows, r0, c0 + j, ring + j * kRows * p.CS, lane);

  // While the weights are in flight: tables, and the activation row in digits.
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  if constexpr (kIq2) {  // 32 copies of each word, four per store; the grid table follows the sign table
    uint4* st = reinterpret_cast<uint4*>(smem);
#pragma unroll
    for (int k = 0, i = threadIdx.x; k < kPre; ++k, i += blockDim.x)
      if (i < kTab) st[i] = make_uint4(tw[k], tw[k], tw[k], tw[k]);
    for (int i = threadIdx.x + kPre * blockDim.x; i < kTab; i += blockDim.x) {
      const uint32_t w = i < 128 * 8 ? g_sign[i >> 3] : g_grid[(i >> 3) - 128];
      st[i] = make_uint4(w, w, w, w);
    }
  }
  if (i0 < i1) {
    const float* xr = p.X + grp * p.xs;
    for (int kb = warp; kb < p.nb; kb += nwarps) {
      float4 u, v;
      if (kVer != 0 && kb == warp) {
        u = xu, v = xv;
      } else {
        u = __ldg(reinterpret_cast<const float4*>(xr + kb * 256 + 8 * lane));
        v = __ldg(reinterpret_cast<const float4*>(xr + kb * 256 + 8 * lane + 4));
      }
      const float x[8] = {u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w};
      bool finite;
      const int E = digits::warp_exponent(x, kExpFloor, finite);
      uint32_t lo[4], hi[4];
      lane_digits(x, E, lo, hi);
      uint8_t* d = terms + (kb * 8 + lane / 4) * 128 + 8 * (lane & 3);
      if constexpr (kVer == 0) {
#pragma unroll
        for (int n = 0; n < 4; ++n) *reinterpret_cast<uint2*>(d + 32 * n) = make_uint2(lo[n], hi[n]);
      } else {
        // The 8 steps a warp writes are 128 bytes apart (one bank set): in store i, lane group s = lane / 4
        // writes digit (i + s) % 4, so a half warp's four groups fill the 32 banks (8-way before).
#pragma unroll
        for (int i = 0, n = (lane >> 2) & 3; i < 4; ++i, n = (n + 1) & 3) {
          const uint32_t l = n & 2 ? (n & 1 ? lo[3] : lo[2]) : (n & 1 ? lo[1] : lo[0]);
          const uint32_t h = n & 2 ? (n & 1 ? hi[3] : hi[2]) : (n & 1 ? hi[1] : hi[0]);
          *reinterpret_cast<uint2*>(d + 32 * n) = make_uint2(l, h);
        }
      }
      // x = s 2^-24 Y with s = 2^(E-5); IQ2_XXS folds its d / 8 in. A non-finite x makes the rows NaN.
      if (lane == 0) sx[kb] = finite ? as_f32(static_cast<uint32_t>((kIq2 ? 119 : 122) + E) << 23) : NAN;
      if constexpr (!kIq2) {  // sums of 16 columns for the mins (a lane holds half of one)
        float h = ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));
        h += __shfl_xor_sync(0xffffffffu, h, 1);
        if ((lane & 1) == 0) sums[kb * 16 + lane / 2] = h;
      }
    }
  }
  __syncthreads();

  const Lane L = lane_consts(lane, p.one);
  const Tabs tabs{base + p.off_grid + 4 * lane, 4u * lane, base, nullptr, nullptr};
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, mins[2] = {0.0f, 0.0f};
  using Ln = eplan::Lines<T, kVer == 2 ? 4 : 8>;
  // Copy groups in flight at most: two buffers (the plans' NS <= 2) of the larger group count.
  constexpr int kMaxAhead = 2 * (Ln::kWindows > Fmt<T>::kChunk ? Ln::kWindows : Fmt<T>::kChunk) - 1;
  static_assert(kMaxAhead <= 15, "wait counts are nibbles");
  const bool lines = kVer != 0 && p.fast;  // copy groups: line windows (stage_lines), else Fmt's blocks
  for (int j = 0; j < nc; ++j) {
    // Copy groups committed beyond those of this chunk's group g: the later chunks in flight, the later
    // groups of this one. Block b needs group b (Fmt) or Lines::need(b) (a 4-deep search for the count).
    const int ahead = (lines ? Ln::kWindows : Fmt<T>::kChunk) * (min(nc, j + p.NS) - j) - 1;
    int waits = 0;  // V >= 1: block b's wait count in nibble b, once a chunk (at most kMaxAhead)
    if constexpr (kVer != 0) {
      const bool odd = p.fast && Fmt<T>::delta(c0 + j) != 0;  // chunk data 8 bytes into its buffer (IQ2_XXS)
#pragma unroll
      for (int b = 0; b < Fmt<T>::kChunk; ++b)
        waits |= (ahead - (!lines ? b : odd ? Ln::need(b, Fmt<T>::kSlack) : Ln::need(b, 0))) << (4 * b);
    }
    const uint8_t* buf = ring + (j % p.NS) * kRows * p.CS + (p.fast ? Fmt<T>::delta(c0 + j) : 0);
    const uint8_t *pg = buf + L.g * p.CS, *pg8 = pg + 8 * p.CS;
    const int kb0 = (c0 + j) * p.CB, nblk = min(p.CB, p.nb - kb0);
    for (int b = 0; b < nblk; b += 2) {  // in pairs: the sign words' alignment follows the block's parity
      const int kb = kb0 + b, o = b * Fmt<T>::kBytes;
      if constexpr (kVer == 0) wait_pending(ahead - b);
      else wait_count<0, kMaxAhead>(waits >> (4 * b) & 15);
      if constexpr (kIq2) iq2_block<false>(pg + o, pg8 + o, terms, kb, sx[kb], L, tabs, acc);
      else q2_block<kVer != 0>(pg + o, pg8 + o, terms, sums, kb, sx[kb], L, acc, mins);
      if (b + 1 < nblk) {
        if constexpr (kVer == 0) wait_pending(ahead - b - 1);
        else wait_count<0, kMaxAhead>(waits >> (4 * b + 4) & 15);
        if constexpr (kIq2) iq2_block<true>(pg + o + 66, pg8 + o + 66, terms, kb + 1, sx[kb + 1], L, tabs, acc);
        else q2_block<kVer != 0>(pg + o + 84, pg8 + o + 84, terms, sums, kb + 1, sx[kb + 1], L, acc, mins);
      }
    }
    __syncwarp();  // this buffer is refilled next
    if (j + p.NS < nc) stage<T, kVer>(p, rows, r0, c0 + j + p.NS, ring + (j % p.NS) * kRows * p.CS, lane);
  }

  // Columns 2t, 2t + 1 hold digits of weight 2^(8 col - 24); lanes t = 0, 1 hold the four digits.
  const float wl = as_f32(static_cast<uint32_t>(103 + 16 * L.t) << 23), wh = wl * 256.0f;
  float y0 = wl * acc[0] + wh * acc[1], y1 = wl * acc[2] + wh * acc[3];
  y0 += __shfl_xor_sync(0xffffffffu, y0, 1);  // t = 0: (digits 0, 1) + (digits 2, 3)
  y1 += __shfl_xor_sync(0xffffffffu, y1, 1);
  if constexpr (!kIq2) {  // the four lanes' mins, ((t0 + t1) + (t2 + t3))
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1)
      mins[0] += __shfl_xor_sync(0xffffffffu, mins[0], o), mins[1] += __shfl_xor_sync(0xffffffffu, mins[1], o);
    y0 -= mins[0], y1 -= mins[1];
  }
  // Fused mode 1 keeps the sums in shared memory (res, by matrix, item and tile) for the swiglu.
  float* res = reinterpret_cast<float*>(smem + p.off_res);
  float* out = kPair == 1 ? res + qm * kRows : (m ? p.Y2 : p.Y) + (live ? item : 0) * p.ys + r0;
  if (p.KS == 1) {
    if (live && L.t == 0) {
      if (r0 + L.g < p.rpm) out[L.g] = y0;
      if (r0 + L.g + 8 < p.rpm) out[L.g + 8] = y1;
    }
    if constexpr (kPair == 0) return;
  } else {
    if (L.t == 0) part[warp * kRows + L.g] = y0, part[warp * kRows + L.g + 8] = y1;
    __syncthreads();
    if (live && kp == 0 && lane < kRows && r0 + lane < p.rpm) {
      float v = part[warp * kRows + lane];
      for (int k = 1; k < p.KS; ++k) v += part[(warp + k) * kRows + lane];  // parts in order
      out[lane] = v;
    }
  }
  if constexpr (kPair != 0) pair_swiglu<kPair>(p, res, i0, i1, bx, by);
}

}  // namespace emma

namespace {
using emma::Params;

struct DeviceLimits {
  int sms = 0, smem = 0;  // multiprocessors, shared memory a block may have
};
DeviceLimits device_limits() {
  static DeviceLimits lim;
  int dev = 0;
  if (lim.sms == 0 && cudaGetDevice(&dev) == cudaSuccess) {
    FS_CUDA_CHECK(cudaDeviceGetAttribute(&lim.sms, cudaDevAttrMultiProcessorCount, dev));
    FS_CUDA_CHECK(cudaDeviceGetAttribute(&lim.smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  }
  return lim;
}

// Dynamic shared memory a block may have, set on the kernel once: the card's limit, less the fused kernels'
// static shared memory (mode 2's last-block flag; the plain kernel keeps the budget its plans were made for).
template <GgmlType T, int kPair, int kVer>
size_t smem_budget(const DeviceLimits& lim) {
  static const size_t budget = [&] {
    size_t b = static_cast<size_t>(lim.smem);
    if (kPair != 0) {
      cudaFuncAttributes a{};
      FS_CUDA_CHECK(cudaFuncGetAttributes(&a, emma::expert_mma_kernel<T, kPair, kVer>));
      b -= a.sharedSizeBytes;
    }
    FS_CUDA_CHECK(cudaFuncSetAttribute(emma::expert_mma_kernel<T, kPair, kVer>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    return b;
  }();
  return budget;
}

template <GgmlType T, int kPair, int kVer>
bool launch(Params p, int64_t n_groups, cudaStream_t s) {
  const DeviceLimits lim = device_limits();
  const size_t plain = static_cast<size_t>(lim.smem), budget = smem_budget<T, kPair, kVer>(lim);
  const bool planned = kPair == 0
                           ? eplan::plan<T>(p.rpm, p.n_items, p.src_div, p.nb, n_groups, lim.sms, plain, p)
                           : eplan::plan_pair<T>(kPair, p.rpm, p.n_items, p.src_div, p.nb, n_groups, lim.sms, plain,
                                                 budget, p);
  if (!planned) return false;
  const int64_t gx = eplan::cdiv(eplan::cdiv(p.rpm, emma::kRows), p.T), gy = n_groups * p.cpg;
  if constexpr (kVer != 0) {
    if (gy > 0x7fffffff) return launch<T, kPair, 0>(p, n_groups, s);  // past its 32-bit block index math
    for (int w = 0; w < p.warps() && w < eplan::kRegWarps; ++w) p.wmap[w] = eplan::warp_word(p, kPair, w);
  }
  if ((kPair == 2 ? 2 * gx : gx) > 0x7fffffff || p.warps() > eplan::kMaxWarps<T>) return false;
  if (kPair == 2 && gx * gy > emma::kMaxTickets) return false;
  const unsigned threads = static_cast<unsigned>(p.warps() * 32);
  for (int64_t y0 = 0; y0 < gy; y0 += 65535) {
    p.y0 = y0;
    const dim3 grid(static_cast<unsigned>(kPair == 2 ? 2 * gx : gx),
                    static_cast<unsigned>(std::min<int64_t>(65535, gy - y0)));
    emma::expert_mma_kernel<T, kPair, kVer><<<grid, threads, p.smem, s>>>(p);
    FS_CUDA_LAUNCH_CHECK();
  }
  return true;
}

// A switch of this file from the environment: exactly "0" or "2", else 1 (the default).
int env_0_1_2(const char* name) {
  const char* v = std::getenv(name);
  return v && (v[0] == '0' || v[0] == '2') && v[1] == 0 ? v[0] - '0' : 1;
}

// FLASHSTAR_EXPERT_V: 0, 1 (the default) or 2.
int& version_flag() {
  static int v = env_0_1_2("FLASHSTAR_EXPERT_V");
  return v;
}

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

// What expert_matvec takes of a call besides the sizes (rows_per_mat, n_items).
bool takes(const DMat& W, int32_t src_div, const int32_t* mat, const float* X, int64_t xs, const float* Y) {
  if (!expert_matvec_supported(W) || src_div < 1 || !mat || !X || !Y) return false;
  return aligned(W.data, W.type == GgmlType::Q2_K ? 4 : 2) && aligned(X, 16) && xs % 4 == 0 && aligned(Y, 4) &&
         aligned(mat, 4);
}

Params params(const DMat& W, int64_t rows_per_mat, const int32_t* mat, int32_t src_div, const float* X, int64_t xs,
              int64_t n_items, float* Y, int64_t ys) {
  Params p{};
  p.W = W.data, p.row_bytes = W.row_bytes, p.rpm = rows_per_mat, p.n_items = n_items, p.xs = xs, p.ys = ys;
  p.mat = mat, p.X = X, p.Y = Y, p.src_div = src_div, p.nb = static_cast<int>(W.cols / 256);
  p.fast = W.row_bytes % 16 == 0 && aligned(W.data, 16);
  p.one = 1;
  p.ver = version_flag();
  return p;
}

template <int kPair, int kVer>
bool launch_ver(GgmlType t, const Params& p, int64_t n_groups, cudaStream_t s) {
  return t == GgmlType::IQ2_XXS ? launch<GgmlType::IQ2_XXS, kPair, kVer>(p, n_groups, s)
                                : launch<GgmlType::Q2_K, kPair, kVer>(p, n_groups, s);
}
template <int kPair>
bool launch_type(GgmlType t, const Params& p, int64_t n_groups, cudaStream_t s) {
  return p.ver == 0   ? launch_ver<kPair, 0>(t, p, n_groups, s)
         : p.ver == 2 ? launch_ver<kPair, 2>(t, p, n_groups, s)
                      : launch_ver<kPair, 1>(t, p, n_groups, s);
}

// FLASHSTAR_EXPERT_FUSED: 0, 1 (the default) or 2.
int& fused_mode_flag() {
  static int mode = env_0_1_2("FLASHSTAR_EXPERT_FUSED");
  return mode;
}
}  // namespace

void init_expert_tables() {
  static bool done = false;
  if (done) return;
  uint32_t grid[256], sign[128];
  emma::build_tables(grid, sign);
  FS_CUDA_CHECK(cudaMemcpyToSymbol(emma::g_grid, grid, sizeof(grid)));
  FS_CUDA_CHECK(cudaMemcpyToSymbol(emma::g_sign, sign, sizeof(sign)));
  const std::vector<int> zeros(kTicketLanes * emma::kMaxTickets, 0);
  FS_CUDA_CHECK(cudaMemcpyToSymbol(emma::g_pair_tickets, zeros.data(), zeros.size() * sizeof(int)));
  done = true;
}

bool expert_matvec_supported(const DMat& W) {
  if (W.type != GgmlType::IQ2_XXS && W.type != GgmlType::Q2_K) return false;
  return W.cols > 0 && W.cols % 256 == 0 && W.cols <= (1 << 20) && W.row_bytes == row_bytes(W.type, W.cols) &&
         W.data != nullptr;
}

bool expert_matvec(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                   int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s) {
  if (!takes(W, src_div, mat_of_item, X, xs, Y)) return false;
  if (n_items <= 0 || rows_per_mat <= 0) return true;
  init_expert_tables();
  return launch_type<0>(W.type, params(W, rows_per_mat, mat_of_item, src_div, X, xs, n_items, Y, ys),
                        eplan::cdiv(n_items, src_div), s);
}

int expert_fused_mode() { return fused_mode_flag(); }
int expert_version() { return version_flag(); }
void expert_set_version(int v) { version_flag() = v; }
void expert_set_fused_mode(int mode) { fused_mode_flag() = mode; }

bool expert_gate_up_fused(const DMat& Wg, const DMat& Wu, int64_t rows_per_mat, const int32_t* mat_of_item,
                          int32_t src_div, const float* X, int64_t xs, int64_t n_items, float lim, const float* w,
                          float* G, float* U, cudaStream_t s) {
  const int mode = expert_fused_mode();
  if ((mode != 1 && mode != 2) || Wg.type != Wu.type || Wg.cols != Wu.cols ||
      !takes(Wg, src_div, mat_of_item, X, xs, G) || !takes(Wu, src_div, mat_of_item, X, xs, U) || !aligned(w, 4))
    return false;
  if (n_items <= 0 || rows_per_mat <= 0) return true;
  init_expert_tables();
  Params p = params(Wg, rows_per_mat, mat_of_item, src_div, X, xs, n_items, G, rows_per_mat);
  p.W2 = Wu.data, p.Y2 = U, p.w = w, p.lim = lim, p.lane = ticket_lane(s);
  p.fast = p.fast && aligned(Wu.data, 16);  // one staging for both (it does not change the sums)
  const int64_t n_groups = eplan::cdiv(n_items, src_div);
  return mode == 1 ? launch_type<1>(Wg.type, p, n_groups, s) : launch_type<2>(Wg.type, p, n_groups, s);
}

void expert_gate_up_swiglu(bool fast_route, const DMat& Wg, const DMat& Wu, int64_t rows_per_mat,
                           const int32_t* mat_of_item, int32_t src_div, const float* X, int64_t xs, int64_t n_items,
                           float lim, const float* w, float* G, float* U, cudaStream_t s, float* work,
                           int64_t work_floats) {
  if (fast_route &&
      expert_gate_up_fused(Wg, Wu, rows_per_mat, mat_of_item, src_div, X, xs, n_items, lim, w, G, U, s))
    return;
  for (const auto& [W, Y] : {std::pair{&Wg, G}, std::pair{&Wu, U}})
    if (!fast_route ||
        !matvec_items(*W, rows_per_mat, mat_of_item, src_div, X, xs, n_items, Y, rows_per_mat, s, work, work_floats))
      matmul_items(*W, rows_per_mat, mat_of_item, src_div, X, xs, n_items, Y, rows_per_mat, s);
  swiglu(G, U, n_items, rows_per_mat, lim, w, s);
}

}  // namespace flashstar::cuda::fast
