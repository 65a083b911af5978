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
// Work: a block owns one activation row (src_div items), converts it once, and loops over rounds; a round
// gives warp (q, kp) row tile q and column part kp (parts fixed by the width, so expert_matvec and the
// fused gate / up / swiglu add the same sums in the same order). Each warp streams two-block stages of its
// 16 rows with 4-byte cp.async (a row's bytes on consecutive lanes) through a ring of 2-4 stages, across
// rounds; one barrier a round adds the parts in order. Nothing is atomic: results are bitwise reproducible.
#include "cuda/fast_expert_mma.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

#include "common/half.h"
#include "cuda/cuda_util.h"
#include "quant/quant.h"

namespace flashstar::cuda::fast {
// Named (not anonymous) so that a host-side check of the lane mapping can include this file.
namespace emma {

#define EMMA_HD __host__ __device__ __forceinline__

constexpr int kRows = 16;
constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: x + kMagic holds rint(x) in its low mantissa bits

// Aligned loads (the host side reads byte by byte).
EMMA_HD uint32_t ld32(const uint8_t* p) {
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const uint32_t*>(p);
#else
  return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
#endif
}
EMMA_HD uint32_t ld16(const uint8_t* p) {
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const uint16_t*>(p);
#else
  return p[0] | (p[1] << 8);
#endif
}
EMMA_HD uint32_t as_u32(float f) { return __builtin_bit_cast(uint32_t, f); }
EMMA_HD float as_f32(uint32_t u) { return __builtin_bit_cast(float, u); }
EMMA_HD float half_f32(uint32_t h) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
#else
  return f16_to_f32(static_cast<uint16_t>(h));
#endif
}
// Low 32 bits of (hi:lo) >> (n & 31).
EMMA_HD uint32_t fshr(uint32_t lo, uint32_t hi, uint32_t n) {
#ifdef __CUDA_ARCH__
  return __funnelshift_r(lo, hi, n);
#else
  return static_cast<uint32_t>(((static_cast<uint64_t>(hi) << 32) | lo) >> (n & 31));
#endif
}
// PRMT: byte i of the result is byte (s >> 4i) & 7 of (b:a). Every selector here has bit 3 of each nibble
// clear (no sign replication), so the raw instruction is used: __byte_perm masks the selector first.
EMMA_HD uint32_t prmt(uint32_t a, uint32_t b, uint32_t s) {
#ifdef __CUDA_ARCH__
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(s));
  return r;
#else
  const uint64_t v = (static_cast<uint64_t>(b) << 32) | a;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((v >> (8 * ((s >> (4 * i)) & 7))) & 255) << (8 * i);
  return r;
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
// Exponent E of the block's largest |x| (floored so that every scale below is a normal float).
EMMA_HD int block_exponent(float amax) {
  const int e = static_cast<int>((as_u32(amax) >> 23) & 255) - 127;
  return e < -98 ? -98 : e;
}
// Digits of 8 values: lo[n] / hi[n] pack digit n of elements 0..3 / 4..7. Y = rint(x * 2^(29-E)) is built
// from rint(x * 2^(13-E)) and the exact remainder, each within the magic number's 2^22 range.
EMMA_HD void lane_digits(const float (&x)[8], int E, uint32_t (&lo)[4], uint32_t (&hi)[4]) {
  const float mh = as_f32(static_cast<uint32_t>(140 - E) << 23), m = as_f32(static_cast<uint32_t>(156 - E) << 23);
  const float back = -as_f32(static_cast<uint32_t>(114 + E) << 23);
  uint32_t z[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float hb = fmaf(x[i], mh, kMagic);
    const float r = fmaf(hb - kMagic, back, x[i]);
    const float lb = fmaf(r, m, kMagic);
    // (hi << 16) + lo + 0x80808080; the magic's bits vanish from hb << 16 and cancel from lb.
    z[i] = as_u32(hb) * 65536u + as_u32(lb) + 0x35408080u;
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint32_t* q = z + 4 * h;
    const uint32_t p0 = prmt(q[0], q[1], 0x5140), p1 = prmt(q[0], q[1], 0x7362);
    const uint32_t p2 = prmt(q[2], q[3], 0x5140), p3 = prmt(q[2], q[3], 0x7362);
    uint32_t* d = h ? hi : lo;
    d[0] = prmt(p0, p2, 0x5410) ^ 0x80808080u, d[1] = prmt(p0, p2, 0x7632) ^ 0x80808080u;
    d[2] = prmt(p1, p3, 0x5410) ^ 0x80808080u, d[3] = prmt(p1, p3, 0x7632) ^ 0x80808080u;
  }
}
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
// negative byte. This lane's copies start at g / s: offsets into the dynamic shared memory on the device
// (the sign table at 0, so the 128-aligned index is OR-ed in; the base folds into the load's address),
// pointers on the host.
#ifdef __CUDACC__
extern __shared__ __align__(16) uint8_t emma_smem[];
#endif
struct Tabs {
  uint32_t g, s;
  const uint8_t *hg, *hs;
};
constexpr uint32_t kPos = 0x002B1908u, kNeg = 0x00D5E7F8u;  // bytes 8, 25, 43 and their negations
// Word at byte offset off of a table (device: address | off, the two sharing no bits, or + off).
EMMA_HD uint32_t tab_word(uint32_t sa, const uint8_t* host, uint32_t off, bool disjoint) {
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const uint32_t*>(emma_smem + (disjoint ? sa | off : sa + off));
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
  const uint32_t sel = tab_word(T.g, T.hg, idx * 128, false) | tab_word(T.s, T.hs, field, true);
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
// sums: the block's 16 per-sub-block sums of x.
EMMA_HD void q2_load(const uint8_t* blk, const float* sums, const Lane& L, Q2Row& r) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    r.sc[j] = ld32(blk + 4 * j) & 0x0F0F0F0Fu;
    r.q[j] = ld32(blk + 16 + 32 * (j >> 1) + 8 * L.t + 4 * (j & 1));
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
// Sign table (16 KB) at offset 0 of the dynamic shared memory, then the grid table (32 KB).
constexpr int kTabBytes = 16384 + 32768, kGridOff = 16384;

// A warp task: one item's 16-row tile and one column part. Rows 0-7 of the tile come from matrix a, rows
// 8-15 from matrix b: the same matrix (plain) or gate and up at the same rows (pair: fragment row g holds
// gate row r, row g + 8 up row r, so one lane ends with both inputs of the swiglu).
struct Params {
  const uint8_t *Wa, *Wb;  // plain: Wa == Wb
  size_t row_bytes;
  int64_t rpm, n_items, xs, ys, y0;  // y0: first block-y of this launch (launches are sliced at 65535)
  const int32_t* mat;
  const float* X;
  float* Y;
  const float* wsel;  // pair: routing weight per item (or null)
  float lim;          // pair: swiglu clamp
  int src_div, nb;    // nb: 256-column blocks per row
  int KS, bpp;        // column parts, blocks per part (even): a function of nb only, so the plain and pair
                      // kernels add the same partial sums in the same order
  int TPC, NW, NS;    // tiles per round, warps (TPC * KS), ring stages per warp
  int tiles;          // row tiles per item (16 rows plain, 8 pair)
  int CS;             // staged row bytes (two blocks, 4-byte multiple)
  bool words;         // rows and matrix 4-byte aligned: 4-byte cp.async (else 2-byte loads)
  uint32_t one;       // 1 (see Lane::one)
  // Dynamic shared memory: [IQ2_XXS tables][digits][sx: per-block scales][sum: Q2_K per-16-column sums
  // of x][part: column-part results, two rounds][ring: the warps' weight stages].
  int off_terms, off_sx, off_sum, off_part, off_ring;
};

__device__ __forceinline__ void cp_async4(void* d, const void* s) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(d));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(a), "l"(s));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Waits until at most n (0..7) of this thread's copy groups are pending, then syncs the warp's view.
template <int N = 7>
__device__ __forceinline__ void wait_pending(int n) {
  if constexpr (N > 0) {
    if (n < N) return wait_pending<N - 1>(n);
  }
  cp_async_wait<N>();
  __syncwarp();
}

