// Tracing drift to near-ties: the rounding boundaries must be where the official roundings actually
// switch, and `flashstar trace` must find nothing between two identical backends.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <random>

#include "common/half.h"
#include "common/quant_sim.h"
#include "common/rounding_margin.h"
#include "engine/session.h"
#include "test_models.h"

namespace flashstar {
namespace {

// Just below and just above the boundary the rounding gives different values, and no value in between
// the magnitude and its boundary rounds differently from the magnitude itself.
template <class Round, class Boundary>
void check_boundaries(Round round, Boundary boundary, double lo, double hi, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> e(std::log2(lo), std::log2(hi));
  for (int i = 0; i < n; ++i) {
    const float a = static_cast<float>(std::exp2(e(rng)));
    const double b = boundary(a);
    const float below = static_cast<float>(b * (1 - 1e-6)), above = static_cast<float>(b * (1 + 1e-6));
    ASSERT_NE(round(below), round(above)) << "a=" << a << " boundary=" << b;
    // no other boundary lies between the magnitude and this one (halfway, where a float can tell)
    const float toward = static_cast<float>(a + (b - a) * 0.5);
    if (std::fabs(b - a) > 4e-6 * a) {
      ASSERT_EQ(round(a), round(toward)) << "a=" << a << " boundary=" << b;
    }
  }
}

TEST(Trace, RoundingBoundariesAreWhereTheRoundingsSwitch) {
  check_boundaries([](float v) { return e4m3_round(v); }, [](double a) { return e4m3_boundary(a); }, 1e-4, 440.0, 20000, 1);
  check_boundaries([](float v) { return f16_round(v); }, [](double a) { return f16_boundary(a); }, 1e-7, 6e4, 20000, 2);
  check_boundaries([](float v) { return e2m1_round(v); }, [](double a) { return e2m1_boundary(a); }, 0.05, 5.9, 20000, 3);
  check_boundaries([](float v) { return pow2_ceil(v); }, [](double a) { return pow2_ceil_boundary(a); }, 1e-6, 1e6, 20000, 4);
  // exactly on a power of two: the nearer boundary is the power itself (margin 0) for the scales
  EXPECT_EQ(pow2_ceil_boundary(0.25), 0.25);
  // just above a power of two the E4M3 boundary below (a quarter step) is the nearer one
  EXPECT_DOUBLE_EQ(e4m3_boundary(1.01), 1.0 - 0.125 / 4);
}

TEST(Trace, RoundingTiesAreMeasuredAgainstTheMagnitudeSharingTheScale) {
  TieLog log;
  log.rounding(5, 2, "kv_f16", 0.001, 0.001 + 5e-6, 1.0, 7);  // 5e-6 of the row's largest value: logged
  log.rounding(5, 2, "kv_f16", 0.001, 0.001 + 5e-6, 0.1, 8);  // 5e-5 of it: not
  log.rounding(6, 1, "kv_fp8", 300.0, 300.001, 448.0, 9);
  const std::vector<NearTie> v = log.sorted();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].index, 7);
  EXPECT_EQ(v[0].scale, 1.0f);
  EXPECT_EQ(v[1].pos, 6);
  EXPECT_STREQ(v[1].kind, "kv_fp8");
}

TEST(Trace, IdenticalBackendsHaveNothingToTrace) {
  const std::string& model = test_models::synth_tiny_model(FLASHSTAR_BINARY, 11);
  if (model.empty()) GTEST_SKIP() << "flashstar synth --preset tiny failed";
  const std::string dir = ::testing::TempDir();
  {
    std::mt19937 rng(5);
    nlohmann::json toks = nlohmann::json::array();
    for (int i = 0; i < 150; ++i) toks.push_back(rng() % 1000);
    std::ofstream(dir + "trace_tokens.json") << nlohmann::json{{"tokens", toks}}.dump();
  }
  const std::string out = dir + "trace_report.json";
  const std::string cmd = std::string(FLASHSTAR_BINARY) + " trace -m " + model + " --tokens " + dir +
                          "trace_tokens.json --candidate cpu --segment 64 -t 1 -o " + out + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const nlohmann::json r = nlohmann::json::parse(std::ifstream(out));
  EXPECT_EQ(r["positions"], 150);
  EXPECT_EQ(r["segments"].size(), 3u);
  EXPECT_EQ(r["segments_diverged"], 0);
  EXPECT_EQ(r["untraced"], 0);
  EXPECT_EQ(r["rel_rms"], 0.0);
  // a segment longer than the raw window would lose rows before they can be compared
  const std::string bad = std::string(FLASHSTAR_BINARY) + " trace -m " + model + " --tokens " + dir +
                          "trace_tokens.json --candidate cpu --segment 100000 >/dev/null 2>&1";
  EXPECT_NE(std::system(bad.c_str()), 0);
}

}  // namespace
}  // namespace flashstar
