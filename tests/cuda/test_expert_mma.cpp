// The INT8 tensor-core expert kernel (fast_expert_mma.cu) against the reference cuda::matmul_items: random
// quant codes with sane scales (every bit pattern of the codes occurs), the model's expert shapes and odd
// ones (short and ragged rows, narrow and unaligned rows, item groups, padded strides, long rows that
// stream several chunks, more items than one launch takes, the 24-warp IQ2_XXS block's splits),
// activations with heavy tails, outputs poisoned before launch. Bound: relative L2 error 2e-6 like the
// fp32 kernel (1e-4 below 32 outputs, where a lone dot product can cancel to near zero).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "common/half.h"
#include "cuda/fast_expert_mma.h"
#include "cuda_test_fixture.h"
#include "quant/quant.h"

using namespace flashstar;

namespace {

class ExpertMma : public cuda_test::CudaKernelTest {
 protected:
  void SetUp() override {
    CudaKernelTest::SetUp();
    if (!IsSkipped()) cuda::fast::init_expert_tables();
  }
  // Gaussian activations with about one value in 200 a thousand times larger.
  std::vector<float> heavy(size_t n) {
    auto x = randn(n);
    std::uniform_int_distribution<size_t> pick(0, n - 1);
    for (size_t i = 0; i < n / 200 + 1; ++i) x[pick(rng_)] *= 1000.0f;
    return x;
  }

  struct Case {
    GgmlType t;
    int64_t n_mat, rows, cols, n_items;
    int32_t src_div;
    int64_t xs_pad = 0, ys_pad = 0;  // extra floats per activation / output row
    size_t w_offset = 0;             // bytes between the allocation and the weights
    bool heavy_tails = false;
    bool quantized = false;          // weights from the project's quantizer instead of random codes
  };
  // Runs the case through both kernels; returns the relative error (and checks the bound).
  double run(const Case& c) {
    const size_t rb = row_bytes(c.t, c.cols);
    std::vector<uint8_t> wq;
    if (c.quantized) {
      const auto f = randn(static_cast<size_t>(c.n_mat * c.rows * c.cols), 0.05f);
      wq.resize(rb * c.n_mat * c.rows);
      for (int64_t r = 0; r < c.n_mat * c.rows; ++r)
        quant::quantize_row(c.t, f.data() + r * c.cols, wq.data() + r * rb, c.cols);
    } else {
      wq = random_weights(c.t, c.n_mat * c.rows, c.cols);
    }
    wq.insert(wq.begin(), c.w_offset, 0);
    const int64_t x_rows = (c.n_items + c.src_div - 1) / c.src_div, xs = c.cols + c.xs_pad, ys = c.rows + c.ys_pad;
    const auto x = c.heavy_tails ? heavy(static_cast<size_t>(x_rows * xs)) : randn(static_cast<size_t>(x_rows * xs));
    std::vector<int32_t> mat(static_cast<size_t>(c.n_items));
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.n_mat - 1));
    for (auto& m : mat) m = pick(rng_);
    auto dw = up(wq);
    auto dx = up(x);
    auto dm = up(mat);
    auto ref = poisoned<float>(static_cast<size_t>(c.n_items * ys));
    auto got = poisoned<float>(static_cast<size_t>(c.n_items * ys));
    const cuda::DMat W{c.t, dw.get() + c.w_offset, c.cols, c.n_mat * c.rows, rb};
    cuda::matmul_items(W, c.rows, dm.get(), c.src_div, dx.get(), xs, c.n_items, ref.get(), ys, nullptr);
    EXPECT_TRUE(cuda::fast::expert_matvec(W, c.rows, dm.get(), c.src_div, dx.get(), xs, c.n_items, got.get(), ys,
                                          nullptr));
    const auto g = down(got), r = down(ref);
    std::vector<float> gv, rv;  // the outputs proper (padding stays poisoned)
    for (int64_t i = 0; i < c.n_items; ++i)
      for (int64_t j = 0; j < c.rows; ++j) gv.push_back(g[i * ys + j]), rv.push_back(r[i * ys + j]);
    const double e = rel_err(gv, rv);
    std::printf("%-7s %2lld x %5lld x %5lld, %5lld items / %d: rel err %.2e\n", type_name(c.t), (long long)c.n_mat,
                (long long)c.rows, (long long)c.cols, (long long)c.n_items, c.src_div, e);
    EXPECT_LT(e, gv.size() >= 32 ? 2e-6 : 1e-4)
        << type_name(c.t) << " rows " << c.rows << " cols " << c.cols << " items " << c.n_items;
    return e;
  }
};

}  // namespace

