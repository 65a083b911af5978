// The second grouped expert GEMM and the dense GEMM on its tiles (fast_gemm_group.cu): their tile
// geometry, the lane and shared-memory mappings, and the weight decoding from raw words, all
// host-compilable so that CPU tests replay every index mapping and decode bitwise against the dequantizer.
//
// Raw weights reach shared memory as 4-byte words (cp.async, 4 bytes each): per row and per unit (256
// columns; the dense kernel's Q8_0: 128), the words covering the unit's bytes (a 66-byte IQ2_XXS block may start 2 bytes into its first
// word). Rows sit at an odd word stride, so the 32 lanes of a warp, one row each, read the same field of
// 32 rows from 32 different banks, and the copy's consecutive words go to consecutive banks.
//
// Each thread decodes one row's 32-column k-tile into 32 exact FP16 integers and the row's scale and
// minima for that k-tile, the same numbers as gemm_int::piece (so the products, sums and promotions
// are those of the first kernel, bit for bit). kFold (the CPU error model only) folds IQ2_XXS's 4-bit
// sub-block scale (|grid (2s+1)| <= 1333) and Q4_K's 6-bit sub-scale (15 x 63 = 945) into the integers,
// exact in FP16, leaving one scale per 256 columns: the model shows that promoting the longer partials
// this would allow costs accuracy ("gemm folded model" lines of test_gemm_int.cpp), so the kernel
// promotes every k-tile.
#pragma once
#include <cstdint>

#include "cuda/gemm_int_weights.h"
#include "quant/quant.h"
#include "quant/types.h"
#if defined(__CUDACC__)
#include "cuda/mma_f16.cuh"
#endif

