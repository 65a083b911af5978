// Variant 2 of the grouped expert products on warpgroup MMA (gemm_group_wgmma_reg.cu): the dense Q8_0
// kernel's structure (gemm_dense_wgmma.h) for the routed experts' IQ2_XXS and Q2_K weights. Its geometry,
// shared-memory layout and the per-thread fragment decoders, host-compilable so that CPU tests
// (tests/test_gemm_group_wgmma_reg.cpp, in flashstar_tests) replay every mapping and decode against the
// PTX ISA's fragment layout and v2's decoded tile (gemm_v2::Decode), without a GPU.
//
// Why: variants 0 and 1 decode each k-tile into an FP16 tile in shared memory (copies, a barrier a
// k-tile, the tensor core idle while the warps promote). Here the weights never pass through a decoded
// tile: each thread decodes just the 16 weights of its m64k16 A fragments (two rows, 8 columns each a
// k-tile) straight from the raw bytes into registers, the activations arrive in the dense kernel's
// 128-byte-swizzled 4-stage ring (one barrier per 4 k-tiles), and two partial accumulators alternate so
// that the promotion of k-tile t runs under the wgmma of t + 1.
//
// Numerics are v2's bit for bit: the same FP16 integers (the fragment decoders give exactly the values
// of gemm_v2::Decode's Tile32 at the fragment's positions, CPU-checked), per k-tile a partial started from
// zero in the tensor core, per 16-column step W x_lo then W x_hi, promoted by gemm_int::promote with v2's
// scale, negated minima and token sums (gemm_int::sum8 twice, added).
#pragma once
#include <cstdint>

#include "cuda/gemm_dense_wgmma.h"
#include "cuda/gemm_group_v2.h"