__device__ __forceinline__ int64_t lmin(int64_t a, int64_t b) { return a < b ? a : b; }

// Bytes per 256-column block. A stage is two blocks of the tile's 16 rows (IQ2_XXS 132, Q2_K 168 bytes a
// row): small stages keep several in flight per warp within the shared memory the tables leave.
template <GgmlType T>
struct Fmt {
  static constexpr int kBytes = T == GgmlType::IQ2_XXS ? 66 : 84;
};

// Where a task's rows start: fragment rows 0-7 at a + min(ra + r, last), rows 8-15 at b + min(rb + r - 8, last).
struct Task {
  const uint8_t *a, *b;
  int64_t ra, rb, item, r0;
  bool live;
};
__device__ __forceinline__ Task task_of(const Params& p, int64_t g0, int64_t count, int64_t round, int q,
                                        bool pair) {
  Task k{};
  const int64_t tid = round * p.TPC + q;
  k.live = tid < count * p.tiles;
  const int64_t t = k.live ? tid : 0;
  k.item = g0 + t / p.tiles;
  const int64_t tile = t % p.tiles;
  const size_t mbase = static_cast<size_t>(p.mat[k.item]) * p.rpm * p.row_bytes;
  k.a = p.Wa + mbase, k.b = p.Wb + mbase;
  k.r0 = tile * (pair ? 8 : 16);
  k.ra = k.r0, k.rb = pair ? k.r0 : k.r0 + 8;
  return k;
}