namespace flashstar::cuda::gemm_v2 {

using gemm_int::half_f32;
using gemm_int::prmt;

// Block tile: G::kBM weight rows (Geo below) x 64 items (kMoeTileTokens), k-tiles of 32 columns, warps of
// 64 rows x 32 items (4 x 4 mma tiles; warp_tile below): per 16 columns a warp loads 4 A and 4 B
// fragments (ldmatrix.x4) for 32 mma, half the shared-memory reads per mma of a 32 x 32 tile.
constexpr int kBN = 64, kBK = 32, kStages = 4;
constexpr int kWarpM = 64, kWarpN = 32, kMI = kWarpM / 16, kNI = kWarpN / 8;

// The block geometry: BM weight rows, one thread per row (it decodes that row's k-tiles), so BM / 32
// warps as BM / 64 (rows) x 2 (items); raw weights staged in units of UnitCols columns. The grouped
// kernel runs 128 rows (2 blocks an SM) in 256-column units; the dense kernel (many tokens a matrix)
// 256 rows by default, which halves the activation traffic per mma (fast_gemm_group.cu).
template <int BM, int UnitCols>
struct Geo {
  static_assert(BM % kWarpM == 0 && UnitCols % kBK == 0, "whole warp tiles and k-tiles");
  static constexpr int kBM = BM, kThreads = BM, kUnitCols = UnitCols, kTilesPerUnit = UnitCols / kBK;
  static constexpr int kBlocksPerSm = 256 / BM;  // the registers of 8 warps (~220 a thread)
  static constexpr int kXCopies = 2 * kBN * (kBK / 8) / kThreads;  // 16-byte activation copies a k-tile
};
using GroupGeo = Geo<128, 256>;

// Raw words per row and unit (kWords), their odd row stride in shared memory (kStride), and the minimum
// terms per k-tile (0, 1 for all 32 columns, 2 for each 16). The K-quant and IQ2_XXS blocks span 256
// columns, so their units do; Q8_0 (34-byte blocks of 32 columns) takes any even number of blocks.
template <GgmlType T, int UnitCols = 256>
struct Fmt;
template <>
struct Fmt<GgmlType::IQ2_XXS, 256> {
  static constexpr int kBytes = 66, kWords = 17, kStride = 17, kMins = 0;
};
template <>
struct Fmt<GgmlType::Q2_K, 256> {
  static constexpr int kBytes = 84, kWords = 21, kStride = 21, kMins = 2;
};
template <>
struct Fmt<GgmlType::Q4_K, 256> {
  static constexpr int kBytes = 144, kWords = 36, kStride = 37, kMins = 1;
};
template <int UnitCols>
struct Fmt<GgmlType::Q8_0, UnitCols> {
  static_assert(UnitCols % 64 == 0, "whole words: an even number of 34-byte blocks");
  static constexpr int kBytes = UnitCols / 32 * 34, kWords = kBytes / 4, kStride = kWords | 1, kMins = 0;
};
template <GgmlType T, class G>
using FmtOf = Fmt<T, G::kUnitCols>;

// Shared memory (bytes): X tiles [kStages][2 terms][kBN][kBK] halves, decoded weights [2][kBM][kBK]
// halves, raw words [2][kBM * kStride + 4], row factors [2][kBM] float4 (scale, -min0, -min1), token sums
// [2][2][kBN] floats, the IQ2_XXS selector table [256] words. The 4 spare raw words absorb the decoder's
// read of one word past the last row (a word it then shifts out).
template <GgmlType T, class G>
struct Smem {
  static constexpr int kX = kStages * 2 * kBN * kBK * 2;
  static constexpr int kA = 2 * G::kBM * kBK * 2;
  static constexpr int kRawBuf = G::kBM * FmtOf<T, G>::kStride + 4;  // words
  static constexpr int kRaw = 2 * kRawBuf * 4;
  static constexpr int kRows = 2 * G::kBM * 16;
  static constexpr int kSums = 2 * 2 * kBN * 4;
  static constexpr int kTab = 256 * 4;
  static constexpr int off_a = kX, off_raw = off_a + kA, off_rows = off_raw + kRaw, off_sums = off_rows + kRows,
                       off_tab = off_sums + kSums, bytes = off_tab + kTab;
  static_assert(off_raw % 16 == 0 && off_rows % 16 == 0 && off_sums % 16 == 0 && off_tab % 16 == 0,
                "16-byte alignment");
};

// ---- The pipeline (one barrier per k-tile; the CPU test replays it against buffer hazards). The
// prologue issues k-tiles 0 .. kStages - 2 (one commit group each), waits for k-tile 0 and decodes it;
// iteration kt waits until at most kLoopPending groups are in flight (k-tile kt + 1 landed), passes the
// barrier, issues k-tile kt + kStages - 1, runs the mma of k-tile kt, decodes k-tile kt + 1 and promotes
// k-tile kt. A k-tile's group carries its activations and, for the first k-tile of a unit, the unit's
// raw words. Two raw buffers suffice for units of 2 k-tiles or more: unit u + 2 is issued in the
// iteration after the one that decodes unit u's last k-tile.
constexpr int kProloguePending = kStages - 2, kLoopPending = kStages - 3;
GI_HD int x_stage(int t) { return t % kStages; }  // activation ring slot of k-tile t
GI_HD int tile_buf(int t) { return t & 1; }       // decoded tile, row factors, sums
GI_HD int raw_buf(int unit) { return unit & 1; }  // a raw unit's buffer
template <class G>
GI_HD int unit_of(int t) {  // the raw unit holding k-tile t
  static_assert(G::kTilesPerUnit >= 2, "two raw buffers");
  return t / G::kTilesPerUnit;
}
template <class G>
GI_HD bool starts_unit(int t) {  // k-tile t's group loads its unit
  return t % G::kTilesPerUnit == 0;
}

// ---- Shared-memory tile layout. Rows of 32 halves (64 bytes, four 16-byte chunks); chunk c of row r sits
// at position c ^ ((r >> 1) & 3). An ldmatrix phase reads 8 consecutive rows at one logical chunk: the
// row pairs land on four different positions, each pair's two rows on the two 64-byte halves of a
// 128-byte line, so the 8 rows hit 32 different banks; the loaders' 16-byte writes (2 rows x 4 chunks
// per quarter warp, or 8 rows at one chunk) are conflict-free the same way.
GI_HD int swz(int row, int chunk) { return row * kBK + ((chunk ^ ((row >> 1) & 3)) << 3); }

// A warp's share of the block tile (any number of 64-row warp pairs). Tiles of more than 32 items: warp
// (wm, wn) = (warp / 2, warp % 2) owns rows 64 wm .. + 63 and items 32 wn .. + 31. Tiles of 32 items or fewer (an expert's last, partial
// tile: with ~96 items per expert, often half full) would leave the wn = 1 warps idle and their SM
// quarters' tensor cores with half the work; instead each warp owns 32 rows (64 wm + 32 wn ..) of items
// 0..31. Only the mma tiles holding items below the count run (n_act of the 8-item tiles, m_act of the
// 16-row slabs); every output element is the same sequence of operations whichever warp computes it.
struct WarpTile {
  int row0, tok0, m_act, n_act;
};
GI_HD WarpTile warp_tile(int warp, int count) {
  const int wm = warp >> 1, wn = warp & 1;
  WarpTile w;
  if (count <= kWarpN) {
    w.row0 = wm * kWarpM + wn * (kWarpM / 2), w.tok0 = 0, w.m_act = kMI / 2;
  } else {
    w.row0 = wm * kWarpM, w.tok0 = wn * kWarpN, w.m_act = kMI;
  }
  const int left = count - w.tok0;
  w.n_act = left <= 0 ? 0 : left >= kWarpN ? kNI : (left + 7) >> 3;
  return w;
}

// ldmatrix.x4 row addresses (lane's row and logical chunk) for the A fragment of slab mi at k-step kk
// (0 or 16): matrices 0..3 = rows 0-7 / 8-15 at k 0-7, then rows 0-7 / 8-15 at k 8-15 (a0..a3 of
// mma.m16n8k16).
GI_HD void a_lane(const WarpTile& w, int mi, int kk, int lane, int& row, int& chunk) {
  row = w.row0 + mi * 16 + (lane & 15);
  chunk = (kk >> 3) + (lane >> 4);
}
// ... and for the B fragments of item pair-tile nj: matrices = b0, b1 of items 0-7, then b0, b1 of
// items 8-15 (n-tiles 2 nj and 2 nj + 1).
GI_HD void b_lane(const WarpTile& w, int nj, int kk, int lane, int& tok, int& chunk) {
  tok = w.tok0 + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
  chunk = (kk >> 3) + ((lane >> 3) & 1);
}
// The accumulator element c of tile (mi, ni) (mma C layout): row .. + lane / 4 (+ 8 for c >= 2), item
// .. + 2 (lane % 4) (+ 1 for odd c); rr = c / 2, cj = c % 2.
GI_HD int acc_row(const WarpTile& w, int mi, int lane, int rr) { return w.row0 + mi * 16 + (lane >> 2) + rr * 8; }
GI_HD int acc_tok(const WarpTile& w, int ni, int lane, int cj) { return w.tok0 + ni * 8 + (lane & 3) * 2 + cj; }
// The activation copy: 2 terms x 64 tokens x 4 chunks = 512 16-byte copies, G::kXCopies per thread
// (v = 0 ..): a quarter warp copies 2 tokens' 64 bytes.
template <class G>
GI_HD void x_task(int tid, int v, int& term, int& tok, int& chunk) {
  const int q = tid + G::kThreads * v;
  chunk = q & 3, tok = (q >> 2) & (kBN - 1), term = q >> 8;
}
// The raw copy: task q = tid + kThreads * v (v < kWords) is word q % kWords of row q / kWords, stored at
// word slot = row * kStride + word of the buffer (= q + row (kStride - kWords): one multiply-add).
template <GgmlType T, class G>
GI_HD void raw_task(int tid, int v, int& row, int& word, int& slot) {
  using F = FmtOf<T, G>;
  const int q = tid + G::kThreads * v;
  row = q / F::kWords, word = q - row * F::kWords, slot = q + row * (F::kStride - F::kWords);
}
// A raw copy's source in bytes from the block's first row: unit_byte (the unit's first word) + 4 word
// into row `row`, where rows past the matrix (row >= rows_left) repeat its last row (their outputs are
// never stored). 32-bit arithmetic: each copy computes this (8 or more copies a thread and k-tile), and
// the block spans at most 256 rows of kMaxRowBytes.
constexpr uint32_t kMaxRowBytes = 1u << 22;
GI_HD uint32_t raw_src(int row, int word, int rows_left, uint32_t row_bytes, uint32_t unit_byte) {
  return static_cast<uint32_t>(row < rows_left ? row : rows_left - 1) * row_bytes + unit_byte +
         4u * static_cast<uint32_t>(word);
}
// The token sums (formats with minima): thread tid < kSumTasks -> token tid / 2, 16-column half tid % 2.
constexpr int kSumTasks = 2 * kBN;
GI_HD void sum_task(int tid, int& tok, int& half) { tok = tid >> 1, half = tid & 1; }

// Dense products: block b of a 1-D grid -> (row block rb, token tile tt) of n_rb x n_tt. The row blocks
// go in bands of kBandRows rows, the row block varying fastest inside a band: the ~one block an SM that
// run at once share a band's weights (2048 rows) and ~132 / band token tiles, which L2 then serves to
// all of them, and a band's weights stay in L2 while it sweeps the tokens.
constexpr int kBandRows = 2048;
template <class G>
GI_HD void dense_tile(int b, int n_rb, int n_tt, int& rb, int& tt) {
  constexpr int kBand = kBandRows / G::kBM;
  const int band = b / (kBand * n_tt), in = b - band * kBand * n_tt;
  const int rows = n_rb - band * kBand < kBand ? n_rb - band * kBand : kBand;
  rb = band * kBand + in % rows, tt = in / rows;
}

// ---- Bit helpers (device instructions, host replays).
GI_HD uint32_t funnel(uint32_t lo, uint32_t hi, int sh) {  // (hi:lo) >> sh, sh in 0..31
#ifdef __CUDA_ARCH__
  return __funnelshift_r(lo, hi, static_cast<unsigned>(sh));
#else
  return sh == 0 ? lo : (lo >> sh) | (hi << (32 - sh));
#endif
}
GI_HD int popc(uint32_t v) {
#ifdef __CUDA_ARCH__
  return __popc(v);
#else
  return __builtin_popcount(v);
#endif
}
// a * b + c on two FP16 lanes, one rounding (fused); the host computes the exact value in float, which
// the callers keep exact (integers below 2^24).
GI_HD uint32_t hfma2_bits(uint32_t a, uint32_t b, uint32_t c) {
#ifdef __CUDA_ARCH__
  const __half2 r = __hfma2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b),
                            *reinterpret_cast<const __half2*>(&c));
  return *reinterpret_cast<const uint32_t*>(&r);
