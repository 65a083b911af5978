// The persistent Q8_0 matrix-vector kernel (fast_matvec_q8.cu) against the reference kernels: weights
// quantized from fresh random floats with the project's quantizer (block magnitudes varied, so the
// f16 scales vary too), the model's decode shapes and odd ones with ragged row tails, 1 to 8 tokens,
// outputs poisoned with NaN so an unwritten row fails, strided outputs whose padding must stay
// untouched, bitwise equality of two runs, and the calls it must refuse without launching.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda/fast_matvec_q8.h"
#include "cuda_test_fixture.h"
#include "quant/quant.h"

using namespace flashstar;

namespace {

constexpr GgmlType kQ8 = GgmlType::Q8_0;

class Q8Matvec : public cuda_test::CudaKernelTest {
 protected:
  // rows x cols Q8_0 weights from uniform floats with a random magnitude per 32-block. A xorshift
  // generator: the output head has half a billion weights.
  std::vector<uint8_t> weights(int64_t rows, int64_t cols) {
    const size_t rb = row_bytes(kQ8, cols);
    std::vector<uint8_t> w(rb * static_cast<size_t>(rows));
    std::vector<float> row(static_cast<size_t>(cols));
    uint64_t st = (static_cast<uint64_t>(rng_()) << 32 | rng_()) | 1;
    auto next = [&st] {
      st ^= st << 13, st ^= st >> 7, st ^= st << 17;
      return st;
    };
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t b = 0; b < cols; b += 32) {
        const float mag = 0.01f + 0.09f * static_cast<float>(next() >> 40) / 16777216.0f;
        for (int64_t i = 0; i < 32; ++i)
          row[b + i] = mag * (static_cast<float>(next() >> 40) / 8388608.0f - 1.0f);
      }
      quant::quantize_row(kQ8, row.data(), w.data() + static_cast<size_t>(r) * rb, cols);
    }
    return w;
  }

  static bool poison(float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    return u == 0xffffffffu;
  }

  // Product of rows [row0, row0 + rows) with n_tok activation rows at stride xs into Y at stride ys,
  // against cuda::matmul; a second run must give the same bits.
  void expect_matvec(const cuda::DMat& dm, int64_t row0, int64_t rows, int64_t n_tok, int64_t xs, int64_t ys,
                     const char* what) {
    const auto x = randn(static_cast<size_t>(n_tok * xs));
    auto dx = up(x);
    const size_t ny = static_cast<size_t>(n_tok * ys);
    auto ref = poisoned<float>(ny), got = poisoned<float>(ny), again = poisoned<float>(ny);
    cuda::matmul(dm, row0, rows, dx.get(), n_tok, xs, ref.get(), ys, nullptr);
    ASSERT_TRUE(cuda::fast::q8_matvec(dm, row0, rows, dx.get(), n_tok, xs, got.get(), ys, nullptr)) << what;
    ASSERT_TRUE(cuda::fast::q8_matvec(dm, row0, rows, dx.get(), n_tok, xs, again.get(), ys, nullptr)) << what;
    const auto r = down(ref), g = down(got), g2 = down(again);
    std::vector<float> rv, gv;
    bool pad_ok = true;
    for (int64_t t = 0; t < n_tok; ++t)
      for (int64_t i = 0; i < ys; ++i) {
        const size_t k = static_cast<size_t>(t * ys + i);
        if (i < rows) rv.push_back(r[k]), gv.push_back(g[k]);
        else pad_ok = pad_ok && poison(g[k]);
      }
    const double e = rel_err(gv, rv);
    std::printf("q8_matvec %-8s %6lld x %5lld, %lld tokens: rel err %.2e\n", what, static_cast<long long>(rows),
                static_cast<long long>(dm.cols), static_cast<long long>(n_tok), e);
    // A lone dot product can cancel to near zero; its relative error says little.
    EXPECT_LT(e, rows * n_tok >= 32 ? 2e-6 : 1e-4) << what << " rows " << rows << " tokens " << n_tok;
    EXPECT_EQ(std::memcmp(g.data(), g2.data(), g.size() * 4), 0) << what << ": two runs differ";
    EXPECT_TRUE(pad_ok) << what << ": wrote past n_rows";
  }

  // Items i < sel.size() with matrix sel[i] (rows_per rows each) and activation row i / src_div.
  void expect_items(const cuda::DMat& dm, int64_t rows_per, const std::vector<int32_t>& sel, int32_t src_div,
                    int64_t xs, int64_t ys, const char* what) {
    const int64_t items = static_cast<int64_t>(sel.size()), x_rows = (items + src_div - 1) / src_div;
    const auto x = randn(static_cast<size_t>(x_rows * xs));
    auto dx = up(x);
    auto ds = up(sel);
    const size_t ny = static_cast<size_t>(items * ys);
    auto ref = poisoned<float>(ny), got = poisoned<float>(ny), again = poisoned<float>(ny);
    cuda::matmul_items(dm, rows_per, ds.get(), src_div, dx.get(), xs, items, ref.get(), ys, nullptr);
    ASSERT_TRUE(cuda::fast::q8_matvec_items(dm, rows_per, ds.get(), src_div, dx.get(), xs, items, got.get(), ys,
                                            nullptr))
        << what;
    ASSERT_TRUE(cuda::fast::q8_matvec_items(dm, rows_per, ds.get(), src_div, dx.get(), xs, items, again.get(), ys,
                                            nullptr))
        << what;
    const auto r = down(ref), g = down(got), g2 = down(again);
    std::vector<float> rv, gv;
    bool pad_ok = true;
    for (int64_t it = 0; it < items; ++it)
      for (int64_t i = 0; i < ys; ++i) {
        const size_t k = static_cast<size_t>(it * ys + i);
        if (i < rows_per) rv.push_back(r[k]), gv.push_back(g[k]);
        else pad_ok = pad_ok && poison(g[k]);
      }
    const double e = rel_err(gv, rv);
    std::printf("q8_matvec_items %-10s %5lld items x %5lld rows x %5lld: rel err %.2e\n", what,
                static_cast<long long>(items), static_cast<long long>(rows_per), static_cast<long long>(dm.cols), e);
    EXPECT_LT(e, rows_per * items >= 32 ? 2e-6 : 1e-4) << what;
    EXPECT_EQ(std::memcmp(g.data(), g2.data(), g.size() * 4), 0) << what << ": two runs differ";
    EXPECT_TRUE(pad_ok) << what << ": wrote past rows_per_mat";
  }
};

}  // namespace

