// The routed-expert kernel's work split and weight staging (fast_expert_plan.h), checked on the CPU (no
// device): the copy groups replayed lane by lane against whole rows (every block's bytes in its buffer once
// its group has landed, no copy outside the row or the buffer), and the split of real and random shapes
// (warps within the launch bounds, shared memory within the budget, every chunk in exactly one part).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "cuda/fast_expert_plan.h"

using namespace flashstar;
using namespace flashstar::cuda::fast;

namespace {

constexpr int kSms = 132;
constexpr size_t kSmem = 232448;  // H200: 227 KB a block

// Replays stage() for chunk c of 16 rows of nb blocks (rows 16-byte aligned): which copy group brought each
// buffer byte, and checks that block i of every row lies at delta + i * kBytes once groups 0..i have landed.
template <GgmlType T>
void replay_chunk(int nb, int c) {
  using F = eplan::Fmt<T>;
  const int row_bytes = nb * F::kBytes, CS = (F::kChunk * F::kBytes + F::kSlack + 15) / 16 * 16;
  ASSERT_EQ(row_bytes % 16, 0);
  const int coff = c * F::kChunk * F::kBytes, delta = F::delta(c);
  ASSERT_EQ((coff - delta) % 16, 0) << "copies start on a 16-byte boundary";
  std::vector<int> src(16 * CS, -1), group(16 * CS, -1);  // row byte offset / group per buffer byte
  for (int lane = 0; lane < 32; ++lane) {
    const int r = lane & 15, h = lane >> 4;
    for (int i = 0; i < F::kChunk; ++i)
      for (int k = F::first(i); k < F::first(i + 1); ++k) {
        if ((k & 1) != h) continue;
        const int s = coff - delta + 16 * k;
        ASSERT_GE(s, 0);
        ASSERT_LE(s + 16, row_bytes) << "copy past the row, chunk " << c;
        ASSERT_LE(16 * k + 16, CS) << "copy past the buffer row";
        for (int b = 0; b < 16; ++b) {
          ASSERT_EQ(group[r * CS + 16 * k + b], -1) << "byte copied twice";
          src[r * CS + 16 * k + b] = s + b, group[r * CS + 16 * k + b] = i;
        }
      }
  }
  for (int r = 0; r < 16; ++r)
    for (int i = 0; i < F::kChunk && c * F::kChunk + i < nb; ++i)
      for (int b = 0; b < F::kBytes; ++b) {
        const int o = r * CS + delta + i * F::kBytes + b;
        EXPECT_EQ(src[o], coff + i * F::kBytes + b);
        EXPECT_LE(group[o], i) << "block " << i << " needs a later group";
      }
}

}  // namespace

TEST(ExpertPlan, CopyGroupsDeliverEveryBlock) {
  for (int nb : {8, 16, 24, 64})
    for (int c = 0; c < nb / 4; ++c) replay_chunk<GgmlType::IQ2_XXS>(nb, c);
  for (int nb : {4, 8, 12})
    for (int c = 0; c < nb / 4; ++c) replay_chunk<GgmlType::Q2_K>(nb, c);
  EXPECT_EQ(eplan::Fmt<GgmlType::IQ2_XXS>::delta(1), 8);
  EXPECT_EQ(eplan::Fmt<GgmlType::IQ2_XXS>::delta(2), 0);
  EXPECT_EQ(eplan::Fmt<GgmlType::Q2_K>::delta(1), 0);
}

TEST(ExpertPlan, DecodeShapes) {
  eplan::Split s;
  // gate / up: 6 experts of 2048 x 4096 IQ2_XXS on one token: 6 items x 4 parts, one block an SM.
  ASSERT_TRUE(eplan::plan<GgmlType::IQ2_XXS>(2048, 6, 6, 16, 1, kSms, kSmem, s));
  EXPECT_EQ(s.G, 6);
  EXPECT_EQ(s.T, 1);
  EXPECT_EQ(s.KS, 4);
  EXPECT_EQ(s.cpp, 1);
  EXPECT_EQ(s.NS, 1);
  EXPECT_EQ(s.CS, 272);
  EXPECT_EQ(s.warps(), 24);
  EXPECT_EQ(s.smem, 171584u);  // sign 16 KB + grid 32 KB + digits 16 KB + 64 + parts 1.5 KB + 24 x 4352 ring
  EXPECT_GT(2 * s.smem, kSmem) << "one block an SM by design";
  // Eight tokens: the same split, eight activation rows.
  ASSERT_TRUE(eplan::plan<GgmlType::IQ2_XXS>(2048, 48, 6, 16, 8, kSms, kSmem, s));
  EXPECT_EQ(s.warps(), 24);
  // down: 6 experts of 4096 x 2048 Q2_K, an activation row per item: unchanged (4 tiles x 2 parts, 52 256
  // bytes, three blocks an SM).
  ASSERT_TRUE(eplan::plan<GgmlType::Q2_K>(4096, 6, 1, 8, 6, kSms, kSmem, s));
  EXPECT_EQ(s.G, 1);
  EXPECT_EQ(s.T, 4);
  EXPECT_EQ(s.KS, 2);
  EXPECT_EQ(s.CS, 336);
  EXPECT_EQ(s.smem, 52256u);
}

