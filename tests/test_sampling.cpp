#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

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

// The sampler by its definition, sorting the whole row every call (what Sampler::sample did until it
// learned to take only the tokens above the min-p bound): the same tokens for the same seed.
int32_t sample_by_full_sort(std::span<const float> logits, const SamplingParams& p, std::mt19937_64& rng) {
  std::vector<std::pair<float, int32_t>> c;
  for (size_t i = 0; i < logits.size(); ++i)
    if (std::isfinite(logits[i])) c.emplace_back(logits[i], static_cast<int32_t>(i));
  if (c.empty()) return argmax(logits);
  std::sort(c.begin(), c.end(), [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  const size_t n = p.top_k > 0 ? std::min<size_t>(static_cast<size_t>(p.top_k), c.size()) : c.size();
  std::vector<double> prob(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp((static_cast<double>(c[i].first) - c[0].first) / p.temperature);
  const double min_prob = prob[0] * std::max(0.0f, p.min_p), top_p = p.top_p > 0 && p.top_p < 1 ? p.top_p : 1.0;
  size_t keep = 0;
  double kept = 0;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0 && prob[i] < min_prob) break;
    kept += prob[i];
    ++keep;
    if (kept / sum >= top_p) break;
  }
  double r = std::uniform_real_distribution<double>(0.0, kept)(rng);
  for (size_t i = 0; i < keep; ++i)
    if ((r -= prob[i]) < 0) return c[i].second;
  return c[keep - 1].second;
}

TEST(Sampling, SameTokensAsSortingTheWholeRow) {
  std::mt19937 g(11);
  const float temps[] = {1.0f, 0.7f, 0.05f, 3.0f, 100.0f}, min_ps[] = {0.05f, 0.0f, 0.2f, 1e-12f, 1.0f};
  const float top_ps[] = {1.0f, 0.95f, 0.5f};
  const int top_ks[] = {0, 40, 1, 1024};
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<float> l(1 + g() % 3000);
    std::normal_distribution<float> nd(0, 1.0f + static_cast<float>(trial % 4));
    for (auto& x : l) {
      x = nd(g);
      if (trial % 5 == 1) x = std::round(x);  // ties
      if (trial % 5 == 2 && g() % 40 == 0) x = g() % 3 == 0 ? NAN : g() % 2 ? -INFINITY : INFINITY;
    }
    SamplingParams p;
    p.temperature = temps[g() % 5], p.min_p = min_ps[g() % 5], p.top_p = top_ps[g() % 3], p.top_k = top_ks[g() % 4];
    p.seed = 1 + g() % 999;
    Sampler s(p);
    std::mt19937_64 ref(p.seed);
    for (int k = 0; k < 4; ++k)
      ASSERT_EQ(s.sample(l), sample_by_full_sort(l, p, ref))
          << "trial " << trial << " T " << p.temperature << " min_p " << p.min_p << " top_p " << p.top_p << " top_k "
          << p.top_k;
  }
}

TEST(Sampling, ArgmaxEdges) {
  EXPECT_EQ(argmax(std::vector<float>{NAN, -INFINITY, -INFINITY}), 0);  // nothing above -inf: 0
  EXPECT_EQ(argmax(std::vector<float>{NAN, 2, INFINITY, INFINITY}), 2);
  EXPECT_EQ(argmax(std::vector<float>{-1, -0.0f, 0.0f, -0.0f}), 1);     // -0 == +0: the first
  std::vector<float> big(1000, 1.0f);
  big[999] = 3, big[517] = 3;
  EXPECT_EQ(argmax(big), 517);
  EXPECT_EQ(first_equal(big, 3.0f, 518), 999u);
  EXPECT_EQ(first_equal(big, 4.0f, 0), big.size());
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
