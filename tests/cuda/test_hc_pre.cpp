// The one-launch hyper-connection pre step (fast_hc_pre.cu) against the reference chain it replaces
// (rms_norm_rows without weight, matmul with the 24-row mixer, hc_split, hc_weighted_sum, rms_norm_rows
// with the sublayer's weight): F16 and F32 mixers, the model's width (d = 4096) and odd ones (parts that
// do not fill the last block's lane groups; a single part), 1, 2, 3 and 8 tokens, streams of realistic
// scale with some large values, outputs poisoned with NaN (and a spare token row that must stay so), a
// repeat call that must be bitwise equal, and the calls it must refuse. HcPreSim replays the kernel's
// work mapping and sums on the CPU with the header's own functions (no device needed): every mixer
// weight and output element is covered once, and the result is the chain's up to fp32 rounding; on the
// device, HcPre.MixEqualsLaneSimulation then checks the kernel's mix is that replay, bit for bit.
// HcPre.PendingPostEqualsPostThenPre: the previous half-layer's post applied inside the launch (plain and
// slot sums) gives the streams and outputs of the post's own launch followed by hc_pre, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "cpu/ops.h"
#include "cuda/fast_hc_pre.h"
#include "cuda/fast_kernels.h"
#include "cuda_test_fixture.h"
#include "quant/quant.h"

using namespace flashstar;
namespace hcp = cuda::fast::hcp;

namespace {

constexpr int kHc = 4, kMix = 24, kIters = 20;
constexpr float kEps = 1e-6f;  // rms_eps and hc_eps of the model

struct Inputs {
  GgmlType type;
  int64_t n, d;
  std::vector<uint8_t> fn;  // 24 rows of 4d values, stored as `type`
  std::vector<float> fnf;   // the same, as floats
  std::vector<float> X, scale, base, w;
};

// Streams of a deep layer: N(0, 1) with one value in 64 times 30 and one in 1024 times 1000; the four
// streams of a token differ. Mixer weights N(0, 0.05) stored as F16 or F32, scales and base as the
// model's are in size, a norm weight around 1.
Inputs make_inputs(std::mt19937& rng, GgmlType type, int64_t n, int64_t d) {
  Inputs in{type, n, d, {}, {}, {}, {}, {}, {}};
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 1023);
  const int64_t hc = kHc * d;
  in.X.resize(static_cast<size_t>(n * hc));
  for (auto& v : in.X) {
    const int k = pick(rng);
    v = nd(rng) * (k == 0 ? 1000.0f : k < 16 ? 30.0f : 1.0f);
  }
  const size_t rb = row_bytes(type, hc);
  in.fn.resize(rb * kMix);
  in.fnf.resize(static_cast<size_t>(kMix * hc));
  std::vector<float> row(static_cast<size_t>(hc));
  for (int r = 0; r < kMix; ++r) {
    for (auto& v : row) v = 0.05f * nd(rng);
    quant::quantize_row(type, row.data(), in.fn.data() + r * rb, hc);
    quant::dequantize_row(type, in.fn.data() + r * rb, in.fnf.data() + r * hc, hc);
  }
  in.scale = {0.3f + 0.2f * std::fabs(nd(rng)), 0.3f + 0.2f * std::fabs(nd(rng)), 0.5f + 0.5f * std::fabs(nd(rng))};
  for (int i = 0; i < kMix; ++i) in.base.push_back(nd(rng));
  for (int64_t i = 0; i < d; ++i) in.w.push_back(1.0f + 0.2f * nd(rng));
  return in;
}

struct Outputs {
  std::vector<float> mix, split, xin, an;
};

// x[0] after the shuffle tree v += shfl_xor(v, off), off = L/2 .. 1 (lane i adds lane i ^ off).
template <typename T>
T butterfly(std::vector<T> v) {
  for (size_t off = v.size() / 2; off > 0; off >>= 1) {
    std::vector<T> u(v.size());
    for (size_t i = 0; i < v.size(); ++i) u[i] = v[i] + v[i ^ off];
    v = u;
  }
  return v[0];
}
double sq4(const float* x) {
  return static_cast<double>(x[0]) * x[0] + static_cast<double>(x[1]) * x[1] + static_cast<double>(x[2]) * x[2] +
         static_cast<double>(x[3]) * x[3];
}

