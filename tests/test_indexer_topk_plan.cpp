// The decode top-k's index math (src/cuda/indexer_topk_plan.h) without a GPU: the digits tile the key,
// the warps' final-pass ranges tile the rows in order, and the host emulation of the kernel's steps
// selects exactly the top_k rows by (key desc, row asc), written ascending, for random scores, heavy
// ties, -0 beside +0, infinities and the sizes around top_k and the staging limit's neighbourhood.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "cuda/indexer_topk_plan.h"

using namespace flashstar::cuda::itk;

namespace {

// The contract, by sorting: the top_k rows by (key desc, row asc), as ascending ids; -1 past n_vis.
std::vector<int32_t> by_sort(const std::vector<float>& s, int top_k) {
  const int64_t n = static_cast<int64_t>(s.size());
  std::vector<int32_t> out(static_cast<size_t>(top_k), -1);
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return order_key(s[a]) > order_key(s[b]); });
  const int64_t m = std::min<int64_t>(n, top_k);
  idx.resize(static_cast<size_t>(m));
  std::sort(idx.begin(), idx.end());
  std::copy(idx.begin(), idx.end(), out.begin());
  return out;
}

TEST(IndexerTopkPlan, DigitsTileTheKey) {
  uint32_t all = 0;
  for (int p = 0; p < kPasses; ++p) {
    EXPECT_EQ(all & digit_mask(p), 0u) << p;
    EXPECT_EQ(known_mask(p), all) << p;  // the bits fixed before pass p are the earlier digits
    EXPECT_LE(1 << bits_of(p), kMaxBins);
    all |= digit_mask(p);
  }
  EXPECT_EQ(all, 0xffffffffu);
  EXPECT_EQ(kBinsPerThread * kThreads, kMaxBins);
}

TEST(IndexerTopkPlan, WarpRangesTileTheRows) {
  for (int64_t n : {1, 31, 32, 33, 511, 512, 513, 1023, 1024, 1025, 2048, 4097, 16384, 49152, 65536, 65537}) {
    int64_t next = 0;
    for (int w = 0; w < kWarps; ++w) {
      const int64_t b = warp_begin(n, w), e = warp_end(n, w);
      EXPECT_EQ(b, next) << n << " " << w;
      EXPECT_LE(b, e);
      if (e < n) {
        EXPECT_EQ((e - b) % 32, 0) << n << " " << w;  // only the last range is ragged
      }
      next = e;
    }
    EXPECT_EQ(next, n) << n;
  }
}

TEST(IndexerTopkPlan, OrderKeyRanksScores) {
  const std::vector<float> v = {-INFINITY, -3.5f, -1e-30f, -0.0f, 0.0f, 1e-30f, 2.0f, INFINITY};
  for (size_t i = 1; i < v.size(); ++i) EXPECT_LT(order_key(v[i - 1]), order_key(v[i])) << i;
}

// The kernel's bucket search, thread by thread (each with its two bins and the count above them, as the
// shuffles give it): exactly one thread picks, the bin and remainder of the serial walk down the bins.
TEST(IndexerTopkPlan, OneThreadPicksTheSerialBin) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> cnt(0, 40), which(0, kMaxBins - 1);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int> hist(kMaxBins, 0);
    const int spread = trial % 4 == 0 ? 1 : trial % 4 == 1 ? 3 : 2048;  // all in one bin, a few, anywhere
    const int base = which(rng);
    for (int i = 0; i < 50 + trial * 10; ++i) ++hist[(base + which(rng) % spread) % kMaxBins];
    if (trial % 5 == 0)
      for (int& h : hist) h += cnt(rng) == 0 ? cnt(rng) : 0;
    int total = 0;
    for (int h : hist) total += h;
    for (int rem : {1, 2, total / 3 + 1, total - 1, total}) {
      if (rem < 1 || rem > total) continue;
      int serial_bin = -1, serial_rem = 0, above = 0;
      for (int b = kMaxBins - 1; b >= 0 && serial_bin < 0; --b) {
        if (above < rem && above + hist[b] >= rem) serial_bin = b, serial_rem = rem - above;
        above += hist[b];
      }
      int picks = 0, after = 0;
      for (int tid = kThreads - 1; tid >= 0; --tid) {
        const int b_lo = tid * kBinsPerThread, h0 = hist[b_lo], h1 = hist[b_lo + 1];
        int nr = 0;
        const int bin = pick_bin(b_lo, h0, h1, after, rem, nr);
        if (bin >= 0) {
          ++picks;
          EXPECT_EQ(bin, serial_bin) << trial << " " << rem;
          EXPECT_EQ(nr, serial_rem) << trial << " " << rem;
        }
        after += h0 + h1;
      }
      EXPECT_EQ(picks, 1) << trial << " " << rem;
    }
  }
}

class IndexerTopkEmulation : public ::testing::TestWithParam<int64_t> {};

TEST_P(IndexerTopkEmulation, MatchesTheSort) {
  const int top_k = 512;
  const int64_t n = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(n));
  std::normal_distribution<float> nd;
  std::uniform_int_distribution<int> pick(0, 7);
  for (int kind = 0; kind < 5; ++kind) {
    std::vector<float> s(static_cast<size_t>(n));
    for (auto& x : s) {
      switch (kind) {
        case 0: x = nd(rng); break;                                         // distinct
        case 1: x = static_cast<float>(pick(rng)); break;                   // eight values: huge ties
        case 2: x = pick(rng) < 4 ? 0.0f : -0.0f; break;                    // +0 and -0 only
        case 3: x = pick(rng) == 0 ? INFINITY : std::fabs(nd(rng)) * 1e-3f; break;
        default: x = 1.0f + static_cast<float>(pick(rng)) * 1.1920929e-7f;  // neighbours in the last digit
      }
    }
    EXPECT_EQ(emulate(s.data(), n, top_k), by_sort(s, top_k)) << "n " << n << " kind " << kind;
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, IndexerTopkEmulation,
                         ::testing::Values(1, 511, 512, 513, 1000, 2048, 4099, 16384, 49153));

}  // namespace
