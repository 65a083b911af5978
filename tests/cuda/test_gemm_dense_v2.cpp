// The dense GEMM on the second grouped kernel's tiles (gemm_dense_v2, fast_gemm_group.cu) against the
// first dense kernel (fast_gemm.cu's gemm_dense, integer weights): the same bits for every format it
// takes and both block geometries (256 and 128 rows), on ragged shapes (rows no multiple of the block,
// 9 .. 4096 tokens, row0 > 0, output rows wider than the product, whose padding must stay poisoned);
// bitwise repeats; a token's output independent of the other tokens of its tile (chunk invariance); the
// fp32-class bound against the reference matmul. A timing of both kernels on the model's dense Q8_0
// shapes at 4096 tokens (DISABLED_: run with --gtest_also_run_disabled_tests). The index mappings are
// replayed on the CPU by test_gemm_group_v2.cpp (GemmGroupV2Lanes, every geometry).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda/fast_kernels.h"
#include "gemm_test_util.h"

using namespace flashstar;

namespace {

constexpr int kModes[] = {256, 128};  // the dense kernel's block rows (0: the first kernel)

class GemmDenseV2 : public cuda_test::GemmKernelTest {
 protected:
  void SetUp() override {
    GemmKernelTest::SetUp();
    if (IsSkipped()) return;
    cuda::fast::init_tables();
    saved_ = cuda::fast::gemm_dense_v2_rows();
    saved_wgmma_ = cuda::fast::gemm_wgmma();
    cuda::fast::gemm_set_wgmma(false);  // gemm() would take the warpgroup kernel ahead of these
  }
  void TearDown() override {
    cuda::fast::gemm_set_dense_v2(saved_);
    cuda::fast::gemm_set_wgmma(saved_wgmma_);
  }

  // The product through fast::gemm with the dense kernel at `mode` block rows (0: the first kernel).
  std::vector<float> run(const Problem& p, int mode) {
    cuda::fast::gemm_set_dense_v2(mode);
    auto y = poisoned<float>(static_cast<size_t>((p.n_tok + 2) * p.ys));
    EXPECT_TRUE(cuda::fast::gemm(p.W, p.row0, p.rows, p.xb.get(), p.n_tok, y.get(), p.ys, nullptr));
    return down(y);
  }
  int saved_ = 128;
  bool saved_wgmma_ = true;
};

}  // namespace

TEST_F(GemmDenseV2, MatchesFirstKernelBitwiseAndReference) {
  struct Case {
    GgmlType t;
    int64_t rows, cols, n_tok, row0, pad;
  };
  std::vector<Case> cases = {
      {GgmlType::Q8_0, 200, 1024, 9, 3, 3},       {GgmlType::Q8_0, 777, 2048, 33, 0, 0},
      {GgmlType::Q8_0, 1024, 4096, 130, 1024, 5}, {GgmlType::Q8_0, 320, 512, 1000, 17, 1},
      {GgmlType::Q8_0, 260, 1024, 4096, 7, 2},    {GgmlType::Q8_0, 64, 8192, 65, 1, 0},
  };
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS}) {
    cases.push_back({t, 131, 4096, 300, 2, 3});
    cases.push_back({t, 777, 2048, 33, 0, 1});
    cases.push_back({t, 96, 512, 1000, 40, 0});
  }
  for (const Case& c : cases) {
    const Problem p = make(c.t, c.rows, c.cols, c.n_tok, c.row0, c.pad);
    auto dx = up(p.x);
    auto ref = poisoned<float>(static_cast<size_t>(c.n_tok * c.rows));
    cuda::matmul(p.W, c.row0, c.rows, dx.get(), c.n_tok, c.cols, ref.get(), c.rows, nullptr);
    const auto r = down(ref);
    int64_t stray = 0;
    const auto first = outputs(p, run(p, 0), stray);
    ASSERT_EQ(stray, 0) << "first kernel";
    for (int mode : kModes) {
      int64_t stray_a = 0, stray_b = 0;
      const auto a = outputs(p, run(p, mode), stray_a), b = outputs(p, run(p, mode), stray_b);
      const double e = rel_err(a, r);
      std::printf("dense v2 %-8s %3d-row blocks, rows %4lld (from %4lld) x %4lld, %4lld tokens: rel err %.2e\n",
                  type_name(c.t), mode, (long long)c.rows, (long long)c.row0, (long long)c.cols, (long long)c.n_tok, e);
      EXPECT_LT(e, 3e-6) << type_name(c.t) << " " << mode;
      EXPECT_EQ(0, std::memcmp(a.data(), first.data(), a.size() * 4))
          << type_name(c.t) << " " << mode << "-row blocks: not the first kernel's bits";
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << type_name(c.t) << " " << mode << ": repeat";
      EXPECT_EQ(stray_a, 0) << type_name(c.t) << " " << mode << ": wrote outside the outputs";
    }
  }
}

