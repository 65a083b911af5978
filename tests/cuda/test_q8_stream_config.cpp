// Q8StreamConfig: the INT8 Q8_0 decode kernel's settings (fast_kernels.h, q8_stream_set: 8 or 16 warps a
// block, the output head's warps, L2 look-ahead of 0, 2 or 8 stages) must compute the bits of the 16-warp
// kernel without look-ahead: a partition's 16 k-ranges, and so the order of every sum, do not depend on
// them. Fresh random weights and activations, outputs poisoned with NaN (an unwritten row fails, strided
// padding must stay poisoned), the model's decode shapes (q_a, kv, q_b with its norm, the grouped attention
// output, out_b, the shared expert with its swiglu, the head) and odd ones; the reference setting's values
// are checked against a CPU dot product in double, and each setting's count of differing values must be 0.
// Where two 8-warp blocks fit an SM (H100 / H200: 113 KB each), the 8-warp variant must have run.
// q8_decode_groups (group of an item = item % groups, no table) must equal q8_mma_items with the table,
// also replayed in a graph with programmatic edges behind a kernel that writes its activations.
// DISABLED_DecodeChainTiming (--gtest_also_run_disabled_tests) times one decode layer's Q8_0 launches.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "cuda/fast_kernels.h"
#include "cuda/fast_matvec_q8.h"
#include "cuda/fast_matvec_q8_mma.h"
#include "cuda/pdl_graph.h"
#include "cuda_test_fixture.h"
#include "quant/quant.h"

using namespace flashstar;
namespace fast = flashstar::cuda::fast;

namespace {

constexpr GgmlType kQ8 = GgmlType::Q8_0;

struct Setting {
  int warps, head_warps, ahead;
};
// The first is the reference: the 16-warp kernel without look-ahead.
const Setting kSettings[] = {{16, 16, 0}, {16, 16, 2}, {16, 16, 8}, {8, 16, 0},
                             {8, 16, 2},  {8, 16, 8},  {8, 8, 2},   {16, 8, 0}};

void apply(const Setting& s) {
  fast::Q8StreamSettings st;
  st.warps = s.warps, st.head_warps = s.head_warps, st.l2_ahead = s.ahead;
  fast::q8_stream_set(st);
}
std::string name_of(const Setting& s) {
  return std::to_string(s.warps) + "/" + std::to_string(s.head_warps) + "/L2+" + std::to_string(s.ahead);
}

class Q8StreamConfig : public cuda_test::CudaKernelTest {
 protected:
  void SetUp() override {
    saved_ = fast::q8_stream_settings();
    CudaKernelTest::SetUp();
  }
  void TearDown() override { fast::q8_stream_set(saved_); }

  struct Mat {
    std::vector<uint8_t> host;
    cuda::DeviceArray<uint8_t> dev;
    cuda::DMat m;
  };
  // rows x cols: random int8 codes, block scales of either sign between 2e-4 and 6e-4. A xorshift
  // generator: the head has half a billion weights.
  std::shared_ptr<Mat> mat(int64_t rows, int64_t cols) {
    auto d = std::make_shared<Mat>();
    const size_t rb = row_bytes(kQ8, cols), n = rb * static_cast<size_t>(rows);
    d->host.resize(n);
    uint64_t st = (static_cast<uint64_t>(rng_()) << 32 | rng_()) | 1;
    auto next = [&st] {
      st ^= st << 13, st ^= st >> 7, st ^= st << 17;
      return st;
    };
    for (size_t i = 0; i < n; i += 8) {  // rb is a multiple of 272
      const uint64_t v = next();
      std::memcpy(d->host.data() + i, &v, 8);
    }
    for (size_t i = 0; i < n; i += 34) {
      const uint64_t v = next();
      const float s = (2e-4f + 4e-4f * static_cast<float>(v >> 40) / 16777216.0f) * ((v & 1) ? -1.0f : 1.0f);
      const uint16_t h = f32_to_f16(s);
      std::memcpy(d->host.data() + i, &h, 2);
    }
    d->dev = up(d->host);
    d->m = cuda::DMat{kQ8, d->dev.get(), cols, rows, rb};
    return d;
  }
  // Row r of w times x in double.
  static double dot(const Mat& w, int64_t r, const double* x) {
    thread_local std::vector<float> row;
    row.resize(static_cast<size_t>(w.m.cols));
    quant::dequantize_row(kQ8, w.host.data() + static_cast<size_t>(r) * w.m.row_bytes, row.data(), w.m.cols);
    double s = 0;
    for (int64_t c = 0; c < w.m.cols; ++c) s += static_cast<double>(row[c]) * x[c];
    return s;
  }
  static std::vector<double> wide(const float* x, int64_t n) { return std::vector<double>(x, x + n); }

