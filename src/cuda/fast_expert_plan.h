// Work split and weight staging of the routed-expert kernel (fast_expert_mma.cu). Host-compilable, so that
// CPU tests (ExpertPlan.*) check the copy groups and the split without a device.
//
// Occupancy: a block shares one copy of the IQ2_XXS tables (48 KB) and of the activation digits among its
// warps, so one large block an SM (up to 24 warps of 80 registers) holds twice the warps that two blocks
// with their own tables could. For IQ2_XXS gate / up (6 items, 4096 columns) that is 6 items x 4 column
// parts of 4 blocks: each warp's chain is 32 k32 steps, not 64 (12 warps of 2 parts before).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "quant/types.h"

#if defined(__CUDACC__)
#define EPLAN_HD __host__ __device__ __forceinline__
#define EPLAN_CHD __host__ __device__ constexpr
#else
#define EPLAN_HD inline
#define EPLAN_CHD constexpr
#endif

namespace flashstar::cuda::fast::eplan {

constexpr int kRows = 16, kMaxItems = 8;
// Warps a block may have (the kernel's launch bounds): IQ2_XXS 24 (80 registers, one block an SM shares the
// tables), Q2_K 16 (several blocks an SM).
template <GgmlType T>
constexpr int kMaxWarps = T == GgmlType::IQ2_XXS ? 24 : 16;
// The launch bounds' warps, for both types: 24 x 32 threads cap a thread at 80 registers, which keeps three
// 8-warp Q2_K blocks an SM (down at decode) whatever the compiler would otherwise take (up to 128).
constexpr int kRegWarps = 24;

// Bytes per 256-column block and blocks per staged chunk. An IQ2_XXS chunk (4 x 66 = 264 bytes) starts 8
// bytes past a 16-byte boundary in every other chunk: its copy starts at the boundary below (delta bytes
// early), so every copy stays 16 bytes wide, and a row's buffer has kSlack bytes more.
template <GgmlType T>
struct Fmt {
  static constexpr int kBytes = T == GgmlType::IQ2_XXS ? 66 : 84, kChunk = 4;
  static constexpr int kSlack = kBytes * kChunk % 16;
  static constexpr int kPieces = (kBytes * kChunk + kSlack + 15) / 16;  // 16-byte copies per row and chunk
  // Copy group i (< kChunk) is pieces [first(i), first(i + 1)): what block i needs beyond the earlier groups.
  static EPLAN_CHD int first(int i) { return i == 0 ? 0 : i >= kChunk ? kPieces : (kBytes * i + 15) / 16; }
  // Offset of chunk c's first byte in its buffer when whole rows are 16-byte aligned (0 or kSlack).
  static EPLAN_HD int delta(int c) { return kSlack == 0 ? 0 : c * kBytes * kChunk % 16; }
  // Groups that hold, for either delta, every byte of blocks 0..i once group i has landed, and no piece
  // beyond the buffer's row.
  static constexpr bool groups_cover() {
    for (int d = 0; d <= kSlack; d += kSlack > 0 ? kSlack : 1) {
      for (int i = 0; i < kChunk; ++i)
        if ((d + kBytes * (i + 1) + 15) / 16 > first(i + 1)) return false;
      if (16 * kPieces < d + kBytes * kChunk) return false;
    }
    return true;
  }
};
static_assert(Fmt<GgmlType::IQ2_XXS>::groups_cover() && Fmt<GgmlType::Q2_K>::groups_cover());
static_assert(Fmt<GgmlType::IQ2_XXS>::kChunk % 2 == 0, "blocks are consumed in pairs (the sign words' parity)");

// Line staging (fast_expert_mma.cu, FLASHSTAR_EXPERT_V=1 / 2): the same pieces into the same buffer bytes
// as Fmt's copy groups, but a row's pieces go to kLpr consecutive lanes, aligned to kLpr-piece windows of
// global memory (V1: 8 lanes, 128-byte lines, 4 rows an instruction; V2: 4 lanes, 64 bytes, 8 rows). Why:
// Fmt's mapping gives each of an instruction's lanes a different row, so every 16-byte copy is half of a
// 32-byte sector that the next instruction fetches again (2x the L2 sectors) and its shared-memory write
// is a wavefront of its own (16 a warp instruction). A window's lanes cover whole sectors of one line.
// Lane l of instruction (row group q, window m) copies piece 8m + e (kLpr 8) of row row(q, l), e = l % kLpr
// less the row's phase (where its piece 0 lies in a window), when 0 <= piece < kPieces: the pieces Fmt
// copies, no byte outside them. Copy group m holds window m of every row; block b of a chunk has landed
// once groups 0..need(b) have (any phase).
template <GgmlType T, int kLpr>
struct Lines {
  using F = Fmt<T>;
  static_assert(kLpr == 4 || kLpr == 8);
  static constexpr int kRowsPer = 32 / kLpr, kGroups = 16 / kRowsPer;  // rows an instruction, row groups
  static constexpr int kWindows = (F::kPieces + 2 * kLpr - 2) / kLpr;  // windows a row's chunk can touch
  // Row of lane l in row group q. The rows of a quarter warp (8 lanes) are 0 or 4 apart: with buffer rows
  // CS bytes apart, CS / 16 odd, their 16-byte shared-memory writes fall in distinct banks (4 apart: 64 of
  // CS's 128-byte bank cycle).
  static EPLAN_HD int row(int q, int l) {
    if constexpr (kLpr == 8) return 4 * q + (l >> 3);
    const int j = l >> 2;
    return 8 * q + (j >> 1) + 4 * (j & 1);
  }
  // e of lane l for a row whose piece 0 (16-byte aligned) is at global address src.
  static EPLAN_HD int lane_piece(int l, uint64_t src) { return (l % kLpr) - static_cast<int>((src >> 4) % kLpr); }
  static EPLAN_HD bool copies(int m, int e) { return kLpr * m + e >= 0 && kLpr * m + e < F::kPieces; }
  // Last window block b of a chunk (first byte at delta in the buffer row) needs, for the worst phase.
  static EPLAN_HD int need(int b, int delta) {  // (unsigned: shifts, no sign fix-ups)
    const unsigned last = (static_cast<unsigned>(delta + (b + 1) * F::kBytes) - 1) / 16 + kLpr - 1;
    return last / kLpr < kWindows - 1u ? static_cast<int>(last / kLpr) : kWindows - 1;
  }
};

// Block shape and dynamic shared memory: [IQ2_XXS sign table 16 KB][grid table 32 KB][digits][sx: per-block
// scales][sum: Q2_K per-16-column sums of x][part: column-part results][res: fused mode 1's row sums of both
// matrices][ring: the warps' weight buffers].
struct Split {
  int G = 0, T = 0, KS = 0;  // items, 16-row tiles per item, column parts: warp = (matrix, item, tile, part)
  int cpg = 0;               // item chunks per group of src_div items
  int CB = 0, nchunk = 0, cpp = 0, NS = 0, CS = 0;  // blocks per chunk, chunks per row and per part, buffers per
                                                    // warp, chunk row bytes
  int off_grid = 0, off_terms = 0, off_sx = 0, off_sum = 0, off_part = 0, off_ring = 0;  // sign table at 0
  size_t smem = 0;
  int M = 1;        // matrices a block computes (2 in fused mode 1: gate and up)
  int pair = 0;     // fused gate + up mode (0: a plain product)
  int off_res = 0;  // fused mode 1: the row sums of both matrices
  EPLAN_HD int warps() const { return M * G * T * KS; }
};

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline size_t layout(Split& s, bool iq2, int nb) {
  s.cpp = static_cast<int>(cdiv(s.nchunk, s.KS));
  s.NS = std::min(s.NS, s.cpp);
  s.off_grid = iq2 ? 16384 : 0;
  s.off_terms = iq2 ? 16384 + 32768 : 0;
  s.off_sx = s.off_terms + nb * 1024;
  s.off_sum = (s.off_sx + 4 * nb + 15) / 16 * 16;
  s.off_part = s.off_sum + (iq2 ? 0 : 64 * nb);
  s.off_res = s.off_part + s.warps() * kRows * 4;
  s.off_ring = s.off_res + (s.pair == 1 ? s.M * s.G * s.T * kRows * 4 : 0);
  s.smem = static_cast<size_t>(s.off_ring) + static_cast<size_t>(s.warps()) * s.NS * kRows * s.CS;
  return s.smem;
}

// The split for n_items items of rows_per_mat rows and nb 256-column blocks (n_groups activation rows of
// src_div items) on sms multiprocessors with smem bytes a block; false when nothing fits.
template <GgmlType T>
bool plan(int64_t rpm, int64_t n_items, int64_t src_div, int nb, int64_t n_groups, int sms, size_t smem, Split& s) {
  using F = Fmt<T>;
  constexpr bool kIq2 = T == GgmlType::IQ2_XXS;
  s.M = 1, s.pair = 0;
  s.CB = F::kChunk;
  s.nchunk = static_cast<int>(cdiv(nb, s.CB));
  s.CS = (std::min(s.CB, nb) * F::kBytes + F::kSlack + 15) / 16 * 16;
  // Enough rows per block that converting the activation row (~14 instructions per column) stays small
  // beside the weights (~2 per weight); fewer row tiles when the card would not be filled. Warps: IQ2_XXS
  // up to 24 (one block an SM shares the tables), Q2_K about 12 (several blocks an SM). Then shrink until
  // the buffers fit in shared memory.
  const int target = kIq2 ? 24 : 12;
  s.G = static_cast<int>(std::min<int64_t>({src_div, n_items, kMaxItems}));
  const int64_t tiles = cdiv(rpm, kRows);
  s.T = static_cast<int>(std::min<int64_t>(cdiv(4, s.G), tiles));
  s.cpg = static_cast<int>(cdiv(std::min<int64_t>(src_div, n_items), s.G));
  while (s.T > 1 && cdiv(tiles, s.T) * n_groups * s.cpg < sms) s.T /= 2;
  s.KS = std::max(1, std::min({s.nchunk, static_cast<int>(cdiv(target, s.G * s.T)), kMaxWarps<T> / (s.G * s.T), 4}));
  s.NS = 2;
  while (layout(s, kIq2, nb) > smem) {
    if (s.NS > 1) --s.NS;
    else if (s.KS > 1) --s.KS;
    else if (s.T > 1) --s.T;
    else if (s.G > 1) s.G = (s.G + 1) / 2, s.cpg = static_cast<int>(cdiv(std::min<int64_t>(src_div, n_items), s.G));
    else return false;
  }
  return true;
}

// Fused gate + up (fast_expert_mma.cu: expert_gate_up_fused). A row's sum depends on the column parts alone
// (parts added in part order), so the fused split keeps the KS of the plain product's plan (same arguments,
// smem_plain its budget) and the results are bitwise those of two plain launches; only the block shape
// changes. Mode 1: a block holds both matrices' warps for G items, so T, then G, shrink until 2 G T KS fits the
// launch bounds (decode: 3 items x 2 matrices x 4 parts = 24 warps, 256 blocks). Mode 2: a block per matrix
// of at most kPairWarps warps, several blocks an SM (decode: 2 items x 4 parts, 2 x 128 x 3 blocks). Then
// buffers, tiles and items shrink until smem (the fused kernel's own budget) holds the block.
constexpr int kPairWarps = 8;
template <GgmlType T>
bool plan_pair(int pair, int64_t rpm, int64_t n_items, int64_t src_div, int nb, int64_t n_groups, int sms,
               size_t smem_plain, size_t smem, Split& s) {
  if ((pair != 1 && pair != 2) || !plan<T>(rpm, n_items, src_div, nb, n_groups, sms, smem_plain, s)) return false;
  const int64_t per_group = std::min<int64_t>(src_div, n_items);
  s.pair = pair, s.M = pair == 1 ? 2 : 1;
  const int cap = pair == 1 ? kMaxWarps<T> : std::min(kPairWarps, kMaxWarps<T>);
  auto shrink_rows = [&] {  // false when a block is down to one tile of one item
    if (s.T > 1) --s.T;
    else if (s.G > 1) s.G = (s.G + 1) / 2, s.cpg = static_cast<int>(cdiv(per_group, s.G));
    else return false;
    return true;
  };
  while (s.warps() > cap)
    if (!shrink_rows()) return false;
  s.NS = 2;
  while (layout(s, T == GgmlType::IQ2_XXS, nb) > smem) {
    if (s.NS > 1) --s.NS;
    else if (!shrink_rows()) return false;
  }
  return true;
}

// A warp's job in its block (warp = (matrix, item, tile, part), part fastest; mode 2's matrix is the
// block's), packed by the host so that the kernel (V >= 1) reads one word instead of dividing.
struct WarpJob {
  int kp, qm, m, qi, qt;  // column part, slot (warp / KS), matrix, item and tile in the block
};
inline uint32_t warp_word(const Split& s, int pair, int w) {
  const int kp = w % s.KS, qm = w / s.KS, gt = s.G * s.T;
  const int m = pair == 1 ? qm / gt : 0, q = pair == 1 ? qm % gt : qm;
  return static_cast<uint32_t>(kp | qm << 5 | m << 10 | (q / s.T) << 11 | (q % s.T) << 15);
}
EPLAN_HD WarpJob warp_job(uint32_t v) {
  return {static_cast<int>(v & 31), static_cast<int>(v >> 5 & 31), static_cast<int>(v >> 10 & 1),
          static_cast<int>(v >> 11 & 15), static_cast<int>(v >> 15)};
}
static_assert(kRegWarps <= 32 && kMaxItems <= 16, "warp_word's fields");

}  // namespace flashstar::cuda::fast::eplan