// Copies blocks [kb, kb + n) of the task's 16 rows into dst (rows CS bytes apart). A row's bytes go to
// consecutive lanes (one or two 128-byte lines per instruction), as one copy group.
template <GgmlType T>
__device__ __forceinline__ void stage(const Params& p, const Task& k, int kb, int n, uint8_t* dst, int lane) {
  constexpr int kBytes = Fmt<T>::kBytes;
  const size_t off = static_cast<size_t>(kb) * kBytes;
  const int bytes = n * kBytes;
#pragma unroll 4
  for (int r = 0; r < kRows; ++r) {
    const int64_t row = lmin((r < 8 ? k.ra : k.rb) + (r & 7), p.rpm - 1);
    const uint8_t* src = (r < 8 ? k.a : k.b) + static_cast<size_t>(row) * p.row_bytes + off;
    uint8_t* d = dst + r * p.CS;
    if (p.words) {
      for (int o = 4 * lane; o < bytes; o += 128) cp_async4(d + o, src + o);
    } else {
      for (int o = 2 * lane; o < bytes; o += 64)
        *reinterpret_cast<uint16_t*>(d + o) = __ldg(reinterpret_cast<const unsigned short*>(src + o));
    }
  }
  cp_commit();
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
__device__ __forceinline__ void q2_block(const uint8_t* pg, const uint8_t* pg8, const uint8_t* terms,
                                         const float* sums, int kb, float scale, const Lane& L, float (&acc)[4],
                                         float (&mins)[2]) {
  Q2Row rg, rg8;
  q2_load(pg, sums + kb * 16, L, rg);
  q2_load(pg8, sums + kb * 16, L, rg8);
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

// The swiglu of ref_ops.cu's swiglu_kernel with every rounding explicit: that file is compiled without
// contraction, and the intrinsics keep this one from contracting the same expressions (1 + e after expf's
// last multiply above all), so the results are bitwise equal.
__device__ __forceinline__ float swiglu_sigmoid(float x) {
  if (x >= 0) return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x)));
  const float e = expf(x);
  return __fdiv_rn(e, __fadd_rn(1.0f, e));
}
__device__ __forceinline__ float swiglu_one(float g, float u, float lim, float w) {
  const float gg = fminf(g, lim);
  const float uu = fminf(fmaxf(u, -lim), lim);
  return __fmul_rn(__fmul_rn(__fmul_rn(gg, swiglu_sigmoid(gg)), uu), w);
}

