// The float matrix-vector kernel's block geometry (fast_matvec_float.h), without CUDA headers: the
// prefill mixer kernels must form its partials (prefill_small.cu, mix_tiles_v2.cuh), and CPU tests
// (tests/test_mix_tiles_v2_map.cpp) check their work maps against it without a GPU.
#pragma once
#include <cstdint>

#include "common/half.h"

namespace flashstar::cuda::fast {

constexpr int kFThreads = 256, kFWarps = kFThreads / 32;
constexpr int kFRows = 4;   // rows per warp: every activation load serves four rows
constexpr int kFUnits = 2;  // 16-byte weight units per lane per row and tile (kFRows * kFUnits loads in flight)
constexpr int kFMaxTok = 8;  // tokens per block (grid.y groups beyond)
constexpr int kFMaxMats = 6;  // matrices of one launch

// The block layout for rows of `units` 16-byte units: wc warps side by side along the columns (enough
// to cover a row once, at most all of them), the other warps stacked over rows.
struct FloatGeom {
  int wc, wr, rows_per_block, tile_units, tiles_per_row;
};
FS_HD constexpr FloatGeom float_geom(int64_t units) {
  int wc = 1;
  while (wc < kFWarps && static_cast<int64_t>(wc) * 32 * kFUnits < units) wc *= 2;
  const int wr = kFWarps / wc, tile = wc * 32 * kFUnits;
  return FloatGeom{wc, wr, wr * kFRows, tile, static_cast<int>((units + tile - 1) / tile)};
}
// Unit (column / elements-per-unit) that lane `lane` of column warp c loads as its u-th unit of a tile:
// a warp's 32 lanes read 512 consecutive bytes of a row per load.
FS_HD constexpr int64_t float_unit(const FloatGeom& g, int tile, int c, int u, int lane) {
  return static_cast<int64_t>(tile) * g.tile_units + (c * kFUnits + u) * 32 + lane;
}
// Column parts of a matrix with row_blocks row blocks: enough blocks for two per multiprocessor, never
// more parts than tiles. Depends on the matrix and the device alone (not on the token count); used for
// products of up to kFMaxTok tokens (one part beyond).
FS_HD constexpr int float_parts(const FloatGeom& g, int64_t row_blocks, int sms) {
  const int64_t want = (2 * static_cast<int64_t>(sms) + row_blocks - 1) / row_blocks;
  return static_cast<int>(want < 1 ? 1 : (want < g.tiles_per_row ? want : g.tiles_per_row));
}

}  // namespace flashstar::cuda::fast
