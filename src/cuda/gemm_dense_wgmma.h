// The dense prefill products on Hopper's warpgroup MMA (gemm_dense_wgmma.cu): Q8_0 weights and the float
// (F16, BF16) ones. Their tile geometry, the shared-memory layouts, the wgmma matrix descriptor and the
// register-fragment mappings, host-compilable so that CPU tests (tests/cuda/test_gemm_dense_wgmma.cpp)
// replay every address the kernel forms against the PTX ISA's definitions of the layouts, without a GPU.
//
// Numerics are the mma.sync kernels' (fast_gemm.cu), per 32-column k-tile a partial sum started from
// zero in the tensor core, promoted into an fp32 running sum. Q8_0 (gemm_int_weights.h): weights as exact
// FP16 integers, activations as two FP16 terms, W x_lo then W x_hi per 16-column step, promoted with the
// k-tile's scale in one FMA (gemm_int::promote<0>). Float weights (gemm_dense<T, false>): weights scaled
// by 2^10 and split in two FP16 terms too, w_lo x_hi, w_hi x_lo, w_hi x_hi per step, promoted by a plain
// add, the sums scaled back by 2^-10 at the end.
#pragma once
#include <cstdint>

#include "cuda/wgmma_tile.cuh"

// (Named for the first weight type it served; the float weights share its tiles and pipeline.)
namespace flashstar::cuda::wgmma_q8 {

// Block: 128 weight rows (two consumer warpgroups of 64 rows, one m64 wgmma each) x 128 tokens (the
// wgmma N), 256 threads. Activations are staged 64 columns (two k-tiles) at a time: a token's 64 FP16
// values are one 128-byte row, the width of the 128-byte swizzle, so a stage is the canonical K-major
// SWIZZLE_128B layout. Raw Q8_0 weights are staged in units of 256 columns: 8 blocks of 34 bytes = 272
// bytes a row, a multiple of 16, so they arrive by 16-byte cp.async like the activations.
constexpr int kBM = 128, kBN = 128, kThreads = 256;
constexpr int kChunkCols = 64, kStages = 4, kChunksPerIter = 2;  // activation stages; chunks an iteration
constexpr int kUnitCols = 256, kUnitBytes = 272, kChunksPerUnit = kUnitCols / kChunkCols;
constexpr int kTermBytes = kBN * kChunkCols * 2;  // one term's tile of a stage: 16 KB
constexpr int kStageBytes = 2 * kTermBytes;       // hi, then lo
constexpr int kRawBytes = kBM * kUnitBytes;       // one raw unit buffer (two of them)
constexpr int kSmemUsed = kStages * kStageBytes + 2 * kRawBytes;
constexpr int kSmemBytes = kSmemUsed + 1024;  // the swizzle atoms need 1024-byte alignment: slack to align
constexpr int kXCopies = 2 * kBN * (kChunkCols / 8) / kThreads;  // 16-byte activation copies a chunk: 8
constexpr int kRawCopies = kBM * (kUnitBytes / 16);              // 16-byte raw copies a unit: 2176
constexpr int kRawPerThread = (kRawCopies + kThreads - 1) / kThreads;
static_assert(kSmemBytes <= 227 * 1024, "one block an SM");
static_assert(kStages == 2 * kChunksPerIter, "an iteration's chunks and the next iteration's");
static_assert(kChunksPerUnit % kChunksPerIter == 0, "a raw unit starts an iteration");

// ---- Activation tiles (B operand, K-major): token n's 16-byte chunk c (columns 8c .. 8c + 7 of the
// stage) at n * 128 + ((c ^ (n % 8)) << 4) from the tile's 1024-byte aligned base: the 128-byte swizzle
// (address bits 4..6 xor bits 7..9), which makes the cp.async writes and the tensor core's reads of 8
// consecutive tokens hit all 32 banks.
WG_HD uint32_t b_off(int tok, int chunk) {
  return static_cast<uint32_t>(tok * 128 + ((chunk ^ (tok & 7)) << 4));
}

// The B descriptor (wgmma_tile.cuh): K-major with the 128-byte swizzle, 8-row core-matrix groups 1024
// bytes apart (SBO); a k16 step's 32 bytes lie inside the 128-byte row.
constexpr uint32_t kSbo = 1024;
WG_HD uint64_t desc_b(uint32_t smem_byte_addr) { return wgmma::desc(smem_byte_addr, kSbo, wgmma::kSwizzle128B); }
using wgmma::desc_element_addr;

// ---- A operand from registers (the m64k16 FP16 fragment: warp w of the warpgroup holds rows 16 w ..
// 16 w + 15, laid out as mma.m16n8k16's A): register r (0..3) of lane l holds row 16 w + l / 4 + 8 (r % 2)
// and columns 2 (l % 4) + 8 (r / 2) + {0 (low half), 1 (high half)} of the k16 step.
WG_HD int a_row(int warp_in_wg, int lane, int r) { return 16 * warp_in_wg + (lane >> 2) + 8 * (r & 1); }
WG_HD int a_col(int lane, int r, int half) { return 2 * (lane & 3) + 8 * (r >> 1) + half; }
// The m64nN fp32 accumulator (wgmma_tile.cuh).
using wgmma::d_col;
using wgmma::d_row;

// ---- Raw weights: row r of a unit buffer at r * 272; k-tile j (0..7) of the unit is the 34-byte block
// at 34 j (FP16 scale, then 32 int8). Row stride 272 bytes = 68 words (4 banks apart): the 8 rows of a
// warp's 2-byte reads (4 lanes a row, 8 consecutive bytes) fall on 8 disjoint bank ranges.
WG_HD uint32_t raw_scale_off(int row, int j) { return static_cast<uint32_t>(row * kUnitBytes + 34 * j); }
WG_HD uint32_t raw_q_off(int row, int j, int col) {  // col 0..31 of the k-tile; even cols are 2-byte aligned
  return static_cast<uint32_t>(row * kUnitBytes + 34 * j + 2 + col);
}
// The raw copy task q (0 .. kRawCopies - 1): row q / 17, 16-byte chunk q % 17 of the row's 272 bytes.
WG_HD void raw_task(int q, int& row, int& chunk) { row = q / 17, chunk = q - 17 * (q / 17); }
// The activation copy task v (0 .. kXCopies - 1) of thread tid: term v / 4, token tid / 8 + 32 (v % 4),
// chunk tid % 8 (8 consecutive lanes copy one token's 128 contiguous bytes).
WG_HD void x_task(int tid, int v, int& term, int& tok, int& chunk) {
  term = v >> 2, tok = (tid >> 3) + 32 * (v & 3), chunk = tid & 7;
}

// ---- Float weights (F16, BF16): a chunk's 128 rows x 64 columns (128 bytes a row, like a token's
// activations) are a third tile of the stage, after the two activation terms, in the same 128-byte
// swizzled layout: row r's 16-byte chunk c at b_off(r, c). They are copied by the activation copy tasks
// of term 0 (x_task with v < 4: rows tid / 8 + 32 v, chunk tid % 8) and read into the A fragments by
// ldmatrix, so a stage holds all of a chunk's operands and no raw units exist.
constexpr int kFStageBytes = 3 * kTermBytes;  // x hi, x lo, w: 48 KB
constexpr int kFSmemBytes = kStages * kFStageBytes + 1024;
constexpr int kWCopies = kBM * (kChunkCols / 8) / kThreads;  // 16-byte weight copies a chunk a thread: 4
static_assert(kFSmemBytes <= 227 * 1024, "one block an SM");
static_assert(kWCopies == kXCopies / 2 && kBM == kBN, "the weight copies are term 0's tasks");
// Element (row, col) of a weight tile (col 0..63 of the chunk): its byte offset.
WG_HD uint32_t w_elem_off(int row, int col) { return b_off(row, col >> 3) + 2u * static_cast<uint32_t>(col & 7); }
// ldmatrix.x4 of k16 step s of k-tile half h (columns 32 h + 16 s ..): lane l gives the row address of
// matrix l / 8, rows 16 w + l % 16 of warp w's 16 (in the block: 64 wg + ..), the 8 columns from
// 32 h + 16 s + 8 (l / 16). Matrices 0..3 are then the A registers 0..3 of the m64k16 fragment (rows + 8
// for odd r, columns + 8 for r >= 2), each lane receiving row l / 4, columns 2 (l % 4) + {0, 1}.
WG_HD uint32_t a_ldm_off(int wg, int warp_in_wg, int lane, int h, int s) {
  return b_off(64 * wg + 16 * warp_in_wg + (lane & 15), 4 * h + 2 * s + (lane >> 4));
}

// ---- The pipeline, per iteration of 2 chunks (c, c + 1 = k-tiles 2c .. 2c + 3): chunk c's activations go to
// stage c % 4, and chunk 4u also brings raw unit u into buffer u % 2, all in one commit group issued one
// iteration ahead. Iteration c: wait for every group (this iteration's landed), barrier, issue chunks
// c + 2, c + 3 into the stages of chunks c - 2, c - 1 (the previous iteration waited for all its wgmma
// before the barrier, so they are free), then the 4 k-tiles. Raw buffer u % 2, issued at the iteration of
// chunk 4u - 2, was last read by chunk 4u - 5. Float weights travel with their chunk's activations.
WG_HD int stage_of(int chunk) { return chunk % kStages; }
WG_HD int raw_buf_of(int chunk) { return (chunk / kChunksPerUnit) & 1; }

// ---- Dense tile order: block b -> (row block rb, token tile tt); row blocks vary fastest inside bands of
// 2048 rows, so the blocks resident at once share a band's weights and a few token tiles through L2.
constexpr int kBandRows = 2048, kBand = kBandRows / kBM;
WG_HD void dense_tile(int b, int n_rb, int n_tt, int& rb, int& tt) {
  const int band = b / (kBand * n_tt), in = b - band * kBand * n_tt;
  const int rows = n_rb - band * kBand < kBand ? n_rb - band * kBand : kBand;
  rb = band * kBand + in % rows, tt = in / rows;
}

}  // namespace flashstar::cuda::wgmma_q8