// The kernel on the CPU: the same work mapping (hcp functions), the same operations in the same order,
// with the CPU reference's split (cpu::hc_split) in place of the device's. Counts every stream value
// staged (where a pending post is applied), mixer weight, workspace slot and output float4 it touches:
// each must be touched exactly once, and each warp lane must find in the staged values the stream
// values its mixer weights multiply.
Outputs simulate(const Inputs& in) {
  const int64_t n = in.n, d = in.d, hc = kHc * d, parts = hc / hcp::kPartCols;
  std::vector<float> work(static_cast<size_t>(hcp::work_floats(parts, n)), NAN);
  std::vector<int> weight_hits(static_cast<size_t>(kMix * hc), 0), slot_hits(work.size(), 0);
  std::vector<int> x_hits(in.X.size(), 0);
  for (int64_t p = 0; p < parts; ++p) {
    // the staging: the part's 64 columns of the 4 streams, per token, in the block's shared values
    std::vector<float> s_x(static_cast<size_t>(hcp::kMaxTok * hcp::kPartCols), NAN);
    for (int tid = 0; tid < n * hcp::kColsPerPart; ++tid) {
      const int st = hcp::stage_token(tid);
      const int64_t i = hcp::stage_col(p, tid);
      for (int s = 0; s < kHc; ++s) {
        const size_t k = static_cast<size_t>((st * kHc + s) * d + i);
        ++x_hits[k];
        s_x[static_cast<size_t>(st * hcp::kPartCols + s * hcp::kColsPerPart + tid % hcp::kColsPerPart)] = in.X[k];
      }
    }
    float s_dot[2][hcp::kMaxTok][kMix];
    double s_ss[2][hcp::kMaxTok];
    for (int warp = 0; warp < hcp::kWarps; ++warp) {
      const int half = warp / hcp::kRowGroups;
      for (int t = 0; t < n; ++t) {
        std::vector<float> v[hcp::kRowsPerWarp];
        std::vector<double> q;
        for (int lane = 0; lane < 32; ++lane) {
          const int64_t c = hcp::col_of(p, warp, lane, d);
          const float* x = s_x.data() + t * hcp::kPartCols + hcp::part_value(warp, lane);
          for (int e = 0; e < 4; ++e)  // the staged value is the stream value the weight multiplies
            if (std::memcmp(&x[e], &in.X[static_cast<size_t>(t * hc + c + e)], 4) != 0) {
              ADD_FAILURE() << "staged value of part " << p << " warp " << warp << " lane " << lane << " + " << e;
              return {};
            }
          for (int r = 0; r < hcp::kRowsPerWarp; ++r) {
            const int row = hcp::row_of(warp, r);
            const float* w = in.fnf.data() + row * hc + c;
            if (t == 0)
              for (int i = 0; i < 4; ++i) ++weight_hits[static_cast<size_t>(row * hc + c + i)];
            v[r].push_back(std::fma(w[3], x[3], std::fma(w[2], x[2], std::fma(w[1], x[1], w[0] * x[0]))));
          }
          q.push_back(sq4(x));
        }
        for (int r = 0; r < hcp::kRowsPerWarp; ++r) s_dot[half][t][hcp::row_of(warp, r)] = butterfly(v[r]);
        if (warp % hcp::kRowGroups == 0) s_ss[half][t] = butterfly(q);
      }
    }
    for (int t = 0; t < n; ++t) {
      for (int row = 0; row < kMix; ++row) {
        const int64_t i = hcp::dot_slot(p, t, row, n);
        ++slot_hits[static_cast<size_t>(i)];
        work[static_cast<size_t>(i)] = s_dot[0][t][row] + s_dot[1][t][row];
      }
      const int64_t i = hcp::ss_offset(parts, n) + 2 * hcp::ss_slot(p, t, n);
      ++slot_hits[static_cast<size_t>(i)], ++slot_hits[static_cast<size_t>(i + 1)];
      const double ss = s_ss[0][t] + s_ss[1][t];
      std::memcpy(&work[static_cast<size_t>(i)], &ss, sizeof ss);
    }
  }
  for (int h : weight_hits) EXPECT_EQ(h, 1) << "mixer weights covered once";
  for (int h : x_hits) EXPECT_EQ(h, 1) << "stream values staged (and posted) once";
  for (int h : slot_hits) EXPECT_EQ(h, 1) << "workspace slots written once";

  // The last block: parts added by groups of kSumLanes lanes, then the scales, the mix, the split.
  Outputs o;
  const double* dwork = reinterpret_cast<const double*>(work.data() + hcp::ss_offset(parts, n));
  std::vector<float> r(static_cast<size_t>(n));
  for (int t = 0; t < n; ++t) {
    std::vector<double> lanes(hcp::kSumLanes, 0.0);
    for (int sub = 0; sub < hcp::kSumLanes; ++sub)
      for (int64_t z = sub; z < parts; z += hcp::kSumLanes) lanes[sub] += dwork[hcp::ss_slot(z, t, n)];
    r[t] = static_cast<float>(1.0 / std::sqrt(butterfly(lanes) / static_cast<double>(hc) + kEps));
  }
  for (int t = 0; t < n; ++t)
    for (int row = 0; row < kMix; ++row) {
      std::vector<float> lanes(hcp::kSumLanes, 0.0f);
      for (int sub = 0; sub < hcp::kSumLanes; ++sub)
        for (int64_t z = sub; z < parts; z += hcp::kSumLanes) lanes[sub] += work[hcp::dot_slot(z, t, row, n)];
      o.mix.push_back(butterfly(lanes) * r[t]);
    }
  for (int t = 0; t < n; ++t) {
    const cpu::HcSplit s = cpu::hc_split(o.mix.data() + t * kMix, in.scale, in.base, kHc, kIters, kEps);
    o.split.insert(o.split.end(), s.pre.begin(), s.pre.end());
    o.split.insert(o.split.end(), s.post.begin(), s.post.end());
    o.split.insert(o.split.end(), s.comb.begin(), s.comb.end());
  }
  // The tail: float4 j of the row in tail thread j % kTailThreads; per-thread, per-warp, then per-block sums.
  const int64_t d4 = d / 4;
  std::vector<int> f4_hits(static_cast<size_t>(d4), 0);
  o.xin.assign(static_cast<size_t>(n * d), NAN), o.an.assign(static_cast<size_t>(n * d), NAN);
  for (int t = 0; t < n; ++t) {
    const float* pre = o.split.data() + t * kMix;
    std::vector<double> warp_sums;
    for (int warp = 0; warp < hcp::kTailThreads / 32; ++warp) {
      std::vector<double> q(32, 0.0);
      for (int lane = 0; lane < 32; ++lane)
        for (int k = 0; k < hcp::kTailPer; ++k) {
          const int64_t j = warp * 32 + lane + static_cast<int64_t>(k) * hcp::kTailThreads;
          if (j >= d4) continue;
          if (t == 0) ++f4_hits[static_cast<size_t>(j)];
          float u[4];
          for (int e = 0; e < 4; ++e) {
            float acc = 0;
            for (int s = 0; s < kHc; ++s) acc += pre[s] * in.X[static_cast<size_t>((t * kHc + s) * d + 4 * j + e)];
            u[e] = acc;
            o.xin[static_cast<size_t>(t * d + 4 * j + e)] = acc;
          }
          q[lane] += sq4(u);
        }
      warp_sums.push_back(butterfly(q));
    }
    double ss = 0.0;
    for (double v : warp_sums) ss += v;
    const float rt = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + kEps));
    for (int64_t i = 0; i < d; ++i) o.an[t * d + i] = o.xin[t * d + i] * rt * in.w[i];
  }
  for (int h : f4_hits) EXPECT_EQ(h, 1) << "row float4s covered once";
  return o;
}

