// The persistent Q8_0 matrix-vector kernel (fast_matvec_q8.cu) against the reference kernels: weights
// quantized from fresh random floats with the project's quantizer (block magnitudes varied, so the
// f16 scales vary too), the model's decode shapes and odd ones with ragged row tails, 1 to 8 tokens,
// outputs poisoned with NaN so an unwritten row fails, strided outputs whose padding must stay
// untouched, bitwise equality of two runs, and the calls it must refuse without launching. One and two
// tokens take the INT8 tensor-core kernel (fast_matvec_q8_mma.cu) where it takes the shape; Q8MmaLanes
// simulates its warp's fragment mapping on the CPU (no device needed) with the kernel's own lane functions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "common/half.h"
#include "cuda/fast_kernels.h"
#include "cuda/fast_matvec_q8.h"
#include "cuda/fast_matvec_q8_mma.h"
#include "cuda_test_fixture.h"
#include "quant/quant.h"

using namespace flashstar;

namespace {

constexpr GgmlType kQ8 = GgmlType::Q8_0;

// Heavy-tailed activations: normal, with one in 64 scaled by 10^3 and one in 256 by 10^5, some exact
// zeros, and (where a row has 512 columns or more) its second 256-column piece at 1e-33 (below the
// kernel's exponent floor) or holding a lone huge value.
std::vector<float> heavy_tailed(std::mt19937& rng, int64_t rows, int64_t cols, int64_t stride) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 255);
  std::vector<float> x(static_cast<size_t>(rows * stride), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int k = pick(rng);
      float v = nd(rng);
      if (k == 0) v *= 1e5f;
      else if (k < 5) v *= 1e3f;
      else if (k == 255) v = 0.0f;
      if (cols >= 512 && c >= 256 && c < 512) v = (r & 1) ? (c == 300 ? 3e4f : v * 1e-3f) : v * 1e-33f;
      x[static_cast<size_t>(r * stride + c)] = v;
    }
  return x;
}

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

TEST_F(Q8Matvec, HeavyTailedActivationsMatchReference) {
  // Digits are relative to each 256-column piece's largest |x|: outliers must not cost the small values
  // of other pieces their precision.
  for (int64_t cols : {1024, 4096}) {
    const int64_t rows = 2048;
    const auto wq = weights(rows, cols);
    auto dw = up(wq);
    const cuda::DMat dm{kQ8, dw.get(), cols, rows, row_bytes(kQ8, cols)};
    for (int64_t n_tok : {1, 2}) {
      const auto x = heavy_tailed(rng_, n_tok, cols, cols);
      auto dx = up(x);
      auto ref = poisoned<float>(static_cast<size_t>(n_tok * rows)), got = poisoned<float>(ref.size());
      cuda::matmul(dm, 0, rows, dx.get(), n_tok, cols, ref.get(), rows, nullptr);
      ASSERT_TRUE(cuda::fast::q8_matvec(dm, 0, rows, dx.get(), n_tok, cols, got.get(), rows, nullptr));
      const double e = rel_err(down(got), down(ref));
      std::printf("q8_matvec heavy-tailed %5lld x %5lld, %lld tokens: rel err %.2e\n", static_cast<long long>(rows),
                  static_cast<long long>(cols), static_cast<long long>(n_tok), e);
      EXPECT_LT(e, 2e-6) << cols << " cols, " << n_tok << " tokens";
    }
  }
  {  // items, each with its own activation row (attn_output_a's shape, 4 groups)
    const int64_t rows_per = 1024, cols = 4096, items = 4;
    const auto wq = weights(items * rows_per, cols);
    auto dw = up(wq);
    const cuda::DMat dm{kQ8, dw.get(), cols, items * rows_per, row_bytes(kQ8, cols)};
    std::vector<int32_t> sel = {2, 0, 3, 1};
    auto ds = up(sel);
    const auto x = heavy_tailed(rng_, items, cols, cols);
    auto dx = up(x);
    auto ref = poisoned<float>(static_cast<size_t>(items * rows_per)), got = poisoned<float>(ref.size());
    cuda::matmul_items(dm, rows_per, ds.get(), 1, dx.get(), cols, items, ref.get(), rows_per, nullptr);
    ASSERT_TRUE(
        cuda::fast::q8_matvec_items(dm, rows_per, ds.get(), 1, dx.get(), cols, items, got.get(), rows_per, nullptr));
    const double e = rel_err(down(got), down(ref));
    std::printf("q8_matvec_items heavy-tailed: rel err %.2e\n", e);
    EXPECT_LT(e, 2e-6);
  }
}

