// The grouped expert products on warpgroup MMA (gemm_group_wgmma.cu, gemm_group_wgmma.h, wgmma_tile.cuh).
// CPU tests (no device): the 64-byte-swizzle descriptors over the second grouped kernel's tiles read,
// for every operand element, the byte that v2's writers (activation copies, one decoded row a thread)
// put there; the accumulator covers the tile once for both item widths, and the promotion's row factors
// and token sums are those of each element's row and item. GPU tests: the model's expert shapes (IQ2_XXS
// gate and up 4096 -> 2048, Q2_K down 2048 -> 4096, 256 experts, 6 a token) at 4096, 300 and 17 tokens
// with skewed routing (experts with 0, 1 and thousands of items) into NaN-poisoned outputs, every element
// checked: bitwise equal to v2 (gemm_set_group_wgmma(false)), bitwise repeat, the gemm_grouped route
// takes it, close to the reference, for each variant and both k-tile decoders (gemm_set_group_decode);
// the calls it declines. Variant 2 with the Q2_K token sums precomputed (gemm_set_group_q2k_sums, a
// NaN-poisoned scratch): the sums kernel's floats are the k-loop's (host sum8), and the products are the
// flag-off kernel's and v2's bits. A timing at 4096 tokens against v2 (DISABLED_: run with
// --gtest_also_run_disabled_tests).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "cuda/fast_kernels.h"
#include "cuda/gemm_group_wgmma.h"
#include "cuda/gemm_int_weights.h"
#include "cuda/prefill_small.h"
#include "gemm_test_util.h"

using namespace flashstar;
namespace g2 = flashstar::cuda::gemm_v2;
namespace gw = flashstar::cuda::wgmma_group;
namespace wg = flashstar::cuda::wgmma;

// ---- CPU: layouts and descriptors.

// The paired kernel's half-k-tile decode (two threads a row) is v2's Decode, half by half, bit for bit.
TEST(GemmGroupWgmmaLayout, PairHalfDecodeIsV2sDecode) {
  namespace g2 = cuda::gemm_v2;
  namespace gp = cuda::wgmma_group::wgmma_pair;
  uint32_t sel[256];
  ASSERT_TRUE(g2::iq2_sel_table(sel));
  std::mt19937 rng(7);
  auto check = [&](auto tag, int a2) {
    constexpr GgmlType T = decltype(tag)::value;
    for (int trial = 0; trial < 200; ++trial) {
      uint32_t rw[48];
      for (uint32_t& w : rw) w = rng();
      // Finite FP16 scales (d, dmin): clear the exponent's top bit.
      for (uint32_t& w : rw) w &= 0xBFFFBFFFu;
      for (int j = 0; j < 8; ++j) {
        g2::Tile32 o;
        g2::Decode<T>::run(rw, a2, j, sel, o);
        for (int c = 0; c < 2; ++c) {
          uint32_t h[8];
          float sc, m0, m1;
          gp::Decode16<T>::run(rw, a2, j, c, sel, h, sc, m0, m1);
          for (int i = 0; i < 8; ++i) ASSERT_EQ(h[i], o.h[8 * c + i]) << "j " << j << " c " << c << " i " << i;
          ASSERT_EQ(f32_to_bits(sc), f32_to_bits(o.scale));
          ASSERT_EQ(f32_to_bits(m0), f32_to_bits(o.min0));
          ASSERT_EQ(f32_to_bits(m1), f32_to_bits(o.min1));
        }
      }
    }
  };
  check(std::integral_constant<GgmlType, GgmlType::IQ2_XXS>{}, 0);
  check(std::integral_constant<GgmlType, GgmlType::IQ2_XXS>{}, 2);
  check(std::integral_constant<GgmlType, GgmlType::Q2_K>{}, 0);
}

