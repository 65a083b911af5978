// The prefill flash-attention kernel (fast_attention_prefill.cu).
// CPU tests (no device needed): a lane-level replay of the kernel's bookkeeping for one query, built on
// the kernel's own index functions (fast_attention_prefill.h): the staging rounds, the ldmatrix lane
// addresses (with the same per-step offsets), the mma fragments (PTX register layouts, written here from
// the ISA description, not from the kernel), the partial-score exchange, the online softmax with the
// sink, P in two FP16 terms, the output layout; mma arithmetic by the tensor-core model. Against a double
// reference, and the skipped lo-term path against the full one (bitwise in the model).
// GPU tests: the kernel against the reference attention kernel on odd query counts, positions near 0,
// full windows, ratio 4 with and without indexer lists, ratio 128, sink-dominated heads; output padding
// untouched; bitwise run-to-run; a query's bits independent of the batch around it; skip == full mma on
// rows exact in FP16; the dispatcher's switch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "common/half.h"
#include "cuda/fast_attention_prefill.h"
#include "cuda/fast_kernels.h"
#include "cuda_test_fixture.h"
#include "tensor_core_model.h"

using namespace flashstar;
namespace ap = flashstar::cuda::fast::attn_prefill;
using cuda_test::mma_model;

namespace {

constexpr int kH = ap::kHeads, kD = ap::kDim;
using Frag4 = uint32_t[32][4];
using Acc = float[32][4];

float h2f(uint16_t h) { return f16_to_f32(h); }
// the kernel's f16x2 / f16x2_lo on one value: round to nearest even, residual computed in fp32
uint16_t hi16(float x) { return f32_to_f16(x); }
uint16_t lo16(float x) { return f32_to_f16(x - h2f(hi16(x))); }
uint32_t pack(uint16_t lo_half, uint16_t hi_half) { return lo_half | (static_cast<uint32_t>(hi_half) << 16); }

// One block's shared memory (byte addresses relative to its start, as the kernel's) and the warp-wide
// operations the kernel uses, lane by lane.
struct Block {
  std::vector<uint8_t> sm = std::vector<uint8_t>(ap::kSmemBytes, 0xee);  // stale bytes: must all be written
  uint16_t at(uint32_t byte) const {
    uint16_t v;
    std::memcpy(&v, &sm.at(byte), 2);
    return v;
  }
  void put(uint32_t byte, uint16_t v) { std::memcpy(&sm.at(byte), &v, 2); }
  // ldmatrix.m8n8.x4 (.trans): lane l gives the address of row l % 8 of matrix l / 8. Register j of lane l
  // holds two elements of matrix j: (row l / 4, columns 2 (l % 4) and +1), or with .trans (rows 2 (l % 4)
  // and +1, column l / 4); the first in the low half.
  void ldsm(Frag4& r, const uint32_t (&addr)[32], bool trans) const {
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < 4; ++j) {
        uint16_t e[2];
        for (int x = 0; x < 2; ++x) {
          const int row = trans ? 2 * (l % 4) + x : l / 4, col = trans ? l / 4 : 2 * (l % 4) + x;
          e[x] = at(addr[8 * j + row] + 2 * col);
        }
        r[l][j] = pack(e[0], e[1]);
      }
  }
};