  const float* dev_floats(const std::vector<float>& v) {
    auto p = std::make_shared<cuda::DeviceArray<float>>(up(v));
    keep_.push_back(p);
    return p->get();
  }

  // One product under test: launch writes y (poisoned first) and says whether the kernel took it; ref
  // holds the CPU values, NaN where y must stay poisoned.
  struct Case {
    std::string name;
    std::function<bool(float*)> launch;
    std::vector<double> ref;
    int expect8 = -1;  // where two 8-warp blocks fit an SM: 1 the 8-warp variant runs it, 0 the 16-warp, -1 either
    bool big = false;  // more than 128 MiB of weights: head_warps applies
  };

  Case plain(const std::string& name, std::shared_ptr<Mat> w, int64_t row0, int64_t rows, int64_t nt, int64_t xs,
             int64_t ys, int expect8) {
    const auto x = randn(static_cast<size_t>(nt * xs));
    const float* dx = dev_floats(x);
    Case c{name + " " + std::to_string(rows) + "x" + std::to_string(w->m.cols) + " t" + std::to_string(nt), {}, {},
           expect8, static_cast<int64_t>(w->m.row_bytes) * rows > (int64_t{128} << 20)};
    c.ref.assign(static_cast<size_t>(nt * ys), NAN);
    for (int64_t t = 0; t < nt; ++t) {
      const auto xd = wide(x.data() + t * xs, w->m.cols);
      for (int64_t r = 0; r < rows; ++r) c.ref[t * ys + r] = dot(*w, row0 + r, xd.data());
    }
    c.launch = [w, row0, rows, nt, xs, ys, dx](float* y) {
      return fast::q8_mma_matvec(w->m, row0, rows, dx, nt, xs, y, ys, nullptr);
    };
    return c;
  }
  // Y0 at y, Y1 after it (both at stride = rows).
  Case pair(const std::string& name, std::shared_ptr<Mat> w0, int64_t n0, std::shared_ptr<Mat> w1, int64_t n1,
            int64_t nt, int expect8) {
    const int64_t cols = w0->m.cols;
    const auto x = randn(static_cast<size_t>(nt * cols));
    const float* dx = dev_floats(x);
    Case c{name + " t" + std::to_string(nt), {}, {}, expect8, false};
    for (int64_t t = 0; t < nt; ++t) {
      const auto xd = wide(x.data() + t * cols, cols);
      for (int64_t r = 0; r < n0; ++r) c.ref.push_back(dot(*w0, r, xd.data()));
    }
    for (int64_t t = 0; t < nt; ++t) {
      const auto xd = wide(x.data() + t * cols, cols);
      for (int64_t r = 0; r < n1; ++r) c.ref.push_back(dot(*w1, r, xd.data()));
    }
    c.launch = [w0, n0, w1, n1, nt, cols, dx](float* y) {
      return fast::q8_decode_pair(w0->m, n0, y, n0, w1->m, n1, y + nt * n0, n1, dx, nt, cols, nullptr);
    };
    return c;
  }
  // RMS norm (per-column weight) of X, then the product; the normed rows written after Y.
  Case norm(const std::string& name, std::shared_ptr<Mat> w, int64_t rows, int64_t nt, int expect8) {
    const int64_t cols = w->m.cols;
    const float eps = 1e-6f;
    const auto x = randn(static_cast<size_t>(nt * cols)), g = randn(static_cast<size_t>(cols), 0.5f);
    const float *dx = dev_floats(x), *dg = dev_floats(g);
    Case c{name + " t" + std::to_string(nt), {}, {}, expect8, false};
    c.ref.assign(static_cast<size_t>(nt * (rows + cols)), NAN);
    for (int64_t t = 0; t < nt; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < cols; ++i) ss += static_cast<double>(x[t * cols + i]) * x[t * cols + i];
      const double sc = 1.0 / std::sqrt(ss / static_cast<double>(cols) + eps);
      std::vector<double> xn(static_cast<size_t>(cols));
      for (int64_t i = 0; i < cols; ++i) xn[i] = x[t * cols + i] * sc * g[i];
      for (int64_t r = 0; r < rows; ++r) c.ref[t * rows + r] = dot(*w, r, xn.data());
      for (int64_t i = 0; i < cols; ++i) c.ref[nt * rows + t * cols + i] = xn[i];
    }
    c.launch = [w, rows, nt, cols, dx, dg, eps](float* y) {
      fast::Q8Act act;
      act.kind = fast::Q8Act::Kind::RmsNorm, act.w = dg, act.eps = eps, act.out = y + nt * rows, act.out_stride = cols;
      return fast::q8_decode_act(w->m, rows, dx, nt, cols, act, y, rows, nullptr);
    };
    return c;
  }
  // swiglu of gate and up rows (clamped at lim, per-token weights when weighted), then the product.
  Case swiglu(const std::string& name, std::shared_ptr<Mat> w, int64_t rows, int64_t nt, bool weighted, int expect8) {
    const int64_t cols = w->m.cols;
    const float lim = 10.0f;
    const auto g = randn(static_cast<size_t>(nt * cols), 8.0f), u = randn(static_cast<size_t>(nt * cols), 8.0f);
    const auto tw = randn(static_cast<size_t>(nt));
    const float *dg = dev_floats(g), *du = dev_floats(u), *dtw = weighted ? dev_floats(tw) : nullptr;
    Case c{name + " t" + std::to_string(nt), {}, {}, expect8, false};
    for (int64_t t = 0; t < nt; ++t) {
      std::vector<double> xs(static_cast<size_t>(cols));
      for (int64_t i = 0; i < cols; ++i) {
        const double gg = std::min<double>(g[t * cols + i], lim), uu = std::clamp<double>(u[t * cols + i], -lim, lim);
        xs[i] = gg / (1.0 + std::exp(-gg)) * uu * (weighted ? tw[t] : 1.0f);
      }
      for (int64_t r = 0; r < rows; ++r) c.ref.push_back(dot(*w, r, xs.data()));
    }
    c.launch = [w, rows, nt, cols, dg, du, dtw, lim](float* y) {
      fast::Q8Act act;
      act.kind = fast::Q8Act::Kind::Swiglu, act.w = dtw, act.lim = lim, act.up = du, act.up_stride = cols;
      return fast::q8_decode_act(w->m, rows, dg, nt, cols, act, y, rows, nullptr);
    };
    return c;
  }
  // Items i < n_items with matrix sel[i] (a table) or i % groups (groups > 0), activation row i / src_div;
  // outputs at stride ys >= rows_per.
  Case items(const std::string& name, std::shared_ptr<Mat> w, int64_t rows_per, const std::vector<int32_t>& sel,
             int32_t groups, int32_t src_div, int64_t xs, int64_t ys, int expect8) {
    const int64_t cols = w->m.cols, n = static_cast<int64_t>(sel.size()), x_rows = (n + src_div - 1) / src_div;
    const auto x = randn(static_cast<size_t>(x_rows * xs));
    const float* dx = dev_floats(x);
    auto ds = std::make_shared<cuda::DeviceArray<int32_t>>(up(sel));
    keep_.push_back(ds);
    const int32_t* table = ds->get();
    Case c{name + " " + std::to_string(n) + "x" + std::to_string(rows_per) + "x" + std::to_string(cols), {}, {},
           expect8, false};
    c.ref.assign(static_cast<size_t>(n * ys), NAN);
    for (int64_t i = 0; i < n; ++i) {
      const auto xd = wide(x.data() + (i / src_div) * xs, cols);
      const int64_t m = groups ? i % groups : sel[i];
      for (int64_t r = 0; r < rows_per; ++r) c.ref[i * ys + r] = dot(*w, m * rows_per + r, xd.data());
    }
    c.launch = [w, rows_per, table, groups, src_div, dx, xs, n, ys](float* y) {
      if (groups) return fast::q8_decode_groups(w->m, rows_per, groups, dx, xs, n, y, ys, nullptr);
      return fast::q8_mma_items(w->m, rows_per, table, src_div, dx, xs, n, y, ys, nullptr);
    };
    return c;
  }

