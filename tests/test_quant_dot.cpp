// Dot products: dot_row_f32's documented summation order, activation quantization (Q8_0, Q8_K) and
// the integer dots, each against an independent slow reimplementation of the same formula (exact)
// and against the fp32 dot of the dequantized operands (rounding-level agreement).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/half.h"
#include "quant/quant.h"
#include "test_random.h"

using namespace flashstar;
using test_random::gaussian;
using namespace flashstar::quant;

namespace {

// Random block bytes with realistic finite f16 scales at the given offsets (either sign).
std::vector<uint8_t> random_blocks(GgmlType t, int64_t n, uint32_t seed, const std::vector<int>& scale_offsets) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<uint8_t> raw(row_bytes(t, n));
  for (uint8_t& b : raw) b = static_cast<uint8_t>(rng());
  const size_t bb = type_info(t).block_bytes;
  for (size_t off = 0; off < raw.size(); off += bb)
    for (int so : scale_offsets) {
      const uint16_t h = f32_to_f16(nd(rng));
      std::memcpy(raw.data() + off + so, &h, 2);
    }
  return raw;
}

std::vector<uint8_t> quantized(GgmlType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(row_bytes(t, static_cast<int64_t>(x.size())));
  quantize_row(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
  return q;
}

// The summation order dot_row_f32 documents: lane i % 8, then a fixed pairwise tree.
float documented_dot(const std::vector<float>& w, const float* x) {
  float acc[8] = {};
  for (size_t i = 0; i < w.size(); ++i) acc[i % 8] += w[i] * x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

double abs_dot(const std::vector<float>& w, const float* x) {
  double s = 0;
  for (size_t i = 0; i < w.size(); ++i) s += std::fabs(double(w[i]) * x[i]);
  return s;
}

std::vector<float> deq(GgmlType t, const void* p, size_t n) {
  std::vector<float> y(n);
  dequantize_row(t, p, y.data(), static_cast<int64_t>(n));
  return y;
}

}  // namespace

TEST(QuantDot, DotRowF32FollowsDocumentedOrder) {
  struct Case {
    GgmlType t;
    std::vector<uint8_t> row;
    size_t n;
  };
  std::vector<Case> cases;
  const std::vector<float> w = gaussian(256 * 9, 11);
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K,
                     GgmlType::IQ2_XXS})
    cases.push_back({t, quantized(t, w), w.size()});
  const std::vector<float> odd = gaussian(1003, 12);  // plain types: any length, tail not a multiple of 8
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) cases.push_back({t, quantized(t, odd), odd.size()});
  cases.push_back({GgmlType::Q8_0, random_blocks(GgmlType::Q8_0, 32 * 40, 13, {0}), 32 * 40});
  cases.push_back({GgmlType::Q2_K, random_blocks(GgmlType::Q2_K, 256 * 6, 14, {80, 82}), 256 * 6});
  cases.push_back({GgmlType::Q4_K, random_blocks(GgmlType::Q4_K, 256 * 6, 15, {0, 2}), 256 * 6});
  cases.push_back({GgmlType::IQ2_XXS, random_blocks(GgmlType::IQ2_XXS, 256 * 6, 16, {0}), 256 * 6});
  for (const Case& c : cases) {
    const std::vector<float> x = gaussian(c.n, 17);
    const std::vector<float> wd = deq(c.t, c.row.data(), c.n);
    const float got = dot_row_f32(c.t, c.row.data(), x.data(), static_cast<int64_t>(c.n));
    EXPECT_EQ(f32_to_bits(got), f32_to_bits(documented_dot(wd, x.data()))) << type_name(c.t) << " n=" << c.n;
    double exact = 0;
    for (size_t i = 0; i < c.n; ++i) exact += double(wd[i]) * x[i];
    EXPECT_NEAR(got, exact, 1e-5 * abs_dot(wd, x.data())) << type_name(c.t);
  }
}

TEST(QuantDot, Q8_0ActivationRounding) {
  // amax 127 gives d = 1 exactly, so x*id = x: ties must go to even.
  float x[32] = {127.0f, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, -0.5f, 1.5f, 126.5f, -126.5f, 0.49999997f, 7.0f};
  BlockQ8_0 b;
  quantize_row_q8_0_act(x, &b, 32);
  const int8_t want[12] = {127, 2, 4, -2, -4, 0, 0, 2, 126, -126, 0, 7};
  EXPECT_EQ(b.d, f32_to_f16(1.0f));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(b.qs[i], want[i]) << i;
  for (int i = 12; i < 32; ++i) EXPECT_EQ(b.qs[i], 0);
}