TEST_F(Q8Matvec, WideRowsMatchReference) {
  // 16384 columns: one token's digits fit the tensor-core kernel's shared memory, two tokens' do not
  // (the fp32 kernel takes them).
  const int64_t rows = 300, cols = 16384;
  const auto wq = weights(rows, cols);
  auto dw = up(wq);
  const cuda::DMat dm{kQ8, dw.get(), cols, rows, row_bytes(kQ8, cols)};
  for (int64_t n_tok : {1, 2}) expect_matvec(dm, 0, rows, n_tok, cols, rows, "wide");
}

// ---- Fewer decode launches (fast_kernels.h: q8_decode_pair, q8_decode_act). A pair keeps each matrix's
// own partition, so it must equal two q8_matvec calls bitwise; the transforms must equal their launch
// (fast::rms_norm_rows, cuda::swiglu) followed by q8_matvec bitwise, and the reference chain within the
// product's bound.
namespace {
class Q8Decode : public Q8Matvec {
 protected:
  struct Dev {
    std::vector<uint8_t> host;
    cuda::DeviceArray<uint8_t> dev;
    cuda::DMat m;
  };
  Dev mat(int64_t rows, int64_t cols) {
    Dev d{weights(rows, cols), {}, {}};
    d.dev = up(d.host);
    d.m = cuda::DMat{kQ8, d.dev.get(), cols, rows, row_bytes(kQ8, cols)};
    return d;
  }
  static bool same(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
  }
  // An items product's operands: mats matrices of rows_per rows, item i on matrix (3 i + 1) % mats, one
  // activation row per src_div items, outputs ys = rows_per + 1 apart.
  struct ItemsCase {
    const char* name;
    int64_t mats, rows_per, cols, items;
    int32_t src_div;
  };
  struct ItemsData {
    Dev w;
    cuda::DeviceArray<int32_t> sel;
    cuda::DeviceArray<float> x;
    int64_t ys;
    bool run(const ItemsCase& c, float* y) const {
      return cuda::fast::q8_mma_items(w.m, c.rows_per, sel.get(), c.src_div, x.get(), c.cols, c.items, y, ys, nullptr);
    }
  };
  ItemsData items_data(const ItemsCase& c) {
    std::vector<int32_t> sel(static_cast<size_t>(c.items));
    for (size_t i = 0; i < sel.size(); ++i) sel[i] = static_cast<int32_t>((i * 3 + 1) % c.mats);
    return ItemsData{mat(c.mats * c.rows_per, c.cols), up(sel),
                     up(randn(static_cast<size_t>((c.items + c.src_div - 1) / c.src_div * c.cols))), c.rows_per + 1};
  }
  // Pair of rows n0 / n1 over cols, outputs at strides ys0 / ys1 (padding must stay poisoned).
  void expect_pair(int64_t n0, int64_t n1, int64_t cols, int64_t n_tok, int64_t ys0, int64_t ys1, const char* what) {
    Dev w0 = mat(n0, cols), w1 = mat(n1, cols);
    auto dx = up(randn(static_cast<size_t>(n_tok * cols)));
    auto r0 = poisoned<float>(n_tok * ys0), r1 = poisoned<float>(n_tok * ys1);
    auto g0 = poisoned<float>(n_tok * ys0), g1 = poisoned<float>(n_tok * ys1);
    auto a0 = poisoned<float>(n_tok * ys0), a1 = poisoned<float>(n_tok * ys1);
    const bool mma = cuda::fast::q8_mma_matvec(w0.m, 0, n0, dx.get(), n_tok, cols, r0.get(), ys0, nullptr) &&
                     cuda::fast::q8_mma_matvec(w1.m, 0, n1, dx.get(), n_tok, cols, r1.get(), ys1, nullptr);
    const bool ok = cuda::fast::q8_decode_pair(w0.m, n0, g0.get(), ys0, w1.m, n1, g1.get(), ys1, dx.get(), n_tok,
                                               cols, nullptr);
    ASSERT_EQ(ok, mma) << what << ": the pair takes exactly what the single kernel takes";
    if (!ok) return;
    ASSERT_TRUE(cuda::fast::q8_decode_pair(w0.m, n0, a0.get(), ys0, w1.m, n1, a1.get(), ys1, dx.get(), n_tok, cols,
                                           nullptr));
    EXPECT_TRUE(same(down(g0), down(r0))) << what << " " << n_tok << " tokens: matrix 0 differs from its own call";
    EXPECT_TRUE(same(down(g1), down(r1))) << what << " " << n_tok << " tokens: matrix 1 differs from its own call";
    EXPECT_TRUE(same(down(g0), down(a0)) && same(down(g1), down(a1))) << what << ": two runs differ";
    // The single calls are checked against cuda::matmul above; one sanity bound here (and every row written).
    auto ref = poisoned<float>(n_tok * ys1);
    cuda::matmul(w1.m, 0, n1, dx.get(), n_tok, cols, ref.get(), ys1, nullptr);
    const auto gv = down(g1), rv = down(ref);
    std::vector<float> gr, rr;
    for (int64_t t = 0; t < n_tok; ++t)
      for (int64_t i = 0; i < n1; ++i) gr.push_back(gv[t * ys1 + i]), rr.push_back(rv[t * ys1 + i]);
    EXPECT_LT(rel_err(gr, rr), n1 * n_tok >= 32 ? 2e-6 : 1e-4) << what;
    std::printf("q8_decode_pair %-8s %5lld + %5lld x %5lld, %lld tokens: bitwise as two calls\n", what,
                static_cast<long long>(n0), static_cast<long long>(n1), static_cast<long long>(cols),
                static_cast<long long>(n_tok));
  }
};
}  // namespace