// The chain in double (mix, weighted sum, norm), with the CPU reference's split of the double mix
// rounded to float: what both the kernel and the reference kernels approximate.
Outputs exact_chain(const Inputs& in) {
  const int64_t n = in.n, d = in.d, hc = kHc * d;
  Outputs o;
  for (int t = 0; t < n; ++t) {
    const float* x = in.X.data() + t * hc;
    double ss = 0.0;
    for (int64_t c = 0; c < hc; ++c) ss += static_cast<double>(x[c]) * x[c];
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(hc) + kEps);
    for (int row = 0; row < kMix; ++row) {
      double acc = 0.0;
      for (int64_t c = 0; c < hc; ++c) acc += static_cast<double>(in.fnf[row * hc + c]) * x[c];
      o.mix.push_back(static_cast<float>(acc * r));
    }
    const cpu::HcSplit s = cpu::hc_split(o.mix.data() + t * kMix, in.scale, in.base, kHc, kIters, kEps);
    o.split.insert(o.split.end(), s.pre.begin(), s.pre.end());
    o.split.insert(o.split.end(), s.post.begin(), s.post.end());
    o.split.insert(o.split.end(), s.comb.begin(), s.comb.end());
    std::vector<double> u(static_cast<size_t>(d));
    double su = 0.0;
    for (int64_t i = 0; i < d; ++i) {
      for (int s2 = 0; s2 < kHc; ++s2) u[i] += static_cast<double>(s.pre[s2]) * x[s2 * d + i];
      su += u[i] * u[i];
      o.xin.push_back(static_cast<float>(u[i]));
    }
    const double ru = 1.0 / std::sqrt(su / static_cast<double>(d) + kEps);
    for (int64_t i = 0; i < d; ++i) o.an.push_back(static_cast<float>(u[i] * ru * in.w[i]));
  }
  return o;
}

// r * sum |fn . x| per (token, row): the size the mixer's rounding is measured against.
std::vector<double> mix_magnitudes(const Inputs& in) {
  const int64_t hc = kHc * in.d;
  std::vector<double> mag;
  for (int t = 0; t < in.n; ++t) {
    const float* x = in.X.data() + t * hc;
    double ss = 0.0;
    for (int64_t c = 0; c < hc; ++c) ss += static_cast<double>(x[c]) * x[c];
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(hc) + kEps);
    for (int row = 0; row < kMix; ++row) {
      double m = 0.0;
      for (int64_t c = 0; c < hc; ++c) m += std::fabs(static_cast<double>(in.fnf[row * hc + c]) * x[c]);
      mag.push_back(m * r);
    }
  }
  return mag;
}

