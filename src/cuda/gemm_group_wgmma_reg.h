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
//
// SASS (sm_90a, CUDA 13, written without a GPU), the k-loop body of 4 k-tiles for N = 32 / 64 / 96 / 128:
// IQ2_XXS 744 / 808 / 872 / 988 instructions, Q2_K 1166 / 1370 / 1618 / 1893, each with its unit
// pre-pass (~190 and ~200, run every other iteration): on average ~163 / 180 / 195 / 223 (IQ2_XXS) and
// ~271 / 322 / 383 / 448 (Q2_K: 3 FMAs a promoted element, ~90 for its token sums) a k-tile and warp,
// against the 2 N issue slots a k-tile and warp that the tensor core takes at one block an SM (N = 128:
// 256). 255 registers (launch bounds 256 x 1), no spill stores in the loops (7-8 reloads an iteration at
// N = 128). Decode a k-tile and thread (16 weights): IQ2_XXS ~44 in the lanes (2.75 a weight: PRMT, LDS,
// LOP3 a register, a record read and 4 shifts a row) + ~24 of pre-pass; Q2_K ~33 (LDS, LOP3, PRMT, HFMA2
// a register, two record reads a row) + ~25.
// With the token sums precomputed (FLASHSTAR_GEMM_GROUP_Q2K_SUMS=1, tsum_group below; off by default):
// Q2_K 896 / 1106 / 1342 / 1616 (~199 / 252 / 311 / 379 a k-tile and warp), one barrier an iteration,
// 255 registers, no spill stores in the loops (9 reloads an iteration at N = 128). The rest is mostly
// the promotion's 3 FMAs an element, which v2's bits need as they are (three roundings a k-tile).
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
static_assert(kChunksPerUnit == 2 * kChunksPerIter, "a raw unit is two iterations (the kernel's frag indexes k-tiles so)");