TEST_F(Q8Decode, PairEqualsTwoCallsBitwise) {
  struct Case {
    const char* name;
    int64_t n0, n1, cols, pad0, pad1;
  };
  // q_a + kv (partitions side by side), shared gate + up (overlaid), unequal overlaid grids, row tails,
  // equal short matrices, strided outputs, and 16384 columns (two tokens' digits do not fit: both refuse).
  const Case cases[] = {{"q_a+kv", 1024, 512, 4096, 0, 0},     {"gate+up", 2048, 2048, 4096, 0, 0},
                        {"overlay", 5000, 2100, 1024, 0, 0},   {"tails", 37, 1000, 768, 3, 0},
                        {"short", 5, 5, 256, 0, 2},             {"strided", 100, 700, 1536, 5, 11},
                        {"wide", 300, 40, 16384, 0, 0}};
  for (const Case& c : cases)
    for (int64_t n_tok : {1, 2}) expect_pair(c.n0, c.n1, c.cols, n_tok, c.n0 + c.pad0, c.n1 + c.pad1, c.name);
}

TEST_F(Q8Decode, NormActEqualsNormThenProduct) {
  struct Case {
    const char* name;
    int64_t rows, cols;
    bool weight;
  };
  // q_b (32768 x 1024), a row tail, 768 columns (192 norm threads), 8192 columns (the norm's four-way
  // loop), no weight.
  const Case cases[] = {{"q_b", 32768, 1024, true}, {"tail", 1000, 768, true}, {"wide", 300, 8192, true},
                        {"no w", 513, 1024, false}};
  const float eps = 1e-6f;
  for (const Case& c : cases) {
    Dev w = mat(c.rows, c.cols);
    for (int64_t n_tok : {1, 2}) {
      const size_t nx = static_cast<size_t>(n_tok * c.cols), ny = static_cast<size_t>(n_tok * c.rows);
      auto dx = up(randn(nx, 3.0f));
      auto dg = up(randn(static_cast<size_t>(c.cols), 0.5f));
      const float* gw = c.weight ? dg.get() : nullptr;
      auto xn = poisoned<float>(nx), yr = poisoned<float>(ny);
      ASSERT_TRUE(cuda::fast::rms_norm_rows(dx.get(), c.cols, gw, xn.get(), c.cols, n_tok, c.cols, eps, nullptr));
      ASSERT_TRUE(cuda::fast::q8_matvec(w.m, 0, c.rows, xn.get(), n_tok, c.cols, yr.get(), c.rows, nullptr));
      cuda::fast::Q8Act act;
      act.kind = cuda::fast::Q8Act::Kind::RmsNorm, act.w = gw, act.eps = eps;
      auto out = poisoned<float>(nx), y = poisoned<float>(ny), y2 = poisoned<float>(ny);
      act.out = out.get(), act.out_stride = c.cols;
      ASSERT_TRUE(cuda::fast::q8_decode_act(w.m, c.rows, dx.get(), n_tok, c.cols, act, y.get(), c.rows, nullptr))
          << c.name;
      act.out = nullptr;
      ASSERT_TRUE(cuda::fast::q8_decode_act(w.m, c.rows, dx.get(), n_tok, c.cols, act, y2.get(), c.rows, nullptr));
      EXPECT_TRUE(same(down(out), down(xn))) << c.name << " " << n_tok << " tokens: normed rows differ from rms_norm_rows";
      EXPECT_TRUE(same(down(y), down(yr))) << c.name << " " << n_tok << " tokens: product differs from norm + q8_matvec";
      EXPECT_TRUE(same(down(y), down(y2))) << c.name << ": two runs differ";
      // Against the reference chain (cuda::rms_norm_rows sums in another order, then cuda::matmul).
      auto xr = poisoned<float>(nx), ref = poisoned<float>(ny);
      cuda::rms_norm_rows(dx.get(), c.cols, gw, xr.get(), c.cols, n_tok, c.cols, eps, nullptr);
      cuda::matmul(w.m, 0, c.rows, xr.get(), n_tok, c.cols, ref.get(), c.rows, nullptr);
      const double e = rel_err(down(y), down(ref));
      std::printf("q8_decode_act norm %-5s %5lld x %5lld, %lld tokens: rel err %.2e vs reference\n", c.name,
                  static_cast<long long>(c.rows), static_cast<long long>(c.cols), static_cast<long long>(n_tok), e);
      EXPECT_LT(e, 2e-6) << c.name;
    }
  }
}