// ||a - b|| / ||b||; infinite when a value is not finite.
double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]), den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}
bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The stated bounds of one comparison of `got` with `ref` (both approximations of the same chain):
//   mix:   |d mix| <= 1e-5 r sum |fn x|   (fp32 dot products of 16384 terms in two orders, worst case)
//   split: |d s|   <= 2e-5 + 8 max(scale) max |d mix|   (sigmoid slopes <= 1/2; softmax + Sinkhorn keep
//          a relative change of their logits within a few times it; 2e-5: their own fp32 rounding)
//   xin:   |d u_i| <= 2 max |d pre| sum_s |x_s,i| + 2e-6 sum_s |pre_s x_s,i|
//   an:    |d a_i| <= |w_i| r |d u_i bound| + |a_i| (2 |d u| / |u| + 1e-6)   (r: 1 / rms(u))
// and the norms' relative errors within 1e-5 (the chain's rounding is ~1e-6).
void expect_close(const Inputs& in, const Outputs& got, const Outputs& ref, const char* what) {
  const int64_t n = in.n, d = in.d;
  const auto mag = mix_magnitudes(in);
  double dmix = 0.0;
  for (size_t i = 0; i < ref.mix.size(); ++i) {
    const double e = std::fabs(double(got.mix[i]) - ref.mix[i]);
    ASSERT_TRUE(std::isfinite(got.mix[i])) << what << " mix " << i;
    EXPECT_LE(e, 1e-5 * mag[i]) << what << " mix " << i << " got " << got.mix[i] << " ref " << ref.mix[i];
    dmix = std::max(dmix, e);
  }
  const double smax = std::max({std::fabs(in.scale[0]), std::fabs(in.scale[1]), std::fabs(in.scale[2])});
  double dpre = 0.0;
  for (size_t i = 0; i < ref.split.size(); ++i) {
    const double e = std::fabs(double(got.split[i]) - ref.split[i]);
    ASSERT_TRUE(std::isfinite(got.split[i])) << what << " split " << i;
    EXPECT_LE(e, 2e-5 + 8.0 * smax * dmix) << what << " split " << i << " got " << got.split[i] << " ref " << ref.split[i];
    if (i % kMix < kHc) dpre = std::max(dpre, e);
  }
  for (int t = 0; t < n; ++t) {
    const float* pre = ref.split.data() + t * kMix;
    std::vector<double> bu(static_cast<size_t>(d));
    double du2 = 0.0, u2 = 0.0;
    for (int64_t i = 0; i < d; ++i) {
      double sx = 0.0, spx = 0.0;
      for (int s = 0; s < kHc; ++s) {
        const double x = in.X[static_cast<size_t>((t * kHc + s) * d + i)];
        sx += std::fabs(x), spx += std::fabs(pre[s] * x);
      }
      const size_t k = static_cast<size_t>(t * d + i);
      bu[i] = 2.0 * dpre * sx + 2e-6 * spx + 1e-30;
      const double e = std::fabs(double(got.xin[k]) - ref.xin[k]);
      ASSERT_TRUE(std::isfinite(got.xin[k])) << what << " xin " << k;
      EXPECT_LE(e, bu[i]) << what << " xin token " << t << " i " << i << " got " << got.xin[k] << " ref " << ref.xin[k];
      du2 += e * e, u2 += double(ref.xin[k]) * ref.xin[k];
    }
    const double rel_u = std::sqrt(du2 / std::max(u2, 1e-300)), r = 1.0 / std::sqrt(u2 / double(d) + kEps);
    for (int64_t i = 0; i < d; ++i) {
      const size_t k = static_cast<size_t>(t * d + i);
      const double e = std::fabs(double(got.an[k]) - ref.an[k]);
      ASSERT_TRUE(std::isfinite(got.an[k])) << what << " an " << k;
      EXPECT_LE(e, std::fabs(in.w[i]) * r * bu[i] + std::fabs(ref.an[k]) * (2.0 * rel_u + 1e-6))
          << what << " an token " << t << " i " << i << " got " << got.an[k] << " ref " << ref.an[k];
    }
  }
  EXPECT_LE(rel_l2(got.xin, ref.xin), 1e-5) << what << " xin";
  EXPECT_LE(rel_l2(got.an, ref.an), 1e-5) << what << " an";
}


}  // namespace

TEST(HcPreSim, LaneReplayCoversEverythingAndMatchesTheExactChain) {
  std::mt19937 rng(20260606);
  for (GgmlType type : {GgmlType::F16, GgmlType::F32})
    for (int64_t d : {64, 1088, 4096})
      for (int64_t n : {1, 3, 8}) {
        if (d == 4096 && n == 3) continue;  // keep the CPU time small
        const Inputs in = make_inputs(rng, type, n, d);
        const Outputs sim = simulate(in), exact = exact_chain(in);
        if (::testing::Test::HasFailure()) return;
        expect_close(in, sim, exact, d == 4096 ? "sim, d 4096" : "sim, odd d");
      }
}