TEST(GemmGroupWgmmaLayout, DescriptorsReadWhatV2sWritersWrote) {
  constexpr GgmlType T = GgmlType::IQ2_XXS;
  using G = gw::G;
  const uint32_t base = 7 * gw::kAlign;  // any 512-byte aligned start (the kernel aligns its dynamic base)
  // Shared memory as the writers leave it: byte -> (kind 0 activations / 1 weights, stage or buffer, term,
  // row or item, column).
  std::map<uint32_t, std::array<int, 5>> owner;
  for (int st = 0; st < g2::kStages; ++st)
    for (int tid = 0; tid < G::kThreads; ++tid)
      for (int v = 0; v < G::kXCopies; ++v) {
        int term, tok, chunk;
        g2::x_task<G>(tid, v, term, tok, chunk);
        // The kernel's destination: Xs + term * kXTerm + swz(tok, chunk) halves, plus the stage.
        const uint32_t a = base + st * gw::kXStageBytes + 2u * (term * g2::kBN * g2::kBK + g2::swz(tok, chunk));
        ASSERT_EQ(a - 2u * g2::swz(tok, chunk), base + gw::x_tile_off(st, term));
        for (int e = 0; e < 8; ++e)
          ASSERT_TRUE(owner.emplace(a + 2 * e, std::array<int, 5>{0, st, term, tok, 8 * chunk + e}).second);
      }
  for (int buf = 0; buf < 2; ++buf)
    for (int tid = 0; tid < G::kBM; ++tid)
      for (int c = 0; c < 4; ++c) {
        // decode(): As + tile_buf * kATile + swz(tid, c) halves, 16 bytes.
        const uint32_t a = base + gw::a_tile_off<T>(buf, 0) + 2u * g2::swz(tid, c);
        for (int e = 0; e < 8; ++e)
          ASSERT_TRUE(owner.emplace(a + 2 * e, std::array<int, 5>{1, buf, 0, tid, 8 * c + e}).second);
      }
  for (int s = 0; s < 2; ++s) {
    // B: each stage and term, the 64 items (N = 32 reads the first 32 of them).
    for (int st = 0; st < g2::kStages; ++st)
      for (int term = 0; term < 2; ++term) {
        const uint64_t d = gw::desc_tile(base + gw::x_tile_off(st, term), s);
        ASSERT_EQ(d >> 62, uint64_t{wg::kSwizzle64B});
        ASSERT_EQ((d >> 32) & 0x3FFF, uint64_t{gw::kSbo >> 4});
        for (int n = 0; n < gw::kBN; ++n)
          for (int k = 0; k < 16; ++k) {
            const auto it = owner.find(wg::desc_element_addr(d, n, k));
            ASSERT_TRUE(it != owner.end()) << "reads a byte no copy wrote";
            const std::array<int, 5> want{0, st, term, n, 16 * s + k};
            ASSERT_EQ(it->second, want) << "stage " << st << " term " << term << " n " << n << " k " << k;
          }
      }
    // A: each buffer, both 64-row halves as the kernel addresses them.
    for (int buf = 0; buf < 2; ++buf)
      for (int h = 0; h < 2; ++h) {
        const uint32_t tile = base + gw::a_tile_off<T>(buf, 0) + static_cast<uint32_t>(h * gw::kHalfRows) * gw::kRowBytes;
        ASSERT_EQ(tile, base + gw::a_tile_off<T>(buf, h * gw::kHalfRows));
        const uint64_t d = gw::desc_tile(tile, s);
        for (int m = 0; m < gw::kHalfRows; ++m)
          for (int k = 0; k < 16; ++k) {
            const auto it = owner.find(wg::desc_element_addr(d, m, k));
            ASSERT_TRUE(it != owner.end());
            const std::array<int, 5> want{1, buf, 0, gw::kHalfRows * h + m, 16 * s + k};
            ASSERT_EQ(it->second, want) << "buf " << buf << " half " << h << " m " << m << " k " << k;
          }
      }
  }
}

TEST(GemmGroupWgmmaLayout, Swizzle128ReplayIsTheDenseKernels) {
  // The generalised replay (wgmma_tile.cuh) in 128-byte mode is the formula the dense kernel was checked
  // against: start + (n / 8) SBO + (n % 8) 128 + 2 k, bits 4..6 xor bits 7..9.
  for (uint32_t start : {0u, 1024u, 4096u + 64u, 8192u + 32u})
    for (int n = 0; n < 128; ++n)
      for (int k = 0; k < 16; ++k) {
        const uint64_t d = wg::desc(start, 1024, wg::kSwizzle128B);
        const uint32_t a = start + static_cast<uint32_t>(n / 8) * 1024 + static_cast<uint32_t>(n % 8) * 128 + 2u * k;
        ASSERT_EQ(wg::desc_element_addr(d, n, k), a ^ (((a >> 7) & 7u) << 4));
      }
}

TEST(GemmGroupWgmmaLayout, AccumulatorsCoverTheTileAndPromoteWithTheirRowAndItem) {
  for (int n : {64, 32}) {
    std::set<std::pair<int, int>> seen;
    for (int h = 0; h < 2; ++h)
      for (int w = 0; w < 4; ++w)
        for (int lane = 0; lane < 32; ++lane)
          for (int i = 0; i < n / 2; ++i) {
            const int r = gw::acc_row(h, w, lane, i), j = gw::acc_item(lane, i);
            ASSERT_TRUE(r >= 0 && r < gw::kBM && j >= 0 && j < n);
            ASSERT_TRUE(seen.insert({r, j}).second) << "element twice";
            // promote(): row factors of rows acc_row(.., 2 rr) with rr = (i / 2) % 2; token sums at
            // acc_item(lane, 4 g) + (i % 2); store(): item acc_item(lane, 4 g + cj), row of i = 4 g + 2 rr + cj.
            ASSERT_EQ(r, gw::acc_row(h, w, lane, 2 * ((i >> 1) & 1)));
            ASSERT_EQ(j, gw::acc_item(lane, 4 * (i / 4)) + (i & 1));
            ASSERT_EQ(j, gw::acc_item(lane, 4 * (i / 4) + (i & 1)));
          }
    ASSERT_EQ(seen.size(), size_t(gw::kBM) * n);
  }
  for (int count = 1; count <= gw::kBN; ++count) {
    ASSERT_GE(gw::n_of(count), count);
    ASSERT_TRUE(gw::n_of(count) == 64 || gw::n_of(count) == 32);
  }
}

