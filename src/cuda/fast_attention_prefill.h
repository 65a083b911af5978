// The prefill attention kernel's geometry (fast_attention_prefill.cu), host- and device-compilable so
// that the CPU tests can replay the kernel's fragment bookkeeping lane by lane (tests/cuda/
// test_attention_prefill.cpp) with the same index functions the kernel uses.
//
// One block per query: its 64 heads are the M side, its rows (RowMap order) stream through in tiles of
// kTile. Warp w owns heads 16 (w / 2) .. + 15 and output dims 256 (w % 2) .. + 255; the score partials
// of the two warps of a head group (each over its 256 dims) meet in shared memory.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FS_AP_HD __host__ __device__ __forceinline__
#else
#define FS_AP_HD inline
#endif

namespace flashstar::cuda::fast::attn_prefill {

constexpr int kHeads = 64, kDim = 512;
constexpr int kTile = 32;                  // rows a tile
constexpr int kWarps = 8, kThreads = 32 * kWarps;
constexpr int kHalfDim = kDim / 2;         // dims of a warp (scores partial, output slice)
constexpr int kLd = kDim + 8;              // halves a shared row: +16 bytes puts 8 consecutive rows on distinct banks
constexpr int kSteps = kHalfDim / 16;      // k16 steps of a warp's score partial
constexpr int kOutTiles = kHalfDim / 8;    // n8 tiles of a warp's output slice
constexpr int kSTiles = kTile / 8;         // n8 tiles of a score tile

// Shared memory (bytes): Q hi and lo [64][kLd] halves each, two row buffers [kTile][kLd] halves, the
// score partials (a warp: 4 float4 per lane), row pointers of 4 tiles.
constexpr int kQOff = 0, kQBytes = kHeads * kLd * 2;
constexpr int kKOff = 2 * kQBytes, kKBytes = kTile * kLd * 2;
constexpr int kXOff = kKOff + 2 * kKBytes, kXBytes = kWarps * 16 * kTile * 4;
constexpr int kPOff = kXOff + kXBytes, kPtrSlots = 4;
constexpr int kSmemBytes = kPOff + kPtrSlots * kTile * 8;
static_assert(kSmemBytes <= 227 * 1024, "one block per SM");
static_assert(kXOff % 16 == 0 && kPOff % 16 == 0 && kKOff % 16 == 0, "aligned pieces");

// Staging (Q rows and row tiles): in round i, thread tid moves the float4 at column tid % 128 of row
// base + 2 i + tid / 128; 8 rounds cover 16 rows.
constexpr int kStageRounds = 8;
static_assert(kTile == 2 * (2 * kStageRounds) && kThreads == 256, "a tile is two staging blocks of 16 rows");
FS_AP_HD int stage_row(int tid, int i) { return 2 * i + (tid >> 7); }
FS_AP_HD int stage_col4(int tid) { return tid & 127; }

// Warp roles.
FS_AP_HD int warp_heads(int warp) { return 16 * (warp >> 1); }
FS_AP_HD int warp_dims(int warp) { return kHalfDim * (warp & 1); }

// ldmatrix.x4 lane addresses (in halves) into a row-major [rows][kLd] array:
// A operand (16 rows m0.. x 16 columns k0..): matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7),
// (rows 0-7, k 8-15), (rows 8-15, k 8-15) = a0..a3 of mma.m16n8k16.
FS_AP_HD int a_frag_off(int lane, int m0, int k0) { return (m0 + (lane & 15)) * kLd + k0 + (lane >> 4) * 8; }
// B operand from rows n0..n0+15 holding k along the row (non-transposed): b0, b1 of the n8 tile of rows
// n0..n0+7, then b0, b1 of rows n0+8..n0+15.
FS_AP_HD int b_frag_off(int lane, int n0, int k0) {
  return (n0 + (lane & 7) + ((lane >> 4) << 3)) * kLd + k0 + ((lane >> 3) & 1) * 8;
}
// B operand from rows k0..k0+15 holding n along the row (ldmatrix .trans): b0, b1 of the n8 tile of
// columns n0..n0+7, then b0, b1 of columns n0+8..n0+15.
FS_AP_HD int bt_frag_off(int lane, int k0, int n0) {
  return (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * kLd + n0 + (lane >> 4) * 8;
}
// The accumulator fragment: element i of a lane is (row, column) of the m16 x n8 tile.
FS_AP_HD int c_row(int lane, int i) { return (lane >> 2) + 8 * (i >> 1); }
FS_AP_HD int c_col(int lane, int i) { return 2 * (lane & 3) + (i & 1); }

}  // namespace flashstar::cuda::fast::attn_prefill

#undef FS_AP_HD