namespace flashstar::cuda::wgmma_reg {

namespace dq = wgmma_q8;  // the dense kernel's tiles: b_off, desc_b, x_task, a_row / a_col
using G = gemm_v2::GroupGeo;  // v2's raw-unit geometry (256-column units, 8 k-tiles, 4-byte words)

// Block: 128 weight rows (two consumer warpgroups of 64 rows, as the dense kernel) x an expert's plan
// tiles 2i and 2i + 1 (up to 128 items; blocks of odd tiles exit), 256 threads, one block an SM. The
// wgmma N is the item count rounded up to 32 (32, 64, 96, 128; ~96 items an expert at 4096 tokens).
constexpr int kBM = dq::kBM, kBN = dq::kBN, kThreads = dq::kThreads, kPlanTile = gemm_v2::kBN;
constexpr int kChunkCols = dq::kChunkCols, kStages = dq::kStages, kChunksPerIter = dq::kChunksPerIter;
constexpr int kTilesPerIter = 2 * kChunksPerIter, kChunksPerUnit = G::kUnitCols / kChunkCols;
constexpr uint32_t kTermBytes = dq::kTermBytes, kStageBytes = dq::kStageBytes;
static_assert(kBN == 2 * kPlanTile, "two plan tiles a block");
static_assert(kChunksPerUnit % kChunksPerIter == 0, "a raw unit starts an iteration");

// Shared memory (from a 1024-byte aligned base): the activation ring [stage][hi, lo][128 items x 64
// columns] (the dense kernel's), raw units [2][128 rows x kStride + 4 words] (v2's layout: rows at the odd
// word stride, so the 8 rows of a warp's fragment reads hit 8 different banks), the token sums
// [4 k-tiles][2 halves][128 items] (formats with minima). The IQ2_XXS pair table (kTabBytes, below) is
// static shared memory: its address is then an instruction immediate.
template <GgmlType T>
struct Smem {
  using F = gemm_v2::FmtOf<T, G>;
  static constexpr int kRawBuf = kBM * F::kStride + 4;  // words; 4 spare: iq2_sub reads a word past the row
  static constexpr int kRawBytes = (kRawBuf * 4 + 15) / 16 * 16;
  static constexpr int kSums = F::kMins > 0 ? kTilesPerIter * 2 * kBN * 4 : 0;
  static constexpr int off_raw = kStages * static_cast<int>(kStageBytes), off_sums = off_raw + 2 * kRawBytes,
                       bytes = off_sums + kSums;
  static_assert(F::kStride == F::kWords, "raw copy slot = task index");
};

// Activation copies address a thread's item rows by 32-bit byte offsets from Xb (the lo term lo_off
// further): the kernel takes calls whose 2 x_rows k8 FP16 values span less than 4 GiB.
constexpr int64_t kMaxXElems = int64_t{1} << 30;

// The raw copy of unit u: task q (0 .. 128 kWords - 1) = word q % kWords of row q / kWords, at word slot q.
template <GgmlType T>
constexpr int kRawCopies = (kBM * gemm_v2::FmtOf<T, G>::kWords + kThreads - 1) / kThreads;

// The pipeline (the dense kernel's, per iteration of 2 chunks = k-tiles 2c .. 2c + 3): chunk c's
// activations go to stage c % 4, and chunk 4u also brings raw unit u into buffer u % 2, one commit group
// issued an iteration ahead. Q2_K adds a second barrier a k-tile iteration: after the token sums of its
// 4 k-tiles (written to the one sums buffer, read by this iteration's promotions).
WG_HD int stage_of(int chunk) { return chunk % kStages; }
WG_HD int raw_buf_of(int chunk) { return (chunk / kChunksPerUnit) & 1; }

// ---- Fragments. Thread (warp w of the warpgroup, lane l) holds rows R = 16 w + l / 4 and R + 8 of the
// warpgroup's 64 (dq::a_row), columns 2 q + 8 m + {0, 1} (q = l % 4, m = 0..3) of each 32-column k-tile:
// A register r of k16 step s is row R + 8 (r % 2), m = 2 s + r / 2 (dq::a_col). frag_reg names that.
WG_HD void frag_reg(int m, int rr, int& s, int& r) { s = m >> 1, r = rr + 2 * (m & 1); }

// The same thread's accumulator element i (wgmma::d_row / d_col) is row R + 8 ((i / 2) % 2): the promotion
// uses the scale and minima that the thread decoded for that row.
WG_HD int acc_rr(int i) { return (i >> 1) & 1; }

// PRMT in its default mode, including bit 3 of a selector nibble (replicate the selected byte's sign
// bit into all 8 bits), which gemm_int::prmt's host replay leaves out.
GI_HD uint32_t prmt_sx(uint32_t a, uint32_t b, uint32_t s) {
#ifdef __CUDA_ARCH__
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(s));
  return r;
#else
  const uint64_t v = (static_cast<uint64_t>(b) << 32) | a;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t n = (s >> (4 * i)) & 15;
    uint32_t byte = static_cast<uint32_t>(v >> (8 * (n & 7))) & 255;
    if (n & 8) byte = byte & 0x80 ? 255u : 0u;
    r |= byte << (8 * i);
  }
  return r;
#endif
}

// ---- IQ2_XXS. A weight is +-8, +-25 or +-43: FP16 0x4800, 0x4E40, 0x5160 (sign at bit 15). Their high
// bytes 0x48, 0x4E, 0x51 and negated 0xC8, 0xCE, 0xD1, and low bytes 0x40, 0x60 (25, 43) are 8 source
// bytes of one PRMT; the low byte 0x00 (8) is a sign-replicate of the positive 0x48. So a fragment
// register (two weights) is one PRMT whose selector is 16 bits: nibbles (lo0, hi0, lo1, hi1), with the
// sign of each weight as bit 2 of its hi nibble (bits 6 and 14). The pair table holds, per grid entry and
// pair q (its elements 2q, 2q + 1), the unsigned selector; the thread ORs in its two sign bits.
constexpr uint32_t kIq2Src0 = 0x40514E48u;  // bytes 0..3: hi(8), hi(25), hi(43), lo(25)
constexpr uint32_t kIq2Src1 = 0x60D1CEC8u;  // bytes 4..7: -hi(8), -hi(25), -hi(43), lo(43)
constexpr uint32_t kIq2LoNib[3] = {0x8u, 0x3u, 0x7u}, kIq2HiNib[3] = {0x0u, 0x1u, 0x2u};

