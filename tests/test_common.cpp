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