TEST_F(Q8Matvec, ModelShapesMatchReference) {
  struct Shape {
    const char* name;
    int64_t rows, cols;
  };
  const Shape shapes[] = {{"attn_q_b", 32768, 1024}, {"attn_out_b", 4096, 8192}, {"shexp_gu", 2048, 4096},
                          {"shexp_dn", 4096, 2048},  {"attn_q_a", 1024, 4096},   {"attn_kv", 512, 4096}};
  for (const Shape& sh : shapes) {
    const auto wq = weights(sh.rows, sh.cols);
    auto dw = up(wq);
    const cuda::DMat dm{kQ8, dw.get(), sh.cols, sh.rows, row_bytes(kQ8, sh.cols)};
    for (int64_t n_tok : {1, 2, 3, 8}) expect_matvec(dm, 0, sh.rows, n_tok, sh.cols, sh.rows, sh.name);
  }
}

TEST_F(Q8Matvec, OutputHeadMatchesReference) {
  const int64_t rows = 129280, cols = 4096;
  const auto wq = weights(rows, cols);
  auto dw = up(wq);
  const cuda::DMat dm{kQ8, dw.get(), cols, rows, row_bytes(kQ8, cols)};
  expect_matvec(dm, 0, rows, 1, cols, rows, "head");
}

TEST_F(Q8Matvec, OddShapesMatchReference) {
  for (int64_t cols : {256, 768, 4352})
    for (int64_t rows : {1, 37, 1000}) {
      const auto wq = weights(rows, cols);
      auto dw = up(wq);
      const cuda::DMat dm{kQ8, dw.get(), cols, rows, row_bytes(kQ8, cols)};
      for (int64_t n_tok : {1, 2, 3, 5, 8}) expect_matvec(dm, 0, rows, n_tok, cols, rows, "odd");
    }
}

TEST_F(Q8Matvec, RowOffsetAndStridesMatchReference) {
  const int64_t rows = 2048, cols = 1536;
  const auto wq = weights(rows, cols);
  auto dw = up(wq);
  const cuda::DMat dm{kQ8, dw.get(), cols, rows, row_bytes(kQ8, cols)};
  for (int64_t n_tok : {1, 4, 7}) {
    expect_matvec(dm, 100, 1000, n_tok, cols + 4, 1003, "row0 100");
    expect_matvec(dm, 2047, 1, n_tok, cols + 12, 5, "last row");
  }
}