// Shared memory (from a 1024-byte aligned base): the activation ring [stage][hi, lo][128 items x 64
// columns] (the dense kernel's), raw units [2][128 rows x kStride + 4 words] (v2's layout: rows at the odd
// word stride, so the 8 rows of a warp's fragment reads hit 8 different banks), the token sums
// [4 k-tiles][2 halves][128 items] (formats with minima). The IQ2_XXS pair table (kTabBytes, below) is
// static shared memory: its address is then an instruction immediate. kPre (token sums precomputed,
// copied in with the activations: tsum_group below): two sums buffers, by iteration parity, since an
// iteration's copies go out while the previous iteration's promotions may still read theirs.
template <GgmlType T, bool kPre = false>
struct Smem {
  using F = gemm_v2::FmtOf<T, G>;
  static constexpr int kRawBuf = kBM * F::kStride + 4;  // words; 4 spare: iq2_sub reads a word past the row
  static constexpr int kRawBytes = (kRawBuf * 4 + 15) / 16 * 16;
  static constexpr int kSumsBuf = F::kMins > 0 ? kTilesPerIter * 2 * kBN : 0;  // floats, one iteration's
  static constexpr int kSums = (kPre ? 2 : 1) * kSumsBuf * 4;
  static constexpr int kRec = T == GgmlType::Q2_K ? 2 * 2 * 8 * kBM * 16 : 0;  // kQ2kRecBytes (below)
  static constexpr int off_raw = kStages * static_cast<int>(kStageBytes), off_sums = off_raw + 2 * kRawBytes,
                       off_rec = off_sums + kSums, bytes = off_rec + kRec;
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

// ---- IQ2_XXS. A thread's 8 weights of a row in a k-tile are one pair (elements 2q, 2q + 1) of each of
// the sub-block's 4 grid entries. The row's own work (its 2-byte aligned indices and signs, the scale,
// the signs' parities) would be done by all 4 lanes of a quad for 2 weights an entry each, so a
// pre-pass does it once per row and unit: for each sub-block a 16-byte record (Iq2Rec) with the grid
// indices, the signs laid out so that a lane's two signs of an entry are one shift away from the FP16
// sign bits, and the scale. A lane then reads one record per row and per register looks up the unsigned
// FP16 pair (a table of grid entry x pair) and XORs in the two signs: a PRMT (the lookup's offset), an
// LDS and a LOP3 for two weights.
//
// The pair table in shared memory: entry idx's 4 pairs (16 bytes, pair q at 4 q: the FP16 values of
// elements 2q, 2q + 1, both positive) at byte 256 idx + 16 g, one copy for each row group g = lane / 4
// of a warp, so that the 8 rows of a warp's lookup (random entries) read 8 different bank groups (256 idx
// is a multiple of the 128-byte bank row). The entry stride of 256 makes a lookup's offset one PRMT: byte
// m of the grid indices qs into byte 1, the lane's 16 g + 4 q in byte 0 (iq2_tab_off). The copies use
// bytes 0..127 of each 256-byte slot; the records the other 128 (iq2_rec_off).
constexpr int kTabEntryBytes = 256, kTabBytes = 256 * kTabEntryBytes, kTabGroups = 8;
GI_HD uint32_t iq2_lane_off(int lane) { return static_cast<uint32_t>(16 * (lane >> 2) + 4 * (lane & 3)); }
GI_HD uint32_t iq2_tab_off(uint32_t qs, int m, uint32_t lane_off) {
  return gemm_int::prmt(qs, lane_off, 0x7604u | (static_cast<uint32_t>(m) << 4));
}

// The kernel's fill of the copies from the global table (iq2_pair_table): task i (0 .. 2047) stores entry
// i / 8's 16 bytes at iq2_fill_off(i) (copy i % 8).
constexpr int kTabFillTasks = 256 * kTabGroups;
GI_HD uint32_t iq2_fill_off(int i) { return static_cast<uint32_t>(kTabEntryBytes * (i >> 3) + 16 * (i & 7)); }

// out[4 idx + q]: grid entry idx's elements 2q, 2q + 1 as FP16 (8, 25, 43: 0x4800, 0x4E40, 0x5160).
inline bool iq2_pair_table(uint32_t (&out)[1024]) {
  for (int e = 0; e < 256; ++e) {
    uint32_t h[8];
    for (int j = 0; j < 8; ++j) {
      const uint32_t b = static_cast<uint32_t>(quant::kIq2xxsGrid[e] >> (8 * j)) & 255;
      if (b != 8 && b != 25 && b != 43) return false;
      h[j] = f32_to_f16(static_cast<float>(b));
    }
    for (int q = 0; q < 4; ++q) out[4 * e + q] = h[2 * q] | (h[2 * q + 1] << 16);
  }
  return true;
}

struct Iq2Rec {
  uint32_t qs;        // the 4 grid indices
  uint32_t w01, w23;  // the signs of entries 0, 1 (2, 3): iq2_sign_words
  float scale;        // v2's d (0.5 + s) / 4
};

// The 8 signs of each entry (7 stored, the 8th their parity: gemm_v2::iq2_signs) as the 4 bytes of a word:
// the 7-bit fields spread to bytes, then the parity of each byte by xor-folding.
GI_HD uint32_t iq2_s8x4(uint32_t sg) {
  const uint32_t s7 = (sg & 0x7Fu) | ((sg << 1) & 0x7F00u) | ((sg << 2) & 0x7F0000u) | ((sg << 3) & 0x7F000000u);
  uint32_t p = s7 ^ (s7 >> 4);
  p ^= p >> 2;
  p ^= p >> 1;  // bit 8 e: the parity of byte e
  return s7 | ((p & 0x01010101u) << 7);
}
// Signs of entries 0, 1 in w01 (2, 3 in w23): element k (0..7) of the first at k (even k) or k + 15 (odd),
// of the second at 8 + k or k + 23. Lane q then shifts w left by 15 - 2q (first entry) or 7 - 2q
// (second): its elements 2q, 2q + 1 land on bits 15 and 31, the FP16 sign bits of its pair, and the
// other 14 signs elsewhere (iq2_rec_frag masks them off). From the sign bytes that is one mask and shift.
GI_HD void iq2_sign_words(uint32_t s8x4, uint32_t& w01, uint32_t& w23) {
  w01 = (s8x4 & 0x5555u) | ((s8x4 & 0xAAAAu) << 15);
  w23 = ((s8x4 >> 16) & 0x5555u) | (((s8x4 >> 16) & 0xAAAAu) << 15);
}

// Sub-block j of the row's raw words rw (v2's layout, a2 the unit's first byte in rw[0]): its record.
GI_HD void iq2_record(const uint32_t* rw, int a2, int j, Iq2Rec& r) {
  uint32_t sg;
  float d;
  gemm_v2::iq2_sub(rw, a2, j, r.qs, sg, d);
  r.scale = d * (0.5f + static_cast<float>(sg >> 28)) * 0.25f;  // v2's expression, v2's bits
  iq2_sign_words(iq2_s8x4(sg), r.w01, r.w23);
}

// Lane `lane` (pair q = lane % 4, table copy lane / 4): h[m] = entry m's pair q with its signs.
GI_HD void iq2_rec_frag(const Iq2Rec& r, int lane, const unsigned char* tab, uint32_t (&h)[4]) {
  const int q = lane & 3;
  const uint32_t lane_off = iq2_lane_off(lane);
  const uint32_t z[4] = {r.w01 << (15 - 2 * q), r.w01 << (7 - 2 * q), r.w23 << (15 - 2 * q), r.w23 << (7 - 2 * q)};
  GI_UNROLL
  for (int m = 0; m < 4; ++m) {
    const uint32_t t = *reinterpret_cast<const uint32_t*>(tab + iq2_tab_off(r.qs, m, lane_off));
    h[m] = t ^ (z[m] & 0x80008000u);
  }
}

// Where the records live: in the table's array (kTabBytes), bytes 128..255 of each 256-byte slot: row
// `row`'s records of buffer `buf` in slot 2 row + buf, sub-block j at 128 + 16 ((j + row) % 8), so that a
// warp's 8 rows (consecutive) read 8 different 16-byte bank groups.
GI_HD uint32_t iq2_rec_off(int row, int buf, int j) {
  return static_cast<uint32_t>(kTabEntryBytes * (2 * row + buf) + 128 + 16 * ((j + row) & 7));
}
// The pre-pass tasks: thread tid writes row tid % 128's sub-blocks j = tid / 128 + 2 k, k = 0..3.
constexpr int kRecPerThread = 4;
WG_HD int rec_row(int tid) { return tid & (kBM - 1); }
WG_HD int rec_j(int tid, int k) { return (tid >> 7) + 2 * k; }

// ---- Per-row fragment decoders: row words rw (v2's raw layout: the row's words of the unit, a2 the
// unit's first byte in rw[0]), k-tile j of the unit, lane (pair q = lane % 4): h[m] = columns 8 m + 2 q,
// + 1 as FP16 integers (gemm_v2::Decode's Tile32::h[4 m + q]), and the row's scale and negated minima
// (v2's Rows). tab: IQ2_XXS's replicated pair table (ignored by Q2_K).
template <GgmlType T>
struct FragDecode;

template <>
struct FragDecode<GgmlType::IQ2_XXS> {  // the record and the lane's decode in one step (the CPU tests)
  static GI_HD void run(const uint32_t* rw, int a2, int j, int lane, const unsigned char* tab, uint32_t (&h)[4],
                        float& scale, float& n0, float& n1) {
    Iq2Rec r;
    iq2_record(rw, a2, j, r);
    iq2_rec_frag(r, lane, tab, h);
    scale = r.scale, n0 = n1 = 0.0f;
  }
};

// ---- Q2_K. Block: scales [16] at 0, qs [64] at 16, d at 80, dmin at 82 (gemm_v2::Decode<Q2_K>). Columns
// 128 hh + 32 step + l take bits 2 step of qs[32 hh + l]; here l = 8 m + 2 q + {0, 1}: word 4 + 8 hh +
// 2 m + q / 2, bytes 2 (q % 2) + {0, 1}; times the 4-bit scale sc of 16-column half m / 2. As
// gemm_v2::DecodeFast: the bits masked in place (q 4^step), put under an FP16 0x64 byte by PRMT (1024 +
// q 4^step; the lane's selector picks its two bytes), then one HFMA2 with sc 4^-step and -1024 sc 4^-step
// gives q sc exactly (exact operands, an exact integer result <= 45; a zero as +0, v2's 1024 - 1024).
// The row's per-k-tile factors (the two multipliers, the negated minima, the scale) are the same for the
// 4 lanes of a quad: a pre-pass writes them once per row and k-tile as a record (two 16-byte halves),
// as for IQ2_XXS; the lanes read the record and their qs words.
struct Q2kRec {
  float n0, n1, scale, pad;            // -dmin (sc0 >> 4), -dmin (sc1 >> 4), d
  uint32_t mul0, add0, mul1, add1;     // sc 4^-step and -1024 sc 4^-step of each half, in both FP16 lanes
};
GI_HD void q2k_record(const uint32_t* rw, int j, Q2kRec& r) {
  const int hh = j >> 2, step = j & 3;
  const uint32_t scw = rw[2 * hh + (step >> 1)] >> (16 * (step & 1));
  const uint32_t sc0 = scw & 255u, sc1 = (scw >> 8) & 255u;
  const uint32_t dd = rw[20];
  const float dmin = gemm_v2::half_f32(dd >> 16);
  r.scale = gemm_v2::half_f32(dd & 0xffffu), r.pad = 0.0f;
  r.n0 = -(dmin * static_cast<float>(sc0 >> 4)), r.n1 = -(dmin * static_cast<float>(sc1 >> 4));
  // 4^-step and -1024 4^-step in both lanes (the FP16 exponent down 2 a step).
  const uint32_t st = static_cast<uint32_t>(step) * 0x08000800u;
  const uint32_t p4 = 0x3C003C00u - st, nb4 = 0xE400E400u - st;
  r.mul0 = gemm_v2::hfma2_bits(0x64006400u + (sc0 & 15u) * 0x00010001u, p4, nb4);
  r.mul1 = gemm_v2::hfma2_bits(0x64006400u + (sc1 & 15u) * 0x00010001u, p4, nb4);
  r.add0 = gemm_v2::hfma2_bits(r.mul0, 0xE400E400u, 0u), r.add1 = gemm_v2::hfma2_bits(r.mul1, 0xE400E400u, 0u);
}
// Lane `lane` (pair q = lane % 4) of k-tile j: h[m] from the row's qs words (rw) and the record.
GI_HD void q2k_rec_frag(const Q2kRec& r, const uint32_t* rw, int j, int lane, uint32_t (&h)[4]) {
  const int q = lane & 3, hh = j >> 2, step = j & 3;
  const uint32_t sel = 0x4140u + 0x0202u * static_cast<uint32_t>(q & 1), mask = 0x03030303u << (2 * step);
  GI_UNROLL
  for (int m = 0; m < 4; ++m) {
    const uint32_t w = rw[4 + 8 * hh + 2 * m + (q >> 1)] & mask;
    h[m] = gemm_v2::hfma2_bits(gemm_int::prmt(w, 0x64646464u, sel), m < 2 ? r.mul0 : r.mul1, m < 2 ? r.add0 : r.add1);
  }
}

template <>
struct FragDecode<GgmlType::Q2_K> {  // the record and the lane's decode in one step (the CPU tests)
  static GI_HD void run(const uint32_t* rw, int, int j, int lane, const unsigned char*, uint32_t (&h)[4],
                        float& scale, float& n0, float& n1) {
    Q2kRec r;
    q2k_record(rw, j, r);
    q2k_rec_frag(r, rw, j, lane, h);
    scale = r.scale, n0 = r.n0, n1 = r.n1;
  }
};

// Where the Q2_K records live (dynamic shared memory, Smem::off_rec): two arrays of 16-byte halves
// [buffer][k-tile j][row], so that a warp's 8 consecutive rows read 128 contiguous bytes.
WG_HD uint32_t q2k_rec_off(int half, int row, int buf, int j) {
  return static_cast<uint32_t>(((half * 2 + buf) * 8 + j) * kBM + row) * 16u;
}
constexpr int kQ2kRecBytes = 2 * 2 * 8 * kBM * 16;
static_assert(Smem<GgmlType::Q2_K>::kRec == kQ2kRecBytes, "the records' region");

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

// ---- Token sums precomputed (FLASHSTAR_GEMM_GROUP_Q2K_SUMS, Q2_K): the sums above depend only on the
// activation row, not on the expert or the weight row block, yet every block of an expert tile recomputes
// them in its k-loop (~90 instructions a k-tile and warp, of an issue-bound loop). A small kernel
// (group_token_sums) computes them once per FP16 row into scratch with the same arithmetic and order
// (per 8 columns gemm_int::sum8, the two added), so they are the same floats; the k-loop copies them in.
// Scratch: row r's sum of 16-column group g (columns tsum_col(g, 0) .. + 15) at tsum_index(r, g, K / 16).
WG_HD int64_t tsum_index(int64_t r, int g, int groups) { return r * groups + g; }
WG_HD int tsum_col(int g, int k) { return 16 * g + 8 * k; }  // the first column of g's sum8 k (0, 1)
// The kernel's copies: thread tid (item sum_item(tid), half sum_half(tid)) copies, 4 bytes each, for
// k-tile i (0..3) of iteration it (k-tiles 4 it + i), group tsum_group(it, i, half) (= 2 (4 it + i) +
// half: the columns the in-loop sums() read through sum_chunk) to sum_index(i, half, item) of sums
// buffer it % 2. One 32-byte sector an item and iteration in the scratch (its 8 groups).
WG_HD int tsum_group(int it, int i, int half) { return 8 * it + 2 * i + half; }

}  // namespace flashstar::cuda::wgmma_reg