TEST_F(GemmDenseV2, TokenOutputDoesNotDependOnItsTileMates) {
  // A token's outputs in a product of 300 tokens, of 37 (a tile of 37: the 64-item warp layout, at
  // other positions) and of 9 (the split-by-rows layout of 32 items or fewer) are the same bits.
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q2_K}) {
    const Problem all = make(t, 300, 1024, 300, 4, 0);
    for (int mode : kModes) {
      int64_t stray = 0;
      const auto y_all = outputs(all, run(all, mode), stray);
      for (const int64_t first : {int64_t{100}, int64_t{290}})
        for (const int64_t n : {int64_t{37}, int64_t{9}}) {
          if (first + n > all.n_tok) continue;
          const Problem part = slice(all, first, n);
          const auto y = outputs(part, run(part, mode), stray);
          ASSERT_EQ(0, std::memcmp(y.data(), &y_all[first * all.rows], y.size() * 4))
              << type_name(t) << " " << mode << "-row blocks, tokens " << first << " + " << n;
        }
    }
  }
}

TEST_F(GemmDenseV2, DISABLED_TimesBothKernelsOnTheModelShapes) {
  // The dense Q8_0 products of one layer of the full-size model at 4096 tokens: q_a, kv, q_b, out_a (8
  // groups, rows g * 1024 of one matrix, each on its own input), out_b, shared expert gate and up, down.
  // Prints the first kernel's time and the dense kernel's at 256- and 128-row blocks, per product and
  // per layer; checks only that the default is faster over the layer.
  const auto& shapes = kLayerDenseShapes;
  const int64_t n_tok = 4096;
  const int modes[] = {0, 256, 128};
  double layer[3] = {0, 0, 0}, flops = 0;
  cudaEvent_t e0, e1;
  FS_CUDA_CHECK(cudaEventCreate(&e0));
  FS_CUDA_CHECK(cudaEventCreate(&e1));
  for (const LayerShape& sh : shapes) {
    const int64_t total = sh.rows * sh.groups;
    auto w = up(random_weights(GgmlType::Q8_0, total, sh.cols));
    const cuda::DMat W{GgmlType::Q8_0, w.get(), sh.cols, total, row_bytes(GgmlType::Q8_0, sh.cols)};
    std::vector<cuda::DeviceArray<uint16_t>> xb;
    for (int g = 0; g < sh.groups; ++g) {
      auto dx = up(randn(static_cast<size_t>(n_tok * sh.cols)));
      xb.emplace_back(static_cast<size_t>(2 * n_tok * sh.cols));
      cuda::fast::to_f16(dx.get(), n_tok, sh.cols, sh.cols, xb.back().get(), nullptr);
    }
    const int64_t ys = total;  // out_a: each group writes its own column slice, as the model does
    cuda::DeviceArray<float> y(static_cast<size_t>(n_tok * ys));
    float ms[3];
    for (int m = 0; m < 3; ++m) {
      cuda::fast::gemm_set_dense_v2(modes[m]);
      auto once = [&] {
        for (int g = 0; g < sh.groups; ++g)
          ASSERT_TRUE(cuda::fast::gemm(W, g * sh.rows, sh.rows, xb[g].get(), n_tok, y.get() + g * sh.rows, ys,
                                       nullptr));
      };
      once();
      const int reps = 5;
      FS_CUDA_CHECK(cudaEventRecord(e0));
      for (int r = 0; r < reps; ++r) once();
      FS_CUDA_CHECK(cudaEventRecord(e1));
      FS_CUDA_CHECK(cudaEventSynchronize(e1));
      FS_CUDA_CHECK(cudaEventElapsedTime(&ms[m], e0, e1));
      ms[m] /= reps;
      layer[m] += ms[m] * sh.per_layer;
    }
    const double tf = 2.0 * n_tok * total * sh.cols / 1e12;
    flops += tf * sh.per_layer;
    std::printf("dense %-10s %5lld x %4lld%s: first kernel %.3f ms (%.0f TFLOP/s), v2 256 rows %.3f ms (%.0f, %.2fx), "
                "128 rows %.3f ms (%.0f, %.2fx)\n",
                sh.name, (long long)sh.rows, (long long)sh.cols, sh.groups > 1 ? " x 8" : "", ms[0], tf / ms[0] * 1e3,
                ms[1], tf / ms[1] * 1e3, ms[0] / ms[1], ms[2], tf / ms[2] * 1e3, ms[0] / ms[2]);
  }
  FS_CUDA_CHECK(cudaEventDestroy(e0));
  FS_CUDA_CHECK(cudaEventDestroy(e1));
  std::printf("dense Q8_0 products of a layer, 4096 tokens: first kernel %.2f ms (%.0f TFLOP/s), v2 256 rows %.2f ms "
              "(%.0f, %.2fx), 128 rows %.2f ms (%.0f, %.2fx)\n",
              layer[0], flops / layer[0] * 1e3, layer[1], flops / layer[1] * 1e3, layer[0] / layer[1], layer[2],
              flops / layer[2] * 1e3, layer[0] / layer[2]);
  EXPECT_LT(layer[1], layer[0]);
}