TEST(QuantDot, Q8_0ActivationMatchesFormula) {
  std::vector<float> x = gaussian(32 * 50, 21, 3.0f);
  for (int i = 0; i < 32; ++i) x[i] = 0.0f;  // an all-zero block: d = 0, q = 0
  std::vector<BlockQ8_0> b(50);
  std::vector<int8_t> q(x.size());
  std::vector<float> d(50);
  quantize_row_q8_0_act(x.data(), b.data(), static_cast<int64_t>(x.size()));
  quantize_row_q8_0_act_f32(x.data(), q.data(), d.data(), static_cast<int64_t>(x.size()));
  for (size_t blk = 0; blk < 50; ++blk) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[32 * blk + i]));
    const float dd = amax / 127.0f, id = dd != 0 ? 1.0f / dd : 0.0f;
    EXPECT_EQ(d[blk], dd);
    EXPECT_EQ(b[blk].d, f32_to_f16(dd));
    for (int i = 0; i < 32; ++i) {
      const long r = std::lrint(x[32 * blk + i] * id);
      const int8_t want = static_cast<int8_t>(std::min(127L, std::max(-128L, r)));
      EXPECT_EQ(b[blk].qs[i], want);
      EXPECT_EQ(q[32 * blk + i], want);
    }
  }
}

TEST(QuantDot, Q8_KMatchesFormula) {
  std::vector<float> x = gaussian(256 * 6, 31, 0.7f);
  for (int i = 0; i < 256; ++i) x[256 + i] = 0.0f;  // all-zero block
  x[512 + 3] = -9.0f;                               // negative extreme, and a tie after it:
  x[512 + 200] = 9.0f;                              // the first one found keeps its sign
  std::vector<BlockQ8_K> b(6);
  quantize_row_q8_K(x.data(), b.data(), static_cast<int64_t>(x.size()));
  for (int blk = 0; blk < 6; ++blk) {
    const float* xb = x.data() + 256 * blk;
    float amax = 0, max = 0;
    for (int i = 0; i < 256; ++i)
      if (std::fabs(xb[i]) > amax) {
        amax = std::fabs(xb[i]);
        max = xb[i];
      }
    if (amax == 0) {
      EXPECT_EQ(b[blk].d, 0.0f);
      for (int i = 0; i < 256; ++i) EXPECT_EQ(b[blk].qs[i], 0);
      for (int j = 0; j < 16; ++j) EXPECT_EQ(b[blk].bsums[j], 0);
      continue;
    }
    const float iscale = -127.0f / max;
    EXPECT_EQ(b[blk].d, 1.0f / iscale);
    if (blk == 2) {
      EXPECT_GT(b[blk].d, 0.0f);  // max = -9 -> iscale > 0
    }
    for (int i = 0; i < 256; ++i) {
      const long r = std::lrint(iscale * xb[i]);
      EXPECT_EQ(b[blk].qs[i], static_cast<int8_t>(std::min(127L, std::max(-128L, r)))) << i;
      // The activation error is at most half a step.
      EXPECT_LE(std::fabs(double(b[blk].d) * b[blk].qs[i] - xb[i]), std::fabs(double(b[blk].d)) * 0.5 * (1 + 1e-5));
    }
    for (int j = 0; j < 16; ++j) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += b[blk].qs[16 * j + l];
      EXPECT_EQ(b[blk].bsums[j], s);
    }
  }
}