TEST_F(Q8Decode, SwigluActEqualsSwigluThenProduct) {
  struct Case {
    const char* name;
    int64_t rows, cols;
    bool weight;
  };
  // The shared expert's down (4096 x 2048), a row tail, and per-token weights.
  const Case cases[] = {{"down_sh", 4096, 2048, false}, {"tail", 1000, 768, false}, {"weighted", 129, 1024, true}};
  const float lim = 10.0f;
  for (const Case& c : cases) {
    Dev w = mat(c.rows, c.cols);
    for (int64_t n_tok : {1, 2}) {
      const size_t nx = static_cast<size_t>(n_tok * c.cols), ny = static_cast<size_t>(n_tok * c.rows);
      const auto g = randn(nx, 8.0f), u = randn(nx, 8.0f);  // past the clamp on both sides
      auto dg = up(g), du = up(u), gs = up(g);
      auto dw = up(randn(static_cast<size_t>(n_tok)));
      const float* tw = c.weight ? dw.get() : nullptr;
      auto yr = poisoned<float>(ny), ref = poisoned<float>(ny);
      cuda::swiglu(gs.get(), du.get(), n_tok, c.cols, lim, tw, nullptr);
      ASSERT_TRUE(cuda::fast::q8_matvec(w.m, 0, c.rows, gs.get(), n_tok, c.cols, yr.get(), c.rows, nullptr));
      cuda::matmul(w.m, 0, c.rows, gs.get(), n_tok, c.cols, ref.get(), c.rows, nullptr);
      cuda::fast::Q8Act act;
      act.kind = cuda::fast::Q8Act::Kind::Swiglu, act.w = tw, act.lim = lim, act.up = du.get(), act.up_stride = c.cols;
      auto out = poisoned<float>(nx), y = poisoned<float>(ny), y2 = poisoned<float>(ny);
      act.out = out.get(), act.out_stride = c.cols;
      ASSERT_TRUE(cuda::fast::q8_decode_act(w.m, c.rows, dg.get(), n_tok, c.cols, act, y.get(), c.rows, nullptr))
          << c.name;
      ASSERT_TRUE(cuda::fast::q8_decode_act(w.m, c.rows, dg.get(), n_tok, c.cols, act, y2.get(), c.rows, nullptr));
      EXPECT_TRUE(same(down(out), down(gs))) << c.name << " " << n_tok << " tokens: swiglu rows differ from cuda::swiglu";
      EXPECT_TRUE(same(down(y), down(yr))) << c.name << " " << n_tok << " tokens: product differs from swiglu + q8_matvec";
      EXPECT_TRUE(same(down(y), down(y2))) << c.name << ": two runs differ";
      EXPECT_TRUE(same(down(dg), g)) << c.name << ": the gate rows were written";
      const double e = rel_err(down(y), down(ref));
      std::printf("q8_decode_act swiglu %-8s %5lld x %5lld, %lld tokens: rel err %.2e vs reference\n", c.name,
                  static_cast<long long>(c.rows), static_cast<long long>(c.cols), static_cast<long long>(n_tok), e);
      EXPECT_LT(e, 2e-6) << c.name;
    }
  }
}

// FLASHSTAR_Q8_LEAN (q8_set_lean): the kernel with its cuts formed once in 32 bits must cut the work as the
// default kernel does, so every call gives the same bits, padding included: plain products (one and two
// tokens, the decode shapes and a ragged one), items (out_a's eight groups, an expert-like selection with a
// token divisor), both kinds of pair, and the norm and SwiGLU transforms.
namespace {
class Q8Lean : public Q8Decode {
 protected:
  void TearDown() override { cuda::fast::q8_set_lean(saved_); }
  bool saved_ = cuda::fast::q8_lean();
  // The call into a fresh poisoned buffer of n floats, lean off then on: the same bytes.
  template <class F>
  void same_bits(size_t n, F&& call, const char* what) {
    std::vector<float> out[2];
    for (int lean : {0, 1}) {
      cuda::fast::q8_set_lean(lean == 1);
      auto y = poisoned<float>(n);
      ASSERT_TRUE(call(y.get())) << what << ": refused (lean " << lean << ")";
      ASSERT_EQ(cuda::fast::q8_last_launch_lean(), lean == 1) << what << ": not the kernel asked for";
      out[lean] = down(y);
    }
    EXPECT_TRUE(same(out[0], out[1])) << what << ": lean cuts give other bits";
  }
};
}  // namespace

