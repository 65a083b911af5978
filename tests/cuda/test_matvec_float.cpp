// The float-weight decode kernel (fast_matvec_float.cu) against the reference matmul: the model's F16
// shapes (HC mixers, router, compressor and indexer projections, indexer q_b), odd column counts, row
// offsets and strides, 1/2/3/8/11 tokens, poisoned outputs, bitwise repeats. The multi-matrix launch must
// equal separate launches bitwise. Bound: fp32 activations and fp32 accumulation in another order than
// the reference's, ~1e-7 relative per product (2e-6 as the other matrix-vector tests). FloatTiling runs
// without a GPU: the tiling covers every column of every row exactly once for any part count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/fast_kernels.h"
#include "cuda/fast_matvec_float.h"
#include "cuda_test_fixture.h"

using namespace flashstar;
using cuda::fast::FloatGeom;

TEST(FloatTiling, CoversEveryUnitOnceForEveryPartCount) {
  for (int64_t units : {1, 2, 31, 64, 65, 127, 128, 130, 257, 512, 513, 1000, 1024, 2048, 2049, 4096}) {
    const FloatGeom g = cuda::fast::float_geom(units);
    ASSERT_EQ(g.wc * g.wr, cuda::fast::kFWarps);
    ASSERT_LE(g.rows_per_block * cuda::fast::kFMaxTok, cuda::fast::kFThreads);  // one thread per output
    ASSERT_GE(static_cast<int64_t>(g.tiles_per_row) * g.tile_units, units);
    for (int sms : {1, 8, 132}) {
      for (int64_t row_blocks : {1, 6, 64, 512}) {
        const int parts = cuda::fast::float_parts(g, row_blocks, sms);
        ASSERT_GE(parts, 1);
        ASSERT_LE(parts, g.tiles_per_row);
      }
    }
    for (int parts = 1; parts <= g.tiles_per_row; ++parts) {
      const int per = (g.tiles_per_row + parts - 1) / parts;
      std::vector<int> seen(static_cast<size_t>(units), 0);
      for (int part = 0; part < parts; ++part)
        for (int tile = part * per; tile < std::min(g.tiles_per_row, part * per + per); ++tile)
          for (int c = 0; c < g.wc; ++c)
            for (int u = 0; u < cuda::fast::kFUnits; ++u)
              for (int lane = 0; lane < 32; ++lane) {
                const int64_t k = cuda::fast::float_unit(g, tile, c, u, lane);
                if (k < units) ++seen[static_cast<size_t>(k)];
              }
      for (int64_t k = 0; k < units; ++k) ASSERT_EQ(seen[static_cast<size_t>(k)], 1) << units << " units, unit " << k;
    }
  }
  // The model's shapes: 4096 F16 columns fill a block's row exactly (no split); 16384 take four parts.
  EXPECT_EQ(cuda::fast::float_geom(512).tiles_per_row, 1);
  EXPECT_EQ(cuda::fast::float_geom(512).rows_per_block, cuda::fast::kFRows);
  EXPECT_EQ(cuda::fast::float_geom(2048).tiles_per_row, 4);
  EXPECT_EQ(cuda::fast::float_parts(cuda::fast::float_geom(2048), 6, 132), 4);
  EXPECT_EQ(cuda::fast::float_parts(cuda::fast::float_geom(512), 256, 132), 1);
}

