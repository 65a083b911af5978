// The second prefill mixer kernel's work map (src/cuda/mix_tiles_v2.h) against the first kernel's
// (prefill_small.cu: mix_tiles_kernel), replayed on the host without a GPU. Each lane's accumulator is
// followed as the ordered list of its terms (which weight row and unit, which token's activation and
// unit, or the +0 of a unit past the row), the xor tree as the 32 lanes' lists of one column warp in
// lane order, and an output as its column-warp sums in order, the first one assigned. The kernels' bits
// are those of that structure (the arithmetic of each step is written the same way in both kernels), so
// equal structures for every stored output mean equal outputs. Lists are kept as order-sensitive hashes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/float_geom.h"
#include "cuda/mix_tiles_v2.h"

using namespace flashstar::cuda::fast;

namespace {

// The first kernel's block: kMixRows rows x kMixTok tokens (prefill_small.cu).
constexpr int kMixRows = 8, kMixTok = 8;

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}
constexpr uint64_t kSeed = 0x1234567ull;  // an accumulator's acc = 0

// One multiplicand: a matrix row's unit (weights) or a token's unit (activations); row / token -1 is a
// zero operand.
struct Operand {
  int64_t who = -1, unit = -1;
};
uint64_t term(const Operand& w, const Operand& x) {
  if (w.who < 0 && x.who < 0) return 7;  // 0 * 0: the +0 chain of a unit past the row
  return mix(mix(mix(mix(11, static_cast<uint64_t>(w.who)), static_cast<uint64_t>(w.unit)), static_cast<uint64_t>(x.who)),
             static_cast<uint64_t>(x.unit));
}
// A column warp's tree: its c, whether it is the first of the output's sum (assigned, not added), and
// the 32 lanes' accumulators in lane order.
uint64_t tree(int c, bool first, const uint64_t* lanes) {
  uint64_t h = mix(mix(13, static_cast<uint64_t>(c)), first ? 1 : 2);
  for (int l = 0; l < 32; ++l) h = mix(h, lanes[l]);
  return h;
}

struct Shape {
  int64_t units;
  int rows;
  int64_t n;
};

// What each stored output is: the trees of its column-warp sum in order. Empty: not stored; a second
// store fails the test.
using Outputs = std::vector<std::vector<uint64_t>>;

Outputs first_kernel(const Shape& s) {
  const FloatGeom g = float_geom(s.units);
  const int wc = g.wc, R = kMixRows * wc / kFWarps;
  Outputs out(static_cast<size_t>(s.rows * s.n));
  for (int bx = 0; bx * kMixRows < s.rows; ++bx)
    for (int64_t by = 0; by * kMixTok < s.n; ++by) {
      const int nt = static_cast<int>(std::min<int64_t>(kMixTok, s.n - by * kMixTok));
      // acc[warp][r][t][lane]
      std::vector<uint64_t> acc(static_cast<size_t>(kFWarps * R * kMixTok * 32), kSeed);
      auto at = [&](int w, int r, int t, int l) -> uint64_t& { return acc[((w * R + r) * kMixTok + t) * 32 + l]; };
      for (int w = 0; w < kFWarps; ++w) {
        const int c = w % wc, row_base = bx * kMixRows + (w / wc) * R;
        for (int tile = 0; tile < g.tiles_per_row; ++tile)
          for (int u = 0; u < kFUnits; ++u)
            for (int l = 0; l < 32; ++l) {
              const int64_t unit = float_unit(g, tile, c, u, l);
              const bool on = unit < s.units;
              for (int r = 0; r < R; ++r) {
                const Operand wt = on ? Operand{std::min(row_base + r, s.rows - 1), unit} : Operand{};
                for (int t = 0; t < kMixTok; ++t) {
                  const Operand xt = on && t < nt ? Operand{by * kMixTok + t, unit} : Operand{};
                  at(w, r, t, l) = mix(at(w, r, t, l), term(wt, xt));
                }
              }
            }
      }
      for (int o = 0; o < kMixRows * kMixTok; ++o) {
        const int rl = o % kMixRows, t = o / kMixRows, wr = rl / R, r = rl % R, row = bx * kMixRows + rl;
        if (t >= nt || row >= s.rows) continue;
        std::vector<uint64_t> v;
        for (int cc = 0; cc < wc; ++cc) v.push_back(tree(cc, cc == 0, &at(wr * wc + cc, r, t, 0)));
        auto& dst = out[static_cast<size_t>((by * kMixTok + t) * s.rows + row)];
        EXPECT_TRUE(dst.empty()) << "stored twice";
        dst = v;
      }
    }
  return out;
}

