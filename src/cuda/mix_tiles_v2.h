// The work map of the second prefill mixer kernel (mix_tiles_v2.cuh), host and device, so that a CPU
// test (tests/test_mix_tiles_v2_map.cpp) can replay it against the first kernel's map without a GPU.
//
// Why this map: the first kernel (prefill_small.cu) gave each warp one column warp c of 8 rows x 8
// tokens, so each of 3 row blocks re-read the same tokens' 64 KB rows and a thread held 64 accumulators
// plus 64 unpacked weights (one block an SM, the activation loads exposed). Here a block takes all 24
// rows of 32 tokens and each warp 4 of those tokens: every activation element is read once, by the one
// lane that uses it for all 24 rows. A warp plays the column warps c = 0, 1, ... in turn (each lane
// forms the partial of (c, lane) for its 24 x 4 outputs, then the xor tree), and keeps the running
// column-warp sum of its outputs spread over its lanes. All warps of a block play the same (c, tile)
// at the same time, so that step's weights (24 rows x kFUnits units x 32 lanes, 24 KB for 16-byte
// units) are staged once in shared memory for the 8 warps.
#pragma once
#include <cstdint>

#include "cuda/float_geom.h"

namespace flashstar::cuda::fast::mix2 {

constexpr int kRows = 24;                   // rows a block (the mixer's 24; fewer are clamped, more take row blocks)
constexpr int kWarpTok = 4;                 // tokens a warp
constexpr int kTok = kFWarps * kWarpTok;    // tokens a block
constexpr int kOuts = kRows * kWarpTok;     // outputs a warp (96)
constexpr int kSlots = kOuts / 32;          // column-warp sums a lane holds
constexpr int kStageUnits = kRows * kFUnits * 32;  // 16-byte weight units staged for one (c, tile)
constexpr int kStages = 4;                  // shared-memory ring of those stages
static_assert(kOuts % 32 == 0 && kStageUnits % kFThreads == 0, "a warp's outputs over its lanes");

// Phase p of a block (0 .. wc * tiles_per_row - 1): column warp c, tile; c outer, so a lane's units
// come tile by tile for one c before the next c starts (the first kernel's order within a partial).
struct Phase {
  int c, tile;
};
FS_HD constexpr Phase phase(const FloatGeom& g, int p) { return Phase{p / g.tiles_per_row, p % g.tiles_per_row}; }
FS_HD constexpr int phases(const FloatGeom& g) { return g.wc * g.tiles_per_row; }

// Token slot t (0 .. kWarpTok - 1) of warp w in token block b.
FS_HD constexpr int64_t token(int64_t b, int w, int t) { return b * kTok + static_cast<int64_t>(w) * kWarpTok + t; }

// Output o = r * kWarpTok + t of a warp: its column-warp sum lives in lane o % 32, slot o / 32.
FS_HD constexpr int out_index(int r, int t) { return r * kWarpTok + t; }
FS_HD constexpr int out_lane(int o) { return o % 32; }
FS_HD constexpr int out_slot(int o) { return o / 32; }
// The output a lane stores from its slot s, and that output's row and token slot.
FS_HD constexpr int out_at(int s, int lane) { return s * 32 + lane; }
FS_HD constexpr int out_row(int o) { return o / kWarpTok; }
FS_HD constexpr int out_tok(int o) { return o % kWarpTok; }

// Staged weight unit i (0 .. kStageUnits - 1, thread tid copies i = tid + j * kFThreads): row, unit
// slot u and lane, laid out [row][u][lane] so that a warp's read of one (row, u) is 512 consecutive
// bytes (no bank conflicts).
struct StageUnit {
  int r, u, lane;
};
FS_HD constexpr StageUnit stage_unit(int i) { return StageUnit{i / (kFUnits * 32), i / 32 % kFUnits, i % 32}; }
FS_HD constexpr int stage_index(int r, int u, int lane) { return (r * kFUnits + u) * 32 + lane; }

}  // namespace flashstar::cuda::fast::mix2