namespace {

class FloatMatvec : public cuda_test::CudaKernelTest {
 protected:
  void SetUp() override {
    CudaKernelTest::SetUp();
    if (IsSkipped()) return;
    cuda::fast::init_tables();
    work_.resize(1 << 20);
  }
  struct Mat {
    GgmlType t;
    int64_t rows, cols;
    cuda::DeviceArray<uint8_t> w;
    cuda::DMat dm() const { return cuda::DMat{t, w.get(), cols, rows, row_bytes(t, cols)}; }
  };
  Mat make(GgmlType t, int64_t rows, int64_t cols) { return Mat{t, rows, cols, up(random_weights(t, rows, cols))}; }
  // The reference product of rows [row0, row0 + n_rows) into a fresh array of n_tok * ys floats.
  std::vector<float> ref(const Mat& m, int64_t row0, int64_t n_rows, const cuda::DeviceArray<float>& dx, int64_t n_tok,
                         int64_t xs, int64_t ys) {
    auto y = poisoned<float>(static_cast<size_t>(n_tok * ys));
    cuda::matmul(m.dm(), row0, n_rows, dx.get(), n_tok, xs, y.get(), ys, nullptr);
    return pick(down(y), n_tok, n_rows, ys);
  }
  // The n_rows outputs of each token out of a ys-strided result.
  static std::vector<float> pick(const std::vector<float>& y, int64_t n_tok, int64_t n_rows, int64_t ys) {
    std::vector<float> v;
    for (int64_t t = 0; t < n_tok; ++t) v.insert(v.end(), y.begin() + t * ys, y.begin() + t * ys + n_rows);
    return v;
  }
  cuda::DeviceArray<float> work_;  // split partial sums (the session's kMvWork)
};

}  // namespace

TEST_F(FloatMatvec, ModelShapesEqualReferenceAndRepeatBitwise) {
  struct Case {
    const char* name;
    int64_t rows, cols;
  };
  const Case cases[] = {{"hc mixer", 24, 16384}, {"head mixer", 4, 16384}, {"router", 256, 4096},
                        {"comp r4", 1024, 4096}, {"comp r128", 512, 4096}, {"idx comp", 256, 4096},
                        {"idx proj", 64, 4096},  {"idx q_b", 8192, 1024}};
  for (const Case& c : cases) {
    const Mat m = make(GgmlType::F16, c.rows, c.cols);
    for (int64_t n_tok : {1, 2, 3, 8}) {
      auto dx = up(randn(static_cast<size_t>(n_tok * c.cols)));
      const auto want = ref(m, 0, c.rows, dx, n_tok, c.cols, c.rows);
      auto got = poisoned<float>(static_cast<size_t>(n_tok * c.rows));
      auto again = poisoned<float>(static_cast<size_t>(n_tok * c.rows));
      ASSERT_TRUE(cuda::fast::float_matvec(m.dm(), 0, c.rows, dx.get(), n_tok, c.cols, got.get(), c.rows, nullptr,
                                           work_.get(), static_cast<int64_t>(work_.size())));
      ASSERT_TRUE(cuda::fast::float_matvec(m.dm(), 0, c.rows, dx.get(), n_tok, c.cols, again.get(), c.rows, nullptr,
                                           work_.get(), static_cast<int64_t>(work_.size())));
      const double e = rel_err(down(got), want);
      std::printf("float_matvec %-10s %5lld x %5lld, %lld tokens: rel err %.2e\n", c.name,
                  static_cast<long long>(c.rows), static_cast<long long>(c.cols), static_cast<long long>(n_tok), e);
      EXPECT_LT(e, 2e-6) << c.name << " tokens " << n_tok;
      EXPECT_EQ(down(got), down(again)) << c.name << " tokens " << n_tok;
    }
  }
}