TEST_F(ExpertMma, RealShapesMatchReference) {
  // gate / up: 6 experts of 2048 x 4096 IQ2_XXS sharing the token's row; down: 4096 x 2048 Q2_K.
  for (int64_t n_tok : {1, 8})
    for (bool tails : {false, true}) {
      run({GgmlType::IQ2_XXS, 6, 2048, 4096, 6 * n_tok, 6, 0, 0, 0, tails});
      run({GgmlType::Q2_K, 6, 4096, 2048, 6 * n_tok, 1, 0, 0, 0, tails});
    }
}

TEST_F(ExpertMma, OddShapesMatchReference) {
  for (GgmlType t : {GgmlType::IQ2_XXS, GgmlType::Q2_K})
    for (int64_t rows : {37, 1})
      for (int64_t cols : {256, 768}) {
        run({t, 5, rows, cols, 13, 3});
        run({t, 5, rows, cols, 13, 3, 4, 3, 0, true});                      // padded strides, heavy tails
        run({t, 5, rows, cols, 13, 3, 0, 0, t == GgmlType::Q2_K ? 4u : 2u});  // rows not 16-byte aligned
      }
  // Ragged row tiles on aligned rows, every item its own activation row, and one row group of items.
  run({GgmlType::IQ2_XXS, 3, 100, 2048, 7, 1, 0, 0, 0, true});
  run({GgmlType::Q2_K, 3, 100, 1024, 7, 7});
  run({GgmlType::Q2_K, 6, 1000, 2048, 6, 1});  // two row tiles per block, the last one past the rows
  run({GgmlType::IQ2_XXS, 4, 40, 512, 9, 20, 0, 0, 0, false, true});  // the quantizer's weights
  run({GgmlType::Q2_K, 4, 40, 512, 9, 2, 0, 0, 0, false, true});
}

TEST_F(ExpertMma, LongRowsAndManyItemsMatchReference) {
  run({GgmlType::IQ2_XXS, 6, 64, 8192, 12, 6, 0, 0, 0, true});  // several chunks per column part, one buffer
  run({GgmlType::IQ2_XXS, 2, 40, 16384, 3, 1});                 // two buffers per warp
  run({GgmlType::Q2_K, 4, 128, 5120, 5, 1});                    // two buffers, a short part, an empty part
  run({GgmlType::Q2_K, 3, 3, 256, 70000, 1});                   // more item blocks than one launch takes
  run({GgmlType::IQ2_XXS, 3, 5, 256, 70000, 4});
}

// IQ2_XXS splits of the 24-warp block (fast_expert_plan.h): 7 and 8 items a block (3 column parts), parts
// of two chunks with two buffers and an empty last part, chunks 8 bytes past a 16-byte boundary (every odd
// chunk) at several widths, and the same widths on rows that are not 16-byte aligned (no delta).
TEST_F(ExpertMma, Iq2BlockSplitsMatchReference) {
  run({GgmlType::IQ2_XXS, 8, 64, 4096, 16, 8, 0, 0, 0, true});
  run({GgmlType::IQ2_XXS, 7, 48, 4096, 14, 7});
  run({GgmlType::IQ2_XXS, 6, 64, 6144, 6, 6, 0, 0, 0, true});
  run({GgmlType::IQ2_XXS, 6, 33, 10240, 12, 6});
  run({GgmlType::IQ2_XXS, 2, 70, 2048, 5, 1});
  run({GgmlType::IQ2_XXS, 6, 64, 4096, 6, 6, 0, 0, 2});
  run({GgmlType::IQ2_XXS, 6, 64, 6144, 6, 3, 0, 0, 4, true});
}