  // Every case under every setting: bitwise equal to the reference setting, which is checked against the
  // CPU (and its padding left poisoned).
  void run_cases(std::vector<Case>& cases, const std::vector<Setting>& settings) {
    int dev = 0, per_sm = 0, cluster = 0;
    FS_CUDA_CHECK(cudaGetDevice(&dev));
    FS_CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    FS_CUDA_CHECK(cudaDeviceGetAttribute(&cluster, cudaDevAttrClusterLaunch, dev));
    const bool pairs_fit = per_sm >= 233472 && cluster;  // H100 / H200: two blocks of 113 KB
    std::vector<std::vector<float>> base(cases.size());
    std::vector<std::string> warps(cases.size());
    for (size_t si = 0; si < settings.size(); ++si) {
      apply(settings[si]);
      for (size_t ci = 0; ci < cases.size(); ++ci) {
        Case& c = cases[ci];
        auto y = poisoned<float>(c.ref.size());
        ASSERT_TRUE(c.launch(y.get())) << c.name << ": not taken";
        const int w = fast::q8_mma_last_warps();
        const auto h = down(y);
        warps[ci].push_back(' ');
        warps[ci].append(std::to_string(w));
        const int want = c.big ? settings[si].head_warps : settings[si].warps;
        const int expect = want == 16 ? 16 : (pairs_fit && c.expect8 >= 0) ? (c.expect8 ? 8 : 16) : w;
        EXPECT_EQ(w, expect) << c.name << " under " << name_of(settings[si]);
        if (si == 0) {
          base[ci] = h;
          continue;
        }
        int64_t differ = 0;
        for (size_t i = 0; i < h.size(); ++i) differ += std::memcmp(&h[i], &base[ci][i], 4) != 0;
        EXPECT_EQ(differ, 0) << c.name << ": values differing from " << name_of(settings[0]) << " under "
                             << name_of(settings[si]);
      }
    }
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      const Case& c = cases[ci];
      double num = 0, den = 0;
      int64_t n = 0, pad_bad = 0, bad = 0;
      for (size_t i = 0; i < c.ref.size(); ++i) {
        const float g = base[ci][i];
        uint32_t u;
        std::memcpy(&u, &g, 4);
        if (std::isnan(c.ref[i])) {
          pad_bad += u != 0xffffffffu;
          continue;
        }
        if (!std::isfinite(g)) ++bad;
        num += (g - c.ref[i]) * (g - c.ref[i]), den += c.ref[i] * c.ref[i], ++n;
      }
      const double e = bad ? INFINITY : std::sqrt(num / std::max(den, 1e-30));
      std::printf("%-34s rel err %.2e vs CPU, warps a block:%s\n", c.name.c_str(), e, warps[ci].c_str());
      // A lone dot product can cancel to near zero; its relative error says little.
      EXPECT_LT(e, n >= 32 ? 2e-6 : 1e-4) << c.name;
      EXPECT_EQ(pad_bad, 0) << c.name << ": wrote outside its rows";
    }
  }
  std::vector<Setting> all_settings() const { return std::vector<Setting>(std::begin(kSettings), std::end(kSettings)); }

  fast::Q8StreamSettings saved_;
  std::vector<std::shared_ptr<void>> keep_;  // device arrays the launches read
};

}  // namespace