TEST_F(Q8Lean, SameBitsAsTheDefaultCuts) {
  using cuda::fast::Q8Act;
  struct Plain {
    const char* name;
    int64_t rows, cols;
  };
  for (const Plain& c : {Plain{"q_b", 32768, 1024}, Plain{"out_b", 4096, 8192}, Plain{"down_sh", 4096, 2048},
                         Plain{"ragged", 1037, 768}})
    for (int64_t n_tok : {1, 2}) {
      Dev w = mat(c.rows, c.cols);
      auto dx = up(randn(static_cast<size_t>(n_tok * c.cols)));
      const int64_t ys = c.rows + 3;
      same_bits(static_cast<size_t>(n_tok * ys), [&](float* y) {
        return cuda::fast::q8_mma_matvec(w.m, 0, c.rows, dx.get(), n_tok, c.cols, y, ys, nullptr);
      }, c.name);
      Q8Act norm;
      norm.kind = Q8Act::Kind::RmsNorm, norm.eps = 1e-6f;
      same_bits(static_cast<size_t>(n_tok * ys), [&](float* y) {
        return cuda::fast::q8_decode_act(w.m, c.rows, dx.get(), n_tok, c.cols, norm, y, ys, nullptr);
      }, c.name);
      auto du = up(randn(static_cast<size_t>(n_tok * c.cols), 4.0f));
      Q8Act sw;
      sw.kind = Q8Act::Kind::Swiglu, sw.lim = 10.0f, sw.up = du.get(), sw.up_stride = c.cols;
      same_bits(static_cast<size_t>(n_tok * ys), [&](float* y) {
        return cuda::fast::q8_decode_act(w.m, c.rows, dx.get(), n_tok, c.cols, sw, y, ys, nullptr);
      }, c.name);
    }
  struct Pair {
    const char* name;
    int64_t n0, n1, cols;
  };
  for (const Pair& c : {Pair{"q_a+kv", 1024, 512, 4096}, Pair{"gate+up", 2048, 2048, 4096},
                        Pair{"overlay", 5000, 2100, 1024}, Pair{"short", 5, 5, 256}})
    for (int64_t n_tok : {1, 2}) {
      Dev w0 = mat(c.n0, c.cols), w1 = mat(c.n1, c.cols);
      auto dx = up(randn(static_cast<size_t>(n_tok * c.cols)));
      const int64_t ys0 = c.n0 + 1, ys1 = c.n1 + 2, n0 = n_tok * ys0;
      same_bits(static_cast<size_t>(n0 + n_tok * ys1), [&](float* y) {
        return cuda::fast::q8_decode_pair(w0.m, c.n0, y, ys0, w1.m, c.n1, y + n0, ys1, dx.get(), n_tok, c.cols,
                                          nullptr);
      }, c.name);
    }
  for (const ItemsCase& c : {ItemsCase{"out_a", 8, 1024, 4096, 8, 1}, ItemsCase{"experts", 64, 512, 1024, 12, 6},
                             ItemsCase{"ragged", 5, 37, 768, 7, 2}}) {
    const ItemsData d = items_data(c);
    same_bits(static_cast<size_t>(c.items * d.ys), [&](float* y) { return d.run(c, y); }, c.name);
  }
}