// Persistent over rounds: a block owns one activation row (converted once, with the tables, while its
// first stages are in flight) and takes rounds blockIdx.x, + gridDim.x, ...; a round gives warp
// (q, kp) = tile q of the round and column part kp. Each warp streams its stages through a ring of NS,
// across rounds, so its loads never stop at a round's end; one barrier a round adds the parts in order.
template <GgmlType T, bool kPair>
__global__ void __launch_bounds__(T == GgmlType::IQ2_XXS ? 512 : 256, T == GgmlType::IQ2_XXS ? 1 : 3)
    expert_mma_kernel(const Params p) {
  constexpr bool kIq2 = T == GgmlType::IQ2_XXS;
  constexpr int kB = Fmt<T>::kBytes;
  uint8_t* const smem = emma_smem;
  uint8_t* terms = smem + p.off_terms;
  float* sx = reinterpret_cast<float*>(smem + p.off_sx);
  float* sums = reinterpret_cast<float*>(smem + p.off_sum);
  float* part = reinterpret_cast<float*>(smem + p.off_part);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  const int64_t grp = p.y0 + blockIdx.y, g0 = grp * p.src_div, count = lmin(p.src_div, p.n_items - g0);
  const int64_t rounds = (count * p.tiles + p.TPC - 1) / p.TPC;
  if (blockIdx.x >= rounds) return;  // block-uniform, before any barrier
  const int64_t nr = (rounds - blockIdx.x + gridDim.x - 1) / gridDim.x;
  const int kp = warp % p.KS, q = warp / p.KS;
  const int kb_beg = kp * p.bpp, kb_end = min(p.nb, kb_beg + p.bpp);
  const int SP = kb_end > kb_beg ? (kb_end - kb_beg + 1) / 2 : 0;  // stages per round
  const int64_t J = nr * SP;
  const int stage_bytes = kRows * p.CS;
  uint8_t* ring = smem + p.off_ring + static_cast<size_t>(warp) * p.NS * stage_bytes;
  // Stage j of this warp's sequence (round j / SP, stage j % SP); always one copy group.
  auto issue = [&](int64_t j) {
    if (j < J) {
      const int64_t kr = j / SP;
      const int s = static_cast<int>(j - kr * SP), kb = kb_beg + 2 * s;
      const Task k = task_of(p, g0, count, blockIdx.x + kr * gridDim.x, q, kPair);
      if (k.live) return stage<T>(p, k, kb, min(2, kb_end - kb), ring + (j % p.NS) * stage_bytes, lane);
    }
    cp_commit();
  };
  for (int j = 0; j < p.NS - 1; ++j) issue(j);

  // While the weights are in flight: tables, and the activation row in digits.
  if constexpr (kIq2) {  // 32 copies of each word, four per store
    uint4* st = reinterpret_cast<uint4*>(smem);
    for (int i = threadIdx.x; i < (128 + 256) * 8; i += blockDim.x) {
      const uint32_t w = i < 128 * 8 ? g_sign[i >> 3] : g_grid[(i >> 3) - 128];
      st[i] = make_uint4(w, w, w, w);
    }
  }
  {
    const float* xr = p.X + grp * p.xs;
    for (int kb = warp; kb < p.nb; kb += p.NW) {
      const float4 u = __ldg(reinterpret_cast<const float4*>(xr + kb * 256 + 8 * lane));
      const float4 v = __ldg(reinterpret_cast<const float4*>(xr + kb * 256 + 8 * lane + 4));
      const float x[8] = {u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w};
      float amax = 0.0f;
      bool finite = true;
#pragma unroll
      for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(x[i])), finite &= fabsf(x[i]) <= 3.4028235e38f;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      finite = __all_sync(0xffffffffu, finite);
      const int E = finite ? block_exponent(amax) : 0;
      uint32_t lo[4], hi[4];
      lane_digits(x, E, lo, hi);
      uint8_t* d = terms + (kb * 8 + lane / 4) * 128 + 8 * (lane & 3);
#pragma unroll
      for (int n = 0; n < 4; ++n) *reinterpret_cast<uint2*>(d + 32 * n) = make_uint2(lo[n], hi[n]);
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
  const Tabs tabs{kGridOff + 4u * lane, 4u * lane, nullptr, nullptr};
  // Columns 2t, 2t + 1 hold digits of weight 2^(8 col - 24); lanes t = 0, 1 hold the four digits.
  const float wl = as_f32(static_cast<uint32_t>(103 + 16 * L.t) << 23), wh = wl * 256.0f;
  for (int64_t kr = 0; kr < nr; ++kr) {
    const Task k = task_of(p, g0, count, blockIdx.x + kr * gridDim.x, q, kPair);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, mins[2] = {0.0f, 0.0f};
    for (int s = 0; s < SP; ++s) {
      const int64_t j = kr * SP + s;
      issue(j + p.NS - 1);
      wait_pending(p.NS - 1);  // stage j has landed
      if (k.live) {
        const uint8_t* buf = ring + (j % p.NS) * stage_bytes;
        const uint8_t *pg = buf + L.g * p.CS, *pg8 = pg + 8 * p.CS;
        const int kb = kb_beg + 2 * s;
        // Even blocks first: the sign words' alignment follows the block's parity.
        if constexpr (kIq2) iq2_block<false>(pg, pg8, terms, kb, sx[kb], L, tabs, acc);
        else q2_block(pg, pg8, terms, sums, kb, sx[kb], L, acc, mins);
        if (kb + 1 < kb_end) {
          if constexpr (kIq2) iq2_block<true>(pg + kB, pg8 + kB, terms, kb + 1, sx[kb + 1], L, tabs, acc);
          else q2_block(pg + kB, pg8 + kB, terms, sums, kb + 1, sx[kb + 1], L, acc, mins);
        }
      }
      __syncwarp();  // this buffer is refilled next
    }
    // Powers of two times the sums: exact products, one rounding per add (contracted or not).
    float y0 = wl * acc[0] + wh * acc[1], y1 = wl * acc[2] + wh * acc[3];
    y0 += __shfl_xor_sync(0xffffffffu, y0, 1);  // t = 0: (digits 0, 1) + (digits 2, 3)
    y1 += __shfl_xor_sync(0xffffffffu, y1, 1);
    if constexpr (!kIq2) {  // the four lanes' mins, ((t0 + t1) + (t2 + t3))
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1)
        mins[0] += __shfl_xor_sync(0xffffffffu, mins[0], o), mins[1] += __shfl_xor_sync(0xffffffffu, mins[1], o);
      y0 -= mins[0], y1 -= mins[1];
    }
    // Two part buffers: round kr + 2 writes this one only after the barrier of round kr + 1, which the
    // warps reading it below have passed.
    float* pr = part + (kr & 1) * p.NW * kRows;
    if (L.t == 0) pr[warp * kRows + L.g] = y0, pr[warp * kRows + L.g + 8] = y1;
    __syncthreads();
    if (kp == 0 && k.live && lane < kRows) {
      float v = pr[warp * kRows + lane];
      for (int i = 1; i < p.KS; ++i) v += pr[(warp + i) * kRows + lane];  // parts in order
      float* out = p.Y + k.item * p.ys + k.r0;
      if constexpr (kPair) {  // lanes 0-7 gate rows r0.., lanes 8-15 the same up rows
        const float u = __shfl_down_sync(0x0000ffffu, v, 8);
        if (lane < 8 && k.r0 + lane < p.rpm)
          out[lane] = swiglu_one(v, u, p.lim, p.wsel ? p.wsel[k.item] : 1.0f);
      } else if (k.r0 + lane < p.rpm) {
        out[lane] = v;
      }
    }
  }
  cp_async_wait<0>();
}

}  // namespace emma