TEST(ExpertPlan, RandomShapesFitAndCoverEveryChunk) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> nbd(1, 80), rowsd(1, 5000), itemsd(1, 100), divd(1, 12);
  for (int trial = 0; trial < 4000; ++trial) {
    const bool iq2 = trial & 1;
    const int nb = nbd(rng), rows = rowsd(rng), items = itemsd(rng), div = divd(rng);
    const size_t smem = trial % 3 == 0 ? 101376 : kSmem;  // also a smaller card's budget
    const int64_t groups = eplan::cdiv(items, div);
    eplan::Split s;
    const bool ok = iq2 ? eplan::plan<GgmlType::IQ2_XXS>(rows, items, div, nb, groups, kSms, smem, s)
                        : eplan::plan<GgmlType::Q2_K>(rows, items, div, nb, groups, kSms, smem, s);
    if (!ok) continue;
    ASSERT_LE(s.smem, smem);
    ASSERT_GE(s.warps(), 1);
    ASSERT_LE(s.warps(), iq2 ? eplan::kMaxWarps<GgmlType::IQ2_XXS> : eplan::kMaxWarps<GgmlType::Q2_K>);
    ASSERT_GE(s.NS, 1);
    ASSERT_LE(s.NS, s.cpp);
    ASSERT_EQ(s.CB, 4);
    ASSERT_GE(s.CS, std::min(4, nb) * (iq2 ? 66 : 84));
    std::vector<int> seen(s.nchunk, 0);
    for (int kp = 0; kp < s.KS; ++kp) {
      const int c0 = kp * s.cpp, nc = std::max(0, std::min(s.nchunk, c0 + s.cpp) - c0);
      for (int j = 0; j < nc; ++j) ++seen[c0 + j];
    }
    for (int c = 0; c < s.nchunk; ++c) ASSERT_EQ(seen[c], 1) << "chunk " << c;
    // Item chunks of a group: G items each, every item of the group in one.
    ASSERT_GE(static_cast<int64_t>(s.cpg) * s.G, std::min<int64_t>(div, items));
  }
}