// mma.m16n8k16.row.col f32.f16.f16.f32 from the PTX fragment layouts: A register r of lane l holds
// (row l/4 + 8 (r % 2), columns 2 (l % 4) + 8 (r / 2) and +1); B register r: (k 2 (l % 4) + 8 r and +1,
// column l / 4); accumulator element i: (row l/4 + 8 (i / 2), column 2 (l % 4) + i % 2).
void mma_emu(Acc& d, const Frag4& a, const uint32_t (&b0)[32], const uint32_t (&b1)[32]) {
  double A[16][16], B[16][8];
  float C[16][8];
  for (int l = 0; l < 32; ++l) {
    for (int r = 0; r < 4; ++r)
      for (int e = 0; e < 2; ++e)
        A[l / 4 + 8 * (r % 2)][2 * (l % 4) + 8 * (r / 2) + e] = h2f(static_cast<uint16_t>(a[l][r] >> (16 * e)));
    for (int r = 0; r < 2; ++r)
      for (int e = 0; e < 2; ++e)
        B[2 * (l % 4) + 8 * r + e][l / 4] = h2f(static_cast<uint16_t>((r ? b1[l] : b0[l]) >> (16 * e)));
    for (int i = 0; i < 4; ++i) C[l / 4 + 8 * (i / 2)][2 * (l % 4) + i % 2] = d[l][i];
  }
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const int m = l / 4 + 8 * (i / 2), n = 2 * (l % 4) + i % 2;
      double prod[16];
      for (int k = 0; k < 16; ++k) prod[k] = A[m][k] * B[k][n];
      d[l][i] = mma_model(C[m][n], prod, 16);
    }
}
void col(uint32_t (&dst)[32], const Frag4& f, int j) {
  for (int l = 0; l < 32; ++l) dst[l] = f[l][j];
}