namespace {
using emma::kRows;
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

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Shared-memory offsets for the current shape; returns the dynamic bytes.
size_t layout(Params& p, bool iq2) {
  p.off_terms = iq2 ? emma::kTabBytes : 0;
  p.off_sx = p.off_terms + p.nb * 1024;
  p.off_sum = (p.off_sx + 4 * p.nb + 15) / 16 * 16;
  p.off_part = p.off_sum + (iq2 ? 0 : 64 * p.nb);
  p.off_ring = p.off_part + 2 * p.NW * kRows * 4;
  return static_cast<size_t>(p.off_ring) + static_cast<size_t>(p.NW) * p.NS * kRows * p.CS;
}

template <GgmlType T, bool kPair>
bool launch(Params p, int64_t n_groups, cudaStream_t s) {
  constexpr bool kIq2 = T == GgmlType::IQ2_XXS;
  constexpr int kMaxWarps = kIq2 ? 16 : 8;  // the kernel's launch bounds
  const DeviceLimits lim = device_limits();
  // Parts of at least four blocks (a warp's share of a round stays ~2 stages at the model's widths).
  p.KS = std::clamp(p.nb / 4, 1, 4);
  p.bpp = static_cast<int>(cdiv(p.nb, p.KS));
  p.bpp += p.bpp & 1;
  p.tiles = static_cast<int>(std::min<int64_t>(cdiv(p.rpm, kPair ? 8 : 16), 1 << 30));
  p.CS = (2 * emma::Fmt<T>::kBytes + 3) / 4 * 4;
  // IQ2_XXS: one block of 16 warps a multiprocessor (the 48 KB of tables once), 4 stages each; Q2_K:
  // three blocks of 8 warps, 3 stages. Fewer stages, then fewer warps, until it fits.
  bool fits = false;
  for (int tpc = std::max(1, kMaxWarps / p.KS); tpc >= 1 && !fits; tpc /= 2)
    for (int ns = kIq2 ? 4 : 3; ns >= 2 && !fits; --ns) {
      p.TPC = tpc, p.NW = tpc * p.KS, p.NS = ns;
      fits = layout(p, kIq2) <= static_cast<size_t>(lim.smem);
    }
  if (!fits) return false;
  const size_t sm = layout(p, kIq2);
  auto* kern = emma::expert_mma_kernel<T, kPair>;
  static bool attr = false;
  if (!attr) {
    FS_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, lim.smem));
    attr = true;
  }
  const unsigned threads = static_cast<unsigned>(p.NW * 32);
  int per_sm = 0;
  FS_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, static_cast<int>(threads), sm));
  const int64_t resident = static_cast<int64_t>(std::max(per_sm, 1)) * lim.sms;
  const int64_t rounds = cdiv(std::min<int64_t>(p.src_div, p.n_items) * p.tiles, p.TPC);
  const int64_t gx = std::clamp<int64_t>(cdiv(resident, n_groups), 1, rounds);
  if (gx > 0x7fffffff) return false;
  for (int64_t y0 = 0; y0 < n_groups; y0 += 65535) {
    p.y0 = y0;
    const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(std::min<int64_t>(65535, n_groups - y0)));
    kern<<<grid, threads, sm, s>>>(p);
    FS_CUDA_LAUNCH_CHECK();
  }
  return true;
}

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

