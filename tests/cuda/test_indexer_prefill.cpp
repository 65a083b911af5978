// The prefill indexer-score kernel (fast_indexer_prefill.cu, more than 8 queries) against the per-query
// tile kernel it replaces (fast_attention.cu, FLASHSTAR_INDEXER_PREFILL_V2=0) and against the scores in
// double precision. Both kernels split the operands into the same two FP16 terms and sum the heads in
// the same order, so their scores must agree bitwise, with clean operands (three mma per step) and with
// the official Hadamard + FP4 operands (one mma per step: the low terms are zero), including FP4 blocks
// whose scales leave the FP16 range. Unwritten score entries (rows a query does not see) stay as poisoned.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <vector>

#include "cuda/fast_kernels.h"
#include "cuda_test_fixture.h"

using namespace flashstar;

namespace {

constexpr int kH = 64, kHd = 128, kTopK = 512, kRatio = 4;
const float kWscale = 1.0f / std::sqrt(float(kH * kHd));

enum class Ops { Clean, Fp4, Fp4RowsOnly };
const char* name(Ops o) { return o == Ops::Clean ? "clean" : o == Ops::Fp4 ? "fp4" : "fp4 rows, clean q"; }

int64_t visible(int64_t pos0, int64_t t) { return (pos0 + t + 1) / kRatio; }

// index of the first bitwise difference, -1 when none
int64_t first_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return static_cast<int64_t>(i);
  return -1;
}

class IndexerPrefill : public cuda_test::CudaKernelTest {
 protected:
  void SetUp() override {
    CudaKernelTest::SetUp();
    mode_ = cuda::fast::indexer_prefill_mode();
  }
  void TearDown() override { cuda::fast::indexer_set_prefill_mode(mode_); }  // as the environment set it
  int mode_ = 1;

  // Queries [n][64][128], weights [n][64] and `rows` index rows [rows][128], followed by 64 NaN rows
  // that no query may read. FP4: the QAT kernel rounds them as the model does (queries per head).
  struct Inputs {
    cuda::DeviceArray<float> iq, iw, rows;
    std::vector<float> hq, hw, hrows;  // host copies after rounding
  };
  Inputs make(int64_t n, int64_t rows, Ops ops, float q_scale = 1.0f) {
    Inputs in;
    auto q = randn(static_cast<size_t>(n * kH * kHd), q_scale);
    auto r = randn(static_cast<size_t>((rows + 64) * kHd));
    for (size_t i = static_cast<size_t>(rows * kHd); i < r.size(); ++i) r[i] = NAN;
    in.iq = up(q), in.iw = up(randn(static_cast<size_t>(n * kH))), in.rows = up(r);
    if (ops != Ops::Clean && rows > 0) cuda::indexer_qat(in.rows.get(), rows, kHd, nullptr);
    if (ops == Ops::Fp4) cuda::indexer_qat(in.iq.get(), n * kH, kHd, nullptr);
    in.hq = down(in.iq), in.hw = down(in.iw), in.hrows = down(in.rows);
    return in;
  }

  struct Out {
    std::vector<float> scores;  // n x stride, poisoned where not written
    std::vector<int32_t> sel;
  };
  Out run(int mode, const float* iq, const float* iw, const float* rows, int64_t pos0, int64_t n, int64_t stride) {
    cuda::fast::indexer_set_prefill_mode(mode);
    auto scratch = poisoned<float>(static_cast<size_t>(n * stride));
    auto sel = poisoned<int32_t>(static_cast<size_t>(n * kTopK));
    EXPECT_TRUE(cuda::fast::indexer_supported(kH, kHd, n));
    cuda::fast::indexer_select(iq, iw, kWscale, rows, kH, kHd, pos0, n, kRatio, kTopK, scratch.get(), stride,
                               sel.get(), nullptr);
    return {down(scratch), down(sel)};
  }
  Out run(int mode, const Inputs& in, int64_t pos0, int64_t n, int64_t stride) {
    return run(mode, in.iq.get(), in.iw.get(), in.rows.get(), pos0, n, stride);
  }