TEST_F(ExpertMma, RunToRunBitwiseEqual) {
  for (GgmlType t : {GgmlType::IQ2_XXS, GgmlType::Q2_K}) {
    const int64_t n_mat = 6, rows = t == GgmlType::IQ2_XXS ? 2048 : 4096, cols = t == GgmlType::IQ2_XXS ? 4096 : 2048;
    const int64_t items = 48;
    const int32_t src_div = t == GgmlType::IQ2_XXS ? 6 : 1;
    const auto wq = random_weights(t, n_mat * rows, cols);
    const auto x = heavy(static_cast<size_t>((items / src_div) * cols));
    std::vector<int32_t> mat(items);
    for (int64_t i = 0; i < items; ++i) mat[i] = static_cast<int32_t>((i * 5 + i / 6) % n_mat);
    auto dw = up(wq);
    auto dx = up(x);
    auto dm = up(mat);
    const cuda::DMat W{t, dw.get(), cols, n_mat * rows, row_bytes(t, cols)};
    std::vector<std::vector<float>> outs;
    for (int run = 0; run < 3; ++run) {
      auto y = poisoned<float>(static_cast<size_t>(items * rows));
      ASSERT_TRUE(cuda::fast::expert_matvec(W, rows, dm.get(), src_div, dx.get(), cols, items, y.get(), rows, nullptr));
      outs.push_back(down(y));
    }
    for (int run = 1; run < 3; ++run)
      EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[run].data(), outs[0].size() * sizeof(float))) << type_name(t);
  }
}

TEST_F(ExpertMma, RefusesWhatItCannotTake) {
  const int64_t rows = 16, cols = 512;
  const auto wq = random_weights(GgmlType::Q2_K, 2 * rows, cols);
  auto dw = up(wq);
  auto dx = up(randn(2 * cols + 8));
  auto dm = up(std::vector<int32_t>{0, 1});
  auto y = poisoned<float>(static_cast<size_t>(2 * rows));
  const size_t rb = row_bytes(GgmlType::Q2_K, cols);
  const cuda::DMat good{GgmlType::Q2_K, dw.get(), cols, 2 * rows, rb};
  auto refused = [&](const cuda::DMat& W, const float* X, int64_t xs, int32_t src_div) {
    return !cuda::fast::expert_matvec(W, rows, dm.get(), src_div, X, xs, 2, y.get(), rows, nullptr);
  };
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
    const cuda::DMat W{t, dw.get(), cols, 2 * rows, row_bytes(t, cols)};
    EXPECT_FALSE(cuda::fast::expert_matvec_supported(W)) << type_name(t);
    EXPECT_TRUE(refused(W, dx.get(), cols, 1)) << type_name(t);
  }
  EXPECT_TRUE(cuda::fast::expert_matvec_supported(good));
  EXPECT_TRUE(refused({GgmlType::Q2_K, dw.get(), 384, 2 * rows, rb}, dx.get(), cols, 1));  // width not 256-multiple
  EXPECT_TRUE(refused({GgmlType::Q2_K, dw.get(), cols, 2 * rows, rb + 16}, dx.get(), cols, 1));  // row stride
  EXPECT_TRUE(refused({GgmlType::Q2_K, dw.get() + 2, cols, 2 * rows, rb}, dx.get(), cols, 1));   // weights 2-aligned
  EXPECT_TRUE(refused({GgmlType::IQ2_XXS, dw.get() + 1, cols, 2 * rows, row_bytes(GgmlType::IQ2_XXS, cols)}, dx.get(),
                      cols, 1));
  EXPECT_TRUE(refused(good, dx.get() + 1, cols, 1));  // activations not 16-byte aligned
  EXPECT_TRUE(refused(good, dx.get(), cols + 2, 1));  // xs % 4 != 0
  EXPECT_TRUE(refused(good, dx.get(), cols, 0));      // src_div < 1
  for (float v : down(y)) EXPECT_TRUE(std::isnan(v));  // nothing was launched
}