// ---- GPU.

namespace {

class GemmGroupWgmma : public cuda_test::GemmKernelTest {
 protected:
  void SetUp() override {
    GemmKernelTest::SetUp();
    if (IsSkipped()) return;
    cuda::fast::init_tables();
    saved_ = cuda::fast::gemm_group_wgmma();
    saved_var_ = cuda::fast::gemm_group_wgmma_variant();
    saved_dec_ = cuda::fast::gemm_group_decode();
    saved_sums_ = cuda::fast::gemm_group_q2k_sums();
  }
  void TearDown() override {
    cuda::fast::gemm_set_group_wgmma(saved_);
    cuda::fast::gemm_set_group_wgmma_variant(saved_var_);
    cuda::fast::gemm_set_group_decode(saved_dec_);
    cuda::fast::gemm_set_group_q2k_sums(saved_sums_);
    cuda::fast::gemm_set_group_v2(true);
  }

  // The edge experts (0 .. 260 items: every wgmma width and both sides of each step), shuffled.
  static constexpr int kEdgeCounts[] = {0, 1, 31, 32, 33, 63, 64, 65, 95, 96, 97, 127, 128, 129, 191, 260};
  static constexpr int kEdgeExperts = static_cast<int>(std::size(kEdgeCounts));
  std::vector<int32_t> edge_selection() {
    std::vector<int32_t> sel;
    for (int e = 0; e < kEdgeExperts; ++e) sel.insert(sel.end(), static_cast<size_t>(kEdgeCounts[e]), e);
    std::shuffle(sel.begin(), sel.end(), rng_);
    return sel;
  }
  // The edge experts' products with `rows` rows of `cols` columns, one output of (items + 2) x ys poisoned
  // floats per run; run(rep) sets the switches for run rep and returns whether it takes v2 instead.
  template <class F>
  std::vector<std::vector<float>> edge_runs(GgmlType t, const Plan& pl, int64_t items, int64_t rows, int64_t cols,
                                            bool gather, int64_t ys, int reps, F&& run) {
    auto w = up(random_weights(t, int64_t{kEdgeExperts} * rows, cols));
    const cuda::DMat W{t, w.get(), cols, kEdgeExperts * rows, row_bytes(t, cols)};
    const int64_t x_rows = items;
    auto dx = up(tailed_acts(static_cast<size_t>(x_rows * cols)));
    cuda::DeviceArray<uint16_t> xb(static_cast<size_t>(2 * x_rows * cols));
    cuda::fast::to_f16(dx.get(), x_rows, cols, cols, xb.get(), nullptr);
    std::vector<std::vector<float>> out(static_cast<size_t>(reps));
    for (int rep = 0; rep < reps; ++rep) {
      const bool v2 = run(rep);
      const bool sums = cuda::fast::gemm_group_q2k_sums();
      auto tsums = poisoned<float>(static_cast<size_t>(cuda::fast::group_token_sums_floats(x_rows, cols)));
      auto y = poisoned<float>(static_cast<size_t>((items + 2) * ys));
      if (!v2)
        EXPECT_TRUE(cuda::fast::gemm_grouped_wgmma(W, rows, pl.p, xb.get(), cols, x_rows, gather, 1, !gather, y.get(),
                                                   ys, nullptr, sums ? tsums.get() : nullptr));
      else
        EXPECT_TRUE(cuda::fast::gemm_grouped_v2(W, rows, pl.p, xb.get(), cols, x_rows, gather, 1, !gather, y.get(), ys,
                                                nullptr));
      out[static_cast<size_t>(rep)] = down(y);
    }
    cuda::fast::gemm_set_group_wgmma(true);
    cuda::fast::gemm_set_group_q2k_sums(false);
    return out;
  }

  // Run 0 of edge_runs against run 2: unwritten outputs, writes outside them, differing elements.
  struct EdgeStats {
    int64_t unwritten = 0, stray = 0, differ = 0;
  };
  static EdgeStats edge_stats(const std::vector<std::vector<float>>& out, int64_t items, int64_t rows, int64_t ys) {
    EdgeStats st;
    for (int64_t yr = 0; yr < items + 2; ++yr)
      for (int64_t j = 0; j < ys; ++j) {
        const size_t i = static_cast<size_t>(yr * ys + j);
        if (yr < items && j < rows) {
          st.unwritten += !std::isfinite(out[0][i]);
          st.differ += f32_to_bits(out[0][i]) != f32_to_bits(out[2][i]);
        } else {
          st.stray += f32_to_bits(out[0][i]) != 0xffffffffu;
        }
      }
    return st;
  }