namespace {

class HcPre : public cuda_test::CudaKernelTest {
 protected:
  struct Device {
    cuda::DeviceArray<uint8_t> fn;
    cuda::DeviceArray<float> X, scale, base, w, mix, split, xin, an, work;
    cuda::fast::HcPreArgs args;
  };
  // Device copies of `in`, outputs poisoned (one spare token row each), the workspace poisoned too.
  Device upload(const Inputs& in) {
    Device v{up(in.fn), up(in.X), up(in.scale), up(in.base), up(in.w),
             poisoned<float>(static_cast<size_t>((in.n + 1) * kMix)), poisoned<float>(static_cast<size_t>((in.n + 1) * kMix)),
             poisoned<float>(static_cast<size_t>((in.n + 1) * in.d)), poisoned<float>(static_cast<size_t>((in.n + 1) * in.d)),
             poisoned<float>(static_cast<size_t>(hcp::work_floats(kHc * in.d / hcp::kPartCols, in.n) + 8)), {}};
    cuda::fast::HcPreArgs& a = v.args;
    a.fn.type = in.type, a.fn.data = v.fn.get(), a.fn.rows = kMix, a.fn.cols = kHc * in.d;
    a.fn.row_bytes = row_bytes(in.type, kHc * in.d);
    a.X = v.X.get(), a.scale = v.scale.get(), a.base = v.base.get(), a.norm_w = v.w.get();
    a.mix = v.mix.get(), a.split = v.split.get(), a.xin = v.xin.get(), a.normed = v.an.get();
    a.n_tok = in.n, a.d = in.d, a.n_hc = kHc, a.iters = kIters, a.norm_eps = kEps, a.hc_eps = kEps;
    a.work = v.work.get(), a.work_floats = static_cast<int64_t>(v.work.size());
    return v;
  }
  // The outputs' first n rows; the spare row must still hold the poison (nothing written past n).
  Outputs outputs(const Inputs& in, const Device& v) {
    auto cut = [&](const cuda::DeviceArray<float>& a, int64_t per) {
      std::vector<float> h = down(a);
      for (int64_t i = in.n * per; i < (in.n + 1) * per; ++i) {
        uint32_t b;
        std::memcpy(&b, &h[static_cast<size_t>(i)], 4);
        EXPECT_EQ(b, 0xffffffffu) << "written past the last token at " << i;
      }
      h.resize(static_cast<size_t>(in.n * per));
      return h;
    };
    return {cut(v.mix, kMix), cut(v.split, kMix), cut(v.xin, in.d), cut(v.an, in.d)};
  }
  // The reference kernels the session runs without the fused route.
  Outputs reference(const Inputs& in, const Device& v) {
    const int64_t n = in.n, d = in.d, hc = kHc * d;
    auto flat = poisoned<float>(static_cast<size_t>(n * hc));
    auto mix = poisoned<float>(static_cast<size_t>(n * kMix)), split = poisoned<float>(static_cast<size_t>(n * kMix));
    auto xin = poisoned<float>(static_cast<size_t>(n * d)), an = poisoned<float>(static_cast<size_t>(n * d));
    cuda::rms_norm_rows(v.X.get(), hc, nullptr, flat.get(), hc, n, hc, kEps, nullptr);
    cuda::matmul(v.args.fn, 0, kMix, flat.get(), n, hc, mix.get(), kMix, nullptr);
    cuda::hc_split(mix.get(), kMix, v.scale.get(), v.base.get(), kHc, kIters, kEps, split.get(), n, nullptr);
    cuda::hc_weighted_sum(v.X.get(), split.get(), kHc, d, xin.get(), n, nullptr);
    cuda::rms_norm_rows(xin.get(), d, v.w.get(), an.get(), d, n, d, kEps, nullptr);
    return {down(mix), down(split), down(xin), down(an)};
  }
};

}  // namespace

TEST_F(HcPre, MatchesReferenceChain) {
  for (GgmlType type : {GgmlType::F16, GgmlType::F32})
    for (int64_t d : {4096, 1088, 64})
      for (int64_t n : {1, 2, 3, 8}) {
        const Inputs in = make_inputs(rng_, type, n, d);
        Device v = upload(in);
        ASSERT_TRUE(cuda::fast::hc_pre_supported(v.args));
        ASSERT_TRUE(cuda::fast::hc_pre(v.args, nullptr));
        const Outputs got = outputs(in, v), ref = reference(in, v);
        const std::string what = std::string(type == GgmlType::F16 ? "F16" : "F32") + " d " + std::to_string(d) +
                                 " tokens " + std::to_string(n);
        expect_close(in, got, ref, what.c_str());
        // again, on the same inputs: the same bits (the ticket was reset, the sums' order is fixed)
        ASSERT_TRUE(cuda::fast::hc_pre(v.args, nullptr));
        const Outputs again = outputs(in, v);
        EXPECT_TRUE(bitwise_equal(got.mix, again.mix) && bitwise_equal(got.split, again.split) &&
                    bitwise_equal(got.xin, again.xin) && bitwise_equal(got.an, again.an))
            << what << ": repeat differs";
        if (HasFatalFailure()) return;
      }
}

// The mixer's sums are exact replays on the CPU (fmaf, double squares, the same trees), so the device's
// mix must be HcPreSim's, bit for bit: a wrong lane, part or slot shows here even where it would hide
// inside the rounding bounds.
TEST_F(HcPre, MixEqualsLaneSimulation) {
  for (GgmlType type : {GgmlType::F16, GgmlType::F32})
    for (int64_t d : {4096, 1088})
      for (int64_t n : {1, 3, 8}) {
        const Inputs in = make_inputs(rng_, type, n, d);
        Device v = upload(in);
        ASSERT_TRUE(cuda::fast::hc_pre(v.args, nullptr));
        const Outputs got = outputs(in, v), sim = simulate(in);
        EXPECT_TRUE(bitwise_equal(got.mix, sim.mix)) << "d " << d << " tokens " << n << " type " << int(type);
      }
}