// The fused gate + up splits (plan_pair): decode shapes of both modes, and on random shapes the plain
// plan's column parts (so each row sums in the same order, the bitwise equality the fused launch claims),
// warps within the launch bounds (mode 2: kPairWarps), shared memory within the budget, every item
// of a group in one item chunk.
TEST(ExpertPlan, PairDecodeShapes) {
  eplan::Split s;
  // Mode 1: 3 items x 2 matrices x 4 parts (24 warps, the plain block's), 128 x 2 blocks.
  ASSERT_TRUE(eplan::plan_pair<GgmlType::IQ2_XXS>(1, 2048, 6, 6, 16, 1, kSms, kSmem, kSmem, s));
  EXPECT_EQ(s.M, 2);
  EXPECT_EQ(s.G, 3);
  EXPECT_EQ(s.T, 1);
  EXPECT_EQ(s.KS, 4);
  EXPECT_EQ(s.cpg, 2);
  EXPECT_EQ(s.NS, 1);
  EXPECT_EQ(s.warps(), 24);
  EXPECT_EQ(s.smem, 171584u + 384u);  // the plain block + both matrices' 3 x 16 row sums
  // Mode 2: a block per matrix, 2 items x 4 parts (8 warps), two blocks an SM; 2 x 128 x 3 blocks.
  ASSERT_TRUE(eplan::plan_pair<GgmlType::IQ2_XXS>(2, 2048, 6, 6, 16, 1, kSms, kSmem, kSmem - 16, s));
  EXPECT_EQ(s.M, 1);
  EXPECT_EQ(s.G, 2);
  EXPECT_EQ(s.KS, 4);
  EXPECT_EQ(s.cpg, 3);
  EXPECT_EQ(s.warps(), 8);
  EXPECT_EQ(s.smem, 100928u);
  EXPECT_LE(2 * (s.smem + 1024), kSmem + 1024) << "two blocks an SM";
  // Q2_K gate / up (2 parts in the plain plan): mode 1 3 items x 2 x 2, mode 2 3 items x 2.
  ASSERT_TRUE(eplan::plan_pair<GgmlType::Q2_K>(1, 2048, 6, 6, 16, 1, kSms, kSmem, kSmem, s));
  EXPECT_EQ(s.KS, 2);
  EXPECT_EQ(s.warps(), 12);
  ASSERT_TRUE(eplan::plan_pair<GgmlType::Q2_K>(2, 2048, 6, 6, 16, 1, kSms, kSmem, kSmem, s));
  EXPECT_EQ(s.KS, 2);
  EXPECT_EQ(s.warps(), 6);
  EXPECT_FALSE(eplan::plan_pair<GgmlType::IQ2_XXS>(0, 2048, 6, 6, 16, 1, kSms, kSmem, kSmem, s));
}

TEST(ExpertPlan, PairKeepsThePlainColumnParts) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> nbd(1, 80), rowsd(1, 5000), itemsd(1, 100), divd(1, 12);
  int fused = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    const bool iq2 = trial & 1;
    const int pair = 1 + (trial >> 1 & 1);
    const int nb = nbd(rng), rows = rowsd(rng), items = itemsd(rng), div = divd(rng);
    const size_t smem = trial % 3 == 0 ? 101376 : kSmem, budget = smem - 16 * (pair == 2);
    const int64_t groups = eplan::cdiv(items, div);
    eplan::Split plain, s;
    const bool ok = iq2 ? eplan::plan_pair<GgmlType::IQ2_XXS>(pair, rows, items, div, nb, groups, kSms, smem, budget, s)
                        : eplan::plan_pair<GgmlType::Q2_K>(pair, rows, items, div, nb, groups, kSms, smem, budget, s);
    const bool plain_ok = iq2 ? eplan::plan<GgmlType::IQ2_XXS>(rows, items, div, nb, groups, kSms, smem, plain)
                              : eplan::plan<GgmlType::Q2_K>(rows, items, div, nb, groups, kSms, smem, plain);
    if (!plain_ok) {
      ASSERT_FALSE(ok);
    }
    if (!ok) continue;
    ++fused;
    ASSERT_EQ(s.KS, plain.KS);
    ASSERT_EQ(s.cpp, plain.cpp);
    ASSERT_EQ(s.nchunk, plain.nchunk);
    ASSERT_EQ(s.M, pair == 1 ? 2 : 1);
    ASSERT_LE(s.smem, budget);
    ASSERT_LE(s.warps(), pair == 2 ? eplan::kPairWarps
                                   : iq2 ? eplan::kMaxWarps<GgmlType::IQ2_XXS> : eplan::kMaxWarps<GgmlType::Q2_K>);
    ASSERT_GE(s.NS, 1);
    ASSERT_LE(s.NS, s.cpp);
    ASSERT_GE(static_cast<int64_t>(s.cpg) * s.G, std::min<int64_t>(div, items));
    ASSERT_GE(s.off_ring - s.off_res, pair == 1 ? 2 * s.G * s.T * 16 * 4 : 0);
  }
  EXPECT_GT(fused, 3000);
}

