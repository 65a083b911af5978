// The fused_ops route's row-parallel small ops against their reference kernels: the FP8/FP4 row
// simulations, the indexer query rounding and the hyper-connection split must be bitwise equal (same
// operations on the same values); the block-parallel RMS norm sums in another order (fp64), so within
// 1e-6. Fresh random data, odd row counts, strided rows, outputs poisoned or shared with the input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda/fast_kernels.h"
#include "cuda_test_fixture.h"

using namespace flashstar;

namespace {

class FastSmallOps : public cuda_test::CudaKernelTest {};

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_F(FastSmallOps, FinishRowsBitwiseEqualsReference) {
  // attention rows (512 = 448 FP8 + 64 rope values) and indexer rows (128, Hadamard + FP4), strided,
  // with values spread over many binades so scale blocks differ
  for (auto kind : {cuda::RowKind::Attention, cuda::RowKind::Indexer}) {
    const int64_t dim = kind == cuda::RowKind::Attention ? 512 : 128, stride = dim + 36;
    for (int64_t n : {1, 7, 333}) {
      auto x = randn(static_cast<size_t>(n * stride));
      for (size_t i = 0; i < x.size(); ++i) x[i] *= std::ldexp(1.0f, static_cast<int>(i % 23) - 11);
      auto a = up(x), b = up(x);
      cuda::finish_rows(a.get(), n, stride, dim, 64, kind, true, nullptr);
      ASSERT_TRUE(cuda::fast::finish_rows(b.get(), n, stride, dim, 64, kind, true, nullptr));
      EXPECT_TRUE(bitwise_equal(down(a), down(b))) << "kind " << int(kind) << " rows " << n;
    }
  }
  cuda::DeviceArray<float> d(4);
  EXPECT_FALSE(cuda::fast::finish_rows(d.get(), 1, 96, 96, 0, cuda::RowKind::Indexer, true, nullptr));  // not 2^k
}

// indexer_qat (rows of 128: a lane quad a row) against the block kernel it replaced and the reference, on
// rows that stress the FP4 blocks: Gaussian, zeros, negative zeros, subnormal and huge magnitudes (sums
// that overflow to infinities and NaN), values over 41 binades, a single nonzero value on a grid tie;
// row counts around the 64 rows of a block.
static std::vector<float> qat_rows(std::vector<float> x) {
  const int64_t n = static_cast<int64_t>(x.size()) / 128;
  for (int64_t r = 0; r < n; ++r) {
    float* row = x.data() + r * 128;
    switch (r % 7) {
      case 1: std::fill(row, row + 128, 0.0f); break;
      case 2: std::fill(row, row + 128, -0.0f), row[r % 128] = r % 2 ? 1.0f : -0.0f; break;
      case 3: for (int i = 0; i < 128; ++i) row[i] *= 1e-39f; break;
      case 4: for (int i = 0; i < 128; ++i) row[i] *= 3e37f; break;
      case 5: for (int i = 0; i < 128; ++i) row[i] *= std::ldexp(1.0f, i % 41 - 20); break;
      case 6: std::fill(row, row + 128, 0.0f), row[(r * 5) % 128] = -2.5f; break;
      default: break;
    }
  }
  return x;
}

TEST_F(FastSmallOps, IndexerQatBitwiseEqualsReference) {
  for (int64_t n : {1, 63, 64, 65, 64 * 37 + 5}) {
    const auto x = qat_rows(randn(static_cast<size_t>(n * 128), 3.0f));
    auto a = up(x), b = up(x), c = up(x);
    cuda::indexer_qat(a.get(), n, 128, nullptr);
    ASSERT_TRUE(cuda::fast::indexer_qat_block(b.get(), n, 128, nullptr));
    ASSERT_TRUE(cuda::fast::indexer_qat(c.get(), n, 128, nullptr));
    const auto ref = down(a);
    EXPECT_TRUE(bitwise_equal(down(b), ref)) << "block kernel, vectors " << n;
    EXPECT_TRUE(bitwise_equal(down(c), ref)) << "quad kernel, vectors " << n;
  }
}

// A 4 096-token prefill's indexer queries (64 heads: 262 144 rows of 128): the block kernel and the quad
// kernel, each over a fresh copy of the rows.
TEST_F(FastSmallOps, DISABLED_IndexerQatPrefillTiming) {
  const int64_t n = 4096 * 64;
  const auto x = up(randn(static_cast<size_t>(n * 128), 3.0f));
  auto y = poisoned<float>(x.size());
  for (int quad = 0; quad < 2; ++quad) {
    const double us = back_to_back_us(3, 20, [&](int) {
      FS_CUDA_CHECK(cudaMemcpyAsync(y.get(), x.get(), x.bytes(), cudaMemcpyDeviceToDevice));
      if (quad) cuda::fast::indexer_qat(y.get(), n, 128, nullptr);
      else cuda::fast::indexer_qat_block(y.get(), n, 128, nullptr);
    });
    const double copy_us = back_to_back_us(3, 20, [&](int) {
      FS_CUDA_CHECK(cudaMemcpyAsync(y.get(), x.get(), x.bytes(), cudaMemcpyDeviceToDevice));
    });
    std::printf("indexer_qat %s kernel, %lld rows: %.1f us a launch (%.1f us with the copy before it)\n",
                quad ? "quad" : "block", static_cast<long long>(n), us - copy_us, us);
  }
}

TEST_F(FastSmallOps, HcSplitBitwiseEqualsReference) {
  const int n_hc = 4, iters = 20;
  const int64_t mixn = 2 * n_hc + n_hc * n_hc + 3;  // a wider row stride than the split needs
  for (int64_t n : {1, 5, 200}) {
    auto dmix = up(randn(static_cast<size_t>(n * mixn), 2.0f));
    auto dsc = up(randn(3, 0.5f)), dbase = up(randn(static_cast<size_t>(2 * n_hc + n_hc * n_hc)));
    const size_t out_n = static_cast<size_t>(n * (2 * n_hc + n_hc * n_hc));
    auto ref = poisoned<float>(out_n), got = poisoned<float>(out_n);
    cuda::hc_split(dmix.get(), mixn, dsc.get(), dbase.get(), n_hc, iters, 1e-6f, ref.get(), n, nullptr);
    ASSERT_TRUE(cuda::fast::hc_split(dmix.get(), mixn, dsc.get(), dbase.get(), n_hc, iters, 1e-6f, got.get(), n, nullptr));
    EXPECT_TRUE(bitwise_equal(down(ref), down(got))) << "tokens " << n;
  }
}

TEST_F(FastSmallOps, RmsNormMatchesReference) {
  for (int64_t dim : {512, 1024, 4096, 16384, 4100}) {
    for (int64_t n : {1, 3, 129}) {
      const int64_t xs = dim + 8;
      auto x = randn(static_cast<size_t>(n * xs), 3.0f);
      auto w = randn(static_cast<size_t>(dim));
      auto dx = up(x), dw = up(w);
      auto ref = poisoned<float>(static_cast<size_t>(n * dim)), got = poisoned<float>(static_cast<size_t>(n * dim));
      for (bool weighted : {true, false}) {
        cuda::rms_norm_rows(dx.get(), xs, weighted ? dw.get() : nullptr, ref.get(), dim, n, dim, 1e-6f, nullptr);
        ASSERT_TRUE(cuda::fast::rms_norm_rows(dx.get(), xs, weighted ? dw.get() : nullptr, got.get(), dim, n, dim, 1e-6f,
                                              nullptr));
        EXPECT_LT(rel_err(down(got), down(ref)), 1e-6) << "dim " << dim << " rows " << n;
      }
      // in place, as the session normalises q and kv rows
      auto inplace = up(x);
      ASSERT_TRUE(cuda::fast::rms_norm_rows(inplace.get(), xs, dw.get(), inplace.get(), xs, n, dim, 1e-6f, nullptr));
      cuda::rms_norm_rows(dx.get(), xs, dw.get(), ref.get(), dim, n, dim, 1e-6f, nullptr);
      const auto ip = down(inplace), r = down(ref);
      std::vector<float> packed(static_cast<size_t>(n * dim));
      for (int64_t t = 0; t < n; ++t) std::memcpy(&packed[t * dim], &ip[t * xs], dim * sizeof(float));
      EXPECT_LT(rel_err(packed, r), 1e-6) << "in place, dim " << dim;
    }
  }
  cuda::DeviceArray<float> d(8);
  EXPECT_FALSE(cuda::fast::rms_norm_rows(d.get(), 6, nullptr, d.get(), 6, 1, 6, 1e-6f, nullptr));  // not float4 rows
}

TEST_F(FastSmallOps, NormRopeRowsBitwiseEqualsTheLaunchesItReplaces) {
  // q heads (64 rows of 512 per token, no weight) and cached kv rows (one per token, weight, FP8 finish),
  // at a position read from the device and at a host position
  const int64_t dim = 512;
  const int n_rot = 64;
  const std::vector<double> freq = rope_freqs(n_rot);
  auto dfreq = up(freq);
  const std::vector<int64_t> pos_host = {12345};
  auto dpos = up(pos_host);
  struct Case {
    int64_t tokens;
    int heads;
    bool weighted, fp8, pos_on_device;
  };
  for (const Case& c : {Case{1, 64, false, false, true}, Case{7, 64, false, false, false}, Case{1, 1, true, true, true},
                        Case{133, 1, true, true, false}, Case{5, 1, true, false, false}}) {
    const int64_t rows = c.tokens * c.heads;
    auto x = randn(static_cast<size_t>(rows * dim), 3.0f);
    for (size_t i = 0; i < x.size(); ++i) x[i] *= std::ldexp(1.0f, static_cast<int>(i % 9) - 4);
    auto dw = up(randn(static_cast<size_t>(dim)));
    const float* w = c.weighted ? dw.get() : nullptr;
    const int64_t* pd = c.pos_on_device ? dpos.get() : nullptr;
    const int64_t pos0 = c.pos_on_device ? 0 : 777;
    auto ref = up(x), got = up(x);
    ASSERT_TRUE(cuda::fast::rms_norm_rows(ref.get(), dim, w, ref.get(), dim, rows, dim, 1e-6f, nullptr));
    cuda::rope(ref.get(), c.tokens, c.heads * dim, c.heads, dim, n_rot, dfreq.get(), pos0, 1, false, nullptr, pd);
    if (c.fp8) {
      ASSERT_TRUE(cuda::fast::finish_rows(ref.get(), rows, dim, dim, n_rot, cuda::RowKind::Attention, true, nullptr));
    }
    ASSERT_TRUE(cuda::fast::norm_rope_rows(got.get(), rows, dim, w, 1e-6f, c.heads, n_rot, dfreq.get(), pos0, pd, c.fp8,
                                           nullptr));
    EXPECT_TRUE(bitwise_equal(down(ref), down(got))) << "tokens " << c.tokens << " heads " << c.heads;
  }
  cuda::DeviceArray<float> d(8);
  EXPECT_FALSE(cuda::fast::norm_rope_rows(d.get(), 1, 6, nullptr, 1e-6f, 1, 2, dfreq.get(), 0, nullptr, false, nullptr));
}

TEST_F(FastSmallOps, NormRopePairEqualsTwoCalls) {
  // the decode step's query heads (no weight, 64 rows a position) and cached kv row (weight, FP8 finish)
  // in one launch: each row bitwise as its own norm_rope_rows call; also 3 tokens and a pair with no rows.
  const int64_t dim = 512;
  const int n_rot = 64;
  const std::vector<double> freq = rope_freqs(n_rot);
  auto dfreq = up(freq);
  const std::vector<int64_t> pos_host = {4097};
  auto dpos = up(pos_host);
  for (int64_t tokens : {1, 3}) {
    for (bool pos_on_device : {true, false}) {
      const int64_t* pd = pos_on_device ? dpos.get() : nullptr;
      const int64_t pos0 = pos_on_device ? 0 : 300;
      auto q = randn(static_cast<size_t>(tokens * 64 * dim), 2.0f), kv = randn(static_cast<size_t>(tokens * dim), 2.0f);
      auto dw = up(randn(static_cast<size_t>(dim)));
      auto q_ref = up(q), q_got = up(q), kv_ref = up(kv), kv_got = up(kv);
      ASSERT_TRUE(cuda::fast::norm_rope_rows(q_ref.get(), tokens * 64, dim, nullptr, 1e-6f, 64, n_rot, dfreq.get(), pos0,
                                             pd, false, nullptr));
      ASSERT_TRUE(cuda::fast::norm_rope_rows(kv_ref.get(), tokens, dim, dw.get(), 1e-6f, 1, n_rot, dfreq.get(), pos0, pd,
                                             true, nullptr));
      cuda::fast::NormRopeJob a, b;
      a.x = q_got.get(), a.rows = tokens * 64, a.rows_per_pos = 64;
      b.x = kv_got.get(), b.rows = tokens, b.w = dw.get(), b.fp8 = true;
      ASSERT_TRUE(cuda::fast::norm_rope_pair(a, b, dim, 1e-6f, n_rot, dfreq.get(), pos0, pd, nullptr));
      EXPECT_TRUE(bitwise_equal(down(q_ref), down(q_got))) << "q, tokens " << tokens;
      EXPECT_TRUE(bitwise_equal(down(kv_ref), down(kv_got))) << "kv, tokens " << tokens;
    }
  }
  cuda::fast::NormRopeJob none;
  EXPECT_TRUE(cuda::fast::norm_rope_pair(none, none, 512, 1e-6f, 64, dfreq.get(), 0, nullptr, nullptr));
  cuda::DeviceArray<float> d(8);
  cuda::fast::NormRopeJob bad;
  bad.x = d.get(), bad.rows = 1;
  EXPECT_FALSE(cuda::fast::norm_rope_pair(bad, none, 6, 1e-6f, 2, dfreq.get(), 0, nullptr, nullptr));
}

TEST_F(FastSmallOps, HcSplitSumAndSlotsPostBitwiseEqualTheLaunchesTheyReplace) {
  const int n_hc = 4, iters = 20, k = 6;
  const int64_t d = 4096 + 36, mixn = 2 * n_hc + n_hc * n_hc + 3, sn = 2 * n_hc + n_hc * n_hc;
  for (int64_t n : {1, 3, 70}) {
    auto dmix = up(randn(static_cast<size_t>(n * mixn), 2.0f));
    auto dsc = up(randn(3, 0.5f)), dbase = up(randn(static_cast<size_t>(sn)));
    const auto X = randn(static_cast<size_t>(n * n_hc * d));
    auto dX = up(X);
    auto s_ref = poisoned<float>(static_cast<size_t>(n * sn)), s_got = poisoned<float>(static_cast<size_t>(n * sn));
    auto o_ref = poisoned<float>(static_cast<size_t>(n * d)), o_got = poisoned<float>(static_cast<size_t>(n * d));
    ASSERT_TRUE(cuda::fast::hc_split(dmix.get(), mixn, dsc.get(), dbase.get(), n_hc, iters, 1e-6f, s_ref.get(), n, nullptr));
    cuda::hc_weighted_sum(dX.get(), s_ref.get(), n_hc, d, o_ref.get(), n, nullptr);
    ASSERT_TRUE(cuda::fast::hc_split_sum(dmix.get(), mixn, dsc.get(), dbase.get(), n_hc, iters, 1e-6f, s_got.get(),
                                         dX.get(), d, o_got.get(), n, nullptr));
    EXPECT_TRUE(bitwise_equal(down(s_ref), down(s_got))) << "split, tokens " << n;
    EXPECT_TRUE(bitwise_equal(down(o_ref), down(o_got))) << "sum, tokens " << n;
    // the FFN's end: routed slots (+ shared expert) summed, then the streams updated
    auto dslot = up(randn(static_cast<size_t>(n * k * d))), dshared = up(randn(static_cast<size_t>(n * d)));
    for (bool with_shared : {true, false}) {
      const float* sh = with_shared ? dshared.get() : nullptr;
      auto x_ref = up(X), x_got = up(X);
      auto f = poisoned<float>(static_cast<size_t>(n * d));
      cuda::sum_slots(dslot.get(), sh, n, k, d, f.get(), nullptr);
      cuda::hc_post(f.get(), x_ref.get(), s_ref.get(), n_hc, d, n, nullptr);
      ASSERT_TRUE(cuda::fast::sum_slots_post(dslot.get(), sh, k, x_got.get(), s_ref.get(), n_hc, d, n, nullptr));
      EXPECT_TRUE(bitwise_equal(down(x_ref), down(x_got))) << "slots + post, tokens " << n << " shared " << with_shared;
    }
  }
}