// FLASHSTAR_MV_EARLY (mv_set_early): the first weight tile loaded before the PDL wait; the same loads and
// sums, so the same bits as the default kernel: the model's shapes (split and unsplit), F16 and F32, 1 and 2
// tokens (the ones it takes), a row offset, and the router with its picks in the same launch.
TEST_F(FloatMatvec, EarlyWeightsGiveTheSameBits) {
  const cuda_test::RestoreOnExit restore{cuda::fast::mv_set_early, cuda::fast::mv_early()};
  struct Case {
    GgmlType t;
    int64_t rows, cols, row0;
  };
  const Case cases[] = {{GgmlType::F16, 24, 16384, 0}, {GgmlType::F16, 256, 4096, 0}, {GgmlType::F16, 1024, 4096, 0},
                        {GgmlType::F16, 8192, 1024, 0}, {GgmlType::F32, 4, 16384, 0}, {GgmlType::F32, 100, 1000, 7}};
  for (const Case& c : cases)
    for (int64_t n_tok : {1, 2}) {
      const Mat m = make(c.t, c.rows + c.row0, c.cols);
      auto dx = up(randn(static_cast<size_t>(n_tok * c.cols)));
      std::vector<float> out[2];
      for (int early : {0, 1}) {
        cuda::fast::mv_set_early(early == 1);
        auto y = poisoned<float>(static_cast<size_t>(n_tok * (c.rows + 3)));
        ASSERT_TRUE(cuda::fast::float_matvec(m.dm(), c.row0, c.rows, dx.get(), n_tok, c.cols, y.get(), c.rows + 3,
                                             nullptr, work_.get(), static_cast<int64_t>(work_.size())));
        out[early] = down(y);
      }
      EXPECT_EQ(0, std::memcmp(out[0].data(), out[1].data(), out[0].size() * 4))
          << c.rows << " x " << c.cols << ", " << n_tok << " tokens";
    }
  const Mat r = make(GgmlType::F16, 256, 4096);
  auto dx = up(randn(4096));
  std::vector<int32_t> sel[2];
  std::vector<float> wts[2];
  for (int early : {0, 1}) {
    cuda::fast::mv_set_early(early == 1);
    auto l = poisoned<float>(256), w = poisoned<float>(6);
    auto s = poisoned<int32_t>(6);
    cuda::fast::RouterArgs ra;
    ra.k = 6, ra.norm = true, ra.scale = 1.5f, ra.sel = s.get(), ra.weights = w.get();
    ASSERT_TRUE(cuda::fast::float_matvec_route(r.dm(), dx.get(), 1, 4096, l.get(), ra, nullptr, work_.get(),
                                               static_cast<int64_t>(work_.size())));
    sel[early] = down(s), wts[early] = down(w);
  }
  EXPECT_EQ(sel[0], sel[1]);
  EXPECT_EQ(0, std::memcmp(wts[0].data(), wts[1].data(), 6 * 4)) << "router weights";
}

TEST_F(FloatMatvec, TokenResultDoesNotDependOnTokenCount) {
  // A token's outputs are the same bits in any product of 1-8 tokens (split HC-mixer shape and unsplit
  // shape), and in any product of more than 8 (prefill chunks: whole and chunked prefill agree).
  struct Case {
    int64_t cols, n_all, first, n_sub;
  };
  const Case cases[] = {{16384, 8, 0, 1}, {16384, 8, 5, 1}, {16384, 8, 7, 1}, {16384, 8, 2, 3}, {4096, 8, 6, 2},
                        {4096, 11, 10, 1}, {16384, 20, 9, 11}, {16384, 25, 0, 17}};
  const int64_t rows = 24;
  for (const Case& c : cases) {
    const Mat m = make(GgmlType::F16, rows, c.cols);
    auto dx = up(randn(static_cast<size_t>(c.n_all * c.cols)));
    auto all = poisoned<float>(static_cast<size_t>(c.n_all * rows));
    auto sub = poisoned<float>(static_cast<size_t>(c.n_sub * rows));
    ASSERT_TRUE(cuda::fast::float_matvec(m.dm(), 0, rows, dx.get(), c.n_all, c.cols, all.get(), rows, nullptr,
                                         work_.get(), static_cast<int64_t>(work_.size())));
    ASSERT_TRUE(cuda::fast::float_matvec(m.dm(), 0, rows, dx.get() + c.first * c.cols, c.n_sub, c.cols, sub.get(), rows,
                                         nullptr, work_.get(), static_cast<int64_t>(work_.size())));
    const auto a = down(all);
    const std::vector<float> want(a.begin() + c.first * rows, a.begin() + (c.first + c.n_sub) * rows);
    EXPECT_EQ(down(sub), want) << "cols " << c.cols << ": tokens " << c.first << "+" << c.n_sub << " of " << c.n_all;
    EXPECT_LT(rel_err(a, ref(m, 0, rows, dx, c.n_all, c.cols, rows)), 2e-6) << "cols " << c.cols;
  }
}