bool common_ok(const DMat& W, const int32_t* mat_of_item, int32_t src_div, const float* X, int64_t xs, float* Y) {
  if (!expert_matvec_supported(W) || src_div < 1 || !mat_of_item || !X || !Y) return false;
  return aligned(W.data, W.type == GgmlType::Q2_K ? 4 : 2) && aligned(X, 16) && xs % 4 == 0 && aligned(Y, 4) &&
         aligned(mat_of_item, 4);
}

Params base_params(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                   int64_t xs, int64_t n_items, float* Y, int64_t ys) {
  Params p{};
  p.Wa = p.Wb = W.data, p.row_bytes = W.row_bytes, p.rpm = rows_per_mat, p.n_items = n_items, p.xs = xs, p.ys = ys;
  p.mat = mat_of_item, p.X = X, p.Y = Y, p.src_div = src_div, p.nb = static_cast<int>(W.cols / 256);
  p.words = W.row_bytes % 4 == 0 && aligned(W.data, 4);
  p.one = 1;
  return p;
}
}  // namespace

void init_expert_tables() {
  static bool done = false;
  if (done) return;
  uint32_t grid[256], sign[128];
  emma::build_tables(grid, sign);
  FS_CUDA_CHECK(cudaMemcpyToSymbol(emma::g_grid, grid, sizeof(grid)));
  FS_CUDA_CHECK(cudaMemcpyToSymbol(emma::g_sign, sign, sizeof(sign)));
  done = true;
}