TEST(Q8StreamConfigSettings, SetClampsAndReadsBack) {
  const fast::Q8StreamSettings saved = fast::q8_stream_settings();
  fast::Q8StreamSettings st;
  st.warps = 16, st.head_warps = 8, st.l2_ahead = 5;
  fast::q8_stream_set(st);
  EXPECT_EQ(fast::q8_stream_settings().warps, 16);
  EXPECT_EQ(fast::q8_stream_settings().head_warps, 8);
  EXPECT_EQ(fast::q8_stream_settings().l2_ahead, 5);
  st.warps = 12, st.head_warps = 3, st.l2_ahead = 40;  // not a variant: the defaults; past the limit: 8
  fast::q8_stream_set(st);
  EXPECT_EQ(fast::q8_stream_settings().warps, 8);
  EXPECT_EQ(fast::q8_stream_settings().head_warps, 16);
  EXPECT_EQ(fast::q8_stream_settings().l2_ahead, 8);
  st.l2_ahead = -1;
  fast::q8_stream_set(st);
  EXPECT_EQ(fast::q8_stream_settings().l2_ahead, 0);
  fast::q8_stream_set(saved);
}

TEST_F(Q8StreamConfig, ModelShapesEqualSixteenWarpsBitwise) {
  auto q_a = mat(1024, 4096), kv = mat(512, 4096), q_b = mat(32768, 1024), out_a = mat(8 * 1024, 4096);
  auto out_b = mat(4096, 8192), gate = mat(2048, 4096), upm = mat(2048, 4096), dn = mat(4096, 2048);
  std::vector<Case> cases;
  for (int64_t nt : {1, 2}) {
    cases.push_back(plain("q_a", q_a, 0, 1024, nt, 4096, 1024, 1));
    cases.push_back(plain("kv", kv, 0, 512, nt, 4096, 512, 1));
    cases.push_back(pair("q_a+kv", q_a, 1024, kv, 512, nt, 1));
    cases.push_back(plain("q_b", q_b, 0, 32768, nt, 1024, 32768, 1));
    cases.push_back(norm("q_b+norm", q_b, 32768, nt, 1));
    std::vector<int32_t> grp(static_cast<size_t>(8 * nt));
    for (size_t i = 0; i < grp.size(); ++i) grp[i] = static_cast<int32_t>(i % 8);
    cases.push_back(items("out_a groups", out_a, 1024, grp, 8, 1, 4096, 1024, 1));
    cases.push_back(items("out_a table", out_a, 1024, grp, 0, 1, 4096, 1024, 1));
    // Two tokens' digits of 8192 columns (64 KB) leave no room for two blocks an SM: 16 warps.
    cases.push_back(plain("out_b", out_b, 0, 4096, nt, 8192, 4096, nt == 1 ? 1 : 0));
    cases.push_back(pair("shared gate+up", gate, 2048, upm, 2048, nt, 1));
    cases.push_back(plain("shared down", dn, 0, 4096, nt, 2048, 4096, 1));
    cases.push_back(swiglu("shared swiglu+down", dn, 4096, nt, false, 1));
  }
  run_cases(cases, all_settings());
}