  // k distinct experts a token. Skewed: experts 0..9 never, expert 10 exactly once (token 0's last slot),
  // 11..13 hot (most tokens), 14..29 warm, the rest rare; uniform draws every expert alike.
  std::vector<int32_t> routing(int64_t n_tok, int n_exp, int k, bool skewed) {
    std::vector<double> wt(static_cast<size_t>(n_exp), 1.0);
    if (skewed)
      for (int e = 0; e < n_exp; ++e) wt[e] = e < 11 ? 0.0 : e < 14 ? 200.0 : e < 30 ? 20.0 : 1.0;
    std::discrete_distribution<int> pick(wt.begin(), wt.end());
    std::vector<int32_t> sel;
    for (int64_t t = 0; t < n_tok; ++t) {
      std::vector<int32_t> mine;
      while (static_cast<int>(mine.size()) < k) {
        const int e = pick(rng_);
        if (std::find(mine.begin(), mine.end(), e) == mine.end()) mine.push_back(e);
      }
      if (skewed && t == 0) mine.back() = 10;
      sel.insert(sel.end(), mine.begin(), mine.end());
    }
    return sel;
  }
  bool saved_ = true, saved_sums_ = false;
  int saved_var_ = 0, saved_dec_ = 1;
};

// The kernel configurations checked and timed: variant 0 with the new decode (gemm_group_decode.h, the
// default) and with v2's (FLASHSTAR_GEMM_GROUP_DECODE=0), then each further variant (its own decode;
// variant 2: the register-decoded kernel, gemm_group_wgmma_reg.cu), and variant 2 with the Q2_K token
// sums precomputed (sums: gemm_set_group_q2k_sums; every call passes a scratch, which the others ignore).
struct Config {
  int variant, decode;
  bool sums;
  const char* name;
};
constexpr Config kConfigs[] = {{0, 1, false, "variant 0 decode 1"},
                               {0, 0, false, "variant 0 decode 0"},
                               {1, 1, false, "variant 1"},
                               {2, 0, false, "variant 2"},
                               {2, 0, true, "variant 2 q2k sums"}};
static_assert(sizeof(kConfigs) / sizeof(kConfigs[0]) == cuda::wgmma_group::kVariants + 2, "every variant once");

struct Product {
  const char* name;
  GgmlType t;
  int64_t rows, cols;
  bool gather;  // gate/up: gathered token rows, outputs in plan order; down: plan-order rows, scattered
};
constexpr Product kProducts[] = {{"gate", GgmlType::IQ2_XXS, 2048, 4096, true},
                                 {"up", GgmlType::IQ2_XXS, 2048, 4096, true},
                                 {"down", GgmlType::Q2_K, 4096, 2048, false}};
constexpr int kExperts = 256, kPerTok = 6;

}  // namespace