#else
  uint32_t out = 0;
  for (int i = 0; i < 2; ++i) {
    const float x = f16_to_f32(static_cast<uint16_t>(a >> (16 * i))),
                y = f16_to_f32(static_cast<uint16_t>(b >> (16 * i)));
    const float z = f16_to_f32(static_cast<uint16_t>(c >> (16 * i)));
    out |= static_cast<uint32_t>(f32_to_f16(__builtin_fmaf(x, y, z))) << (16 * i);
  }
  return out;
#endif
}
// An integer 0..2047 as FP16 in both lanes: 0x6400 | v is 1024 + v, minus 1024.
GI_HD uint32_t int_h2(uint32_t v) { return gemm_int::hsub2_bits((0x64006400u | v) | (v << 16), 0x64006400u); }

// ---- IQ2_XXS. Grid bytes are 8, 25 or 43; the selector table holds, per grid entry, byte j's code
// (0, 1, 2) in nibble 2j (j < 4) or 2 (j - 4) + 1 (j >= 4), so that (T & 0x0F0F0F0F) | 0x40404040 is two
// PRMT selectors (low 16 bits: elements 0, 1; high: 2, 3) picking 0x08 / 0x19 / 0x2B under a 0x64 byte:
// the FP16 numbers 1024 + grid; likewise (T >> 4) for elements 4..7.
constexpr uint32_t kGridBytes = 0x002B1908u;
inline bool iq2_sel_table(uint32_t (&out)[256]) {
  for (int e = 0; e < 256; ++e) {
    uint32_t t = 0;
    for (int j = 0; j < 8; ++j) {
      const uint32_t b = static_cast<uint32_t>(quant::kIq2xxsGrid[e] >> (8 * j)) & 255;
      const uint32_t c = b == 8 ? 0 : b == 25 ? 1 : b == 43 ? 2 : 15;
      if (c == 15) return false;
      t |= c << (j < 4 ? 8 * j : 8 * (j - 4) + 4);
    }
    out[e] = t;
  }
  return true;
}
// The 8 sign bits of a grid entry: the 7 stored bits and their parity (the format's even-parity masks,
// kIq2xsSigns[i] == i | parity(i) << 7).
GI_HD uint32_t iq2_signs(uint32_t idx7) { return idx7 | (static_cast<uint32_t>(popc(idx7) & 1) << 7); }