// The layer's six decode launches with the default cuts and the lean ones, each from DRAM (copies of one
// weight set at other addresses in turn, at least 200 MB of them, four times the H200's L2): us a launch.
TEST_F(Q8Lean, DISABLED_DecodeLaunchTiming) {
  using cuda::fast::Q8Act;
  constexpr int kSets = 24;  // 24 x 8.9 MB (the smallest matrix here) = 214 MB
  auto sets = [&](int64_t rows, int64_t cols) {
    std::vector<Dev> v;
    v.push_back(mat(rows, cols));
    for (int i = 1; i < kSets; ++i) {
      Dev c{{}, up(v[0].host), {}};
      c.m = v[0].m, c.m.data = c.dev.get();
      v.push_back(std::move(c));
    }
    return v;
  };
  auto qa = sets(1024, 4096), kv = sets(512, 4096), qb = sets(32768, 1024), oa = sets(8 * 1024, 4096),
       ob = sets(4096, 8192), gs = sets(2048, 4096), us = sets(2048, 4096), dn = sets(4096, 2048);
  auto x = up(randn(32768)), u = up(randn(4096));
  auto y = poisoned<float>(40000), y2 = poisoned<float>(40000);
  std::vector<int32_t> g8(8);
  for (int i = 0; i < 8; ++i) g8[i] = i;
  auto dg = up(g8);
  Q8Act norm, sw;
  norm.kind = Q8Act::Kind::RmsNorm, norm.eps = 1e-6f;
  sw.kind = Q8Act::Kind::Swiglu, sw.lim = 10.0f, sw.up = u.get(), sw.up_stride = 2048;
  const struct {
    const char* name;
    std::function<bool(int)> call;
  } launches[] = {
      {"q_a+kv pair", [&](int i) { return cuda::fast::q8_decode_pair(qa[i % kSets].m, 1024, y.get(), 1024, kv[i % kSets].m, 512, y2.get(), 512, x.get(), 1, 4096, nullptr); }},
      {"q_b norm", [&](int i) { return cuda::fast::q8_decode_act(qb[i % kSets].m, 32768, x.get(), 1, 1024, norm, y.get(), 32768, nullptr); }},
      {"out_a items", [&](int i) { return cuda::fast::q8_mma_items(oa[i % kSets].m, 1024, dg.get(), 1, x.get(), 4096, 8, y.get(), 1024, nullptr); }},
      {"out_b", [&](int i) { return cuda::fast::q8_mma_matvec(ob[i % kSets].m, 0, 4096, x.get(), 1, 8192, y.get(), 4096, nullptr); }},
      {"gate+up pair", [&](int i) { return cuda::fast::q8_decode_pair(gs[i % kSets].m, 2048, y.get(), 2048, us[i % kSets].m, 2048, y2.get(), 2048, x.get(), 1, 4096, nullptr); }},
      {"down swiglu", [&](int i) { return cuda::fast::q8_decode_act(dn[i % kSets].m, 4096, x.get(), 1, 2048, sw, y.get(), 4096, nullptr); }},
  };
  for (const auto& l : launches) {
    double us_of[2];
    for (int lean : {0, 1}) {
      cuda::fast::q8_set_lean(lean == 1);
      ASSERT_TRUE(l.call(0)) << l.name << ": refused";
      ASSERT_EQ(cuda::fast::q8_last_launch_lean(), lean == 1) << l.name;
      us_of[lean] = back_to_back_us(6, 4 * kSets, [&](int i) { l.call(i); });
    }
    std::printf("q8 decode %-13s 64-bit cuts %6.2f us, lean (the default) %6.2f us\n", l.name, us_of[0], us_of[1]);
  }
}

// FLASHSTAR_Q8_CONST_ITEMS (q8_set_const_items, q8_constant_items): an items launch whose item-to-matrix array
// is registered as constant fetches its first stages before the PDL wait; the same copies, so the same
// bits as unregistered or switched off (out_a's eight groups, and a ragged selection with a divisor).
TEST_F(Q8Decode, ConstantItemsGiveTheSameBits) {
  const cuda_test::RestoreOnExit restore{cuda::fast::q8_set_const_items, cuda::fast::q8_const_items()};
  for (const ItemsCase& c : {ItemsCase{"out_a", 8, 1024, 4096, 8, 1}, ItemsCase{"ragged", 5, 37, 768, 7, 2}}) {
    const ItemsData d = items_data(c);
    std::vector<float> out[3];
    for (int v = 0; v < 3; ++v) {  // 0: switch off; 1: on, registered; 2: on, taken back
      cuda::fast::q8_set_const_items(v > 0);
      if (v == 1) cuda::fast::q8_constant_items(d.sel.get(), true);
      if (v == 2) cuda::fast::q8_constant_items(d.sel.get(), false);
      auto y = poisoned<float>(static_cast<size_t>(c.items * d.ys));
      ASSERT_TRUE(d.run(c, y.get())) << c.name;
      out[v] = down(y);
    }
    EXPECT_TRUE(same(out[0], out[1])) << c.name << ": registered";
    EXPECT_TRUE(same(out[0], out[2])) << c.name << ": taken back";
  }
}

TEST_F(Q8Decode, RefusesWhatItCannotTake) {
  Dev a = mat(64, 512), b = mat(64, 768), s = mat(8, 512);
  auto dx = up(randn(3 * 1024));
  auto dy = poisoned<float>(3 * 64), dz = poisoned<float>(3 * 64);
  using cuda::fast::q8_decode_act, cuda::fast::q8_decode_pair;
  // Three tokens; different column counts; a short matrix paired with a longer one; misaligned X.
  EXPECT_FALSE(q8_decode_pair(a.m, 64, dy.get(), 64, a.m, 64, dz.get(), 64, dx.get(), 3, 512, nullptr));
  EXPECT_FALSE(q8_decode_pair(a.m, 64, dy.get(), 64, b.m, 64, dz.get(), 64, dx.get(), 1, 512, nullptr));
  EXPECT_FALSE(q8_decode_pair(s.m, 8, dy.get(), 64, a.m, 64, dz.get(), 64, dx.get(), 1, 512, nullptr));
  EXPECT_FALSE(q8_decode_pair(a.m, 64, dy.get(), 64, a.m, 64, dz.get(), 64, dx.get() + 1, 1, 512, nullptr));
  cuda::fast::Q8Act act;
  act.kind = cuda::fast::Q8Act::Kind::RmsNorm, act.eps = 1e-6f;
  EXPECT_FALSE(q8_decode_act(a.m, 64, dx.get(), 3, 512, act, dy.get(), 64, nullptr));
  act.out = dx.get() + 256, act.out_stride = 512;  // overlaps X
  EXPECT_FALSE(q8_decode_act(a.m, 64, dx.get(), 1, 512, act, dy.get(), 64, nullptr));
  act.out = nullptr, act.w = dx.get() + 2;  // misaligned norm weight
  EXPECT_FALSE(q8_decode_act(a.m, 64, dx.get(), 1, 512, act, dy.get(), 64, nullptr));
  act.kind = cuda::fast::Q8Act::Kind::Swiglu, act.w = nullptr, act.up = nullptr;  // no up rows
  EXPECT_FALSE(q8_decode_act(a.m, 64, dx.get(), 1, 512, act, dy.get(), 64, nullptr));
  act.up = dx.get() + 1024, act.up_stride = 514;  // a stride that breaks its loads
  EXPECT_FALSE(q8_decode_act(a.m, 64, dx.get(), 1, 512, act, dy.get(), 64, nullptr));
  for (float v : down(dy)) ASSERT_TRUE(poison(v));
  for (float v : down(dz)) ASSERT_TRUE(poison(v));
}