// The kernel's arithmetic for one query over rows[0..n) (tiles of kTile in list order). full: the lo
// pass on every tile. lo_tiles counts the tiles that took the lo pass.
std::vector<float> replay(const float* q, const std::vector<const float*>& rows, const float* sinks, bool full,
                          int* lo_tiles) {
  Block B;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(kD)));
  const int n_rows = static_cast<int>(rows.size()), n_tiles = (n_rows + ap::kTile - 1) / ap::kTile;
  for (int r0 = 0; r0 < kH; r0 += 16)  // Q: hi at kQOff, lo kQBytes on
    for (int tid = 0; tid < ap::kThreads; ++tid)
      for (int i = 0; i < ap::kStageRounds; ++i) {
        const int h = r0 + ap::stage_row(tid, i), c = 4 * ap::stage_col4(tid);
        for (int e = 0; e < 4; ++e) {
          const float x = q[h * kD + c + e];
          const uint32_t off = ap::kQOff + 2 * (h * ap::kLd + c + e);
          B.put(off, hi16(x)), B.put(off + ap::kQBytes, lo16(x));
        }
      }
  // tile k's hi (or lo) terms into buffer b; returns whether a lo term is nonzero
  auto stage = [&](int k, int b, bool lo) {
    bool flag = false;
    for (int r0 = 0; r0 < ap::kTile; r0 += 2 * ap::kStageRounds)
      for (int tid = 0; tid < ap::kThreads; ++tid)
        for (int i = 0; i < ap::kStageRounds; ++i) {
          const int row = r0 + ap::stage_row(tid, i), c = 4 * ap::stage_col4(tid);
          const int r = k * ap::kTile + row;
          for (int e = 0; e < 4; ++e) {
            const float x = r < n_rows ? rows[r][c + e] : 0.0f;
            flag |= (lo16(x) & 0x7fff) != 0;
            B.put(ap::kKOff + b * ap::kKBytes + 2 * (row * ap::kLd + c + e), lo ? lo16(x) : hi16(x));
          }
        }
    return flag;
  };
  static float o[ap::kWarps][ap::kOutTiles][32][4];
  std::memset(o, 0, sizeof(o));
  float m_run[ap::kWarps][32][2], l_run[ap::kWarps][32][2];
  for (auto& w : m_run)
    for (auto& l : w) l[0] = l[1] = -INFINITY;
  std::memset(l_run, 0, sizeof(l_run));
  bool flag = stage(0, 0, false);
  *lo_tiles = 0;
  for (int k = 0; k < n_tiles; ++k) {
    const int cur = k & 1;
    const bool lo_tile = flag || full;
    *lo_tiles += lo_tile;
    if (lo_tile) stage(k, cur ^ 1, true);
    static float s[ap::kWarps][ap::kSTiles][32][4];
    std::memset(s, 0, sizeof(s));
    for (int w = 0; w < ap::kWarps; ++w) {
      const int m0 = ap::warp_heads(w), d0 = ap::warp_dims(w);
      uint32_t qa[32], kb[32], kbl[32];
      for (int l = 0; l < 32; ++l) {
        qa[l] = ap::kQOff + 2 * ap::a_frag_off(l, m0, d0);
        kb[l] = ap::kKOff + 2 * ap::b_frag_off(l, 0, d0) + cur * ap::kKBytes;
        kbl[l] = ap::kKOff + 2 * ap::b_frag_off(l, 0, d0) + (cur ^ 1) * ap::kKBytes;
      }
      for (int pass = 0; pass < (lo_tile ? 2 : 1); ++pass)
        for (int st = 0; st < ap::kSteps; ++st) {
          Frag4 ah, al;
          uint32_t x[32];
          for (int l = 0; l < 32; ++l) x[l] = qa[l] + 2 * 16 * st;
          B.ldsm(ah, x, false);
          for (int l = 0; l < 32; ++l) x[l] = qa[l] + ap::kQBytes + 2 * 16 * st;
          B.ldsm(al, x, false);
          for (int nj = 0; nj < ap::kSTiles / 2; ++nj) {
            Frag4 bk;
            for (int l = 0; l < 32; ++l) x[l] = (pass ? kbl[l] : kb[l]) + 2 * (16 * nj * ap::kLd + 16 * st);
            B.ldsm(bk, x, false);
            uint32_t b0[32], b1[32], b2[32], b3[32];
            col(b0, bk, 0), col(b1, bk, 1), col(b2, bk, 2), col(b3, bk, 3);
            if (!pass) mma_emu(s[w][2 * nj], al, b0, b1), mma_emu(s[w][2 * nj + 1], al, b2, b3);
            mma_emu(s[w][2 * nj], ah, b0, b1), mma_emu(s[w][2 * nj + 1], ah, b2, b3);
          }
        }
    }
    static float p[ap::kWarps][ap::kSTiles][32][4];
    for (int w = 0; w < ap::kWarps; ++w)  // own + partner, as each warp adds them
      for (int j = 0; j < ap::kSTiles; ++j)
        for (int l = 0; l < 32; ++l)
          for (int i = 0; i < 4; ++i) p[w][j][l][i] = s[w][j][l][i] + s[w ^ 1][j][l][i];
    const int valid = std::min(ap::kTile, n_rows - k * ap::kTile);
    for (int w = 0; w < ap::kWarps; ++w) {
      float mx[32][2], sum[32][2], alpha[32][2];
      for (int l = 0; l < 32; ++l) {
        mx[l][0] = mx[l][1] = -INFINITY;
        for (int j = 0; j < ap::kSTiles; ++j)
          for (int i = 0; i < 4; ++i) {
            float& v = p[w][j][l][i];
            v = 8 * j + ap::c_col(l, i) < valid ? v * scale : -INFINITY;
            mx[l][i >> 1] = std::fmax(mx[l][i >> 1], v);
          }
      }
      for (int sh : {1, 2}) {  // __shfl_xor_sync within the quad
        float t[32][2];
        for (int l = 0; l < 32; ++l)
          for (int r = 0; r < 2; ++r) t[l][r] = std::fmax(mx[l][r], mx[l ^ sh][r]);
        std::memcpy(mx, t, sizeof(t));
      }
      for (int l = 0; l < 32; ++l)
        for (int r = 0; r < 2; ++r) {
          const float mn = std::fmax(m_run[w][l][r], mx[l][r]);
          alpha[l][r] = mn == m_run[w][l][r] ? 1.0f : std::exp(m_run[w][l][r] - mn);
          m_run[w][l][r] = mn;
          sum[l][r] = 0.0f;
        }
      for (int l = 0; l < 32; ++l)
        for (int j = 0; j < ap::kSTiles; ++j)
          for (int i = 0; i < 4; ++i) {
            float& v = p[w][j][l][i];
            v = std::exp(v - m_run[w][l][i >> 1]);
            sum[l][i >> 1] += v;
          }
      for (int sh : {1, 2}) {
        float t[32][2];
        for (int l = 0; l < 32; ++l)
          for (int r = 0; r < 2; ++r) t[l][r] = sum[l][r] + sum[l ^ sh][r];
        std::memcpy(sum, t, sizeof(t));
      }
      for (int l = 0; l < 32; ++l)
        for (int r = 0; r < 2; ++r) {
          l_run[w][l][r] = l_run[w][l][r] * alpha[l][r] + sum[l][r];
          for (int nt = 0; nt < ap::kOutTiles; ++nt) o[w][nt][l][2 * r] *= alpha[l][r], o[w][nt][l][2 * r + 1] *= alpha[l][r];
        }
      // P.V: A from the probabilities' accumulator layout, B = the staged rows (.trans)
      const int d0 = ap::warp_dims(w);
      for (int pass = 0; pass < (lo_tile ? 2 : 1); ++pass)
        for (int kk = 0; kk < ap::kTile / 16; ++kk) {
          Frag4 ph, pl;
          for (int l = 0; l < 32; ++l)
            for (int r = 0; r < 4; ++r) {
              const float* src = p[w][2 * kk + r / 2][l] + 2 * (r % 2);  // reg r: tile 2kk + r/2, elements 2 (r%2), +1
              ph[l][r] = pack(hi16(src[0]), hi16(src[1]));
              pl[l][r] = pack(lo16(src[0]), lo16(src[1]));
            }
          for (int nj = 0; nj < ap::kOutTiles / 2; ++nj) {
            uint32_t x[32];
            for (int l = 0; l < 32; ++l)
              x[l] = ap::kKOff + 2 * ap::bt_frag_off(l, 0, d0) + (pass ? cur ^ 1 : cur) * ap::kKBytes +
                     2 * (16 * kk * ap::kLd + 16 * nj);
            Frag4 bv;
            B.ldsm(bv, x, true);
            uint32_t b0[32], b1[32], b2[32], b3[32];
            col(b0, bv, 0), col(b1, bv, 1), col(b2, bv, 2), col(b3, bv, 3);
            if (!pass) mma_emu(o[w][2 * nj], pl, b0, b1), mma_emu(o[w][2 * nj + 1], pl, b2, b3);
            mma_emu(o[w][2 * nj], ph, b0, b1), mma_emu(o[w][2 * nj + 1], ph, b2, b3);
          }
        }
    }
    if (k + 1 < n_tiles) flag = stage(k + 1, cur ^ 1, false);
  }
  std::vector<float> out(static_cast<size_t>(kH * kD), NAN);
  for (int w = 0; w < ap::kWarps; ++w)
    for (int l = 0; l < 32; ++l)
      for (int r = 0; r < 2; ++r) {
        const int h = ap::warp_heads(w) + ap::c_row(l, 2 * r);
        const double sink = sinks[h], m = m_run[w][l][r];
        const double M = std::fmax(sink, m), fm = std::exp(m - M);
        const float cf = static_cast<float>(fm / (l_run[w][l][r] * fm + std::exp(sink - M)));
        for (int nt = 0; nt < ap::kOutTiles; ++nt)
          for (int e = 0; e < 2; ++e)
            out[h * kD + ap::warp_dims(w) + 8 * nt + ap::c_col(l, e)] = o[w][nt][l][2 * r + e] * cf;
      }
  return out;
}