// IQ2_XXS sub-block j of a unit (rw: the row's raw words, a2: the unit's first byte in rw[0]): 4 grid
// indices (qs), then 4 x 7 sign bits and the 4-bit scale s (sg), at byte 2 + 8j; d the block scale.
// Shared by Decode below and the paired wgmma kernel's half-tile decode (gemm_group_wgmma.h, Decode16).
GI_HD void iq2_sub(const uint32_t* rw, int a2, int j, uint32_t& qs, uint32_t& sg, float& d) {
  const int hb = a2 + 2 + 8 * j, k = hb >> 2, sh = 8 * (hb & 3);
  const uint32_t w0 = rw[k], w1 = rw[k + 1], w2 = rw[k + 2];
  qs = funnel(w0, w1, sh), sg = funnel(w1, w2, sh);
  d = half_f32((rw[0] >> (8 * a2)) & 0xffffu);
}
// Grid entry e of a sub-block: its 8 weights as 4 FP16 pairs into h[0..3], g m negated by the entry's
// sign bits (m2: the multiplier m in both lanes, nb2: -1024 m in both lanes; sel: the selector table).
GI_HD void iq2_entry(const uint32_t* sel, uint32_t qs, uint32_t sg, int e, uint32_t m2, uint32_t nb2, uint32_t* h) {
  const uint32_t t = sel[(qs >> (8 * e)) & 255u];
  const uint32_t s8 = iq2_signs((sg >> (7 * e)) & 127u);
  const uint32_t lo = (t & 0x0F0F0F0Fu) | 0x40404040u, hi = ((t >> 4) & 0x0F0F0F0Fu) | 0x40404040u;
  const uint32_t sl[4] = {lo, lo >> 16, hi, hi >> 16};
  GI_UNROLL
  for (int p = 0; p < 4; ++p) {
    // (1024 + g) m - 1024 m = g m, one rounding of an integer below 2048: exact.
    const uint32_t v = hfma2_bits(prmt(kGridBytes, 0x64646464u, sl[p]), m2, nb2);
    // Sign bits 2p and 2p + 1 of s8 to bits 15 and 31 (the two shifted copies never overlap).
    const uint32_t neg = (s8 * ((1u << (15 - 2 * p)) + (1u << (30 - 2 * p)))) & 0x80008000u;
    h[p] = v ^ neg;
  }
}