// The table in shared memory: entry idx's 4 selectors (8 bytes, pair q at 2 q) at byte 256 idx + 8 g, one
// copy for each row group g = lane / 4 of a warp, so that the 8 rows of a warp's lookup (random entries)
// read 8 different bank pairs (256 idx is a multiple of the 128-byte bank row). The entry stride of 256
// makes a lookup's offset one PRMT: byte m of the grid indices qs into byte 1, the lane's 8 g + 2 q in
// byte 0 (iq2_tab_off). 64 bytes of each 256 are used.
constexpr int kTabEntryBytes = 256, kTabBytes = 256 * kTabEntryBytes, kTabGroups = 8;
GI_HD uint32_t iq2_lane_off(int lane) { return static_cast<uint32_t>(8 * (lane >> 2) + 2 * (lane & 3)); }
GI_HD uint32_t iq2_tab_off(uint32_t qs, int m, uint32_t lane_off) {
  return gemm_int::prmt(qs, lane_off, 0x7604u | (static_cast<uint32_t>(m) << 4));
}

// The kernel's fill of that table from the global copy (iq2_pair_table): task i (0 .. 1023) stores 16
// bytes at iq2_fill_off(i), entry i / 4's 8 bytes twice (the copies of groups 2 (i % 4) and + 1).
constexpr int kTabFillTasks = 256 * kTabGroups / 2;
GI_HD uint32_t iq2_fill_off(int i) { return static_cast<uint32_t>(kTabEntryBytes * (i >> 2) + 16 * (i & 3)); }

// out[4 idx + q]: the selector of grid entry idx, pair q (the global copy; the kernel replicates it).
inline bool iq2_pair_table(uint16_t (&out)[1024]) {
  for (int e = 0; e < 256; ++e) {
    int code[8];
    for (int j = 0; j < 8; ++j) {
      const uint32_t b = static_cast<uint32_t>(quant::kIq2xxsGrid[e] >> (8 * j)) & 255;
      code[j] = b == 8 ? 0 : b == 25 ? 1 : b == 43 ? 2 : -1;
      if (code[j] < 0) return false;
    }
    for (int q = 0; q < 4; ++q) {
      const int c0 = code[2 * q], c1 = code[2 * q + 1];
      out[4 * e + q] = static_cast<uint16_t>(kIq2LoNib[c0] | (kIq2HiNib[c0] << 4) | (kIq2LoNib[c1] << 8) |
                                             (kIq2HiNib[c1] << 12));
    }
  }
  return true;
}

// The thread's sign bits of a sub-block (sg: 4 x 7 sign bits, the 4-bit scale above), pair q: z[0] holds
// entry 0's signs at selector bits 6, 14 and entry 1's at 22, 30; z[1] entries 2, 3. Bit 2q of entry e's
// 8 signs is stored bit 7 e + 2 q; bit 2q + 1 too for q < 3, while for q = 3 it is the 8th sign, the
// parity of the 7 stored bits (the format's even-parity masks, gemm_v2::iq2_signs). One multiply moves
// the four bits at 0, 7, 14, 21 of a masked word to 6, 14, 22, 30 (shifts 6..9: the 16 partial products
// fall on distinct bits, so no carries), then PRMT interleaves the elements' bytes.
GI_HD void iq2_sign_words(uint32_t sg, int q, uint32_t (&z)[2]) {
  const uint32_t sgq = sg >> (2 * q);
  // Parity of each 7-bit field at its lowest bit (7 e): xor windows of 2, 4, then 4 + 2 + 1 bits.
  const uint32_t y1 = sg ^ (sg >> 1), y2 = y1 ^ (y1 >> 2), par = y2 ^ (y1 >> 4) ^ (sg >> 6);
  const uint32_t odd = q == 3 ? par : sgq >> 1;
  const uint32_t a = ((sgq & 0x00204081u) * 0x3C0u) & 0x40404040u;  // s(e, 2q) at byte e, bit 6
  const uint32_t b = ((odd & 0x00204081u) * 0x3C0u) & 0x40404040u;  // s(e, 2q + 1) likewise
  z[0] = gemm_int::prmt(a, b, 0x5140u), z[1] = gemm_int::prmt(a, b, 0x7362u);
}

// ---- Per-row fragment decoders: row words rw (v2's raw layout: the row's words of the unit, a2 the
// unit's first byte in rw[0]), k-tile j of the unit, pair q: h[m] = columns 8 m + 2 q, + 1 as FP16
// integers (gemm_v2::Decode's Tile32::h[4 m + q]), and the row's scale and negated minima (v2's Rows).
template <GgmlType T>
struct FragDecode;

