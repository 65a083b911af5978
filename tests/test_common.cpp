#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/half.h"
#include "common/parallel.h"

using namespace flashstar;

TEST(Half, RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_f16(f), h) << h;
  }
}

TEST(Half, RoundsToNearestEven) {
  // 1 + 2^-11 is exactly halfway between 1 and the next half (1 + 2^-10): ties to even -> 1.
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // overflow to inf
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);   // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);   // tie to even (zero)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);
}

TEST(Half, Bf16) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f818000u)), 0x3f82);
}

TEST(Parallel, CoversRangeExactlyOnce) {
  for (int64_t n : {0, 1, 7, 1000, 12345}) {
    std::vector<int> hits(static_cast<size_t>(n), 0);
    parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
    });
    for (int h : hits) ASSERT_EQ(h, 1);
  }
}

TEST(Parallel, ResizingAfterUseIsSafe) {
  std::vector<int> hits(1000, 0);
  parallel_for(1000, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
  });
  const int before = num_threads();
  set_num_threads(3);
  parallel_for(1000, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
  });
  set_num_threads(before);
  for (int h : hits) ASSERT_EQ(h, 2);
}

#include "common/quant_sim.h"

TEST(QuantSim, E4m3RoundsToNearestEvenCode) {
  EXPECT_EQ(e4m3_round(448.0f), 448.0f);
  EXPECT_EQ(e4m3_round(1000.0f), 448.0f);
  EXPECT_EQ(e4m3_round(-1.0625f), -1.0f);   // tie between 1 (even) and 1.125
  EXPECT_EQ(e4m3_round(1.1875f), 1.25f);    // tie between 1.125 and 1.25 (even)
  EXPECT_EQ(e4m3_round(0.0029296875f), 0.00390625f);  // subnormal tie 1.5 * 2^-9 -> 2 * 2^-9
  EXPECT_EQ(e4m3_round(0.0009765625f), 0.0f);         // 0.5 * 2^-9 ties to zero
  EXPECT_EQ(e4m3_round(3.3f), 3.25f);
}

TEST(QuantSim, E2m1RoundsToNearestEvenCode) {
  EXPECT_EQ(e2m1_round(2.5f), 2.0f);
  EXPECT_EQ(e2m1_round(0.25f), 0.0f);
  EXPECT_EQ(e2m1_round(0.75f), 1.0f);
  EXPECT_EQ(e2m1_round(-5.0f), -4.0f);
  EXPECT_EQ(e2m1_round(7.0f), 6.0f);
  EXPECT_EQ(e2m1_round(1.3f), 1.5f);
}

// e2m1_round_grid (the CUDA indexer kernels' FP4 rounding) against the nearest-code search: every float
// from 2^-4 to 6 of both signs (all of [-6, 6] was checked once: 2.2e9 values, 35 s), and every 4099th
// pattern below. fp4_roundtrip_pow2 against fp4_roundtrip over every power-of-two scale of
// fp4_block_scale with special and random values (+-0, subnormals, infinities, NaN).
TEST(QuantSim, E2m1GridEqualsTheNearestCodeSearch) {
  auto same = [](float a, float b) { return f32_to_bits(a) == f32_to_bits(b); };
  const uint32_t top = f32_to_bits(6.0f), dense = f32_to_bits(0.0625f);
  for (uint32_t u = 0; u <= top; u += u < dense ? 4099u : 1u) {
    const float c = bits_to_f32(u);
    ASSERT_TRUE(same(e2m1_round_grid(c), e2m1_round(c))) << c;
    ASSERT_TRUE(same(e2m1_round_grid(-c), e2m1_round(-c))) << -c;
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  std::vector<float> vs = {0.0f, -0.0f, 1e-45f, -3e-39f, 1.17549435e-38f, 6.0f, -6.0f, 3.0e38f, INFINITY, -INFINITY, NAN};
  for (int i = 0; i < 4000; ++i) vs.push_back(bits_to_f32(bits(rng)));
  for (float amax : {0.0f, 1e-40f, 7.1e-38f, 1e-20f, 0.3f, 6.0f, 7.5f, 1e20f, 3.4e38f, INFINITY}) {
    for (int k = -126; k <= 127; k += amax == 0.0f ? 1 : 300) {  // amax 0: every power of two as the scale
      const float scale = amax == 0.0f ? std::ldexp(1.0f, k) : fp4_block_scale(amax), inv = 1.0f / scale;
      for (float v : vs) ASSERT_TRUE(same(fp4_roundtrip_pow2(v, scale, inv), fp4_roundtrip(v, scale))) << v << " " << scale;
    }
  }
}

TEST(QuantSim, BlockScalesArePowersOfTwo) {
  float a[3] = {448.0f, -1.0f, 0.3f};
  fp8_e4m3_roundtrip_blocks(a, 3, 64);  // amax 448: scale 1
  EXPECT_EQ(a[0], 448.0f);
  EXPECT_EQ(a[1], -1.0f);
  EXPECT_EQ(a[2], e4m3_round(0.3f));
  float b[2] = {449.0f, 3.0f};  // amax 449: scale 2, so 449 -> 448 and 3 -> 3
  fp8_e4m3_roundtrip_blocks(b, 2, 64);
  EXPECT_EQ(b[0], 448.0f);
  EXPECT_EQ(b[1], 3.0f);
  float h[4] = {1.0f, 0.0f, 0.0f, 0.0f};
  hadamard_inplace(h, 4);
  for (float v : h) EXPECT_EQ(v, 0.5f);
}