// One decoded k-tile of one row: h[i] holds columns 2i (low half) and 2i + 1 as FP16 integers; the
// weight is scale * int - min (min0 for columns 0..15, min1 for 16..31; Q4_K: min0 == min1).
struct Tile32 {
  uint32_t h[16];
  float scale, min0, min1;
};

// rw: the row's raw words of the unit; a2: the unit's first byte within rw[0] (IQ2_XXS: 0 or 2, others
// 0); j: the k-tile within the unit (0..7); sel: the IQ2_XXS selector table.
template <GgmlType T, bool kFold = false>
struct Decode;
template <GgmlType T>
struct DecodeFast;  // gemm_group_decode.h

template <bool kFold>
struct Decode<GgmlType::IQ2_XXS, kFold> {
  static GI_HD void run(const uint32_t* rw, int a2, int j, const uint32_t* sel, Tile32& o) {
    uint32_t qs, sg;
    float d;
    iq2_sub(rw, a2, j, qs, sg, d);
    // The dequantizer's d (0.5 + s) 0.25, or, folded, d / 8 with (2s + 1) in the integers.
    o.scale = kFold ? d * 0.125f : d * (0.5f + static_cast<float>(sg >> 28)) * 0.25f;
    o.min0 = o.min1 = 0.0f;
    const uint32_t m2 = kFold ? int_h2(2 * (sg >> 28) + 1) : 0x3C003C00u;  // the multiplier m (1: FP16 1.0)
    // -1024 m in both lanes (exact: at most 5 significant bits).
    const uint32_t nb2 = hfma2_bits(m2, 0xE400E400u, 0u);
    GI_UNROLL
    for (int e = 0; e < 4; ++e) iq2_entry(sel, qs, sg, e, m2, nb2, o.h + 4 * e);
  }
};