namespace {

// The previous half-layer's post: its split (the CPU reference's split of a random mix: post weights in
// (0, 2), comb near doubly stochastic) and its output f, plain (attention) or as routed slots and an
// optional shared expert (FFN), of the size of a sublayer's output.
struct PendingPost {
  cuda::fast::HcPost::Kind kind;
  int k = 0;
  bool shared = false;
  std::vector<float> split, f, sh;
};
PendingPost make_post(std::mt19937& rng, const Inputs& in, cuda::fast::HcPost::Kind kind, int k, bool shared) {
  PendingPost q{kind, k, shared, {}, {}, {}};
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int t = 0; t < in.n; ++t) {
    std::vector<float> mix(kMix);
    for (auto& m : mix) m = nd(rng);
    const cpu::HcSplit s = cpu::hc_split(mix.data(), in.scale, in.base, kHc, kIters, kEps);
    q.split.insert(q.split.end(), s.pre.begin(), s.pre.end());
    q.split.insert(q.split.end(), s.post.begin(), s.post.end());
    q.split.insert(q.split.end(), s.comb.begin(), s.comb.end());
  }
  const int64_t nf = in.n * in.d * (kind == cuda::fast::HcPost::Kind::Plain ? 1 : k);
  for (int64_t i = 0; i < nf; ++i) q.f.push_back(0.5f * nd(rng));
  if (shared)
    for (int64_t i = 0; i < in.n * in.d; ++i) q.sh.push_back(0.5f * nd(rng));
  return q;
}

}  // namespace

// hc_pre with the previous half-layer's post pending against that post's own launch (hc_post for the
// attention half, sum_slots_post for the FFN half, as the session runs them) followed by hc_pre without
// one: the new streams and every output bit for bit (the session's decode relies on it). The post's
// split is the very buffer hc_pre writes its split to, as in the session; a repeat from the same inputs
// must give the same bits.
TEST_F(HcPre, PendingPostEqualsPostThenPre) {
  using Kind = cuda::fast::HcPost::Kind;
  struct Case {
    Kind kind;
    int k;
    bool shared;
    const char* name;
  };
  const Case cases[] = {{Kind::Plain, 0, false, "plain"}, {Kind::Slots, 6, true, "6 slots + shared"},
                        {Kind::Slots, 6, false, "6 slots"}, {Kind::Slots, 0, true, "shared only"}};
  for (const Case& cs : cases)
    for (GgmlType type : {GgmlType::F16, GgmlType::F32})
      for (int64_t d : {4096, 1088, 64})
        for (int64_t n : {1, 2, 3, 8}) {
          if (type == GgmlType::F32 && d != 4096) continue;  // the mixer's type does not touch the post
          const Inputs in = make_inputs(rng_, type, n, d);
          const PendingPost q = make_post(rng_, in, cs.kind, cs.k, cs.shared);
          const std::string what = std::string(cs.name) + (type == GgmlType::F16 ? " F16" : " F32") + " d " +
                                   std::to_string(d) + " tokens " + std::to_string(n);
          auto f = up(q.f.empty() ? std::vector<float>(1) : q.f), sh = up(q.sh.empty() ? std::vector<float>(1) : q.sh);
          const float* shp = cs.shared ? sh.get() : nullptr;
          auto put_split = [&](Device& v) {
            FS_CUDA_CHECK(cudaMemcpy(v.split.get(), q.split.data(), q.split.size() * 4, cudaMemcpyHostToDevice));
          };
          // the post's launch, then hc_pre without a post
          Device ref = upload(in);
          put_split(ref);
          if (cs.kind == Kind::Plain) {
            cuda::hc_post(f.get(), ref.X.get(), ref.split.get(), kHc, d, n, nullptr);
          } else {
            ASSERT_TRUE(cuda::fast::sum_slots_post(f.get(), shp, cs.k, ref.X.get(), ref.split.get(), kHc, d, n, nullptr));
          }
          ASSERT_TRUE(cuda::fast::hc_pre(ref.args, nullptr)) << what;
          const std::vector<float> ref_x = down(ref.X);
          const Outputs want = outputs(in, ref);
          // the post pending in the one launch
          Device v = upload(in);
          put_split(v);
          v.args.post.kind = cs.kind, v.args.post.f = cs.k || cs.kind == Kind::Plain ? f.get() : nullptr;
          v.args.post.shared = shp, v.args.post.k = cs.k, v.args.post.split = v.split.get();
          ASSERT_TRUE(cuda::fast::hc_pre_supported(v.args)) << what;
          ASSERT_TRUE(cuda::fast::hc_pre(v.args, nullptr)) << what;
          const std::vector<float> got_x = down(v.X);
          const Outputs got = outputs(in, v);
          EXPECT_TRUE(bitwise_equal(got_x, ref_x)) << what << ": streams";
          EXPECT_TRUE(bitwise_equal(got.mix, want.mix)) << what << ": mix";
          EXPECT_TRUE(bitwise_equal(got.split, want.split)) << what << ": split";
          EXPECT_TRUE(bitwise_equal(got.xin, want.xin)) << what << ": xin";
          EXPECT_TRUE(bitwise_equal(got.an, want.an)) << what << ": normed";
          // again from the same streams and split: the same bits
          FS_CUDA_CHECK(cudaMemcpy(v.X.get(), in.X.data(), in.X.size() * 4, cudaMemcpyHostToDevice));
          put_split(v);
          ASSERT_TRUE(cuda::fast::hc_pre(v.args, nullptr)) << what;
          const std::vector<float> again_x = down(v.X);
          const Outputs again = outputs(in, v);
          EXPECT_TRUE(bitwise_equal(again_x, got_x) && bitwise_equal(again.mix, got.mix) &&
                      bitwise_equal(again.split, got.split) && bitwise_equal(again.xin, got.xin) &&
                      bitwise_equal(again.an, got.an))
              << what << ": repeat differs";
          if (HasFatalFailure() || HasFailure()) return;
        }
}