TEST_F(GemmGroupWgmma, ModelShapesAreV2sBitsAndCloseToReference) {
  for (const Product& pr : kProducts) {
    const auto wq = random_weights(pr.t, int64_t{kExperts} * pr.rows, pr.cols);  // fresh per product
    auto dw = up(wq);
    const cuda::DMat W{pr.t, dw.get(), pr.cols, kExperts * pr.rows, row_bytes(pr.t, pr.cols)};
    for (const int64_t n_tok : {int64_t{4096}, int64_t{300}, int64_t{17}}) {
      const auto sel = routing(n_tok, kExperts, kPerTok, true);
      const int64_t items = static_cast<int64_t>(sel.size());
      Plan pl = plan(sel, kExperts);
      const int64_t x_rows = pr.gather ? n_tok : items, ys = pr.rows + 3, y_rows = items + 2;
      const auto x = tailed_acts(static_cast<size_t>(x_rows * pr.cols));
      auto dx = up(x);
      cuda::DeviceArray<uint16_t> xb(static_cast<size_t>(2 * x_rows * pr.cols));
      cuda::fast::to_f16(dx.get(), x_rows, pr.cols, pr.cols, xb.get(), nullptr);
      const int32_t src_div = pr.gather ? kPerTok : 1;
      // Every kernel configuration (variants, decoders) against v2 on the same weights and activations.
      for (const Config& cfg : kConfigs) {
      const int var = cfg.variant;
      cuda::fast::gemm_set_group_wgmma_variant(var);
      cuda::fast::gemm_set_group_decode(cfg.decode);
      cuda::fast::gemm_set_group_q2k_sums(cfg.sums);
      auto tsums = poisoned<float>(static_cast<size_t>(cuda::fast::group_token_sums_floats(x_rows, pr.cols)));
      // 0, 1: the wgmma kernel alone, twice; 2: the gemm_grouped route with it on; 3: v2 (it off).
      std::vector<float> out[4];
      for (int rep = 0; rep < 4; ++rep) {
        cuda::fast::gemm_set_group_wgmma(rep < 3);
        auto y = poisoned<float>(static_cast<size_t>(y_rows * ys));
        if (rep < 2)
          ASSERT_TRUE(cuda::fast::gemm_grouped_wgmma(W, pr.rows, pl.p, xb.get(), pr.cols, x_rows, pr.gather, src_div,
                                                     !pr.gather, y.get(), ys, nullptr, tsums.get()))
              << pr.name << ": declined";
        else if (rep == 2)
          ASSERT_TRUE(cuda::fast::gemm_grouped(W, pr.rows, pl.p, xb.get(), pr.cols, x_rows, pr.gather, src_div,
                                               !pr.gather, y.get(), ys, nullptr, tsums.get()));
        else
          ASSERT_TRUE(cuda::fast::gemm_grouped_v2(W, pr.rows, pl.p, xb.get(), pr.cols, x_rows, pr.gather, src_div,
                                                  !pr.gather, y.get(), ys, nullptr));
        out[rep] = down(y);
      }
      cuda::fast::gemm_set_group_wgmma(true);
      // Every output written (finite), nothing else touched.
      int64_t unwritten = 0, stray = 0, differ = 0;
      double max_diff = 0, rms = 0;
      for (int64_t yr = 0; yr < y_rows; ++yr)
        for (int64_t j = 0; j < ys; ++j) {
          const size_t i = static_cast<size_t>(yr * ys + j);
          const float a = out[0][i], v = out[3][i];
          if (yr < items && j < pr.rows) {
            unwritten += !std::isfinite(a);
            if (f32_to_bits(a) != f32_to_bits(v)) {
              ++differ;
              if (std::isfinite(a) && std::isfinite(v)) max_diff = std::max(max_diff, std::fabs(double(a) - v));
            }
            rms += std::isfinite(v) ? double(v) * v : 0.0;
          } else {
            stray += f32_to_bits(a) != 0xffffffffu;
          }
        }
      rms = std::sqrt(rms / std::max<double>(1.0, double(items * pr.rows)));
      // Reference per item (matmul_items: item i's input row i / src_div, output row i).
      std::vector<float> x_items(static_cast<size_t>(items * pr.cols));
      if (pr.gather) {
        x_items.assign(x.begin(), x.end());
      } else {
        for (int64_t pos = 0; pos < items; ++pos)
          std::memcpy(&x_items[pl.order[pos] * pr.cols], &x[pos * pr.cols], pr.cols * 4);
      }
      std::vector<float> got, want;
      {
        auto dxi = up(x_items);
        auto ref = poisoned<float>(static_cast<size_t>(items * pr.rows));
        cuda::matmul_items(W, pr.rows, pl.sel.get(), src_div, dxi.get(), pr.cols, items, ref.get(), pr.rows, nullptr);
        const auto r = down(ref);
        got.reserve(static_cast<size_t>(items * pr.rows)), want.reserve(got.capacity());
        for (int64_t pos = 0; pos < items; ++pos) {
          const int64_t item = pl.order[pos], yrow = pr.gather ? pos : item;
          for (int64_t j = 0; j < pr.rows; ++j) got.push_back(out[0][yrow * ys + j]), want.push_back(r[item * pr.rows + j]);
        }
      }
      const double e = rel_err(got, want);
      std::printf("group wgmma %s %-4s %-8s %4lld x %4lld, %4lld tokens (%6lld items): rel err %.2e; differs "
                  "from v2 in %lld of %lld (max |diff| %.2e of rms %.2e)\n",
                  cfg.name, pr.name, type_name(pr.t), (long long)pr.rows, (long long)pr.cols, (long long)n_tok, (long long)items,
                  e, (long long)differ, (long long)(items * pr.rows), max_diff, rms);
      ASSERT_EQ(unwritten, 0) << pr.name << " " << n_tok << ": outputs unwritten";
      ASSERT_EQ(stray, 0) << pr.name << " " << n_tok << ": wrote outside the outputs";
      ASSERT_EQ(0, std::memcmp(out[0].data(), out[1].data(), out[0].size() * 4)) << pr.name << ": repeat";
      ASSERT_EQ(0, std::memcmp(out[0].data(), out[2].data(), out[0].size() * 4)) << pr.name << ": gemm_grouped route";
      EXPECT_LT(e, 3e-6) << pr.name << " " << n_tok << " " << cfg.name;
      ASSERT_EQ(0, std::memcmp(out[0].data(), out[3].data(), out[0].size() * 4))
          << pr.name << " " << n_tok << " " << cfg.name << ": not v2's bits";
      }
      cuda::fast::gemm_set_group_wgmma_variant(0);
      cuda::fast::gemm_set_group_decode(0);
      cuda::fast::gemm_set_group_q2k_sums(false);
    }
  }
}