TEST_F(FloatMatvec, OddShapesOffsetsAndStridesEqualReference) {
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
    for (int64_t cols : {8, 1000, 2056, 4104, 16392}) {
      const int64_t rows = 45;
      const Mat m = make(t, rows, cols);
      for (int64_t n_tok : {1, 2, 3, 8, 11}) {
        const int64_t xs = cols + 4, ys = rows + 3;
        auto dx = up(randn(static_cast<size_t>(n_tok * xs)));
        for (auto [row0, n_rows] : {std::pair<int64_t, int64_t>{0, rows}, {7, 37}, {44, 1}}) {
          for (bool with_work : {true, false}) {
            const auto want = ref(m, row0, n_rows, dx, n_tok, xs, ys);
            auto got = poisoned<float>(static_cast<size_t>(n_tok * ys));
            ASSERT_TRUE(cuda::fast::float_matvec(m.dm(), row0, n_rows, dx.get(), n_tok, xs, got.get(), ys, nullptr,
                                                 with_work ? work_.get() : nullptr,
                                                 with_work ? static_cast<int64_t>(work_.size()) : 0));
            const double e = rel_err(pick(down(got), n_tok, n_rows, ys), want);
            EXPECT_LT(e, n_rows * n_tok >= 32 ? 2e-6 : 1e-4)
                << type_name(t) << " cols " << cols << " tokens " << n_tok << " row0 " << row0 << " work " << with_work;
          }
        }
      }
    }
  }
}

TEST_F(FloatMatvec, MultiMatrixLaunchEqualsSeparateLaunchesBitwise) {
  struct Shape {
    int64_t rows, row0, n_rows;
  };
  // The ratio-4 layer's five projections of one input, the ratio-128 layer's two, and two split ones
  // (HC-mixer width, row offsets) that share the tickets and the workspace.
  const std::vector<std::vector<Shape>> sets = {
      {{1024, 0, 1024}, {1024, 0, 1024}, {256, 0, 256}, {256, 0, 256}, {64, 0, 64}},
      {{512, 0, 512}, {512, 0, 512}},
      {{40, 3, 24}, {24, 0, 24}, {9, 2, 5}}};
  for (size_t si = 0; si < sets.size(); ++si) {
    const int64_t cols = si == 2 ? 16384 : 4096;
    std::vector<Mat> mats;
    for (const Shape& sh : sets[si]) mats.push_back(make(GgmlType::F16, sh.rows, cols));
    for (int64_t n_tok : {1, 2, 3, 8}) {
      auto dx = up(randn(static_cast<size_t>(n_tok * cols)));
      std::vector<cuda::DMat> dms;
      for (const Mat& m : mats) dms.push_back(m.dm());
      std::vector<cuda::DeviceArray<float>> joint, sep;
      std::vector<cuda::fast::MatvecOut> outs;
      for (size_t i = 0; i < mats.size(); ++i) {
        const Shape& sh = sets[si][i];
        const int64_t ys = sh.n_rows + 1;
        joint.push_back(poisoned<float>(static_cast<size_t>(n_tok * ys)));
        sep.push_back(poisoned<float>(static_cast<size_t>(n_tok * ys)));
        outs.push_back({&dms[i], sh.row0, sh.n_rows, joint.back().get(), ys});
      }
      for (int rep = 0; rep < 2; ++rep) {
        ASSERT_TRUE(cuda::fast::float_matvec_multi(outs.data(), static_cast<int>(outs.size()), dx.get(), n_tok, cols,
                                                   nullptr, work_.get(), static_cast<int64_t>(work_.size())));
        for (size_t i = 0; i < mats.size(); ++i) {
          const Shape& sh = sets[si][i];
          const int64_t ys = sh.n_rows + 1;
          ASSERT_TRUE(cuda::fast::float_matvec(dms[i], sh.row0, sh.n_rows, dx.get(), n_tok, cols, sep[i].get(), ys,
                                               nullptr, work_.get(), static_cast<int64_t>(work_.size())));
          const auto got = pick(down(joint[i]), n_tok, sh.n_rows, ys);
          EXPECT_EQ(got, pick(down(sep[i]), n_tok, sh.n_rows, ys)) << "set " << si << " matrix " << i << " tokens " << n_tok;
          const double e = rel_err(got, ref(mats[i], sh.row0, sh.n_rows, dx, n_tok, cols, ys));
          EXPECT_LT(e, 2e-6) << "set " << si << " matrix " << i << " tokens " << n_tok;
        }
      }
    }
  }
}