bool expert_matvec_supported(const DMat& W) {
  if (W.type != GgmlType::IQ2_XXS && W.type != GgmlType::Q2_K) return false;
  return W.cols > 0 && W.cols % 256 == 0 && W.cols <= (1 << 20) && W.row_bytes == row_bytes(W.type, W.cols) &&
         W.data != nullptr;
}

bool expert_matvec(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                   int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s) {
  if (!common_ok(W, mat_of_item, src_div, X, xs, Y)) return false;
  if (n_items <= 0 || rows_per_mat <= 0) return true;
  init_expert_tables();
  const Params p = base_params(W, rows_per_mat, mat_of_item, src_div, X, xs, n_items, Y, ys);
  const int64_t n_groups = cdiv(n_items, src_div);
  return W.type == GgmlType::IQ2_XXS ? launch<GgmlType::IQ2_XXS, false>(p, n_groups, s)
                                     : launch<GgmlType::Q2_K, false>(p, n_groups, s);
}

bool expert_gate_up_swiglu(const DMat& Wg, const DMat& Wu, int64_t rows_per_mat, const int32_t* mat_of_item,
                           int32_t src_div, const float* X, int64_t xs, int64_t n_items, float lim, const float* wsel,
                           float* Y, int64_t ys, cudaStream_t s) {
  if (!common_ok(Wg, mat_of_item, src_div, X, xs, Y) || !common_ok(Wu, mat_of_item, src_div, X, xs, Y)) return false;
  if (Wg.type != Wu.type || Wg.cols != Wu.cols || Wg.rows != Wu.rows || Wg.row_bytes != Wu.row_bytes) return false;
  if (wsel && !aligned(wsel, 4)) return false;
  if (n_items <= 0 || rows_per_mat <= 0) return true;
  init_expert_tables();
  Params p = base_params(Wg, rows_per_mat, mat_of_item, src_div, X, xs, n_items, Y, ys);
  p.Wb = Wu.data, p.words = p.words && aligned(Wu.data, 4);
  p.wsel = wsel, p.lim = lim;
  const int64_t n_groups = cdiv(n_items, src_div);
  return Wg.type == GgmlType::IQ2_XXS ? launch<GgmlType::IQ2_XXS, true>(p, n_groups, s)
                                      : launch<GgmlType::Q2_K, true>(p, n_groups, s);
}

}  // namespace flashstar::cuda::fast