template <bool kFold>
struct Decode<GgmlType::Q2_K, kFold> {  // the 4-bit scale is always in the integer (gemm_int::piece)
  static GI_HD void run(const uint32_t* rw, int, int j, const uint32_t*, Tile32& o) {
    // Block: scales [16] at 0, qs [64] at 16, d at 80, dmin at 82. Columns 128 h + 32 step + l take bits
    // 2 step of qs[32 h + l] and scale byte 8 h + 2 step + l / 16 (low nibble: scale, high: minimum).
    const int h = j >> 2, step = j & 3;
    const uint32_t scw = rw[2 * h + (step >> 1)] >> (16 * (step & 1));
    const uint32_t sc0 = scw & 255u, sc1 = (scw >> 8) & 255u;
    const uint32_t dd = rw[20];
    const float dmin = half_f32(dd >> 16);
    o.scale = half_f32(dd & 0xffffu);
    o.min0 = dmin * static_cast<float>(sc0 >> 4), o.min1 = dmin * static_cast<float>(sc1 >> 4);
    GI_UNROLL
    for (int i = 0; i < 8; ++i) {
      const uint32_t q = (rw[4 + 8 * h + i] >> (2 * step)) & 0x03030303u;
      gemm_int::bytes_u(q * (i < 4 ? sc0 & 15u : sc1 & 15u), o.h[2 * i], o.h[2 * i + 1]);  // <= 45: no carry
    }
  }
};

template <bool kFold>
struct Decode<GgmlType::Q4_K, kFold> {
  static GI_HD void run(const uint32_t* rw, int, int j, const uint32_t*, Tile32& o) {
    // Block: d, dmin at 0, 12 scale bytes at 4, qs [128] at 16; columns 64 c + 32 hi + l take nibble hi of
    // qs[32 c + l] and sub-scale / minimum 2 c + hi.
    const int c = j >> 1, hi = j & 1;
    // quant::q4_K_scale_min on the 12 scale bytes (words 1..3), picked by selects: a byte array indexed
    // by the runtime j would live in local memory.
    const uint32_t w1 = rw[1], w2 = rw[2], w3 = rw[3];
    auto byte = [&](int i) { return static_cast<int>(((i < 4 ? w1 : i < 8 ? w2 : w3) >> (8 * (i & 3))) & 255u); };
    int sc, m;
    if (j < 4) {
      sc = byte(j) & 63, m = byte(j + 4) & 63;
    } else {
      sc = (byte(j + 4) & 15) | ((byte(j - 4) >> 6) << 4);
      m = (byte(j + 4) >> 4) | ((byte(j) >> 6) << 4);
    }
    const uint32_t dd = rw[0];
    o.scale = kFold ? half_f32(dd & 0xffffu) : half_f32(dd & 0xffffu) * static_cast<float>(sc);
    o.min0 = o.min1 = half_f32(dd >> 16) * static_cast<float>(m);
    const uint32_t sc2 = int_h2(static_cast<uint32_t>(sc));
    GI_UNROLL
    for (int i = 0; i < 8; ++i) {
      uint32_t lo, hi2;
      gemm_int::bytes_u((rw[4 + 8 * c + i] >> (4 * hi)) & 0x0f0f0f0fu, lo, hi2);
      o.h[2 * i] = kFold ? hfma2_bits(lo, sc2, 0u) : lo;  // q sc <= 945: exact
      o.h[2 * i + 1] = kFold ? hfma2_bits(hi2, sc2, 0u) : hi2;
    }
  }
};