// The post's reference: sum_slots_post (what the session's FFN half launches without the fold) is the
// reference pair sum_slots + hc_post bit for bit on these inputs too, so the fold equals the reference route.
TEST_F(HcPre, SlotsPostIsTheReferencePair) {
  const Inputs in = make_inputs(rng_, GgmlType::F16, 8, 4096);
  const PendingPost q = make_post(rng_, in, cuda::fast::HcPost::Kind::Slots, 6, true);
  auto f = up(q.f), sh = up(q.sh), split = up(q.split), Xa = up(in.X), Xb = up(in.X);
  auto out = poisoned<float>(static_cast<size_t>(in.n * in.d));
  ASSERT_TRUE(cuda::fast::sum_slots_post(f.get(), sh.get(), 6, Xa.get(), split.get(), kHc, in.d, in.n, nullptr));
  cuda::sum_slots(f.get(), sh.get(), in.n, 6, in.d, out.get(), nullptr);
  cuda::hc_post(out.get(), Xb.get(), split.get(), kHc, in.d, in.n, nullptr);
  EXPECT_TRUE(bitwise_equal(down(Xa), down(Xb)));
}

// FLASHSTAR_HC_PRE_LEAN (hc_pre_set_lean): the constants fetched before the PDL wait and one thread's
// ticket fences; the same values in the same order, so the same bits as the default kernel, with and
// without a pending post, for both mixer types and 1, 2, 3 and 8 tokens, several launches back to back
// (the ticket must come back to zero each time).
TEST_F(HcPre, LeanIsTheDefaultsBits) {
  const bool saved = cuda::fast::hc_pre_lean();
  for (GgmlType type : {GgmlType::F16, GgmlType::F32})
    for (int64_t d : {4096, 1088})
      for (int64_t n : {1, 2, 3, 8})
        for (bool post : {false, true}) {
          const Inputs in = make_inputs(rng_, type, n, d);
          const PendingPost q = make_post(rng_, in, cuda::fast::HcPost::Kind::Slots, 6, true);
          auto f = up(q.f), sh = up(q.sh);
          std::vector<float> xs[2];
          Outputs outs[2];
          for (int lean : {0, 1}) {
            cuda::fast::hc_pre_set_lean(lean == 1);
            Device v = upload(in);
            FS_CUDA_CHECK(cudaMemcpy(v.split.get(), q.split.data(), q.split.size() * 4, cudaMemcpyHostToDevice));
            if (post) {
              v.args.post.kind = cuda::fast::HcPost::Kind::Slots, v.args.post.f = f.get(), v.args.post.shared = sh.get();
              v.args.post.k = 6, v.args.post.split = v.split.get();
            }
            for (int rep = 0; rep < 3; ++rep) {  // the same inputs each time: streams and split put back
              FS_CUDA_CHECK(cudaMemcpy(v.X.get(), in.X.data(), in.X.size() * 4, cudaMemcpyHostToDevice));
              FS_CUDA_CHECK(cudaMemcpy(v.split.get(), q.split.data(), q.split.size() * 4, cudaMemcpyHostToDevice));
              ASSERT_TRUE(cuda::fast::hc_pre(v.args, nullptr));
            }
            xs[lean] = down(v.X);
            outs[lean] = outputs(in, v);
          }
          const std::string what = std::string(type == GgmlType::F16 ? "F16" : "F32") + " d " + std::to_string(d) +
                                   " tokens " + std::to_string(n) + (post ? " with a post" : "");
          EXPECT_TRUE(bitwise_equal(xs[0], xs[1])) << what << ": streams";
          EXPECT_TRUE(bitwise_equal(outs[0].mix, outs[1].mix) && bitwise_equal(outs[0].split, outs[1].split) &&
                      bitwise_equal(outs[0].xin, outs[1].xin) && bitwise_equal(outs[0].an, outs[1].an))
              << what << ": outputs";
          if (HasFailure()) break;
        }
  cuda::fast::hc_pre_set_lean(saved);
}

