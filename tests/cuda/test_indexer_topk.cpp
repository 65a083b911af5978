// The decode top-k (fast_indexer_topk.cu, FLASHSTAR_ATTN_DECODE_V2) against the old one-block radix
// select of fast_attention.cu: the same row ids in the same order, bitwise, into poisoned outputs, at
// row counts around top_k, 2048, 16384 and 65536 (past the shared-memory staging limit), with distinct
// scores, heavy ties, +0 beside -0 and neighbours in the last digit; staged and unstaged keys; the
// position read from the device (the decode graph); and the whole indexer_select with the switch on and
// off. The host emulation of indexer_topk_plan.h is the third opinion. DISABLED_ timing at 8k and 64k.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "cuda/fast_kernels.h"
#include "cuda/indexer_topk_plan.h"
#include "cuda_test_fixture.h"

using namespace flashstar;

namespace {

constexpr int kTopK = 512, kRatio = 4, kH = 64, kHd = 128;

class IndexerTopk : public cuda_test::CudaKernelTest {
 protected:
  void SetUp() override {
    CudaKernelTest::SetUp();
    v2_ = cuda::fast::attention_decode_v2();
  }
  void TearDown() override { cuda::fast::attention_decode_set_v2(v2_); }
  int v2_ = 0;

  // Scores of n queries, `kind` as in test_indexer_topk_plan.cpp; NaN past query t's (pos0 + t + 1) / 4
  // rows (a NaN key ranks above every score: a kernel reading past its rows would pick it).
  std::vector<float> scores(int64_t n, int64_t stride, int kind, int64_t pos0) {
    std::vector<float> s(static_cast<size_t>(n * stride));
    std::uniform_int_distribution<int> pick(0, 7);
    auto g = randn(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      switch (kind) {
        case 0: s[i] = g[i]; break;
        case 1: s[i] = static_cast<float>(pick(rng_)); break;
        case 2: s[i] = pick(rng_) < 4 ? 0.0f : -0.0f; break;
        default: s[i] = 1.0f + static_cast<float>(pick(rng_)) * 1.1920929e-7f;
      }
    }
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = (pos0 + t + 1) / kRatio; r < stride; ++r) s[static_cast<size_t>(t * stride + r)] = NAN;
    return s;
  }
  std::vector<int32_t> topk(const cuda::DeviceArray<float>& sc, int64_t stride, int64_t pos0, int64_t n, int version,
                            int64_t max_vis, const int64_t* pos_dev = nullptr) {
    auto sel = poisoned<int32_t>(static_cast<size_t>(n * kTopK));
    cuda::fast::indexer_topk(sc.get(), stride, pos_dev ? 0 : pos0, n, kRatio, kTopK, sel.get(), nullptr, pos_dev,
                             version, max_vis);
    FS_CUDA_CHECK(cudaGetLastError());
    return down(sel);
  }
};

TEST_F(IndexerTopk, NewSelectsAsOldAroundTheEdges) {
  for (int64_t nv : {kTopK - 1, kTopK, kTopK + 1, 2048, 16384, 65536}) {
    for (int kind = 0; kind < 4; ++kind) {
      const int64_t n = 3, pos0 = nv * kRatio - 2, stride = nv + 2;  // queries see nv - 1, nv, nv rows
      const auto h = scores(n, stride, kind, pos0);
      const auto sc = up(h);
      const auto old_sel = topk(sc, stride, pos0, n, 1, stride);
      const auto staged = topk(sc, stride, pos0, n, 2, stride);
      const auto unstaged = topk(sc, stride, pos0, n, 2, 0);  // every pass from global memory
      ASSERT_EQ(staged, old_sel) << "n_vis " << nv << " kind " << kind;
      ASSERT_EQ(unstaged, old_sel) << "n_vis " << nv << " kind " << kind;
      for (int64_t t = 0; t < n; ++t) {
        const auto ref = cuda::itk::emulate(h.data() + t * stride, (pos0 + t + 1) / kRatio, kTopK);
        ASSERT_TRUE(std::equal(ref.begin(), ref.end(), old_sel.begin() + t * kTopK)) << nv << " " << kind << " " << t;
      }
    }
  }
}

TEST_F(IndexerTopk, NewReadsThePositionFromTheDevice) {
  const int64_t nv = 4099, stride = nv + 8, n = 2, pos0 = nv * kRatio + 2;
  const auto sc = up(scores(n, stride, 0, pos0));
  const auto pos = up(std::vector<int64_t>{pos0});
  EXPECT_EQ(topk(sc, stride, pos0, n, 2, stride, pos.get()), topk(sc, stride, pos0, n, 1, stride));
}

TEST_F(IndexerTopk, IndexerSelectSameWithTheSwitch) {
  for (int64_t nv : {kTopK + 1, 3000}) {
    const int64_t n = 2, pos0 = nv * kRatio - 1, stride = nv + 2;
    const auto iq = up(randn(static_cast<size_t>(n * kH * kHd))), iw = up(randn(static_cast<size_t>(n * kH)));
    const auto rows = up(randn(static_cast<size_t>((nv + 1) * kHd)));
    std::vector<int32_t> got[2];
    for (int v = 0; v < 2; ++v) {
      cuda::fast::attention_decode_set_v2(v == 1 ? cuda::fast::kDecodeV2TopK : 0);
      auto scratch = poisoned<float>(static_cast<size_t>(n * stride));
      auto sel = poisoned<int32_t>(static_cast<size_t>(n * kTopK));
      cuda::fast::indexer_select(iq.get(), iw.get(), 0.01f, rows.get(), kH, kHd, pos0, n, kRatio, kTopK,
                                 scratch.get(), stride, sel.get(), nullptr);
      got[v] = down(sel);
    }
    EXPECT_EQ(got[1], got[0]) << nv;
  }
}

// Old against new, one query, as the decode graph runs it (position on the device).
TEST_F(IndexerTopk, DISABLED_Timing) {
  const auto pos = up(std::vector<int64_t>{0});
  for (int64_t ctx : {8192, 65536}) {
    const int64_t nv = ctx / kRatio, stride = nv + 2;
    FS_CUDA_CHECK(cudaMemcpy(pos.get(), &ctx, sizeof(int64_t), cudaMemcpyHostToDevice));
    const auto sc = up(scores(1, stride, 0, ctx - 1));
    auto sel = poisoned<int32_t>(kTopK);
    for (int v = 1; v <= 2; ++v) {
      const double us = back_to_back_us(10, 200, [&](int) {
        cuda::fast::indexer_topk(sc.get(), stride, 0, 1, kRatio, kTopK, sel.get(), nullptr, pos.get(), v, stride);
      });
      std::printf("top-k v%d ctx %lld (n_vis %lld): %.2f us a launch (back to back)\n", v,
                  static_cast<long long>(ctx), static_cast<long long>(nv), us);
    }
  }
}

}  // namespace