TEST_F(Q8StreamConfig, OutputHeadEqualsSixteenWarpsBitwise) {
  auto head = mat(129280, 4096);
  std::vector<Case> cases;
  cases.push_back(plain("head", head, 0, 129280, 1, 4096, 129280, 1));
  cases.push_back(plain("head rows", head, 77, 30001, 2, 4100, 30003, 1));  // under 128 MiB: `warps` applies
  run_cases(cases, all_settings());
}

TEST_F(Q8StreamConfig, OddShapesEqualSixteenWarpsBitwise) {
  std::vector<Case> cases;
  for (int64_t cols : {256, 768, 4352})
    for (int64_t rows : {1, 37, 1000}) {
      auto w = mat(rows + 5, cols);
      for (int64_t nt : {1, 2}) {
        cases.push_back(plain("odd", w, 0, rows, nt, cols, rows, 1));
        cases.push_back(plain("odd row0 5, strides", w, 5, rows, nt, cols + 4, rows + 3, 1));
      }
    }
  {  // 16384 columns: one token's digits (66 KB) keep the 16-warp kernel
    auto w = mat(300, 16384);
    cases.push_back(plain("wide", w, 0, 300, 1, 16384, 300, 0));
  }
  {  // pairs: ragged tails, short equal matrices
    auto a = mat(1000, 768), b = mat(40, 768), s0 = mat(7, 512), s1 = mat(7, 512);
    for (int64_t nt : {1, 2}) {
      cases.push_back(pair("pair 1000+40", a, 1000, b, 40, nt, 1));
      cases.push_back(pair("pair 7+7", s0, 7, s1, 7, nt, 1));
    }
  }
  {  // transforms on a row tail, per-token swiglu weights
    auto a = mat(1000, 768), b = mat(129, 1024);
    for (int64_t nt : {1, 2}) {
      cases.push_back(norm("norm tail", a, 1000, nt, 1));
      cases.push_back(swiglu("swiglu weighted", b, 129, nt, true, 1));
    }
  }
  {  // routed items (repeats, src_div > 1, groups shorter than a unit), odd groups
    auto a = mat(5 * 37, 768), b = mat(7 * 3, 256), g = mat(3 * 37, 768);
    std::uniform_int_distribution<int> pa(0, 4), pb(0, 6);
    std::vector<int32_t> sa(1000), sb(300), sg(10);
    for (auto& s : sa) s = pa(rng_);
    for (auto& s : sb) s = pb(rng_);
    for (size_t i = 0; i < sg.size(); ++i) sg[i] = static_cast<int32_t>(i % 3);
    cases.push_back(items("items div 4", a, 37, sa, 0, 4, 768 + 8, 40, -1));
    cases.push_back(items("items div 8", b, 3, sb, 0, 8, 256, 3, -1));
    cases.push_back(items("groups 3", g, 37, sg, 3, 1, 768, 37, 1));
    cases.push_back(items("table 3", g, 37, sg, 0, 1, 768, 37, 1));
  }
  run_cases(cases, all_settings());
}