// ---- CPU simulation of one warp of the tensor-core kernel on one 16-row x 256-column piece: every lane's
// registers from the kernel's own functions (pair_a, x_cols, lane_digits, b_offset, combine), the mma from
// the PTX fragment layouts of m16n8k32 .s8, and the per-lane sums as the kernel forms them.
namespace {
namespace q8m = cuda::fast::q8m;

struct Frag {
  uint32_t a[4], b[2], c[4];
};
// D = A B over the 32 lanes' fragments (PTX ISA, "Matrix Fragments for mma.m16n8k32", .s8 / .s32).
void mma_sim(Frag (&L)[32]) {
  int8_t A[16][32], B[32][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 16; ++i) {  // a_i: register i / 4, byte i % 4
      const int row = (i < 4 || (i >= 8 && i < 12)) ? g : g + 8, col = 4 * t + (i & 3) + (i >= 8 ? 16 : 0);
      A[row][col] = static_cast<int8_t>(L[lane].a[i >> 2] >> (8 * (i & 3)));
    }
    for (int i = 0; i < 8; ++i) B[4 * t + (i & 3) + (i >= 4 ? 16 : 0)][g] = static_cast<int8_t>(L[lane].b[i >> 2] >> (8 * (i & 3)));
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
      const int row = i < 2 ? g : g + 8, col = 2 * t + (i & 1);
      int32_t sum = 0;
      for (int k = 0; k < 32; ++k) sum += A[row][k] * B[k][col];
      L[lane].c[i] = static_cast<uint32_t>(sum);
    }
  }
}

// y[tok][row] of one piece by the simulated warp; nt tokens (1: B columns 4-7 repeat 0-3).
void warp_sim(const std::vector<uint8_t>& stage, const std::vector<float>& x, int nt, double (&y)[2][16]) {
  std::vector<uint8_t> dig(2 * q8m::kDigitBytes, 0);
  float scale[2][2] = {};
  for (int tok = 0; tok < nt; ++tok) {  // the conversion: one warp per (row, piece)
    const float* xr = x.data() + tok * q8m::kPieceCols;
    float amax = 0.0f;
    for (int c = 0; c < q8m::kPieceCols; ++c) amax = std::max(amax, std::fabs(xr[c]));
    const int E = q8m::piece_exponent(amax);
    for (int lane = 0; lane < 32; ++lane) {
      const int j = lane >> 2, t = lane & 3;
      const q8m::XCols xc = q8m::x_cols(j, t);
      const float* b = xr + 32 * j;
      const float v[8] = {b[xc.lo], b[xc.lo + 1], b[xc.lo + 2], b[xc.lo + 3],
                          b[xc.hi_a], b[xc.hi_a + 1], b[xc.hi_b], b[xc.hi_b + 1]};
      uint32_t lo[4], hi[4];
      q8m::lane_digits(v, E, lo, hi);
      for (int k = 0; k < 4; ++k) {
        uint8_t* d = dig.data() + tok * q8m::kDigitBytes + j * 128 + 8 * t + 32 * k;
        std::memcpy(d, &lo[k], 4), std::memcpy(d + 4, &hi[k], 4);
      }
    }
    scale[tok][0] = q8m::digit_scale(E, 0), scale[tok][1] = q8m::digit_scale(E, 1);
  }
  float acc[32][2] = {}, s[32][2] = {};
  for (int m = 0; m < 4; ++m) {
    q8m::PairA pa[32][2];
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane >> 2, t = lane & 3;
      for (int r = 0; r < 2; ++r) {
        const uint8_t* p = stage.data() + (g + 8 * r) * q8m::kPieceBytes + 68 * m;
        pa[lane][r] = q8m::pair_a(p, p + 4 * t, q8m::even_hi_sel(t));
      }
    }
    for (int e = 0; e < 2; ++e) {
      Frag f[32];
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3, bslot = nt == 2 ? g >> 2 : 0;
        const q8m::PairA &xa = pa[lane][0], &ya = pa[lane][1];
        f[lane].a[0] = xa.lo[e], f[lane].a[1] = ya.lo[e], f[lane].a[2] = xa.hi[e], f[lane].a[3] = ya.hi[e];
        const uint8_t* bp = dig.data() + bslot * q8m::kDigitBytes + (2 * m + e) * 128 + q8m::b_offset(g, t);
        std::memcpy(&f[lane].b[0], bp, 4), std::memcpy(&f[lane].b[1], bp + 4, 4);
      }
      mma_sim(f);
      for (int lane = 0; lane < 32; ++lane) {
        s[lane][0] = std::fma(q8m::combine(f[lane].c[0], f[lane].c[1]), pa[lane][0].d[e], s[lane][0]);
        s[lane][1] = std::fma(q8m::combine(f[lane].c[2], f[lane].c[3]), pa[lane][1].d[e], s[lane][1]);
      }
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int t = lane & 3, cslot = nt == 2 ? t >> 1 : 0;
    for (int r = 0; r < 2; ++r) acc[lane][r] = std::fma(s[lane][r], scale[cslot][t & 1], acc[lane][r]);
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    if ((t & 1) || (t >> 1) >= nt) continue;
    for (int r = 0; r < 2; ++r) y[t >> 1][g + 8 * r] = static_cast<double>(acc[lane][r] + acc[lane ^ 1][r]);
  }
}
}  // namespace