namespace {

// Slow integer references: levels decoded element by element from the layouts in model.md §3,
// integer sums in double (exact below 2^53), then the float combination quant.h documents.
struct Levels {
  std::vector<int> q, sc, m;  // per element: level, sub-block scale, sub-block min (or group 2s+1)
  std::vector<int> sign;      // IQ2_XXS only
};

Levels decode_levels(GgmlType t, const uint8_t* blk) {
  Levels L;
  L.q.resize(256);
  L.sc.resize(256);
  L.m.resize(256);
  L.sign.assign(256, 1);
  for (int i = 0; i < 256; ++i) {
    if (t == GgmlType::Q2_K) {
      const int h = i / 128, j = (i % 128) / 32, half = (i % 32) / 16, l = i % 16;
      const uint8_t s = blk[8 * h + 2 * j + half];
      L.q[i] = (blk[16 + 32 * h + 16 * half + l] >> (2 * j)) & 3;
      L.sc[i] = s & 15;
      L.m[i] = s >> 4;
    } else if (t == GgmlType::Q4_K) {
      const int c = i / 64, hi = (i % 64) / 32, l = i % 32, j = i / 32;
      const uint8_t* s = blk + 4;
      L.q[i] = hi ? blk[16 + 32 * c + l] >> 4 : blk[16 + 32 * c + l] & 15;
      L.sc[i] = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
      L.m[i] = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    } else {  // IQ2_XXS
      const int g = i / 32, k = (i % 32) / 8, j = i % 8;
      uint32_t a, s;
      std::memcpy(&a, blk + 2 + 8 * g, 4);
      std::memcpy(&s, blk + 6 + 8 * g, 4);
      L.q[i] = static_cast<int>((kIq2xxsGrid[(a >> (8 * k)) & 255] >> (8 * j)) & 255);
      L.sign[i] = (kIq2xsSigns[(s >> (7 * k)) & 127] >> j) & 1 ? -1 : 1;
      L.sc[i] = static_cast<int>(2 * (s >> 28) + 1);
      L.m[i] = 0;
    }
  }
  return L;
}

float slow_dot_k(GgmlType t, const std::vector<uint8_t>& w, const std::vector<BlockQ8_K>& x) {
  const size_t bb = type_info(t).block_bytes;
  float sumf = 0;
  for (size_t b = 0; b < x.size(); ++b) {
    const uint8_t* blk = w.data() + bb * b;
    const Levels L = decode_levels(t, blk);
    double isum = 0, summ = 0;
    for (int i = 0; i < 256; ++i) {
      isum += double(L.sc[i]) * L.q[i] * L.sign[i] * x[b].qs[i];
      summ += double(L.m[i]) * x[b].qs[i];  // bsums recomputed from qs, not read
    }
    uint16_t dh, mh;
    if (t == GgmlType::IQ2_XXS) {
      std::memcpy(&dh, blk, 2);
      sumf += (f16_to_f32(dh) * x[b].d) * static_cast<float>(isum);
      continue;
    }
    std::memcpy(&dh, blk + (t == GgmlType::Q2_K ? 80 : 0), 2);
    std::memcpy(&mh, blk + (t == GgmlType::Q2_K ? 82 : 2), 2);
    sumf += (x[b].d * f16_to_f32(dh)) * static_cast<float>(isum) - (x[b].d * f16_to_f32(mh)) * static_cast<float>(summ);
  }
  return t == GgmlType::IQ2_XXS ? 0.125f * sumf : sumf;
}

float vec_dot_k(GgmlType t, const std::vector<uint8_t>& w, const std::vector<BlockQ8_K>& x, int64_t n) {
  switch (t) {
    case GgmlType::Q2_K: return vec_dot_q2_K_q8_K(reinterpret_cast<const BlockQ2_K*>(w.data()), x.data(), n);
    case GgmlType::Q4_K: return vec_dot_q4_K_q8_K(reinterpret_cast<const BlockQ4_K*>(w.data()), x.data(), n);
    default: return vec_dot_iq2_xxs_q8_K(reinterpret_cast<const BlockIQ2_XXS*>(w.data()), x.data(), n);
  }
}

}  // namespace

