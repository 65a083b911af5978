// The prefill indexer kernel's index maps (src/cuda/indexer_prefill_map.h) against a host simulation of
// one warp: ldmatrix.x4 and mma.m16n8k16 emulated from the PTX ISA's fragment layouts, shared memory as
// tokens (a value's row and column), so that every accumulator register is checked to hold the
// (row, head) dot product the kernel's epilogue assumes, with the 16 values of each mma in the natural
// k order (the order fast_attention.cu's kernel feeds them; the tensor cores' sum is bitwise only for
// the same order). Then the epilogue's 4-hop chain over the quad, bank-conflict freedom of the
// ldmatrix and staging addresses, and coverage of the staging and the score writes. Runs without a GPU.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "cuda/indexer_prefill_map.h"

using namespace flashstar::cuda::ipf;

namespace {

// A staged element as a token: which smem row and column it came from.
struct Tok {
  int row = -1, col = -1;
};
using Reg = std::array<Tok, 2>;  // a .b16x2 register: [0] the low half

// ldmatrix.m8n8.x4 (no .trans): lanes 8i..8i+7 give the row addresses of matrix i; register i of lane l
// holds row l / 4 of matrix i, columns 2 (l % 4) and 2 (l % 4) + 1.
std::array<std::array<Reg, 4>, 32> ldsm_x4(const std::array<std::pair<int, int>, 32>& addr) {
  std::array<std::array<Reg, 4>, 32> out{};
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const auto [row, col] = addr[8 * i + (l >> 2)];
      out[l][i][0] = {row, col + 2 * (l & 3)};
      out[l][i][1] = {row, col + 2 * (l & 3) + 1};
    }
  return out;
}

// mma.m16n8k16 .f16: A 16 x 16 from a0..a3, B 16 x 8 from b0, b1 (PTX ISA fragment layouts).
struct WarpMats {
  Tok A[16][16], B[16][8];
};
WarpMats gather(const std::array<std::array<Reg, 4>, 32>& a, const std::array<std::array<Reg, 2>, 32>& b) {
  WarpMats m;
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, q = l & 3;
    for (int e = 0; e < 2; ++e) {
      m.A[g][2 * q + e] = a[l][0][e];
      m.A[g + 8][2 * q + e] = a[l][1][e];
      m.A[g][2 * q + 8 + e] = a[l][2][e];
      m.A[g + 8][2 * q + 8 + e] = a[l][3][e];
      m.B[2 * q + e][g] = b[l][0][e];
      m.B[2 * q + 8 + e][g] = b[l][1][e];
    }
  }
  return m;
}

}  // namespace