// The grouped attention output fetches its first weights before pdl_wait(): in a graph with programmatic
// edges behind a kernel that writes its activations (and ahead of a product that reads its output), each
// replay must give the bits of plain launches, for new activations every replay.
TEST_F(Q8StreamConfig, GroupsInGraphWithPdlEqualStream) {
  const int64_t rows_per = 1024, cols = 4096, ngrp = 8;
  auto wa = mat(ngrp * rows_per, cols), wb = mat(4096, ngrp * rows_per);
  cudaStream_t s;
  FS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  for (const Setting& st : {Setting{16, 16, 0}, Setting{8, 16, 2}, Setting{8, 16, 8}}) {
    apply(st);
    for (int64_t nt : {1, 2}) {
      const int64_t n = nt * ngrp;
      auto x = poisoned<float>(static_cast<size_t>(n * cols)), xn = poisoned<float>(x.size());
      auto low = poisoned<float>(static_cast<size_t>(n * rows_per));
      auto y = poisoned<float>(static_cast<size_t>(nt * 4096));
      auto chain = [&] {
        cuda::rms_norm_rows(x.get(), cols, nullptr, xn.get(), cols, n, cols, 1e-6f, s);
        ASSERT_TRUE(fast::q8_decode_groups(wa->m, rows_per, ngrp, xn.get(), cols, n, low.get(), rows_per, s));
        ASSERT_TRUE(fast::q8_mma_matvec(wb->m, 0, 4096, low.get(), nt, ngrp * rows_per, y.get(), 4096, s));
      };
      cudaGraph_t g;
      FS_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
      chain();
      FS_CUDA_CHECK(cudaStreamEndCapture(s, &g));
      const int edges = cuda::pdl_edges(g);
      EXPECT_GE(edges, 2) << "programmatic edges refused";
      cudaGraphExec_t e;
      FS_CUDA_CHECK(cudaGraphInstantiate(&e, g, 0));
      for (int round = 0; round < 3; ++round) {
        const auto xv = randn(x.size());
        FS_CUDA_CHECK(cudaMemcpyAsync(x.get(), xv.data(), x.bytes(), cudaMemcpyHostToDevice, s));
        chain();
        FS_CUDA_CHECK(cudaStreamSynchronize(s));
        const auto low_ref = down(low), y_ref = down(y);
        FS_CUDA_CHECK(cudaMemsetAsync(low.get(), 0xff, low.bytes(), s));
        FS_CUDA_CHECK(cudaMemsetAsync(y.get(), 0xff, y.bytes(), s));
        FS_CUDA_CHECK(cudaGraphLaunch(e, s));
        FS_CUDA_CHECK(cudaStreamSynchronize(s));
        const auto lg = down(low), yg = down(y);
        EXPECT_EQ(std::memcmp(lg.data(), low_ref.data(), lg.size() * 4), 0) << name_of(st) << " t" << nt;
        EXPECT_EQ(std::memcmp(yg.data(), y_ref.data(), yg.size() * 4), 0) << name_of(st) << " t" << nt;
        for (float v : y_ref) ASSERT_TRUE(std::isfinite(v));
      }
      FS_CUDA_CHECK(cudaGraphExecDestroy(e));
      FS_CUDA_CHECK(cudaGraphDestroy(g));
    }
  }
  FS_CUDA_CHECK(cudaStreamDestroy(s));
}