// split_later (the session's FLASHSTAR_HC_SPLIT_SIDE): the launch leaves the split to fast::hc_split of the
// mix it stored, on another stream; with that launch after it, every output is the default launch's, bit
// for bit (1 and 2 tokens, with a pending post, both mixer types). More than 2 tokens or no mix: refused.
TEST_F(HcPre, SplitLaterThenHcSplitIsTheDefaultsBits) {
  cudaStream_t side = nullptr;
  FS_CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  for (GgmlType type : {GgmlType::F16, GgmlType::F32})
    for (int64_t n : {1, 2}) {
      const Inputs in = make_inputs(rng_, type, n, 4096);
      const PendingPost q = make_post(rng_, in, cuda::fast::HcPost::Kind::Slots, 6, true);
      auto f = up(q.f), sh = up(q.sh);
      std::vector<float> xs[2];
      Outputs outs[2];
      for (int later : {0, 1}) {
        Device v = upload(in);
        FS_CUDA_CHECK(cudaMemcpy(v.split.get(), q.split.data(), q.split.size() * 4, cudaMemcpyHostToDevice));
        v.args.post.kind = cuda::fast::HcPost::Kind::Slots, v.args.post.f = f.get(), v.args.post.shared = sh.get();
        v.args.post.k = 6, v.args.post.split = v.split.get();
        v.args.split_later = later == 1;
        ASSERT_TRUE(cuda::fast::hc_pre(v.args, nullptr));
        if (later) {
          FS_CUDA_CHECK(cudaDeviceSynchronize());
          ASSERT_TRUE(cuda::fast::hc_split(v.mix.get(), kMix, v.scale.get(), v.base.get(), kHc, kIters, kEps,
                                           v.split.get(), n, side));
          FS_CUDA_CHECK(cudaStreamSynchronize(side));
        }
        xs[later] = down(v.X);
        outs[later] = outputs(in, v);
      }
      const std::string what = std::string(type == GgmlType::F16 ? "F16" : "F32") + " tokens " + std::to_string(n);
      EXPECT_TRUE(bitwise_equal(xs[0], xs[1])) << what << ": streams";
      EXPECT_TRUE(bitwise_equal(outs[0].mix, outs[1].mix)) << what << ": mix";
      EXPECT_TRUE(bitwise_equal(outs[0].split, outs[1].split)) << what << ": split";
      EXPECT_TRUE(bitwise_equal(outs[0].xin, outs[1].xin) && bitwise_equal(outs[0].an, outs[1].an)) << what;
    }
  const Inputs in = make_inputs(rng_, GgmlType::F16, 3, 4096);
  Device v = upload(in);
  v.args.split_later = true;
  EXPECT_FALSE(cuda::fast::hc_pre_supported(v.args)) << "3 tokens";
  Device w = upload(make_inputs(rng_, GgmlType::F16, 1, 4096));
  w.args.split_later = true, w.args.mix = nullptr;
  EXPECT_FALSE(cuda::fast::hc_pre_supported(w.args)) << "no mix";
  cudaStreamDestroy(side);
}

TEST_F(HcPre, RefusesWhatItCannotTake) {
  const Inputs in = make_inputs(rng_, GgmlType::F16, 2, 1088);
  Device v = upload(in);
  auto refused = [&](cuda::fast::HcPreArgs a, const char* why) {
    EXPECT_FALSE(cuda::fast::hc_pre_supported(a)) << why;
    EXPECT_FALSE(cuda::fast::hc_pre(a, nullptr)) << why;
  };
  cuda::fast::HcPreArgs a = v.args;
  a.n_tok = 9, refused(a, "9 tokens");
  a = v.args, a.n_hc = 3, refused(a, "3 streams");
  a = v.args, a.d = 1056, a.fn.cols = kHc * 1056, refused(a, "d not a multiple of 64");
  a = v.args, a.d = 4160, a.fn.cols = kHc * 4160, refused(a, "d above 4096");
  a = v.args, a.fn.cols += 4, refused(a, "mixer width is not 4 d");
  a = v.args, a.fn.rows = 23, refused(a, "23 mixer rows");
  a = v.args, a.fn.type = GgmlType::Q8_0, refused(a, "quantized mixer");
  a = v.args, a.X += 1, refused(a, "misaligned streams");
  a = v.args, a.normed += 2, refused(a, "misaligned output");
  a = v.args, a.work_floats = hcp::work_floats(kHc * 1088 / hcp::kPartCols, 2) - 1, refused(a, "workspace too small");
  a = v.args, a.norm_w = nullptr, refused(a, "no norm weight");
  a = v.args, a.post.kind = cuda::fast::HcPost::Kind::Plain, a.post.split = v.split.get(), refused(a, "plain post without f");
  a.post.f = v.xin.get(), a.post.split = nullptr, refused(a, "post without its split");
  a = v.args, a.post.kind = cuda::fast::HcPost::Kind::Slots, a.post.split = v.split.get(), refused(a, "no slots, no shared");
  a.post.f = v.xin.get(), a.post.k = hcp::kMaxSlots + 1, refused(a, "too many slots");
  a.post.k = -1, refused(a, "negative slot count");
  // nothing was launched: every output is still poisoned, the streams untouched
  for (const auto* buf : {&v.mix, &v.split, &v.xin, &v.an}) {
    const std::vector<float> h = down(*buf);
    for (float x : h) ASSERT_TRUE(std::isnan(x));
  }
  EXPECT_TRUE(bitwise_equal(down(v.X), in.X));
  a = v.args, a.n_tok = 0;
  EXPECT_TRUE(cuda::fast::hc_pre(a, nullptr)) << "no tokens: nothing to do";
}