TEST(Q8MmaLanes, WarpSimulationMatchesDoubleDot) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> qd(-128, 127);
  std::uniform_real_distribution<float> dd(-0.1f, 0.1f);
  for (int trial = 0; trial < 40; ++trial) {
    // 16 rows of one piece: 8 blocks of f16 d and 32 int8 each (the extremes -128 and 127 included).
    std::vector<uint8_t> stage(q8m::kStageBytes);
    for (int r = 0; r < 16; ++r)
      for (int b = 0; b < 8; ++b) {
        uint8_t* blk = stage.data() + r * q8m::kPieceBytes + 34 * b;
        const uint16_t h = f32_to_f16(dd(rng));
        std::memcpy(blk, &h, 2);
        for (int i = 0; i < 32; ++i) blk[2 + i] = static_cast<uint8_t>(trial == 0 ? (i & 1 ? 127 : -128) : qd(rng));
      }
    const int nt = 1 + (trial & 1);
    std::vector<float> x = trial < 20 ? heavy_tailed(rng, 2, 256, 256) : std::vector<float>(512);
    if (trial >= 20) {  // one column at a time carries a value: catches any column a lane maps wrongly
      const int c = (trial - 20) * 13 % 256;
      x[c] = 1.0f + trial, x[256 + (c + 101) % 256] = -3.0f;
    }
    double y[2][16];
    warp_sim(stage, x, nt, y);
    // Bound: the digits round each x by at most 2^-31 of its piece's largest |x| (|Y - x 2^(29-E)| <= 1/2,
    // 2^E <= amax), plus fp32 sums (well inside 1e-6 of the magnitudes). A mapping error is O(1).
    for (int tok = 0; tok < nt; ++tok)
      for (int r = 0; r < 16; ++r) {
        double amax = 0.0, wsum = 0.0;
        for (int c = 0; c < 256; ++c) amax = std::max(amax, std::fabs(static_cast<double>(x[tok * 256 + c])));
        double ref = 0.0, mag = 0.0;
        for (int b = 0; b < 8; ++b) {
          const uint8_t* blk = stage.data() + r * q8m::kPieceBytes + 34 * b;
          uint16_t h;
          std::memcpy(&h, blk, 2);
          double sb = 0.0, mb = 0.0;
          for (int i = 0; i < 32; ++i) {
            const double p = static_cast<int8_t>(blk[2 + i]) * static_cast<double>(x[tok * 256 + 32 * b + i]);
            sb += p, mb += std::fabs(p);
          }
          double qb = 0.0;
          for (int i = 0; i < 32; ++i) qb += std::abs(static_cast<int8_t>(blk[2 + i]));
          ref += f16_to_f32(h) * sb, mag += std::fabs(f16_to_f32(h)) * mb, wsum += std::fabs(f16_to_f32(h)) * qb;
        }
        EXPECT_LE(std::fabs(y[tok][r] - ref), 1e-6 * mag + std::ldexp(wsum * amax, -31) + 1e-30) << "trial " << trial << " token " << tok << " row " << r;
      }
  }
}