// Variant 2 (gemm_group_wgmma_reg.cu) at the edges of its block: experts with 0 .. 260 items (every wgmma
// width 32 .. 128 and both sides of each step, blocks of a full and a partial second plan tile, experts of
// three blocks), a row count that leaves the last row block partial (200 = 128 + 72), 512 columns (two raw
// units: IQ2_XXS's odd unit starts 2 bytes into its first word), both item orders (gathered token rows
// out in plan order; plan-order rows scattered): bitwise v2, into poisoned outputs, nothing else written;
// Q2_K also with the token sums precomputed (gemm_set_group_q2k_sums, a poisoned scratch): the flag-off
// kernel's bits.
TEST_F(GemmGroupWgmma, Variant2EdgeCountsAreV2sBits) {
  const std::vector<int32_t> sel = edge_selection();
  const int64_t items = static_cast<int64_t>(sel.size()), rows = 200, cols = 512, ys = rows + 5;
  Plan pl = plan(sel, kEdgeExperts);
  for (const GgmlType t : {GgmlType::IQ2_XXS, GgmlType::Q2_K})
    for (const bool gather : {true, false}) {
      const int reps = t == GgmlType::Q2_K ? 5 : 3;
      // 0, 1: variant 2 (twice); 2: v2; 3, 4: variant 2, sums on
      const auto out = edge_runs(t, pl, items, rows, cols, gather, ys, reps, [](int rep) {
        cuda::fast::gemm_set_group_wgmma(rep != 2);
        cuda::fast::gemm_set_group_wgmma_variant(2);
        cuda::fast::gemm_set_group_q2k_sums(rep >= 3);
        return rep == 2;
      });
      const EdgeStats st = edge_stats(out, items, rows, ys);
      const int64_t unwritten = st.unwritten, stray = st.stray, differ = st.differ;
      std::printf("variant 2 edges %-8s %s: %lld items, %lld differ from v2\n", type_name(t), gather ? "gather" : "scatter",
                  (long long)items, (long long)differ);
      EXPECT_EQ(unwritten, 0);
      EXPECT_EQ(stray, 0);
      EXPECT_EQ(differ, 0) << type_name(t) << (gather ? " gather" : " scatter");
      EXPECT_EQ(0, std::memcmp(out[0].data(), out[1].data(), out[0].size() * 4)) << "repeat";
      if (reps == 5) {  // poisoned outputs compared whole: the same elements written, the same bits
        EXPECT_EQ(0, std::memcmp(out[0].data(), out[3].data(), out[0].size() * 4))
            << type_name(t) << (gather ? " gather" : " scatter") << ": sums on, not the flag-off bits";
        EXPECT_EQ(0, std::memcmp(out[3].data(), out[4].data(), out[0].size() * 4)) << "sums on: repeat";
      }
    }
}

// group_token_sums against the host's gemm_int::sum8 of the same FP16 copy (the k-loop's arithmetic):
// the same float bits for every row and 16-column group; rows with k8 past the columns (padding not
// read), an odd row count, a poisoned output of exactly the sums' size.
TEST_F(GemmGroupWgmma, TokenSumsAreTheLoopsSums) {
  for (const int64_t rows : {int64_t{1}, int64_t{37}, int64_t{4099}})
    for (const int64_t cols : {int64_t{256}, int64_t{2048}}) {
      const int64_t k8 = cols + 8;
      auto dx = up(tailed_acts(static_cast<size_t>(rows * k8)));
      cuda::DeviceArray<uint16_t> xb(static_cast<size_t>(2 * rows * k8));
      cuda::fast::to_f16(dx.get(), rows, k8, k8, xb.get(), nullptr);
      const int64_t n = cuda::fast::group_token_sums_floats(rows, cols);
      auto out = poisoned<float>(static_cast<size_t>(n));
      cuda::fast::group_token_sums(xb.get(), k8, rows * k8, rows, cols, out.get(), nullptr);
      const auto got = down(out);
      std::vector<uint16_t> h(static_cast<size_t>(2 * rows * k8));
      FS_CUDA_CHECK(cudaMemcpy(h.data(), xb.get(), h.size() * 2, cudaMemcpyDeviceToHost));
      int64_t differ = 0;
      for (int64_t r = 0; r < rows; ++r)
        for (int g = 0; g < cols / 16; ++g) {
          float s8[2];
          for (int k = 0; k < 2; ++k) {
            uint32_t hi[4], lo[4];
            std::memcpy(hi, &h[r * k8 + 16 * g + 8 * k], 16);
            std::memcpy(lo, &h[rows * k8 + r * k8 + 16 * g + 8 * k], 16);
            s8[k] = cuda::gemm_int::sum8(hi, lo);
          }
          differ += f32_to_bits(s8[0] + s8[1]) != f32_to_bits(got[r * (cols / 16) + g]);
        }
      EXPECT_EQ(differ, 0) << rows << " rows x " << cols;
    }
}