TEST_F(FloatMatvec, RefusesWhatItCannotTake) {
  const Mat a = make(GgmlType::F16, 64, 4096), b = make(GgmlType::BF16, 64, 4096), c = make(GgmlType::F16, 64, 2048);
  const Mat q = make(GgmlType::Q8_0, 64, 4096);
  auto dx = up(randn(4096 + 4));
  auto dy = poisoned<float>(64 * 8);
  const cuda::DMat da = a.dm(), db = b.dm(), dc = c.dm(), dq = q.dm();
  auto one = [&](const cuda::DMat* w) { return cuda::fast::MatvecOut{w, 0, 64, dy.get(), 64}; };
  const int64_t wf = static_cast<int64_t>(work_.size());
  const cuda::fast::MatvecOut mixed_type[] = {one(&da), one(&db)}, mixed_cols[] = {one(&da), one(&dc)};
  EXPECT_FALSE(cuda::fast::float_matvec_multi(mixed_type, 2, dx.get(), 1, 4096, nullptr, work_.get(), wf));
  EXPECT_FALSE(cuda::fast::float_matvec_multi(mixed_cols, 2, dx.get(), 1, 4096, nullptr, work_.get(), wf));
  const cuda::fast::MatvecOut seven[] = {one(&da), one(&da), one(&da), one(&da), one(&da), one(&da), one(&da)};
  EXPECT_FALSE(cuda::fast::float_matvec_multi(seven, 7, dx.get(), 1, 4096, nullptr, work_.get(), wf));
  EXPECT_FALSE(cuda::fast::float_matvec(dq, 0, 64, dx.get(), 1, 4096, dy.get(), 64, nullptr, work_.get(), wf));
  EXPECT_FALSE(cuda::fast::float_matvec(da, 0, 64, dx.get() + 1, 1, 4096, dy.get(), 64, nullptr, work_.get(), wf));
  EXPECT_FALSE(cuda::fast::float_matvec(da, 0, 64, dx.get(), 2, 4098, dy.get(), 64, nullptr, work_.get(), wf));
  cuda::DMat narrow = da;  // 1004 F16 columns: rows not a whole number of 16-byte units
  narrow.cols = 1004, narrow.row_bytes = 2008;
  EXPECT_FALSE(cuda::fast::float_matvec(narrow, 0, 64, dx.get(), 1, 1004, dy.get(), 64, nullptr, work_.get(), wf));
  // A split that does not fit the workspace: the single product loops instead, the multi one refuses.
  const Mat w = make(GgmlType::F16, 24, 16384);
  const cuda::DMat dw = w.dm();
  auto dx2 = up(randn(16384));
  const cuda::fast::MatvecOut split[] = {{&dw, 0, 24, dy.get(), 24}};
  EXPECT_FALSE(cuda::fast::float_matvec_multi(split, 1, dx2.get(), 1, 16384, nullptr, work_.get(), 10));
  EXPECT_TRUE(cuda::fast::float_matvec(dw, 0, 24, dx2.get(), 1, 16384, dy.get(), 24, nullptr, work_.get(), 10));
  EXPECT_LT(rel_err(pick(down(dy), 1, 24, 24), ref(w, 0, 24, dx2, 1, 16384, 24)), 2e-6);
}

