// Index maps of the prefill indexer-score kernel (fast_indexer_prefill.cu), host and device: which
// shared-memory rows each lane's ldmatrix reads, which (row, head) each accumulator register holds, and
// which row a lane writes. They live here so that a host-compiled warp simulation
// (tests/test_indexer_prefill_map.cpp) can check them against the PTX fragment layouts without a GPU.
//
// The product is rows x heads: the index rows are the M side (A operand, K tile), a query's 64 heads
// the N side (B operand). The heads are permuted on the N side so that lane q of each quad ends up with
// the 16 consecutive heads 16q..16q+15 of its rows: the head-ordered sum then runs as a 4-hop chain
// across the quad (fast_indexer_prefill.cu: epilogue).
#pragma once
#include <cstdint>

#include "common/half.h"

namespace flashstar::cuda::ipf {

constexpr int kHeads = 64;                // indexer heads (N side, one query)
constexpr int kDim = 128;                 // head dim = the whole K of the product
constexpr int kQG = 4;                    // queries per block (consecutive)
constexpr int kTR = 64;                   // index rows per tile
constexpr int kThreads = 256;             // 8 warps: warp w takes query w / 2 and rows 32 (w % 2)..+31
constexpr int kLd = kDim + 8;             // smem row stride in halves (272 B): ldmatrix rows on distinct banks
constexpr int kQRows = kQG * kHeads;      // staged query-head rows
constexpr int kChunksPerRow = kDim / 8;   // 16-byte chunks (8 halves) of a staged row
constexpr int kKChunks = kTR * kChunksPerRow / kThreads;     // chunks of a K tile per thread (4)
constexpr int kQChunks = kQRows * kChunksPerRow / kThreads;  // chunks of the Q stage per thread (16)
// halves of dynamic shared memory: Q hi, Q lo, then K hi and K lo of two tile buffers
constexpr int kSmemHalves = 2 * kQRows * kLd + 2 * 2 * kTR * kLd;
constexpr int kSmemBytes = kSmemHalves * 2;

// Staging: chunk c (c = tid + j * kThreads) covers row c / 16, values (c % 16) * 8 .. +7.
FS_HD int chunk_row(int c) { return c >> 4; }
FS_HD int chunk_col(int c) { return (c & 15) * 8; }

// Head placed at row j (0..7) of the B operand's n-tile nt (0..7): C column 2q + e of that n-tile
// then holds head 16q + 2nt + e. Q is staged in that order (smem row 8 nt + j of a query holds head
// b_head(nt, j)), so that the 8 rows an ldmatrix reads are consecutive: in head order they would be 16
// heads apart, 4 of them on one bank group.
FS_HD int b_head(int nt, int j) { return 16 * (j >> 1) + 2 * nt + (j & 1); }
FS_HD int q_row_head(int p) { return b_head(p >> 3, p & 7); }

// ldmatrix.x4 addresses. A (rows of the K tile) for m-tile mt (16 rows): matrices (rows 0-7, k 0-7),
// (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) = the a0..a3 fragments.
FS_HD int a_ldsm_row(int lane, int mt) { return mt * 16 + (lane & 15); }
FS_HD int a_ldsm_col(int lane) { return (lane >> 4) * 8; }
// B (the warp's query's staged Q rows) for n-tiles 2nj and 2nj + 1: matrices (nt 2nj, k 0-7),
// (2nj, k 8-15), (2nj + 1, k 0-7), (2nj + 1, k 8-15) = b0, b1 of n-tile 2nj, then of n-tile 2nj + 1.
FS_HD int b_ldsm_row(int lane, int nj) { return (2 * nj + (lane >> 4)) * 8 + (lane & 7); }
FS_HD int b_ldsm_col(int lane) { return ((lane >> 3) & 1) * 8; }

// Accumulator acc[mt][nt][c] of a lane: row (within the warp's 32) and head.
FS_HD int acc_row(int lane, int mt, int c) { return mt * 16 + (lane >> 2) + 8 * (c >> 1); }
FS_HD int acc_head(int lane, int nt, int c) { return 16 * (lane & 3) + 2 * nt + (c & 1); }

// Row slot s = 2 mt + hh of a lane (hh: c >> 1) and the slot a lane writes after the chain (its quad
// index): 32 lanes, 32 distinct rows.
FS_HD int slot_row(int lane, int s) { return (s >> 1) * 16 + (lane >> 2) + 8 * (s & 1); }
FS_HD int write_slot(int lane) { return lane & 3; }

}  // namespace flashstar::cuda::ipf