TEST(IndexerPrefillMap, WarpProductHoldsTheAssumedRowsAndHeads) {
  // Values of the staged rows: small integers, so that the double sums are exact.
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> v(-8, 8);
  // K: the tile as staged; Qh: the group's queries by head, staged into Q in the kernel's row order.
  std::vector<double> K(kTR * kLd), Qh(kQRows * kLd), Q(kQRows * kLd);
  for (auto& x : K) x = v(rng);
  for (auto& x : Qh) x = v(rng);
  for (int r = 0; r < kQRows; ++r)
    for (int d = 0; d < kLd; ++d) Q[r * kLd + d] = Qh[((r / kHeads) * kHeads + q_row_head(r % kHeads)) * kLd + d];
  for (int warp = 0; warp < kThreads / 32; ++warp) {
    const int qi = warp >> 1, rbase = (warp & 1) * 32;
    double acc[32][2][8][4] = {};
    for (int k0 = 0; k0 < kDim; k0 += 16) {
      std::array<std::array<Reg, 4>, 32> a[2];
      for (int mt = 0; mt < 2; ++mt) {
        std::array<std::pair<int, int>, 32> ad;
        for (int l = 0; l < 32; ++l) ad[l] = {rbase + a_ldsm_row(l, mt), k0 + a_ldsm_col(l)};
        a[mt] = ldsm_x4(ad);
      }
      for (int nj = 0; nj < 4; ++nj) {
        std::array<std::pair<int, int>, 32> bd;
        for (int l = 0; l < 32; ++l) bd[l] = {qi * kHeads + b_ldsm_row(l, nj), k0 + b_ldsm_col(l)};
        const auto b = ldsm_x4(bd);
        for (int h = 0; h < 2; ++h)
          for (int mt = 0; mt < 2; ++mt) {
            std::array<std::array<Reg, 2>, 32> bf;
            for (int l = 0; l < 32; ++l) bf[l] = {b[l][2 * h], b[l][2 * h + 1]};
            const WarpMats m = gather(a[mt], bf);
            // one A row is one K row and one B column one head, over k0..k0+15 in order
            for (int i = 0; i < 16; ++i)
              for (int k = 0; k < 16; ++k) {
                ASSERT_EQ(m.A[i][k].row, m.A[i][0].row);
                ASSERT_EQ(m.A[i][k].col, k0 + k);
              }
            for (int j = 0; j < 8; ++j)
              for (int k = 0; k < 16; ++k) {
                ASSERT_EQ(m.B[k][j].row, m.B[0][j].row);
                ASSERT_EQ(m.B[k][j].col, k0 + k);
              }
            // D += A B into the lanes' C fragments
            for (int l = 0; l < 32; ++l)
              for (int c = 0; c < 4; ++c) {
                const int i = (l >> 2) + 8 * (c >> 1), j = 2 * (l & 3) + (c & 1);
                double s = 0;
                for (int k = 0; k < 16; ++k)
                  s += K[m.A[i][k].row * kLd + m.A[i][k].col] * Q[m.B[k][j].row * kLd + m.B[k][j].col];
                acc[l][mt][2 * nj + h][c] += s;
              }
          }
      }
    }
    for (int l = 0; l < 32; ++l)
      for (int mt = 0; mt < 2; ++mt)
        for (int nt = 0; nt < 8; ++nt)
          for (int c = 0; c < 4; ++c) {
            const int r = rbase + acc_row(l, mt, c), hq = qi * kHeads + acc_head(l, nt, c);
            double want = 0;
            for (int d = 0; d < kDim; ++d) want += K[r * kLd + d] * Qh[hq * kLd + d];
            ASSERT_EQ(acc[l][mt][nt][c], want) << "warp " << warp << " lane " << l << " mt " << mt << " nt " << nt;
          }
  }
}

TEST(IndexerPrefillMap, EveryHeadOnceAndLaneHeadsConsecutive) {
  for (int l = 0; l < 32; ++l) {
    std::set<int> heads;
    for (int nt = 0; nt < 8; ++nt)
      for (int c = 0; c < 4; ++c) {
        heads.insert(acc_head(l, nt, c));
        EXPECT_EQ(acc_head(l, nt, c), 16 * (l & 3) + 2 * nt + (c & 1));  // register 2 nt + e = head 16q + 2nt + e
      }
    EXPECT_EQ(heads.size(), 16u);
  }
  std::set<int> all;
  for (int p = 0; p < kHeads; ++p) all.insert(q_row_head(p));
  EXPECT_EQ(all.size(), 64u);
  EXPECT_EQ(*all.rbegin(), kHeads - 1);
}