// The session's fused writer: swiglu_f16 with tsums writes the FP16 copy it writes without (bitwise) and
// exactly group_token_sums of that copy (poisoned outputs of exactly their size; odd item counts; with and
// without routing weights).
TEST_F(GemmGroupWgmma, SwigluF16TokenSumsAreGroupTokenSums) {
  for (const int64_t n : {int64_t{1}, int64_t{37}, int64_t{4099}})
    for (const int64_t ff : {int64_t{256}, int64_t{2048}})
      for (const bool weighted : {false, true}) {
        auto g = up(randn(static_cast<size_t>(n * ff), 3.0f)), u = up(randn(static_cast<size_t>(n * ff), 3.0f));
        auto w = up(randn(static_cast<size_t>(n)));
        const float* wp = weighted ? w.get() : nullptr;
        auto xb0 = poisoned<uint16_t>(static_cast<size_t>(2 * n * ff)), xb1 = poisoned<uint16_t>(xb0.size());
        const int64_t nt = cuda::fast::group_token_sums_floats(n, ff);
        auto ts = poisoned<float>(static_cast<size_t>(nt)), ref = poisoned<float>(static_cast<size_t>(nt));
        ASSERT_TRUE(cuda::fast::swiglu_f16(g.get(), u.get(), n, ff, 7.0f, wp, nullptr, xb0.get(), nullptr));
        ASSERT_TRUE(cuda::fast::swiglu_f16(g.get(), u.get(), n, ff, 7.0f, wp, nullptr, xb1.get(), nullptr, ts.get()));
        cuda::fast::group_token_sums(xb1.get(), ff, n * ff, n, ff, ref.get(), nullptr);
        std::vector<uint16_t> h0(xb0.size()), h1(xb0.size());
        FS_CUDA_CHECK(cudaMemcpy(h0.data(), xb0.get(), h0.size() * 2, cudaMemcpyDeviceToHost));
        FS_CUDA_CHECK(cudaMemcpy(h1.data(), xb1.get(), h1.size() * 2, cudaMemcpyDeviceToHost));
        EXPECT_EQ(0, std::memcmp(h0.data(), h1.data(), h0.size() * 2)) << n << " x " << ff << ": the copy changed";
        const auto a = down(ts), b = down(ref);
        int64_t differ = 0;
        for (size_t i = 0; i < a.size(); ++i) differ += f32_to_bits(a[i]) != f32_to_bits(b[i]);
        EXPECT_EQ(differ, 0) << n << " x " << ff << (weighted ? " weighted" : "");
      }
  EXPECT_FALSE(cuda::fast::swiglu_f16(nullptr, nullptr, 1, 24, 7.0f, nullptr, nullptr, nullptr, nullptr))
      << "no copy: declined";
}

TEST_F(GemmGroupWgmma, DeclinesWhatItDoesNotTake) {
  const std::vector<int32_t> sel = routing(20, 8, kPerTok, false);
  Plan pl = plan(sel, 8);
  auto y = poisoned<float>(1 << 20);
  cuda::DeviceArray<uint16_t> xb(1 << 20);
  auto w = up(random_weights(GgmlType::Q2_K, 8 * 64, 512));
  const cuda::DMat q2{GgmlType::Q2_K, w.get(), 512, 8 * 64, row_bytes(GgmlType::Q2_K, 512)};
  auto call = [&](const cuda::DMat& W, const uint16_t* x, int64_t k8) {
    return cuda::fast::gemm_grouped_wgmma(W, 64, pl.p, x, k8, 20, true, kPerTok, false, y.get(), 64, nullptr);
  };
  cuda::fast::gemm_set_group_wgmma(true);
  EXPECT_FALSE(call(q2, xb.get() + 1, 512)) << "misaligned X";
  EXPECT_FALSE(call(q2, xb.get(), 256)) << "k8 below the columns";
  auto wk = up(random_weights(GgmlType::Q4_K, 8 * 64, 512));
  EXPECT_FALSE(call(cuda::DMat{GgmlType::Q4_K, wk.get(), 512, 8 * 64, row_bytes(GgmlType::Q4_K, 512)}, xb.get(), 512))
      << "Q4_K (v2 keeps it)";
  auto w8 = up(random_weights(GgmlType::Q8_0, 8 * 64, 512));
  EXPECT_FALSE(call(cuda::DMat{GgmlType::Q8_0, w8.get(), 512, 8 * 64, row_bytes(GgmlType::Q8_0, 512)}, xb.get(), 512))
      << "Q8_0 (v2 keeps it)";
  auto wf = up(random_weights(GgmlType::F16, 8 * 64, 512));
  EXPECT_FALSE(call(cuda::DMat{GgmlType::F16, wf.get(), 512, 8 * 64, row_bytes(GgmlType::F16, 512)}, xb.get(), 512))
      << "F16";
  cuda::fast::gemm_set_group_wgmma(false);
  EXPECT_FALSE(call(q2, xb.get(), 512)) << "off";
  cuda::fast::gemm_set_group_wgmma(true);
  const auto h = down(y);
  for (float v : h) ASSERT_EQ(f32_to_bits(v), 0xffffffffu) << "a declined call wrote";
  EXPECT_TRUE(call(q2, xb.get(), 512)) << "the same call, taken";
  FS_CUDA_CHECK(cudaDeviceSynchronize());
}