// Timing of the model's decode shapes (FLASHSTAR_KERNEL_TIMING=1): 50 launches captured in a graph, as a
// decode step runs them; prints µs per launch and the weight bandwidth.
TEST_F(FloatMatvec, DecodeTiming) {
  const char* on = std::getenv("FLASHSTAR_KERNEL_TIMING");
  if (!on || *on != '1') GTEST_SKIP() << "set FLASHSTAR_KERNEL_TIMING=1";
  cudaStream_t s = nullptr;
  FS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cuda::DeviceArray<uint8_t> big(size_t(512) << 20);  // F16 0x3c3c (about 1.06) everywhere
  FS_CUDA_CHECK(cudaMemset(big.get(), 0x3c, big.bytes()));
  struct Case {
    const char* name;
    std::vector<int64_t> rows;
    int64_t cols;
  };
  const Case cases[] = {{"hc mixer", {24}, 16384},         {"router", {256}, 4096},   {"comp r4", {1024}, 4096},
                        {"comp r128", {512}, 4096},        {"idx comp", {256}, 4096}, {"idx proj", {64}, 4096},
                        {"idx q_b", {8192}, 1024},         {"comp r4 x2", {1024, 1024}, 4096},
                        {"comp r128 x2", {512, 512}, 4096}, {"r4 five", {1024, 1024, 256, 256, 64}, 4096}};
  for (const Case& c : cases) {
    for (int64_t n_tok : {1, 2}) {
      std::vector<cuda::DMat> dms(c.rows.size());
      std::vector<cuda::DeviceArray<float>> ys;
      std::vector<cuda::fast::MatvecOut> outs;
      size_t bytes = 0;
      for (size_t i = 0; i < c.rows.size(); ++i) {
        ys.push_back(poisoned<float>(static_cast<size_t>(n_tok * c.rows[i])));
        outs.push_back({&dms[i], 0, c.rows[i], ys[i].get(), c.rows[i]});
        bytes += static_cast<size_t>(2 * c.rows[i] * c.cols);
      }
      auto dx = up(randn(static_cast<size_t>(n_tok * c.cols)));
      constexpr int kReps = 50;
      cudaGraph_t g = nullptr;
      FS_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
      for (int i = 0; i < kReps; ++i) {
        // every launch reads other weights than the last few: from device memory, as at decode, not L2
        size_t off = (static_cast<size_t>(i) * std::max<size_t>(bytes, size_t(16) << 20)) % (big.bytes() - bytes);
        for (size_t k = 0; k < dms.size(); ++k) {
          dms[k] = cuda::DMat{GgmlType::F16, big.get() + off, c.cols, c.rows[k], static_cast<size_t>(2 * c.cols)};
          off += static_cast<size_t>(2 * c.rows[k] * c.cols);
        }
        ASSERT_TRUE(cuda::fast::float_matvec_multi(outs.data(), static_cast<int>(outs.size()), dx.get(), n_tok, c.cols,
                                                   s, work_.get(), static_cast<int64_t>(work_.size())));
      }
      FS_CUDA_CHECK(cudaStreamEndCapture(s, &g));
      cudaGraphExec_t e = nullptr;
      FS_CUDA_CHECK(cudaGraphInstantiate(&e, g, 0));
      cudaEvent_t a, b;
      FS_CUDA_CHECK(cudaEventCreate(&a));
      FS_CUDA_CHECK(cudaEventCreate(&b));
      FS_CUDA_CHECK(cudaGraphLaunch(e, s));  // warm-up
      FS_CUDA_CHECK(cudaEventRecord(a, s));
      for (int k = 0; k < 4; ++k) FS_CUDA_CHECK(cudaGraphLaunch(e, s));
      FS_CUDA_CHECK(cudaEventRecord(b, s));
      FS_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      FS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      const double us = 1e3 * ms / (4 * kReps);
      std::printf("timing %-12s %lld tok: %6.2f us/launch, %5.2f TB/s\n", c.name, static_cast<long long>(n_tok), us,
                  static_cast<double>(bytes) / (us * 1e6));
      cudaEventDestroy(a), cudaEventDestroy(b), cudaGraphExecDestroy(e), cudaGraphDestroy(g);
    }
  }
  cudaStreamDestroy(s);
}
