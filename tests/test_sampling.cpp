#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "engine/sampling.h"

using namespace flashstar;

TEST(Sampling, GreedyAndTemperatureZero) {
  const std::vector<float> l = {0.1f, 3.0f, 2.9f, -1.0f};
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.sample(l), 1);
  p.temperature = 5.0f;
  Sampler hot(p);
  EXPECT_EQ(hot.sample(l, /*greedy=*/true), 1);
  EXPECT_EQ(argmax(std::vector<float>{1, 5, 5}), 1);  // ties: lowest id
}

TEST(Sampling, SameSeedSameTokens) {
  std::vector<float> l(1000);
  for (size_t i = 0; i < l.size(); ++i) l[i] = std::sin(i * 0.37f) * 3;
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0;
  p.seed = 42;
  Sampler a(p), b(p);
  std::vector<int32_t> ta, tb;
  for (int i = 0; i < 200; ++i) {
    ta.push_back(a.sample(l));
    tb.push_back(b.sample(l));
  }
  EXPECT_EQ(ta, tb);
  p.seed = 43;
  Sampler c(p);
  std::vector<int32_t> tc;
  for (int i = 0; i < 200; ++i) tc.push_back(c.sample(l));
  EXPECT_NE(ta, tc);
}

TEST(Sampling, TopKTopPMinPRestrictCandidates) {
  const std::vector<float> l = {5.0f, 4.0f, 3.0f, 2.0f, 1.0f, 0.0f};
  auto support = [&](SamplingParams p) {
    p.seed = 7;
    Sampler s(p);
    std::map<int32_t, int> seen;
    for (int i = 0; i < 3000; ++i) seen[s.sample(l)]++;
    return seen;
  };
  SamplingParams p;
  p.min_p = 0;
  p.top_k = 2;
  auto k = support(p);
  EXPECT_EQ(k.size(), 2u);
  EXPECT_TRUE(k.count(0) && k.count(1));
  p.top_k = 0;
  p.top_p = 0.5f;  // the top token alone holds ~63% of the mass
  EXPECT_EQ(support(p).size(), 1u);
  p.top_p = 0.9f;  // 0.63 + 0.23 = 0.86 < 0.9 -> three tokens
  EXPECT_EQ(support(p).size(), 3u);
  p.top_p = 1.0f;
  p.min_p = 0.3f;  // e^-1 = 0.37 >= 0.3 kept, e^-2 = 0.14 dropped
  EXPECT_EQ(support(p).size(), 2u);
  p.min_p = 0;
  p.temperature = 0.05f;  // very cold: the top token dominates
  auto cold = support(p);
  EXPECT_GT(cold[0], 2990);
}

TEST(Sampling, NonFiniteLogitsAreNeverPicked) {
  const std::vector<float> l = {NAN, 1.0f, -INFINITY, 0.5f};
  SamplingParams p;
  p.seed = 1;
  p.min_p = 0;
  Sampler s(p);
  for (int i = 0; i < 100; ++i) {
    const int32_t t = s.sample(l);
    EXPECT_TRUE(t == 1 || t == 3);
  }
}

TEST(Sampling, LogSoftmaxNormalises) {
  std::vector<float> out;
  log_softmax(std::vector<float>{1, 2, 3}, out);
  double sum = 0;
  for (float v : out) sum += std::exp(v);
  EXPECT_NEAR(sum, 1.0, 1e-6);
}

TEST(StopStrings, FindAndHoldBack) {
  StopMatcher m({"###", "END"});
  EXPECT_EQ(m.find("abc### x"), 3u);
  EXPECT_EQ(m.find("no stop"), std::string::npos);
  EXPECT_EQ(m.partial_suffix("text #"), 1u);
  EXPECT_EQ(m.partial_suffix("text ##"), 2u);
  EXPECT_EQ(m.partial_suffix("text EN"), 2u);
  EXPECT_EQ(m.partial_suffix("text"), 0u);
  StopMatcher none({});
  EXPECT_EQ(none.partial_suffix("abc"), 0u);
}