template <bool kFold>
struct Decode<GgmlType::Q8_0, kFold> {  // nothing to fold: d is per 32 columns
  static GI_HD void run(const uint32_t* rw, int, int j, const uint32_t*, Tile32& o) {
    // The unit is 34-byte blocks (d, then 32 signed bytes); block j is this k-tile.
    const int db = 34 * j, qb = db + 2, k = qb >> 2, sh = 8 * (qb & 3);
    o.scale = half_f32((rw[db >> 2] >> (8 * (db & 3))) & 0xffffu);
    o.min0 = o.min1 = 0.0f;
    GI_UNROLL
    for (int i = 0; i < 8; ++i) gemm_int::bytes_s(funnel(rw[k + i], rw[k + i + 1], sh), o.h[2 * i], o.h[2 * i + 1]);
  }
};

// The byte offset of a unit inside its first raw word (rows are 4-byte aligned).
template <GgmlType T, int UnitCols = 256>
GI_HD int unit_a2(int unit) {
  return (unit * Fmt<T, UnitCols>::kBytes) & 3;
}

#if defined(__CUDACC__)
// ---- Device pieces of the kernels on these tiles (v2_tile in fast_gemm_group.cu and the warpgroup
// kernels gemm_group_wgmma.cu, gemm_group_wgmma_pair.cu), written once so that their copies, decode
// and token sums stay the same code (and the same bits).

// p, with the compiler unable to see how it was made: a base pointer that the raw copies then offset by
// 32-bit amounts, where the compiler would otherwise redo the 64-bit base arithmetic in every copy.
__device__ __forceinline__ const uint8_t* opaque(const uint8_t* p) {
  asm("" : "+l"(p));
  return p;
}

// A thread's 16-byte activation copies of every k-tile (kCopies; task(v, term, tok, chunk) names copy v)
// into stage x_stage(t) of Xs ([stage][term][kN x kBK], swizzled): item tok's row x_row(tok) of Xb (the
// lo term lo_off further), items past the count zero-filled. x_copies forms the addresses once (src,
// dst, bytes: the kernel's registers), x_issue issues k-tile t's copies.
template <int kN, int kCopies, class Task, class XRow>
__device__ __forceinline__ void x_copies(Task task, XRow x_row, int count, const uint16_t* Xb, int64_t k8,
                                         int64_t lo_off, uint16_t* Xs, const uint16_t* (&src)[kCopies],
                                         uint32_t (&dst)[kCopies], uint32_t (&bytes)[kCopies]) {
#pragma unroll
  for (int v = 0; v < kCopies; ++v) {
    int term, tok, chunk;
    task(v, term, tok, chunk);
    const bool ok = tok < count;
    const int64_t xr = !ok ? 0 : x_row(tok);
    src[v] = Xb + term * lo_off + xr * k8 + chunk * 8;
    dst[v] = mma::smem_addr(Xs + term * (kN * kBK) + swz(tok, chunk));
    bytes[v] = ok ? 16u : 0u;
  }
}
template <int kN, int kCopies>
__device__ __forceinline__ void x_issue(const uint16_t* const (&src)[kCopies], const uint32_t (&dst)[kCopies],
                                        const uint32_t (&bytes)[kCopies], int t) {
  const uint32_t st = static_cast<uint32_t>(x_stage(t) * (2 * kN * kBK) * 2);
#pragma unroll
  for (int v = 0; v < kCopies; ++v) mma::cp_async16(dst[v] + st, src[v] + t * kBK, bytes[v]);
}

