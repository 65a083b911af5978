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

}  // namespace flashstar::cuda::wgmma_group