// tab: IQ2_XXS's replicated pair table (kTabBytes; ignored by Q2_K); lane: the thread's lane (pair q =
// lane % 4, table copy lane / 4).
template <>
struct FragDecode<GgmlType::IQ2_XXS> {
  static GI_HD void run(const uint32_t* rw, int a2, int j, int lane, const unsigned char* tab, uint32_t (&h)[4],
                        float& scale, float& n0, float& n1) {
    const int q = lane & 3;
    const uint32_t lane_off = iq2_lane_off(lane);
    uint32_t qs, sg;
    float d;
    gemm_v2::iq2_sub(rw, a2, j, qs, sg, d);
    scale = d * (0.5f + static_cast<float>(sg >> 28)) * 0.25f;  // v2's expression, v2's bits
    n0 = n1 = 0.0f;
    uint32_t z[2];
    iq2_sign_words(sg, q, z);
    GI_UNROLL
    for (int m = 0; m < 4; ++m) {
      const uint32_t t = *reinterpret_cast<const uint16_t*>(tab + iq2_tab_off(qs, m, lane_off));
      // Only the selector's low 16 bits count: entry 2k + 1's signs are z[k]'s high half.
      h[m] = prmt_sx(kIq2Src0, kIq2Src1, t | (m & 1 ? z[m >> 1] >> 16 : z[m >> 1]));
    }
  }
};

template <>
struct FragDecode<GgmlType::Q2_K> {
  // Block: scales [16] at 0, qs [64] at 16, d at 80, dmin at 82 (gemm_v2::Decode<Q2_K>). Columns 128 hh +
  // 32 step + l take bits 2 step of qs[32 hh + l]; here l = 8 m + 2 q + {0, 1}: word 4 + 8 hh + 2 m + q / 2,
  // bytes 2 (q % 2) + {0, 1}; times the 4-bit scale of 16-column half m / 2 (no carry: <= 45).
  static GI_HD void run(const uint32_t* rw, int, int j, int lane, const unsigned char*, uint32_t (&h)[4],
                        float& scale, float& n0, float& n1) {
    const int q = lane & 3, hh = j >> 2, step = j & 3;
    const uint32_t scw = rw[2 * hh + (step >> 1)] >> (16 * (step & 1));
    const uint32_t sc0 = scw & 255u, sc1 = (scw >> 8) & 255u;
    const uint32_t dd = rw[20];
    const float dmin = gemm_v2::half_f32(dd >> 16);
    scale = gemm_v2::half_f32(dd & 0xffffu);
    n0 = -(dmin * static_cast<float>(sc0 >> 4)), n1 = -(dmin * static_cast<float>(sc1 >> 4));
    const int sh = 16 * (q & 1) + 2 * step;
    GI_UNROLL
    for (int m = 0; m < 4; ++m) {
      const uint32_t w = rw[4 + 8 * hh + 2 * m + (q >> 1)];
      const uint32_t v = ((w >> sh) & 0x0303u) * (m < 2 ? sc0 & 15u : sc1 & 15u);
      h[m] = gemm_int::hsub2_bits(gemm_int::prmt(v, 0x64646464u, 0x4140u), 0x64006400u);
    }
  }
};

// ---- Token sums (formats with minima), one task a thread per k-tile of the iteration: item tid / 2,
// 16-column half tid % 2, v2's arithmetic (gemm_int::sum8 over 8 columns twice, added). The k-tile's
// columns are 32 (t % 2) .. + 31 of its chunk's 64: its 16-byte chunks 4 (t % 2) + 2 half + {0, 1}.
WG_HD int sum_item(int tid) { return tid >> 1; }
WG_HD int sum_half(int tid) { return tid & 1; }
WG_HD int sum_chunk(int t, int half, int k) { return 4 * (t & 1) + 2 * half + k; }
// Where they go: sums [k-tile of the iteration][item pair][half][item % 2], so that the promotion's two
// items (an even one and the next, wgmma::d_col) take their 4 sums in one 16-byte load at sum_pair(i, j).
WG_HD int sum_index(int i, int half, int item) { return (i * (kBN / 2) + (item >> 1)) * 4 + 2 * half + (item & 1); }
WG_HD int sum_pair(int i, int even_item) { return sum_index(i, 0, even_item); }

}  // namespace flashstar::cuda::wgmma_reg