TEST_F(GemmGroupWgmma, DISABLED_TimesModelShapes) {
  // One layer's routed-expert products at 4096 tokens (256 experts, 6 a token, uniform distinct routing):
  // median of 9 timed runs after a warm-up, every wgmma configuration (kConfigs: variant 0 with the new
  // and with v2's decode, variant 1) and v2, on the same weights (one line per configuration and product).
  const int64_t n_tok = 4096;
  constexpr int kRuns = 9;
  const auto sel = routing(n_tok, kExperts, kPerTok, false);
  const int64_t items = static_cast<int64_t>(sel.size());
  Plan pl = plan(sel, kExperts);
  constexpr int kV = static_cast<int>(sizeof(kConfigs) / sizeof(kConfigs[0]));
  double total[kV + 1] = {}, flops = 0;
  for (const Product& pr : kProducts) {
    auto w = up(random_weights(pr.t, int64_t{kExperts} * pr.rows, pr.cols));
    const cuda::DMat W{pr.t, w.get(), pr.cols, kExperts * pr.rows, row_bytes(pr.t, pr.cols)};
    const int64_t x_rows = pr.gather ? n_tok : items;
    auto dx = up(randn(static_cast<size_t>(x_rows * pr.cols)));
    cuda::DeviceArray<uint16_t> xb(static_cast<size_t>(2 * x_rows * pr.cols));
    cuda::fast::to_f16(dx.get(), x_rows, pr.cols, pr.cols, xb.get(), nullptr);
    cuda::DeviceArray<float> y(static_cast<size_t>(items * pr.rows));
    cuda::DeviceArray<float> tsums(static_cast<size_t>(cuda::fast::group_token_sums_floats(x_rows, pr.cols)));
    float med[kV + 1];
    for (int m = 0; m <= kV; ++m) {  // m < kV: kConfigs[m]; kV: v2
      cuda::fast::gemm_set_group_wgmma(m < kV);
      cuda::fast::gemm_set_group_wgmma_variant(m < kV ? kConfigs[m].variant : 0);
      cuda::fast::gemm_set_group_decode(m < kV ? kConfigs[m].decode : 0);
      cuda::fast::gemm_set_group_q2k_sums(m < kV && kConfigs[m].sums);
      auto once = [&](int) {
        const int32_t src_div = pr.gather ? kPerTok : 1;
        if (m < kV)  // with the sums on, the time includes group_token_sums (the session's cost)
          ASSERT_TRUE(cuda::fast::gemm_grouped_wgmma(W, pr.rows, pl.p, xb.get(), pr.cols, x_rows, pr.gather, src_div,
                                                     !pr.gather, y.get(), pr.rows, nullptr, tsums.get()));
        else
          ASSERT_TRUE(cuda::fast::gemm_grouped_v2(W, pr.rows, pl.p, xb.get(), pr.cols, x_rows, pr.gather, src_div,
                                                  !pr.gather, y.get(), pr.rows, nullptr));
      };
      med[m] = median_ms(1, kRuns, once);
      total[m] += med[m];
    }
    const double tf = 2.0 * items * pr.rows * pr.cols / 1e12;
    flops += tf;
    for (int m = 0; m <= kV; ++m)
      std::printf("group %-4s %-8s %4lld x %4lld, 4096 tokens: %-18s %.3f ms (%.0f TFLOP/s useful), %.2fx v2\n",
                  pr.name, type_name(pr.t), (long long)pr.rows, (long long)pr.cols, m < kV ? kConfigs[m].name : "v2",
                  med[m], tf / med[m] * 1e3, med[kV] / med[m]);
    if (pr.t == GgmlType::Q2_K) {
      // The two parts of the "q2k sums" line: group_token_sums alone, and the product with the sums ready
      // (what the session pays when the SwiGLU's FP16 copy writes them).
      cuda::fast::gemm_set_group_wgmma(true);
      cuda::fast::gemm_set_group_wgmma_variant(2);
      cuda::fast::gemm_set_group_q2k_sums(true);
      const float ts = median_ms(1, kRuns, [&](int) {
        cuda::fast::group_token_sums(xb.get(), pr.cols, x_rows * pr.cols, x_rows, pr.cols, tsums.get(), nullptr);
      });
      const float pm = median_ms(1, kRuns, [&](int) {
        ASSERT_TRUE(cuda::fast::gemm_grouped_wgmma(W, pr.rows, pl.p, xb.get(), pr.cols, x_rows, false, 1, true, y.get(),
                                                   pr.rows, nullptr, tsums.get(), true));
      });
      std::printf("group down q2k sums: group_token_sums %.3f ms, the product with the sums ready %.3f ms (%.2fx v2)\n",
                  ts, pm, med[kV] / pm);
    }
  }
  for (int m = 0; m <= kV; ++m)  // the switches: restored by TearDown
    std::printf("routed-expert products of a layer, 4096 tokens: %-18s %.2f ms (%.0f TFLOP/s), %.2fx v2\n",
                m < kV ? kConfigs[m].name : "v2", total[m], flops / total[m] * 1e3, total[kV] / total[m]);
}