Outputs second_kernel(const Shape& s) {
  using namespace mix2;
  const FloatGeom g = float_geom(s.units);
  const int np = phases(g);
  Outputs out(static_cast<size_t>(s.rows * s.n));
  for (int bx = 0; bx * kRows < s.rows; ++bx)
    for (int64_t by = 0; by * kTok < s.n; ++by) {
      const int row_base = bx * kRows;
      std::vector<std::vector<Operand>> ring(kStages, std::vector<Operand>(kStageUnits));
      auto stage = [&](int p) {
        const Phase ph = phase(g, p);
        std::vector<int> written(kStageUnits, 0);
        for (int i = 0; i < kStageUnits; ++i) {
          const StageUnit su = stage_unit(i);
          const int64_t unit = float_unit(g, ph.tile, ph.c, su.u, su.lane);
          const int idx = stage_index(su.r, su.u, su.lane);
          ASSERT_TRUE(idx >= 0 && idx < kStageUnits && !written[idx]++);
          ring[p % kStages][idx] =
              unit < s.units ? Operand{std::min(row_base + su.r, s.rows - 1), unit} : Operand{};  // zero-filled copy
        }
      };
      for (int p = 0; p < kStages - 1 && p < np; ++p) stage(p);
      // acc[warp][r][t][lane]; tot[warp][lane][slot]: the column-warp sums a lane keeps
      std::vector<uint64_t> acc(static_cast<size_t>(kFWarps * kOuts * 32), kSeed);
      auto at = [&](int w, int r, int t, int l) -> uint64_t& { return acc[((w * kRows + r) * kWarpTok + t) * 32 + l]; };
      std::vector<std::vector<uint64_t>> tot(static_cast<size_t>(kFWarps * 32 * kSlots));
      for (int p = 0; p < np; ++p) {
        if (p + kStages - 1 < np) stage(p + kStages - 1);  // after the barrier, before this phase's products
        const Phase ph = phase(g, p);
        for (int w = 0; w < kFWarps; ++w) {
          const int64_t tw = token(by, w, 0);
          const int nt = static_cast<int>(std::clamp<int64_t>(s.n - tw, 0, kWarpTok));
          if (ph.tile == 0) std::fill(&at(w, 0, 0, 0), &at(w, 0, 0, 0) + kOuts * 32, kSeed);
          for (int u = 0; u < kFUnits; ++u)
            for (int l = 0; l < 32; ++l) {
              const int64_t unit = float_unit(g, ph.tile, ph.c, u, l);
              const bool on = unit < s.units;
              for (int r = 0; r < kRows; ++r) {
                const Operand wt = ring[p % kStages][stage_index(r, u, l)];
                for (int t = 0; t < kWarpTok; ++t) {
                  const Operand xt = on && t < nt ? Operand{tw + t, unit} : Operand{};
                  at(w, r, t, l) = mix(at(w, r, t, l), term(wt, xt));
                }
              }
            }
          if (ph.tile != g.tiles_per_row - 1) continue;
          for (int r = 0; r < kRows; ++r)
            for (int t = 0; t < kWarpTok; ++t) {
              const int o = out_index(r, t);
              auto& dst = tot[static_cast<size_t>((w * 32 + out_lane(o)) * kSlots + out_slot(o))];
              if (ph.c == 0) dst.clear();  // assigned
              dst.push_back(tree(ph.c, ph.c == 0, &at(w, r, t, 0)));
            }
        }
      }
      for (int w = 0; w < kFWarps; ++w) {
        const int64_t tw = token(by, w, 0);
        const int nt = static_cast<int>(std::clamp<int64_t>(s.n - tw, 0, kWarpTok));
        for (int sl = 0; sl < kSlots; ++sl)
          for (int l = 0; l < 32; ++l) {
            const int o = out_at(sl, l), row = row_base + out_row(o), t = out_tok(o);
            EXPECT_EQ(out_lane(o), l);
            EXPECT_EQ(out_slot(o), sl);
            EXPECT_EQ(out_index(out_row(o), out_tok(o)), o);
            if (row >= s.rows || t >= nt) continue;
            auto& dst = out[static_cast<size_t>((tw + t) * s.rows + row)];
            EXPECT_TRUE(dst.empty()) << "stored twice";
            dst = tot[static_cast<size_t>((w * 32 + l) * kSlots + sl)];
          }
      }
    }
  return out;
}

}  // namespace

// Units per row: the model's mixer (16384 columns: 2048 F16 / BF16 units, 4096 F32), the test's 1032-wide
// streams (516 and 1032: a ragged last tile), 256 and 64 (2 and 1 column warps, and fewer units than a
// tile); 24 rows, 13 (clamped rows) and 30 (a second row block); token counts across block edges.
TEST(MixTilesV2Map, EveryOutputSumsTheFirstKernelsPartialsInItsOrder) {
  for (int64_t units : {2048, 4096, 516, 1032, 128, 256, 32, 64, 1})
    for (int rows : {24, 13, 30})
      for (int64_t n : {1, 17, 40, 72}) {
        const Shape s{units, rows, n};
        const Outputs a = first_kernel(s), b = second_kernel(s);
        size_t stored = 0, differ = 0;
        for (size_t i = 0; i < a.size(); ++i) {
          stored += !b[i].empty();
          differ += a[i] != b[i];
        }
        EXPECT_EQ(stored, a.size()) << units << " units, " << rows << " rows, " << n << " tokens";
        EXPECT_EQ(differ, 0u) << units << " units, " << rows << " rows, " << n << " tokens";
      }
}

// The trace tells outputs apart (a map that swapped rows, tokens or units would not pass).
TEST(MixTilesV2Map, TracesOfDistinctOutputsDiffer) {
  const Outputs a = first_kernel(Shape{2048, 24, 9});
  for (size_t i = 1; i < a.size(); ++i) EXPECT_NE(a[i], a[0]) << i;
}