// Raw unit u's words for all G::kBM rows of the block (first row at Wb; rows past the matrix repeat its
// last row, never stored) into raw buffer raw_buf(u) of Raw, thread tid's share (raw_task).
template <GgmlType T, class G>
__device__ __forceinline__ void load_raw(uint32_t* Raw, const uint8_t* __restrict__ Wb, int rows_left,
                                         size_t row_bytes, int tid, int u) {
  using F = FmtOf<T, G>;
  const uint32_t base = mma::smem_addr(Raw + raw_buf(u) * Smem<T, G>::kRawBuf);
  const uint32_t ub = static_cast<uint32_t>(u * F::kBytes - unit_a2<T, G::kUnitCols>(u));
#pragma unroll 4
  for (int v = 0; v < F::kWords; ++v) {
    int row, word, slot;
    raw_task<T, G>(tid, v, row, word, slot);
    mma::cp_async4(base + 4u * static_cast<uint32_t>(slot),
                   Wb + raw_src(row, word, rows_left, static_cast<uint32_t>(row_bytes), ub));
  }
}

// Row `row`'s k-tile t into FP16 integers (decoded tile buffer tile_buf(t) of As, swizzled) and its
// scale and negated minima (Rows[tile_buf(t)][row]). kFast: DecodeFast (gemm_group_decode.h, the same
// Tile32 in fewer instructions, each 16-byte chunk stored as it is made; Sel is then its table), which
// the caller includes.
template <GgmlType T, class G, bool kFast = false>
__device__ __forceinline__ void decode_row(const uint32_t* Raw, const uint32_t* Sel, uint16_t* As, float4* Rows,
                                           int row, int t) {
  const int u = unit_of<G>(t);
  const uint32_t* rw = Raw + raw_buf(u) * Smem<T, G>::kRawBuf + row * FmtOf<T, G>::kStride;
  uint16_t* a = As + tile_buf(t) * (G::kBM * kBK);
  if constexpr (kFast) {
    float scale, min0, min1;
    DecodeFast<T>::run(rw, unit_a2<T, G::kUnitCols>(u), t % G::kTilesPerUnit, Sel, scale, min0, min1,
                       [&](int c, uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
                         *reinterpret_cast<uint4*>(a + swz(row, c)) = make_uint4(w0, w1, w2, w3);
                       });
    // Without minima the promotion reads the scale alone (gemm_group_wgmma.h, promote_rows): one word,
    // not a float4 (three registers less at the end of the decode).
    if constexpr (FmtOf<T, G>::kMins == 0)
      Rows[tile_buf(t) * G::kBM + row].x = scale;
    else
      Rows[tile_buf(t) * G::kBM + row] = make_float4(scale, -min0, -min1, 0.0f);
    return;
  }
  Tile32 o;
  Decode<T>::run(rw, unit_a2<T, G::kUnitCols>(u), t % G::kTilesPerUnit, Sel, o);
#pragma unroll
  for (int c = 0; c < 4; ++c)
    *reinterpret_cast<uint4*>(a + swz(row, c)) = make_uint4(o.h[4 * c], o.h[4 * c + 1], o.h[4 * c + 2], o.h[4 * c + 3]);
  Rows[tile_buf(t) * G::kBM + row] = make_float4(o.scale, -o.min0, -o.min1, 0.0f);
}

// Item tok's activation sum over 16-column half `half` of k-tile t (hi + lo terms of stage x_stage(t),
// kN items a stage; each 8-column half by gemm_int::sum8, then the two added: the first kernel's
// order) into Sums[tile_buf(t)][half][tok].
template <int kN>
__device__ __forceinline__ void tok_sum(const uint16_t* Xs, float* Sums, int t, int tok, int half) {
  constexpr int kXTerm = kN * kBK, kXStage = 2 * kXTerm;
  const uint16_t* xh = Xs + x_stage(t) * kXStage;
  float s8[2];
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const uint4 h = *reinterpret_cast<const uint4*>(xh + swz(tok, 2 * half + k));
    const uint4 l = *reinterpret_cast<const uint4*>(xh + kXTerm + swz(tok, 2 * half + k));
    const uint32_t hv[4] = {h.x, h.y, h.z, h.w}, lv[4] = {l.x, l.y, l.z, l.w};
    s8[k] = gemm_int::sum8(hv, lv);
  }
  Sums[(tile_buf(t) * 2 + half) * kN + tok] = s8[0] + s8[1];
}
#endif  // __CUDACC__

}  // namespace flashstar::cuda::gemm_v2
