// The grouped expert product on Hopper's warpgroup MMA (gemm_group_wgmma.cu): its tile geometry, the
// wgmma descriptors over the second grouped kernel's shared-memory tiles, the accumulator mapping and
// the row / token each promotion reads, host-compilable so that CPU tests
// (tests/cuda/test_gemm_group_wgmma.cpp) replay every address against the PTX ISA's layout definitions.
//
// The block is the second grouped kernel's (gemm_group_v2.h, GroupGeo): 128 weight rows x one plan tile of
// 64 items, raw weights and activations staged by the same copies into the same shared-memory layout,
// each k-tile decoded by one thread a row into the same FP16 integers. The swizzled 64-byte rows of
// those tiles (gemm_v2::swz: 16-byte chunk c of row r at c ^ ((r / 2) % 4)) are exactly wgmma's K-major
// 64-byte swizzle (address bits 4-5 xor bits 7-8) once the tiles sit on 512-byte boundaries, so the
// tensor core reads the decoded weights (A) and both activation terms (B) where the v2 kernel's ldmatrix
// read them.
#pragma once
#include <cstdint>

#include "cuda/gemm_group_v2.h"
#include "cuda/wgmma_tile.cuh"

namespace flashstar::cuda::wgmma_group {

using G = gemm_v2::GroupGeo;
// One warpgroup a block: 128 threads, one decoding thread a row as in v2; its wgmma cover rows 64 h ..
// 64 h + 63 (h = 0, 1) of the block, each m64 x N with N = 64 items, or 32 for a tile of 32 items or
// fewer (an expert's last tile: half the tensor work; the items past the count are zero-filled rows).
constexpr int kBM = G::kBM, kThreads = G::kThreads, kBN = gemm_v2::kBN, kBK = gemm_v2::kBK;
static_assert(kThreads == 128 && kBM == 128, "one warpgroup, two m64 halves");
constexpr int kHalfRows = 64;

// Tiles of 64-byte rows in 8-row atoms of 512 bytes: atoms 512 bytes apart (SBO), 64-byte swizzle.
constexpr uint32_t kRowBytes = kBK * 2, kSbo = 8 * kRowBytes, kAlign = 512;
static_assert(kRowBytes == 64, "a k-tile is one 64-byte swizzled row");

// Byte offsets (from the 512-aligned dynamic shared-memory base) of the v2 layout's tiles: activation
// stage st, term (0 hi, 1 lo); decoded weight tile buffer b, rows from `row`.
template <GgmlType T>
using Smem = gemm_v2::Smem<T, G>;
constexpr uint32_t kXTermBytes = kBN * kBK * 2, kXStageBytes = 2 * kXTermBytes, kATileBytes = kBM * kBK * 2;
WG_HD uint32_t x_tile_off(int stage, int term) {
  return static_cast<uint32_t>(stage) * kXStageBytes + static_cast<uint32_t>(term) * kXTermBytes;
}
template <GgmlType T>
WG_HD uint32_t a_tile_off(int buf, int row) {
  return static_cast<uint32_t>(Smem<T>::off_a) + static_cast<uint32_t>(buf) * kATileBytes +
         static_cast<uint32_t>(row) * kRowBytes;
}
static_assert(kXTermBytes % kAlign == 0 && kATileBytes % kAlign == 0 && (kHalfRows * kRowBytes) % kAlign == 0,
              "every operand starts an atom");

// The descriptor of a 64-byte-row operand tile at shared byte address `tile` (rows from its first), k16
// step s of the k-tile: 32 bytes further along the rows.
WG_HD uint64_t desc_tile(uint32_t tile, int s) {
  return wgmma::desc(tile + 32u * static_cast<uint32_t>(s), kSbo, wgmma::kSwizzle64B);
}

// Resident blocks an SM (the kernel's __launch_bounds__): IQ2_XXS fits three (73 KB of shared memory each,
// 162 registers a thread under the cap of 170), Q2_K two (77 KB; 199 registers).
constexpr int blocks_per_sm(GgmlType t) { return t == GgmlType::IQ2_XXS ? 3 : 2; }

// The items a tile's wgmma span: 64, or 32 when the tile holds 32 or fewer.
WG_HD int n_of(int count) { return count > 32 ? 64 : 32; }

// Accumulator element i of lane `lane` in warp w (0..3) for half h: block row and item.
WG_HD int acc_row(int h, int w, int lane, int i) { return kHalfRows * h + wgmma::d_row(w, lane, i); }
WG_HD int acc_item(int lane, int i) { return wgmma::d_col(lane, i); }

// The pipeline is v2's (gemm_v2: kStages activation stages, k-tile t + 3 issued in iteration t, decode of
// t + 1 beside the products of t, two decoded tiles), with every wgmma of iteration t waited for inside
// iteration t (wgmma.wait_group 0 before the promotion): so each buffer is read by the tensor core in the
// barrier phase where v2's ldmatrix read it, and v2's buffer schedule holds unchanged.

// ---- Variant 1, the paired kernel (gemm_group_wgmma_pair.cu). Why: the kernel above is bound by its
// warps' instructions, not the tensor core (SASS per warp and k-tile, IQ2_XXS: ~195 decode, ~130 copies
// and barrier, ~60 wgmma issue, ~70 promotion; about 68% of the issue slots at the measured 3.22 ms,
// the tensor core ~36% busy). Decode and raw copies are per weight, so they amortise over the items a
// block multiplies: an expert holds ~96 items at 4096 tokens, two plan tiles of 64, which v0 decodes
// twice. The paired block takes plan tiles 2i and 2i + 1 of one expert together (up to 128 items;
// blocks of odd tiles exit at once), 128 rows, two warpgroups (warpgroup w: rows 64 w .. + 63, all
// items, wgmma m64nNk16 with N = 32, 64, 96 or 128 by the count), and decodes each k-tile once with two
// threads a row (16 columns each). Every output element is still one thread's sequence of the same
// 4 wgmma k16 halves (lo, hi per k16 step) and promote(), so v2's bits.
namespace wgmma_pair {
constexpr int kBM = 128, kThreads = 256, kBN = 2 * gemm_v2::kBN, kBK = gemm_v2::kBK;
constexpr uint32_t kXTermBytes = kBN * kBK * 2, kXStageBytes = 2 * kXTermBytes, kATileBytes = kBM * kBK * 2;
static_assert(kXTermBytes % kAlign == 0 && kATileBytes % kAlign == 0, "every operand starts an atom");
// Shared memory: X [kStages][term][kBN x kBK], A [2][kBM x kBK] (both swizzled as v2's), raw [2][kRawBuf],
// rows [2][kBM] float4, sums [2][half][kBN], selector table [256].
template <GgmlType T>
struct Smem {
  using F = gemm_v2::FmtOf<T, G>;
  static constexpr int kX = gemm_v2::kStages * static_cast<int>(kXStageBytes);
  static constexpr int kA = 2 * static_cast<int>(kATileBytes);
  static constexpr int kRawBuf = kBM * F::kStride + 4;  // words
  static constexpr int off_a = kX, off_raw = off_a + kA, off_rows = off_raw + 2 * kRawBuf * 4,
                       off_sums = off_rows + 2 * kBM * 16, off_tab = off_sums + 2 * 2 * kBN * 4, bytes = off_tab + 1024;
  static_assert(off_raw % 512 == 0 && off_rows % 16 == 0, "aligned");
};
// The activation copy: 2 terms x 128 items x 4 chunks = 1024 16-byte copies, 4 a thread.
constexpr int kXCopies = 2 * kBN * (kBK / 8) / kThreads;
WG_HD void x_task(int tid, int v, int& term, int& tok, int& chunk) {
  const int q = tid + kThreads * v;
  chunk = q & 3, tok = (q >> 2) & (kBN - 1), term = q >> 9;
}
// Decoding thread tid: row tid % 128, columns 16 c .. + 15 of the k-tile with c = tid / 128 (a warp: 32
// consecutive rows at one c, so v2's conflict-free bank pattern). Token sums (formats with minima): item
// tid / 2, 16-column half tid % 2.
WG_HD int dec_row(int tid) { return tid & (kBM - 1); }
WG_HD int dec_half(int tid) { return tid >> 7; }

// Columns 16 c .. 16 c + 15 of gemm_v2::Decode<T>::run's Tile32 (h[0..7] = its h[8 c .. 8 c + 7]) and the
// same scale and minima: the same expressions restricted to that half (the CPU test compares them).
template <GgmlType T>
struct Decode16;
template <>
struct Decode16<GgmlType::IQ2_XXS> {
  static WG_HD void run(const uint32_t* rw, int a2, int j, int c, const uint32_t* sel, uint32_t (&h)[8],
                        float& scale, float& min0, float& min1) {
    using namespace gemm_v2;
    uint32_t qs, sg;
    float d;
    iq2_sub(rw, a2, j, qs, sg, d);
    scale = d * (0.5f + static_cast<float>(sg >> 28)) * 0.25f;
    min0 = min1 = 0.0f;
    const uint32_t m2 = 0x3C003C00u, nb2 = hfma2_bits(m2, 0xE400E400u, 0u);
    GI_UNROLL
    for (int ee = 0; ee < 2; ++ee) iq2_entry(sel, qs, sg, 2 * c + ee, m2, nb2, h + 4 * ee);
  }
};
template <>
struct Decode16<GgmlType::Q2_K> {
  static WG_HD void run(const uint32_t* rw, int, int j, int c, const uint32_t*, uint32_t (&h)[8], float& scale,
                        float& min0, float& min1) {
    using namespace gemm_v2;
    const int hh = j >> 2, step = j & 3;
    const uint32_t scw = rw[2 * hh + (step >> 1)] >> (16 * (step & 1));
    const uint32_t sc0 = scw & 255u, sc1 = (scw >> 8) & 255u;
    const uint32_t dd = rw[20];
    const float dmin = half_f32(dd >> 16);
    scale = half_f32(dd & 0xffffu);
    min0 = dmin * static_cast<float>(sc0 >> 4), min1 = dmin * static_cast<float>(sc1 >> 4);
    const uint32_t scc = (c ? sc1 : sc0) & 15u;
    GI_UNROLL
    for (int ii = 0; ii < 4; ++ii) {
      const uint32_t q = (rw[4 + 8 * hh + 4 * c + ii] >> (2 * step)) & 0x03030303u;
      gemm_int::bytes_u(q * scc, h[2 * ii], h[2 * ii + 1]);
    }
  }
};
}  // namespace wgmma_pair

#if FS_WGMMA
// One m64nN accumulator's k-tile partials into its running sums (both kernels' promotion, v2's
// arithmetic): element i is row row0 + d_row(w, lane, i), item d_col(lane, i); rows[row] holds (scale,
// -min0, -min1), sums[half * kSumStride + item] the token sums of the 16-column halves (formats with
// minima).
template <int N, int kMins, int kSumStride, int M>
__device__ __forceinline__ void promote_rows(float (&acc)[M], const float (&part)[M], const float4* rows,
                                             const float* sums, int row0, int w, int lane) {
  float sc[2], n0[2] = {0.f, 0.f}, n1[2] = {0.f, 0.f};
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const float4 f = rows[row0 + wgmma::d_row(w, lane, 2 * rr)];
    sc[rr] = f.x;
    if constexpr (kMins > 0) n0[rr] = f.y, n1[rr] = f.z;
  }
#pragma unroll
  for (int g = 0; g < N / 8; ++g) {
    float2 s0 = make_float2(0.f, 0.f), s1 = s0;
    if constexpr (kMins > 0) {
      const int j = wgmma::d_col(lane, 4 * g);
      s0 = *reinterpret_cast<const float2*>(sums + j);
      s1 = *reinterpret_cast<const float2*>(sums + kSumStride + j);
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int i = 4 * g + c;
      acc[i] = gemm_int::promote<kMins>(acc[i], part[i], sc[c >> 1], n0[c >> 1], n1[c >> 1], c & 1 ? s0.y : s0.x,
                                        c & 1 ? s1.y : s1.x);
    }
  }
}
#endif  // FS_WGMMA

// Run-time variants (FLASHSTAR_GEMM_GROUP_WGMMA_VARIANT, gemm_set_group_wgmma_variant): 0 the kernel
// above; 1 the paired kernel; 2 the register-decoded kernel (gemm_group_wgmma_reg.h: the dense kernel's
// structure, each thread decoding its A fragments from the raw bytes, promotion under the next k-tile's
// wgmma). (Tried and dropped: v0 with each row half's wgmma its own commit group, half 0 promoted under
// half 1's wgmma: ptxas serialised the wgmma, C7511, with the n64 / n32 branches.)
constexpr int kVariants = 3;

}  // namespace flashstar::cuda::wgmma_group