  // FP4 operands whose 32-value blocks (after the QAT's Hadamard) have scales from FP16 subnormals
  // (1e-5, 3e-7: exact) through underflow (1e-7, 1e-8: values below 2^-24, whose hi and lo terms round
  // to zero or a subnormal) up to 6 x 2^11 (4e3), mixed within rows and query heads.
  Inputs make_extreme(int64_t n, int64_t rows) {
    Inputs in;
    const float f[] = {1.0f, 1e-5f, 3e-7f, 1e-7f, 1e-8f, 4e3f};
    auto blocks = [&](int64_t n_vec) {
      auto v = randn(static_cast<size_t>(n_vec * kHd));
      for (int64_t i = 0; i < n_vec; ++i) {
        float* x = v.data() + i * kHd;
        for (int d = 0; d < kHd; ++d) x[d] *= f[(i + (d / 32) * (1 + i % 3)) % 6];
        hadamard(x);  // the QAT's Hadamard undoes this one: the blocks come back as laid out
      }
      return v;
    };
    auto q = blocks(n * kH), r = blocks(rows);
    r.resize(static_cast<size_t>((rows + 64) * kHd), NAN);
    in.iq = up(q), in.iw = up(randn(static_cast<size_t>(n * kH))), in.rows = up(r);
    cuda::indexer_qat(in.rows.get(), rows, kHd, nullptr);
    cuda::indexer_qat(in.iq.get(), n * kH, kHd, nullptr);
    return in;
  }
  // x <- H x / sqrt(128), natural order: its own inverse
  static void hadamard(float* x) {
    std::vector<double> v(x, x + kHd);
    for (int h = 1; h < kHd; h *= 2)
      for (int i = 0; i < kHd; i += 2 * h)
        for (int j = i; j < i + h; ++j) {
          const double a = v[j], b = v[j + h];
          v[j] = a + b, v[j + h] = a - b;
        }
    for (int i = 0; i < kHd; ++i) x[i] = static_cast<float>(v[i] / std::sqrt(double(kHd)));
  }
};

struct Case {
  int64_t pos0, n;
};
// Visible rows of the first queries: 0 and 1 (pos0 0), 63 / 64 / 65 (pos0 251, 255), about 2 000
// (pos0 8 000); 9, 33 and 130 queries (partial groups of 4 at the end, row splits for few groups).
constexpr Case kCases[] = {{0, 9},    {0, 33},    {0, 130},   {251, 9},  {251, 33},
                           {252, 130}, {255, 9},  {8000, 9}, {7999, 33}, {8003, 130}};

}  // namespace

TEST_F(IndexerPrefill, ScoresBitwiseEqualTheQueryTileKernel) {
  for (Ops ops : {Ops::Clean, Ops::Fp4, Ops::Fp4RowsOnly})
    for (const Case& cs : kCases) {
      const int64_t rows = (cs.pos0 + cs.n) / kRatio, stride = rows + 2;
      const Inputs in = make(cs.n, rows, ops);
      const Out old = run(0, in, cs.pos0, cs.n, stride);
      const Out got = run(1, in, cs.pos0, cs.n, stride);
      const int64_t d = first_diff(got.scores, old.scores);
      ASSERT_EQ(d, -1) << name(ops) << " pos0 " << cs.pos0 << " n " << cs.n << ": query " << d / stride << " row "
                       << d % stride << " new " << got.scores[d] << " old " << old.scores[d];
      ASSERT_TRUE(got.sel == old.sel) << name(ops) << " pos0 " << cs.pos0 << " n " << cs.n;
    }
}

TEST_F(IndexerPrefill, OneMmaPathBitwiseEqualsThreeMma) {
  // FP4 operands take one mma per step; mode 3 forces the three of the clean path on the same data.
  for (const Case& cs : kCases) {
    const int64_t rows = (cs.pos0 + cs.n) / kRatio, stride = rows + 2;
    const Inputs in = make(cs.n, rows, Ops::Fp4);
    const Out one = run(1, in, cs.pos0, cs.n, stride);
    const Out three = run(3, in, cs.pos0, cs.n, stride);
    const int64_t d = first_diff(one.scores, three.scores);
    ASSERT_EQ(d, -1) << "pos0 " << cs.pos0 << " n " << cs.n << ": query " << d / stride << " row " << d % stride;
    ASSERT_TRUE(one.sel == three.sel);
  }
}