// One decode layer's Q8_0 launches (q_a + kv, norm + q_b, out_a groups, out_b, shared gate + up, swiglu +
// down; one token) over 4 layers of weights (560 MB, past L2), under five settings: plain launches, a
// graph, a graph with programmatic edges (us per launch), then each launch kind alone (a graph of its 4
// layers, with edges) and the head (plain launches).
TEST_F(Q8StreamConfig, DISABLED_DecodeChainTiming) {
  constexpr int kLayers = 4, kKinds = 6, kIters = 20;
  struct Layer {
    std::shared_ptr<Mat> q_a, kv, q_b, out_a, out_b, gate, upw, downw;
  };
  std::vector<Layer> L;
  for (int l = 0; l < kLayers; ++l)
    L.push_back({mat(1024, 4096), mat(512, 4096), mat(32768, 1024), mat(8192, 4096), mat(4096, 8192), mat(2048, 4096),
                 mat(2048, 4096), mat(4096, 2048)});
  auto head = mat(129280, 4096);
  const float* x = dev_floats(randn(4096));
  const float* nw = dev_floats(randn(1024, 0.5f));
  auto qa = poisoned<float>(1024), kvo = poisoned<float>(512), q = poisoned<float>(32768), low = poisoned<float>(8192);
  auto o = poisoned<float>(4096), g = poisoned<float>(2048), u = poisoned<float>(2048), dn = poisoned<float>(4096);
  auto logits = poisoned<float>(129280);
  cudaStream_t s;
  FS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  auto launch = [&](int l, int kind) {
    const Layer& w = L[l];
    fast::Q8Act act;
    bool ok = false;
    switch (kind) {
      case 0:
        ok = fast::q8_decode_pair(w.q_a->m, 1024, qa.get(), 1024, w.kv->m, 512, kvo.get(), 512, x, 1, 4096, s);
        break;
      case 1:
        act.kind = fast::Q8Act::Kind::RmsNorm, act.w = nw, act.eps = 1e-6f;
        ok = fast::q8_decode_act(w.q_b->m, 32768, qa.get(), 1, 1024, act, q.get(), 32768, s);
        break;
      case 2: ok = fast::q8_decode_groups(w.out_a->m, 1024, 8, q.get(), 4096, 8, low.get(), 1024, s); break;
      case 3: ok = fast::q8_mma_matvec(w.out_b->m, 0, 4096, low.get(), 1, 8192, o.get(), 4096, s); break;
      case 4:
        ok = fast::q8_decode_pair(w.gate->m, 2048, g.get(), 2048, w.upw->m, 2048, u.get(), 2048, o.get(), 1, 4096, s);
        break;
      default:
        act.kind = fast::Q8Act::Kind::Swiglu, act.lim = 10.0f, act.up = u.get(), act.up_stride = 2048;
        ok = fast::q8_decode_act(w.downw->m, 4096, g.get(), 1, 2048, act, dn.get(), 4096, s);
    }
    ASSERT_TRUE(ok) << "kind " << kind;
  };
  cudaEvent_t e0, e1;
  FS_CUDA_CHECK(cudaEventCreate(&e0));
  FS_CUDA_CHECK(cudaEventCreate(&e1));
  // us per launch of body (n launches): plain launches (mode 0), a graph (1), a graph with edges (2).
  auto time_us = [&](const std::function<void()>& body, int n, int mode) {
    cudaGraphExec_t ge = nullptr;
    if (mode > 0) {
      cudaGraph_t gr;
      FS_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
      body();
      FS_CUDA_CHECK(cudaStreamEndCapture(s, &gr));
      if (mode == 2) {
        EXPECT_GT(cuda::pdl_edges(gr), 0);
      }
      FS_CUDA_CHECK(cudaGraphInstantiate(&ge, gr, 0));
      FS_CUDA_CHECK(cudaGraphDestroy(gr));
    }
    auto once = [&] {
      if (ge) FS_CUDA_CHECK(cudaGraphLaunch(ge, s));
      else body();
    };
    for (int i = 0; i < 3; ++i) once();
    FS_CUDA_CHECK(cudaEventRecord(e0, s));
    for (int i = 0; i < kIters; ++i) once();
    FS_CUDA_CHECK(cudaEventRecord(e1, s));
    FS_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    FS_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (ge) FS_CUDA_CHECK(cudaGraphExecDestroy(ge));
    return 1000.0 * ms / (kIters * n);
  };
  const Setting settings[] = {{16, 16, 0}, {16, 16, 2}, {8, 16, 0}, {8, 16, 2}, {8, 16, 8}};
  std::printf("Q8_0 decode chain, %d layers x %d launches, us per launch (warps/head warps/L2 look-ahead)\n", kLayers,
              kKinds);
  std::printf("%-14s %7s %7s %9s | %7s %7s %7s %7s %7s %7s\n", "setting", "stream", "graph", "graph+pdl", "qa+kv",
              "q_b", "out_a", "out_b", "gate+up", "down");
  for (const Setting& st : settings) {
    apply(st);
    auto all = [&] {
      for (int l = 0; l < kLayers; ++l)
        for (int k = 0; k < kKinds; ++k) launch(l, k);
    };
    double t[3 + kKinds];
    for (int m = 0; m < 3; ++m) t[m] = time_us(all, kLayers * kKinds, m);
    for (int k = 0; k < kKinds; ++k)
      t[3 + k] = time_us([&] {
        for (int l = 0; l < kLayers; ++l) launch(l, k);
      }, kLayers, 2);
    std::printf("%-14s %7.2f %7.2f %9.2f | %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f\n", name_of(st).c_str(), t[0], t[1],
                t[2], t[3], t[4], t[5], t[6], t[7], t[8]);
  }
  std::printf("output head 129280 x 4096 (562.6 MB), plain launches:\n");
  for (const Setting& st : {Setting{8, 16, 0}, Setting{8, 16, 2}, Setting{8, 16, 8}, Setting{8, 8, 0},
                            Setting{8, 8, 2}, Setting{8, 8, 8}}) {
    apply(st);
    const double us = time_us([&] {
      ASSERT_TRUE(fast::q8_mma_matvec(head->m, 0, 129280, x, 1, 4096, logits.get(), 129280, s));
    }, 1, 0);
    std::printf("  %-14s %7.1f us  %.2f TB/s\n", name_of(st).c_str(), us, 562.6e6 / (us * 1e-6) / 1e12);
  }
  FS_CUDA_CHECK(cudaEventDestroy(e0));
  FS_CUDA_CHECK(cudaEventDestroy(e1));
  FS_CUDA_CHECK(cudaStreamDestroy(s));
}