TEST_F(Q8Matvec, ItemsMatchReference) {
  {  // attn_output_a: 8 groups of 1024 rows over 4096 columns, one activation row each
    const int64_t rows_per = 1024, cols = 4096, items = 8;
    const auto wq = weights(items * rows_per, cols);
    auto dw = up(wq);
    const cuda::DMat dm{kQ8, dw.get(), cols, items * rows_per, row_bytes(kQ8, cols)};
    std::vector<int32_t> sel(items);
    for (int32_t i = 0; i < items; ++i) sel[i] = i;
    expect_items(dm, rows_per, sel, 1, cols, rows_per, "out_a");
  }
  struct Case {
    int64_t n_mat, rows_per, cols, items;
    int32_t src_div;
    int64_t xs_pad, ys_pad;
  };
  // Routed selections with repeats, row tails (37), groups shorter than a unit (3), and 65535 items.
  const Case cases[] = {{9, 96, 2048, 15, 3, 0, 0},
                        {5, 37, 768, 1000, 4, 8, 3},
                        {7, 3, 256, 65535, 8, 0, 1},
                        {4, 512, 4096, 64, 1, 0, 0}};
  for (const Case& c : cases) {
    const auto wq = weights(c.n_mat * c.rows_per, c.cols);
    auto dw = up(wq);
    const cuda::DMat dm{kQ8, dw.get(), c.cols, c.n_mat * c.rows_per, row_bytes(kQ8, c.cols)};
    std::vector<int32_t> sel(static_cast<size_t>(c.items));
    std::uniform_int_distribution<int> pick(0, static_cast<int>(c.n_mat) - 1);
    for (auto& s : sel) s = pick(rng_);
    expect_items(dm, c.rows_per, sel, c.src_div, c.cols + c.xs_pad, c.rows_per + c.ys_pad, "routed");
  }
}

TEST_F(Q8Matvec, RefusesWhatItCannotTake) {
  const int64_t rows = 8, cols = 512;
  const auto wq = weights(rows, cols);
  auto dw = up(wq);
  auto dx = up(randn(static_cast<size_t>(16 * (cols + 8))));
  auto dy = poisoned<float>(static_cast<size_t>(16 * rows));
  std::vector<int32_t> sel = {0, 0};
  auto ds = up(sel);
  const cuda::DMat ok{kQ8, dw.get(), cols, rows, row_bytes(kQ8, cols)};
  // Not Q8_0; columns not a multiple of 256; weights or activations not 16-byte aligned; an
  // activation stride that breaks float4 loads; more than 8 tokens; a zero item divisor.
  cuda::DMat f32 = ok;
  f32.type = GgmlType::F32;
  EXPECT_FALSE(cuda::fast::q8_matvec(f32, 0, rows, dx.get(), 1, cols, dy.get(), rows, nullptr));
  const cuda::DMat narrow{kQ8, dw.get(), 352, rows, row_bytes(kQ8, 352)};
  EXPECT_FALSE(cuda::fast::q8_matvec(narrow, 0, rows, dx.get(), 1, 352, dy.get(), rows, nullptr));
  cuda::DMat shifted = ok;
  shifted.data += 2;
  EXPECT_FALSE(cuda::fast::q8_matvec(shifted, 0, rows - 1, dx.get(), 1, cols, dy.get(), rows, nullptr));
  cuda::DMat odd_stride = ok;
  odd_stride.row_bytes += 2;
  EXPECT_FALSE(cuda::fast::q8_matvec(odd_stride, 0, 1, dx.get(), 1, cols, dy.get(), rows, nullptr));
  EXPECT_FALSE(cuda::fast::q8_matvec(ok, 0, rows, dx.get() + 1, 1, cols, dy.get(), rows, nullptr));
  EXPECT_FALSE(cuda::fast::q8_matvec(ok, 0, rows, dx.get(), 2, cols + 2, dy.get(), rows, nullptr));
  EXPECT_FALSE(cuda::fast::q8_matvec(ok, 0, rows, dx.get(), 9, cols, dy.get(), rows, nullptr));
  EXPECT_FALSE(cuda::fast::q8_matvec_items(ok, 4, ds.get(), 0, dx.get(), cols, 2, dy.get(), 4, nullptr));
  EXPECT_FALSE(cuda::fast::q8_matvec_items(f32, 4, ds.get(), 1, dx.get(), cols, 2, dy.get(), 4, nullptr));
  EXPECT_FALSE(cuda::fast::q8_matvec_items(ok, 4, ds.get(), 1, dx.get() + 2, cols, 2, dy.get(), 4, nullptr));
  // Nothing to do is done.
  EXPECT_TRUE(cuda::fast::q8_matvec(ok, 0, 0, dx.get(), 1, cols, dy.get(), rows, nullptr));
  EXPECT_TRUE(cuda::fast::q8_matvec_items(ok, 4, ds.get(), 1, dx.get(), cols, 0, dy.get(), 4, nullptr));
  // None of the above launched anything.
  for (float v : down(dy)) ASSERT_TRUE(poison(v));
}