TEST_F(IndexerPrefill, Fp4ScalesOutsideTheHalfRangeStayBitwise) {
  // Tiny block scales: FP4 values in FP16 subnormals (exact) or below 2^-24 (hi and lo both round to
  // zero or a subnormal); large ones up to 6 x 2^13. All three routes must give the same bits.
  for (const Case& cs : {Case{8000, 33}, Case{251, 130}}) {
    const int64_t rows = (cs.pos0 + cs.n) / kRatio, stride = rows + 2;
    const Inputs in = make_extreme(cs.n, rows);
    const Out old = run(0, in, cs.pos0, cs.n, stride);
    const Out one = run(1, in, cs.pos0, cs.n, stride);
    const Out three = run(3, in, cs.pos0, cs.n, stride);
    const int64_t d1 = first_diff(one.scores, old.scores), d3 = first_diff(three.scores, old.scores);
    EXPECT_EQ(d1, -1) << "pos0 " << cs.pos0 << ": query " << d1 / stride << " row " << d1 % stride;
    EXPECT_EQ(d3, -1) << "pos0 " << cs.pos0 << ": query " << d3 / stride << " row " << d3 % stride;
    EXPECT_TRUE(one.sel == old.sel);
  }
}

TEST_F(IndexerPrefill, RepeatsBitwise) {
  for (Ops ops : {Ops::Clean, Ops::Fp4}) {
    const int64_t pos0 = 8003, n = 130, rows = (pos0 + n) / kRatio, stride = rows + 2;
    const Inputs in = make(n, rows, ops);
    const Out a = run(1, in, pos0, n, stride);
    const Out b = run(1, in, pos0, n, stride);
    EXPECT_EQ(first_diff(a.scores, b.scores), -1) << name(ops);
    EXPECT_TRUE(a.sel == b.sel) << name(ops);
  }
}

TEST_F(IndexerPrefill, ScoresDoNotDependOnTheBatch) {
  // A query's scores are the same whichever queries share its block of 4 and however the rows are
  // split: the whole chunk against sub-chunks with other starts and sizes (all more than 8 queries).
  struct Sub {
    int64_t start, n;
  };
  for (Ops ops : {Ops::Clean, Ops::Fp4}) {
    const int64_t pos0 = 8000, n = 130, rows = (pos0 + n) / kRatio, stride = rows + 2;
    const Inputs in = make(n, rows, ops);
    const Out all = run(1, in, pos0, n, stride);
    for (const Sub& sub : {Sub{1, 9}, Sub{5, 33}, Sub{17, 100}, Sub{121, 9}, Sub{2, 127}}) {
      const Out part = run(1, in.iq.get() + sub.start * kH * kHd, in.iw.get() + sub.start * kH, in.rows.get(),
                           pos0 + sub.start, sub.n, stride);
      for (int64_t i = 0; i < sub.n; ++i) {
        const int64_t t = sub.start + i, vis = visible(pos0, t);
        const std::vector<float> a(all.scores.begin() + t * stride, all.scores.begin() + t * stride + vis);
        const std::vector<float> b(part.scores.begin() + i * stride, part.scores.begin() + i * stride + vis);
        const int64_t d = first_diff(b, a);
        ASSERT_EQ(d, -1) << name(ops) << " query " << t << " in a batch of " << sub.n << " from " << sub.start
                         << ": row " << d;
        ASSERT_TRUE(std::equal(all.sel.begin() + t * kTopK, all.sel.begin() + (t + 1) * kTopK,
                               part.sel.begin() + i * kTopK));
      }
    }
  }
}

TEST_F(IndexerPrefill, PaddingStaysUnwritten) {
  // Entries at or past a query's visible rows are not written (the top-k reads no further); the visible
  // ones are finite; a query that sees no row selects none.
  const int64_t pos0 = 0, n = 33, rows = (pos0 + n) / kRatio, stride = rows + 5;
  for (Ops ops : {Ops::Clean, Ops::Fp4}) {
    const Inputs in = make(n, rows, ops);
    const Out got = run(1, in, pos0, n, stride);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t vis = visible(pos0, t);
      for (int64_t r = 0; r < stride; ++r) {
        const float v = got.scores[t * stride + r];
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        if (r < vis) ASSERT_TRUE(std::isfinite(v)) << "query " << t << " row " << r;
        else ASSERT_EQ(bits, 0xffffffffu) << "query " << t << " row " << r << " written";
      }
      for (int i = 0; i < kTopK; ++i) ASSERT_EQ(got.sel[t * kTopK + i], i < vis ? i : -1);
    }
  }
}