TEST(QuantDot, KQuantIntegerDots) {
  const int64_t n = 256 * 12;
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS}) {
    const std::vector<int> so = t == GgmlType::Q2_K   ? std::vector<int>{80, 82}
                                : t == GgmlType::Q4_K ? std::vector<int>{0, 2}
                                                      : std::vector<int>{0};
    for (int variant = 0; variant < 2; ++variant) {
      const std::vector<uint8_t> w =
          variant == 0 ? quantized(t, gaussian(n, 41, 0.05f)) : random_blocks(t, n, 42 + static_cast<uint32_t>(t), so);
      const std::vector<float> x = gaussian(n, 43 + variant, 2.0f);
      std::vector<BlockQ8_K> xq(n / 256);
      quantize_row_q8_K(x.data(), xq.data(), n);
      const float got = vec_dot_k(t, w, xq, n);
      EXPECT_EQ(f32_to_bits(got), f32_to_bits(slow_dot_k(t, w, xq))) << type_name(t) << " variant " << variant;

      // Against the fp32 dot of the dequantized operands: rounding-level agreement.
      std::vector<float> xd(n);
      for (int64_t i = 0; i < n; ++i) xd[i] = xq[i / 256].d * xq[i / 256].qs[i % 256];
      const std::vector<float> wd = deq(t, w.data(), n);
      const float ref = dot_row_f32(t, w.data(), xd.data(), n);
      EXPECT_NEAR(got, ref, 2e-5 * abs_dot(wd, xd.data()) + 1e-30) << type_name(t);
      // Against the unquantized activations: off by at most Σ|w|·(half an activation step).
      double bound = 0;
      for (int64_t i = 0; i < n; ++i) bound += std::fabs(double(wd[i])) * std::fabs(double(xq[i / 256].d)) * 0.5;
      EXPECT_NEAR(got, dot_row_f32(t, w.data(), x.data(), n), bound * 1.001 + 2e-5 * abs_dot(wd, x.data()))
          << type_name(t);
    }
  }
}

TEST(QuantDot, Q8_0IntegerDots) {
  const int64_t n = 32 * 64;
  for (int variant = 0; variant < 2; ++variant) {
    const std::vector<uint8_t> raw =
        variant == 0 ? quantized(GgmlType::Q8_0, gaussian(n, 51, 0.05f)) : random_blocks(GgmlType::Q8_0, n, 52, {0});
    const auto* w = reinterpret_cast<const BlockQ8_0*>(raw.data());
    const std::vector<float> x = gaussian(n, 53 + variant, 1.5f);
    std::vector<BlockQ8_0> xq(n / 32);
    std::vector<int8_t> q(n);
    std::vector<float> d(n / 32);
    quantize_row_q8_0_act(x.data(), xq.data(), n);
    quantize_row_q8_0_act_f32(x.data(), q.data(), d.data(), n);

    float slow16 = 0, slow32 = 0;
    for (int64_t b = 0; b < n / 32; ++b) {
      double isum = 0;
      for (int i = 0; i < 32; ++i) isum += double(raw[34 * b + 2 + i] > 127 ? raw[34 * b + 2 + i] - 256 : raw[34 * b + 2 + i]) * q[32 * b + i];
      uint16_t dh;
      std::memcpy(&dh, raw.data() + 34 * b, 2);
      slow16 += (f16_to_f32(dh) * f16_to_f32(xq[b].d)) * static_cast<float>(isum);
      slow32 += (f16_to_f32(dh) * d[b]) * static_cast<float>(isum);
    }
    const float got16 = vec_dot_q8_0_q8_0(w, xq.data(), n);
    const float got32 = vec_dot_q8_0_q8_0_f32(w, q.data(), d.data(), n);
    EXPECT_EQ(f32_to_bits(got16), f32_to_bits(slow16));
    EXPECT_EQ(f32_to_bits(got32), f32_to_bits(slow32));

    const std::vector<float> wd = deq(GgmlType::Q8_0, raw.data(), n);
    std::vector<float> xd(n);
    for (int64_t i = 0; i < n; ++i) xd[i] = f16_to_f32(xq[i / 32].d) * xq[i / 32].qs[i % 32];
    EXPECT_NEAR(got16, dot_row_f32(GgmlType::Q8_0, raw.data(), xd.data(), n), 2e-5 * abs_dot(wd, xd.data()));
    double bound = 0;  // half an activation step per element (plus the f16 rounding of d)
    for (int64_t i = 0; i < n; ++i) bound += std::fabs(double(wd[i])) * (d[i / 32] * 0.5 + std::fabs(x[i]) * 1e-3);
    const float fp = dot_row_f32(GgmlType::Q8_0, raw.data(), x.data(), n);
    EXPECT_NEAR(got16, fp, bound);
    EXPECT_NEAR(got32, fp, bound);
  }
}