// Line staging (FLASHSTAR_EXPERT_V=1 / 2, eplan::Lines) replayed lane by lane: rows at every 16-byte phase
// of a line and row strides of every residue, the pieces Fmt copies and nothing else, each byte once,
// every block's bytes in groups 0..need(b), a row's lanes within one line window, and a quarter warp's
// 16-byte shared-memory writes in distinct banks (buffer rows CS apart, CS / 16 odd).
namespace {
template <GgmlType T, int kLpr>
void replay_lines(int nb, int c, uint64_t base, int rpm) {
  using F = eplan::Fmt<T>;
  using Ln = eplan::Lines<T, kLpr>;
  const int row_bytes = nb * F::kBytes, CS = (F::kChunk * F::kBytes + F::kSlack + 15) / 16 * 16;
  ASSERT_EQ(row_bytes % 16, 0);
  ASSERT_EQ(CS / 16 % 2, 1);
  const int delta = F::delta(c), coff = c * F::kChunk * F::kBytes - delta;
  std::vector<int> src(16 * CS, -1), group(16 * CS, -1);
  std::vector<int> lanes_of_row(16, 0);
  for (int q = 0; q < Ln::kGroups; ++q)
    for (int l = 0; l < 32; ++l) ++lanes_of_row[Ln::row(q, l)];
  for (int r = 0; r < 16; ++r) ASSERT_EQ(lanes_of_row[r], kLpr) << "row " << r;
  for (int m = 0; m < Ln::kWindows; ++m)
    for (int q = 0; q < Ln::kGroups; ++q) {
      std::vector<int> bank_use(4 * 32, 0);  // per quarter warp
      for (int l = 0; l < 32; ++l) {
        const int r = Ln::row(q, l), row = std::min(r, rpm - 1);
        const uint64_t s = base + static_cast<uint64_t>(row) * row_bytes + coff;
        const int e = Ln::lane_piece(l, s);
        ASSERT_GT(e, -kLpr);
        ASSERT_LT(e, kLpr);
        if (!Ln::copies(m, e)) continue;
        const int k = kLpr * m + e;
        ASSERT_GE(k, 0);
        ASSERT_LT(k, F::kPieces);
        ASSERT_LE(coff + 16 * k + 16, row_bytes) << "copy past the row";
        ASSERT_LE(16 * k + 16, CS) << "copy past the buffer row";
        const uint64_t ga = s + 16 * k;
        EXPECT_EQ(ga % (16 * kLpr), static_cast<uint64_t>(16 * (l % kLpr))) << "lane outside its line window";
        for (int w = 0; w < 4 && rpm >= 16; ++w) {  // (clamped rows may share a phase-shifted bank set)
          const int bank = ((r * CS + 16 * k) / 4 + w) % 32;
          EXPECT_EQ(bank_use[(l / 8) * 32 + bank]++, 0) << "bank conflict, quarter " << l / 8;
        }
        for (int b = 0; b < 16; ++b) {
          const int o = r * CS + 16 * k + b;
          ASSERT_EQ(group[o], -1) << "byte copied twice";
          src[o] = static_cast<int>(row) * row_bytes + coff + 16 * k + b, group[o] = m;
        }
      }
    }
  for (int r = 0; r < 16; ++r) {
    const int row = std::min(r, rpm - 1);
    for (int k = 0; k < F::kPieces; ++k) EXPECT_NE(group[r * CS + 16 * k], -1) << "piece " << k << " missing";
    for (int i = 0; i < F::kChunk && c * F::kChunk + i < nb; ++i)
      for (int b = 0; b < F::kBytes; ++b) {
        const int o = r * CS + delta + i * F::kBytes + b;
        EXPECT_EQ(src[o], row * row_bytes + c * F::kChunk * F::kBytes + i * F::kBytes + b);
        EXPECT_LE(group[o], Ln::need(i, delta)) << "block " << i << " needs a later group";
      }
  }
}
}  // namespace

TEST(ExpertPlan, LineStagingDeliversEveryBlock) {
  EXPECT_EQ((eplan::Lines<GgmlType::IQ2_XXS, 8>::kWindows), 3);
  EXPECT_EQ((eplan::Lines<GgmlType::Q2_K, 8>::kWindows), 4);
  EXPECT_EQ((eplan::Lines<GgmlType::IQ2_XXS, 4>::kWindows), 5);
  EXPECT_EQ((eplan::Lines<GgmlType::Q2_K, 4>::kWindows), 6);
  for (uint64_t base = 0x10000; base < 0x10000 + 128; base += 16)
    for (int rpm : {16, 5, 1}) {  // rows past the matrix's end read its last row
      for (int nb : {8, 16, 24, 40})
        for (int c = 0; c < nb / 4; ++c) {
          replay_lines<GgmlType::IQ2_XXS, 8>(nb, c, base, rpm);
          replay_lines<GgmlType::IQ2_XXS, 4>(nb, c, base, rpm);
        }
      for (int nb : {4, 8, 12, 20})
        for (int c = 0; c < nb / 4; ++c) {
          replay_lines<GgmlType::Q2_K, 8>(nb, c, base, rpm);
          replay_lines<GgmlType::Q2_K, 4>(nb, c, base, rpm);
        }
    }
}