TEST(IndexerPrefillMap, ChainEqualsHeadOrderedSum) {
  // Random accumulators of one warp, the kernel's epilogue step by step (shuffles as copies between
  // lanes), against s = fma(max(0, d_h), w_h, s) over h = 0..63 for every row.
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  float acc[32][2][8][4];
  for (auto& a : acc)
    for (auto& b : a)
      for (auto& c : b)
        for (auto& x : c) x = nd(rng);
  float w[kHeads];
  for (auto& x : w) x = nd(rng) * 0.01f;
  float table[32][kHeads];
  bool seen[32][kHeads] = {};
  for (int l = 0; l < 32; ++l)
    for (int mt = 0; mt < 2; ++mt)
      for (int nt = 0; nt < 8; ++nt)
        for (int c = 0; c < 4; ++c) {
          const int r = acc_row(l, mt, c), h = acc_head(l, nt, c);
          ASSERT_FALSE(seen[r][h]);
          seen[r][h] = true;
          table[r][h] = acc[l][mt][nt][c];
        }
  float res[32][4];
  for (int s = 0; s < 4; ++s) {
    const int mt = s >> 1, hh = s & 1;
    float sum[32];
    for (int l = 0; l < 32; ++l) sum[l] = 0.0f;
    for (int k = 0; k < 4; ++k) {
      float vv[32];
      for (int l = 0; l < 32; ++l) {
        float x = sum[l];
        for (int nt = 0; nt < 8; ++nt)
          for (int e = 0; e < 2; ++e)
            x = std::fma(std::fmax(0.0f, acc[l][mt][nt][2 * hh + e]), w[16 * (l & 3) + 2 * nt + e], x);
        vv[l] = x;
      }
      for (int l = 0; l < 32; ++l) sum[l] = vv[(l & ~3) | k];
    }
    for (int l = 0; l < 32; ++l) res[l][s] = sum[l];
  }
  std::set<int> rows;
  for (int l = 0; l < 32; ++l) {
    const int ws = write_slot(l), r = slot_row(l, ws);
    EXPECT_TRUE(rows.insert(r).second) << "row " << r << " written twice";
    // slot_row must name the rows the lane's accumulators of that slot hold
    EXPECT_EQ(r, acc_row(l, ws >> 1, 2 * (ws & 1)));
    float want = 0.0f;
    for (int h = 0; h < kHeads; ++h) want = std::fma(std::fmax(0.0f, table[r][h]), w[h], want);
    EXPECT_EQ(res[l][ws], want) << "row " << r;
  }
  EXPECT_EQ(rows.size(), 32u);
}

TEST(IndexerPrefillMap, StagingCoversTilesAndIsConflictFree) {
  // Chunk c = tid + j * kThreads: every (row, 16-byte chunk) once, for the K tile and the Q stage.
  for (int rows : {kTR, kQRows}) {
    std::vector<int> hit(rows * kChunksPerRow, 0);
    const int per = rows * kChunksPerRow / kThreads;
    for (int j = 0; j < per; ++j)
      for (int tid = 0; tid < kThreads; ++tid) {
        const int c = tid + j * kThreads;
        ASSERT_LT(chunk_row(c), rows);
        ++hit[chunk_row(c) * kChunksPerRow + chunk_col(c) / 8];
      }
    for (int h : hit) EXPECT_EQ(h, 1);
  }
  EXPECT_EQ(kKChunks * kThreads, kTR * kChunksPerRow);
  EXPECT_EQ(kQChunks * kThreads, kQRows * kChunksPerRow);
  // 16-byte stores go out a quarter warp at a time: 8 lanes on 8 distinct 16-byte bank groups.
  for (int j = 0; j < kQChunks; ++j)
    for (int w0 = 0; w0 < kThreads; w0 += 8) {
      std::set<int> groups;
      for (int tid = w0; tid < w0 + 8; ++tid) {
        const int c = tid + j * kThreads;
        groups.insert(((chunk_row(c) * kLd + chunk_col(c)) * 2 / 16) % 8);
      }
      EXPECT_EQ(groups.size(), 8u);
    }
  // ldmatrix: the 8 row addresses of each matrix on distinct bank groups (A: K rows, B: heads).
  for (int k0 = 0; k0 < kDim; k0 += 16)
    for (int i = 0; i < 4; ++i) {
      for (int mt = 0; mt < 2; ++mt) {
        std::set<int> groups;
        for (int l = 8 * i; l < 8 * i + 8; ++l)
          groups.insert(((32 + a_ldsm_row(l, mt)) * kLd + k0 + a_ldsm_col(l)) * 2 / 16 % 8);
        EXPECT_EQ(groups.size(), 8u);
      }
      for (int nj = 0; nj < 4; ++nj) {
        std::set<int> groups;
        for (int l = 8 * i; l < 8 * i + 8; ++l)
          groups.insert(((kHeads + b_ldsm_row(l, nj)) * kLd + k0 + b_ldsm_col(l)) * 2 / 16 % 8);
        EXPECT_EQ(groups.size(), 8u);
      }
    }
  // shared memory fits an H100/H200 block (227 KiB of dynamic shared memory)
  EXPECT_LE(kSmemBytes, 227 * 1024);
}