TEST_F(IndexerPrefill, ScoresMatchDoublePrecisionAndReferenceTopK) {
  // Scores against a double-precision sum (every 7th query), the selections against the reference
  // kernel's (scores rounded in another order: a few boundary rows may swap).
  for (Ops ops : {Ops::Clean, Ops::Fp4}) {
    const int64_t pos0 = 8003, n = 33, rows = (pos0 + n) / kRatio, stride = rows + 2;
    const Inputs in = make(n, rows, ops);
    const Out got = run(1, in, pos0, n, stride);
    std::vector<float> mine, want;
    for (int64_t t = 0; t < n; t += 7) {
      const int64_t vis = visible(pos0, t);
      for (int64_t r = 0; r < vis; ++r) {
        double s = 0;
        for (int h = 0; h < kH; ++h) {
          double dot = 0;
          const float* q = in.hq.data() + (t * kH + h) * kHd;
          const float* k = in.hrows.data() + r * kHd;
          for (int d = 0; d < kHd; ++d) dot += double(q[d]) * k[d];
          s += std::max(0.0, dot) * (double(in.hw[t * kH + h]) * kWscale);
        }
        want.push_back(static_cast<float>(s));
        mine.push_back(got.scores[t * stride + r]);
      }
    }
    const double e = rel_err(mine, want);
    std::printf("indexer prefill scores, %s: rel err %.2e vs double\n", name(ops), e);
    EXPECT_LT(e, 1e-5) << name(ops);

    auto scratch = poisoned<float>(static_cast<size_t>(n * stride));
    auto ref = poisoned<int32_t>(static_cast<size_t>(n * kTopK));
    cuda::indexer_select(in.iq.get(), in.iw.get(), kWscale, in.rows.get(), kH, kHd, pos0, n, kRatio, kTopK,
                         scratch.get(), stride, ref.get(), nullptr);
    const auto r = down(ref);
    int64_t differ = 0;
    for (int64_t t = 0; t < n; ++t) {
      std::vector<int32_t> a(r.begin() + t * kTopK, r.begin() + (t + 1) * kTopK);
      std::vector<int32_t> b(got.sel.begin() + t * kTopK, got.sel.begin() + (t + 1) * kTopK);
      ASSERT_TRUE(std::is_sorted(b.begin(), b.end()));
      std::vector<int32_t> only;
      std::set_symmetric_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(only));
      differ += static_cast<int64_t>(only.size());
    }
    std::printf("indexer prefill top-%d, %s: %lld rows differ from the reference over %lld queries\n", kTopK,
                name(ops), (long long)differ, (long long)n);
    EXPECT_LE(differ, n * 4) << name(ops);
  }
}

TEST_F(IndexerPrefill, ChunkTiming) {
  // Not a gate: one 4096-query prefill chunk at about 64k context (16k rows), each route, FP4 and clean
  // operands (scores and top-k; the top-k is the same kernel on every route).
  const int64_t n = 4096, pos0 = 61440, rows = (pos0 + n) / kRatio, stride = rows + 2;
  for (Ops ops : {Ops::Fp4, Ops::Clean}) {
    const Inputs in = make(n, rows, ops);
    auto scratch = poisoned<float>(static_cast<size_t>(n * stride));
    auto sel = poisoned<int32_t>(static_cast<size_t>(n * kTopK));
    for (int mode : {0, 1, 3}) {
      cuda::fast::indexer_set_prefill_mode(mode);
      double best = 1e30;
      for (int rep = 0; rep < 3; ++rep) {
        FS_CUDA_CHECK(cudaDeviceSynchronize());
        const auto t0 = std::chrono::steady_clock::now();
        cuda::fast::indexer_select(in.iq.get(), in.iw.get(), kWscale, in.rows.get(), kH, kHd, pos0, n, kRatio, kTopK,
                                   scratch.get(), stride, sel.get(), nullptr);
        FS_CUDA_CHECK(cudaDeviceSynchronize());
        best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::printf("indexer select, %lld queries x %lld rows, %s, mode %d: %.2f ms\n", (long long)n, (long long)rows,
                  name(ops), mode, best);
    }
  }
}