// The attention of one query in double: scores / sqrt(512), softmax with the sink in the denominator.
std::vector<double> reference(const float* q, const std::vector<const float*>& rows, const float* sinks) {
  std::vector<double> out(static_cast<size_t>(kH * kD), 0.0);
  const size_t n = rows.size();
  for (int h = 0; h < kH; ++h) {
    std::vector<double> s(n);
    double m = sinks[h];
    for (size_t r = 0; r < n; ++r) {
      double v = 0;
      for (int d = 0; d < kD; ++d) v += static_cast<double>(q[h * kD + d]) * rows[r][d];
      s[r] = v / std::sqrt(static_cast<double>(kD));
      m = std::max(m, s[r]);
    }
    double den = std::exp(sinks[h] - m);
    for (size_t r = 0; r < n; ++r) den += (s[r] = std::exp(s[r] - m));
    for (size_t r = 0; r < n; ++r)
      for (int d = 0; d < kD; ++d) out[h * kD + d] += s[r] / den * rows[r][d];
  }
  return out;
}

double rel_err_d(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace

TEST(AttentionPrefillModel, LaneReplayMatchesDoubleReference) {
  std::mt19937 rng(20261207);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(kH * kD)), sinks(kH);
  for (auto& x : q) x = nd(rng);
  // rows: a pool in shuffled order (like indexer lists); values 0.5 N(0,1), or f16-rounded
  const int pool_n = 200;
  std::vector<float> pool(static_cast<size_t>(pool_n * kD)), pool16(pool.size());
  for (size_t i = 0; i < pool.size(); ++i) pool[i] = 0.5f * nd(rng), pool16[i] = h2f(hi16(pool[i]));
  std::vector<int> order(pool_n);
  for (int i = 0; i < pool_n; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  struct Case {
    int n_rows;
    int exact_from;    // rows from here on are exact in FP16, the ones before fp32
    float sink_shift;  // added to N(0,1) sinks: +40 makes the sink dominate every head
  };
  for (const Case& cs : {Case{1, 0, 0}, Case{33, 0, 0}, Case{75, 75, 0}, Case{32, 32, 40}, Case{160, 0, 0},
                         Case{50, 0, 40}, Case{64, 0, -40}, Case{130, 40, 0}}) {
    for (int h = 0; h < kH; ++h) sinks[h] = nd(rng) + cs.sink_shift;
    std::vector<const float*> rows;
    for (int r = 0; r < cs.n_rows; ++r) rows.push_back((r >= cs.exact_from ? pool16 : pool).data() + order[r] * kD);
    int lo_skip = 0, lo_full = 0;
    const auto got = replay(q.data(), rows, sinks.data(), false, &lo_skip);
    const auto ref = reference(q.data(), rows, sinks.data());
    const double e = rel_err_d(got, ref);
    const int n_tiles = (cs.n_rows + ap::kTile - 1) / ap::kTile, fp32_tiles = (cs.exact_from + ap::kTile - 1) / ap::kTile;
    std::printf("lane replay: %3d rows (fp32 below %3d), sink shift %+3.0f: rel err %.2e, %d of %d tiles with lo terms\n",
                cs.n_rows, cs.exact_from, cs.sink_shift, e, lo_skip, n_tiles);
    EXPECT_LT(e, 2e-6) << cs.n_rows << " rows";
    EXPECT_EQ(lo_skip, fp32_tiles);
    if (cs.exact_from == 0) {  // the full three-mma path adds exact zeros: the same bits
      const auto full = replay(q.data(), rows, sinks.data(), true, &lo_full);
      EXPECT_EQ(lo_full, n_tiles);
      EXPECT_EQ(0, std::memcmp(full.data(), got.data(), got.size() * 4)) << cs.n_rows << " rows";
    }
  }
}

// Every thread's staging rounds cover each (row, float4 column) of 16 rows exactly once, and the lane
// addresses of one k16 step hit distinct 16-byte bank groups within each 8-lane phase.
TEST(AttentionPrefillModel, StagingCoversTilesAndLdmatrixIsConflictFree) {
  std::vector<int> seen(16 * 128, 0);
  for (int tid = 0; tid < ap::kThreads; ++tid)
    for (int i = 0; i < ap::kStageRounds; ++i) ++seen[ap::stage_row(tid, i) * 128 + ap::stage_col4(tid)];
  for (int v : seen) ASSERT_EQ(v, 1);
  auto conflict_free = [](auto off) {
    for (int ph = 0; ph < 4; ++ph) {
      std::vector<int> banks;
      for (int l = 8 * ph; l < 8 * ph + 8; ++l) banks.push_back((2 * off(l)) / 16 % 8);
      std::sort(banks.begin(), banks.end());
      if (std::unique(banks.begin(), banks.end()) != banks.end()) return false;
    }
    return true;
  };
  for (int w = 0; w < ap::kWarps; ++w) {
    EXPECT_TRUE(conflict_free([&](int l) { return ap::a_frag_off(l, ap::warp_heads(w), ap::warp_dims(w)); }));
    EXPECT_TRUE(conflict_free([&](int l) { return ap::b_frag_off(l, 0, ap::warp_dims(w)); }));
    EXPECT_TRUE(conflict_free([&](int l) { return ap::bt_frag_off(l, 0, ap::warp_dims(w)); }));
  }
}

namespace {

class AttentionPrefill : public cuda_test::CudaKernelTest {
 protected:
  // the switches as the environment set them, for the tests that run after these
  void SetUp() override {
    CudaKernelTest::SetUp();
    v2_ = cuda::fast::attention_prefill_v2(), full_ = cuda::fast::attention_prefill_full_mma();
  }
  void TearDown() override { cuda::fast::attention_prefill_set(v2_, full_); }
  bool v2_ = true, full_ = false;

  // A batch of n queries at pos0 with its rows on the device: hist holds the saved window (up to 127 rows)
  // and the batch's own rows; comp the compressed rows; sel (ratio 4, with_sel) the indexer lists.
  struct Batch {
    int ratio = 0;
    int64_t n = 0, pos0 = 0, n_old = 0, n_comp = 0;
    std::vector<float> q, hist, comp, sinks;
    std::vector<int32_t> sel;
    cuda::DeviceArray<float> dq, dh, dc, ds;
    cuda::DeviceArray<int32_t> dsel;
    bool with_sel = false;
    cuda::AttentionArgs args(float* out) const {
      cuda::AttentionArgs a;
      a.q = dq.get(), a.hist = dh.get(), a.hist_pos0 = pos0 - n_old, a.comp = dc.get();
      a.sel = with_sel ? dsel.get() : nullptr, a.top_k = kTopK, a.sinks = ds.get(), a.out = out;
      a.pos0 = pos0, a.n = n, a.n_head = kH, a.head_dim = kD, a.n_swa = kSwa, a.ratio = ratio;
      return a;
    }
    int64_t max_rows() const { return kSwa + std::max<int64_t>(kTopK, n_comp); }
  };
  static constexpr int kSwa = 128, kTopK = 512;

  float round16(float x) { return h2f(hi16(x)); }
  // rows exact in FP16 (official numerics): none, all, only the raw ones, only the compressed ones
  enum Exact { kNone, kAll, kRaw, kComp };
  void make(Batch& b, int ratio, int64_t n, int64_t pos0, bool with_sel, int exact, float sink_shift) {
    b.ratio = ratio, b.n = n, b.pos0 = pos0, b.with_sel = with_sel && ratio == 4;
    b.n_old = std::min<int64_t>(kSwa - 1, pos0);
    b.n_comp = ratio ? (pos0 + n) / ratio : 0;
    b.q = randn(static_cast<size_t>(n * kH * kD));
    b.hist = randn(static_cast<size_t>((b.n_old + n) * kD), 0.5f);
    b.comp = randn(static_cast<size_t>(std::max<int64_t>(b.n_comp, 1) * kD), 0.5f);
    if (exact == kAll || exact == kRaw)
      for (auto& x : b.hist) x = round16(x);
    if (exact == kAll || exact == kComp)
      for (auto& x : b.comp) x = round16(x);
    b.sinks = randn(kH);
    for (auto& s : b.sinks) s += sink_shift;
    b.sel.assign(static_cast<size_t>(n * kTopK), -1);
    for (int64_t t = 0; b.with_sel && t < n; ++t) {  // as the top-k kernel writes them: ascending, -1 ended
      const int64_t vis = (pos0 + t + 1) / ratio;
      std::vector<int32_t> all(vis);
      for (int64_t i = 0; i < vis; ++i) all[i] = static_cast<int32_t>(i);
      if (vis > kTopK) {
        std::shuffle(all.begin(), all.end(), rng_);
        all.resize(kTopK - (t % 3));
        std::sort(all.begin(), all.end());
      }
      std::copy(all.begin(), all.end(), b.sel.begin() + t * kTopK);
    }
    b.dq = up(b.q), b.dh = up(b.hist), b.dc = up(b.comp), b.ds = up(b.sinks), b.dsel = up(b.sel);
  }
  std::vector<float> reference(const Batch& b) {
    auto scratch = poisoned<float>(static_cast<size_t>(b.n * kH * b.max_rows()));
    auto out = poisoned<float>(static_cast<size_t>(b.n * kH * kD));
    cuda::sink_attention(b.args(out.get()), scratch.get(), b.max_rows(), nullptr);
    return down(out);
  }
  // The kernel's output with poisoned guards of kGuard floats on both sides, which must stay poisoned.
  static constexpr size_t kGuard = 4096;
  std::vector<float> prefill(const Batch& b, bool full) {
    cuda::fast::attention_prefill_set(true, full);
    const size_t len = static_cast<size_t>(b.n * kH * kD);
    auto buf = poisoned<float>(len + 2 * kGuard);
    EXPECT_TRUE(cuda::fast::attention_prefill(b.args(buf.get() + kGuard), nullptr));
    const auto all = down(buf);
    std::vector<uint8_t> ff(kGuard * 4, 0xff);
    EXPECT_EQ(0, std::memcmp(all.data(), ff.data(), ff.size())) << "guard before the output written";
    EXPECT_EQ(0, std::memcmp(all.data() + kGuard + len, ff.data(), ff.size())) << "guard after the output written";
    return std::vector<float>(all.begin() + kGuard, all.begin() + kGuard + len);
  }
};

}  // namespace

// Bound: 2e-5 relative (L2 over the batch), the bound of the tensor-core attention before it; the CPU
// lane replay above gives about 1e-7 against double.
TEST_F(AttentionPrefill, MatchesReferenceKernel) {
  struct Case {
    int ratio;
    int64_t n, pos0;
    bool sel;
    int exact;
    float sink_shift;
  };
  for (const Case& cs : {Case{0, 9, 0, false, kAll, 0},          // positions 0..8: 1..9 rows
                         Case{0, 33, 40, false, kNone, 0},        // windows filling up past 128
                         Case{0, 130, 9000, false, kAll, 0},      // full windows
                         Case{4, 33, 2500, true, kAll, 0},        // indexer lists (512 rows, some 510/511)
                         Case{4, 130, 2000, true, kRaw, 0},       // lists of every visible row (500..511), then selections
                         Case{4, 9, 1, false, kAll, 0},           // ratio 4 from the start, no list
                         Case{4, 37, 300, false, kComp, 0},       // every compressed row (75..84)
                         Case{128, 130, 9000, false, kAll, 0},    // 70..71 compressed rows
                         Case{128, 33, 60000, false, kRaw, 0},    // 468..469 compressed rows
                         Case{128, 33, 60000, false, kNone, 0},
                         Case{0, 33, 500, false, kAll, 40},       // the sink dominates every head
                         Case{4, 9, 2500, true, kNone, 40},
                         Case{128, 33, 9000, false, kAll, -40}}) {  // the sink negligible
    Batch b;
    make(b, cs.ratio, cs.n, cs.pos0, cs.sel, cs.exact, cs.sink_shift);
    const auto ref = reference(b);
    const auto got = prefill(b, false);
    const auto again = prefill(b, false);
    EXPECT_EQ(0, std::memcmp(got.data(), again.data(), got.size() * 4)) << "run to run";
    const auto full = prefill(b, true);
    if (cs.exact == kAll) {
      EXPECT_EQ(0, std::memcmp(got.data(), full.data(), got.size() * 4)) << "skip == 3 mma";
    }
    const double e = rel_err(got, ref), ef = rel_err(full, ref);
    static const char* const kExact[] = {"fp32 rows", "rows exact in FP16", "raw rows exact", "compressed rows exact"};
    std::printf("prefill ratio %3d, pos %5lld, %3lld queries, %s%s, sink %+3.0f: rel err %.2e (3 mma %.2e)\n",
                cs.ratio, (long long)cs.pos0, (long long)cs.n, kExact[cs.exact], b.with_sel ? ", lists" : "",
                cs.sink_shift, e, ef);
    EXPECT_LT(e, 2e-5) << "ratio " << cs.ratio << " pos " << cs.pos0 << " n " << cs.n;
    EXPECT_LT(ef, 2e-5) << "ratio " << cs.ratio << " pos " << cs.pos0 << " n " << cs.n;
  }
}

// A query's output depends on its rows only: queries 10..14 of a batch of 37 against the same queries as
// a batch of 5 whose rows sit elsewhere in memory (another chunk's buffer: the saved window first).
TEST_F(AttentionPrefill, QueryBitsIndependentOfItsBatch) {
  for (int ratio : {0, 4, 128}) {
    Batch b;
    const int64_t pos0 = ratio == 128 ? 9000 : 2600;
    make(b, ratio, 37, pos0, true, kRaw, 0);  // tiles with and without lo terms
    const auto whole = prefill(b, false);
    Batch c;  // queries 10..14: the same values re-laid out
    const int64_t off = 10;
    c.ratio = ratio, c.n = 5, c.pos0 = pos0 + off, c.with_sel = b.with_sel;
    c.n_old = kSwa - 1, c.n_comp = b.n_comp;
    c.q.assign(b.q.begin() + off * kH * kD, b.q.begin() + (off + 5) * kH * kD);
    const int64_t first = c.pos0 - c.n_old - (pos0 - b.n_old);  // c's first hist row in b's hist
    c.hist.assign(b.hist.begin() + first * kD, b.hist.begin() + (first + c.n_old + 5) * kD);
    c.comp = b.comp, c.sinks = b.sinks;
    c.sel.assign(b.sel.begin() + off * kTopK, b.sel.begin() + (off + 5) * kTopK);
    c.dq = up(c.q), c.dh = up(c.hist), c.dc = up(c.comp), c.ds = up(c.sinks), c.dsel = up(c.sel);
    const auto part = prefill(c, false);
    EXPECT_EQ(0, std::memcmp(part.data(), whole.data() + off * kH * kD, part.size() * 4)) << "ratio " << ratio;
  }
}

// fast::sink_attention takes the kernel for more than 8 queries, the old three launches after
// attention_prefill_set(false, ...) (FLASHSTAR_ATTN_PREFILL_V2=0).
TEST_F(AttentionPrefill, DispatchFollowsTheSwitch) {
  Batch b;
  make(b, 4, 33, 2500, true, kAll, 0);
  const auto ref = reference(b);
  const auto direct = prefill(b, false);
  auto run = [&](bool v2) {
    cuda::fast::attention_prefill_set(v2, false);
    auto scratch = poisoned<float>(static_cast<size_t>(b.n * kH * b.max_rows()));
    auto out = poisoned<float>(static_cast<size_t>(b.n * kH * kD));
    EXPECT_FALSE(cuda::fast::sink_attention(b.args(out.get()), scratch.get(), b.max_rows(), nullptr,
                                            b.n * kH * b.max_rows()));
    return down(out);
  };
  const auto v2 = run(true), old = run(false);
  EXPECT_EQ(0, std::memcmp(v2.data(), direct.data(), v2.size() * 4));
  EXPECT_LT(rel_err(old, ref), 2e-5);
  EXPECT_LT(rel_err(v2, ref), 2e-5);
}