// The kernel's other conflict-free orders (V >= 1), with its formulas: the digit stores (store i of lane l
// writes digit (i + l / 4) % 4 at step l / 4, 8 bytes at 8 (l % 4) + 32 digit of the step's 128) and the
// Q2_K quant words (lane t of row g reads word 4 + 8 h + 2 t + (t >= 2), then + 1 - 2 (t >= 2), of its row at
// g CS, CS = 336, any block offset): a half warp's 8-byte stores and a warp's words in distinct banks.
TEST(ExpertPlan, DigitStoresAndQ2WordsAvoidBankConflicts) {
  for (int i = 0; i < 4; ++i)
    for (int half = 0; half < 2; ++half) {
      std::vector<int> use(32, 0);
      for (int l = 16 * half; l < 16 * half + 16; ++l) {
        const int n = (i + (l >> 2)) & 3, byte = (l / 4) * 128 + 8 * (l & 3) + 32 * n;
        for (int w = 0; w < 2; ++w) EXPECT_EQ(use[(byte / 4 + w) % 32]++, 0) << "store " << i;
      }
    }
  std::vector<int> seen(4, 0);
  for (int l = 0; l < 32; ++l)  // every lane stores each digit once
    for (int i = 0; i < 4; ++i) seen[(i + (l >> 2)) & 3] += l == 5;
  EXPECT_EQ(seen, std::vector<int>(4, 1));
  const int CS = 336;
  for (int blk = 0; blk < 4; ++blk)
    for (int h = 0; h < 2; ++h)
      for (int second = 0; second < 2; ++second) {
        std::vector<int> use(32, 0);
        for (int l = 0; l < 32; ++l) {
          const int g = l / 4, t = l % 4, sw = t >= 2;
          const int byte = g * CS + blk * 84 + 16 + 32 * h + 8 * t + 4 * (second ? 1 - sw : sw);
          EXPECT_EQ(use[(byte / 4) % 32]++, 0) << "block " << blk << " h " << h;
        }
      }
}

// The warp table the kernel reads (V >= 1) against the divisions it replaces, on random plans of both
// types and fused modes.
TEST(ExpertPlan, WarpWordsMatchTheDivisions) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> nbd(1, 80), rowsd(1, 5000), itemsd(1, 100), divd(1, 12);
  int checked = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const bool iq2 = trial & 1;
    const int pair = trial % 3;
    const int nb = nbd(rng), rows = rowsd(rng), items = itemsd(rng), div = divd(rng);
    const int64_t groups = eplan::cdiv(items, div);
    eplan::Split s;
    bool ok;
    if (pair == 0)
      ok = iq2 ? eplan::plan<GgmlType::IQ2_XXS>(rows, items, div, nb, groups, kSms, kSmem, s)
               : eplan::plan<GgmlType::Q2_K>(rows, items, div, nb, groups, kSms, kSmem, s);
    else
      ok = iq2 ? eplan::plan_pair<GgmlType::IQ2_XXS>(pair, rows, items, div, nb, groups, kSms, kSmem, kSmem, s)
               : eplan::plan_pair<GgmlType::Q2_K>(pair, rows, items, div, nb, groups, kSms, kSmem, kSmem, s);
    if (!ok) continue;
    ASSERT_LE(s.warps(), eplan::kRegWarps);
    ASSERT_LE(s.NS, 2) << "the kernel's wait counts (kMaxAhead) assume two buffers at most";
    for (int w = 0; w < s.warps(); ++w) {
      const eplan::WarpJob j = eplan::warp_job(eplan::warp_word(s, pair, w));
      const int kp = w % s.KS, qm = w / s.KS, gt = s.G * s.T;
      const int m = pair == 1 ? qm / gt : 0, q = pair == 1 ? qm % gt : qm;
      ASSERT_EQ(j.kp, kp);
      ASSERT_EQ(j.qm, qm);
      ASSERT_EQ(j.m, m);
      ASSERT_EQ(j.qi, q / s.T);
      ASSERT_EQ(j.qt, q % s.T);
      ++checked;
    }
  }
  EXPECT_GT(checked, 10000);
}
