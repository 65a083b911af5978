// Next-token selection: greedy, temperature, top-k, top-p, min-p with a seeded generator (the same seed
// and settings give the same tokens), plus the stop conditions of a generation loop.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flashstar {

struct SamplingParams {
  float temperature = 1.0f;  // <= 0: greedy
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.05f;       // 0: off; ds4's CLI default is 0.05
  uint64_t seed = 0;         // 0: pick one from the clock
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // Picks a token from raw logits. greedy forces argmax (DSML structure, temperature 0).
  int32_t sample(std::span<const float> logits, bool greedy = false);
  const SamplingParams& params() const { return p_; }
  uint64_t seed() const { return seed_; }

 private:
  SamplingParams p_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
  std::vector<double> prob_;
  std::vector<float> tail_;
};

int32_t argmax(std::span<const float> logits);
// The largest of m and the values of v (NaN never wins), for the argmax scans.
float max_above(std::span<const float> v, float m);
// The first index i >= from with v[i] == m, else v.size().
size_t first_equal(std::span<const float> v, float m, size_t from);
// log-softmax of one logit row (for --dump-logprobs).
void log_softmax(std::span<const float> logits, std::vector<float>& out);

// Stop strings: reports the earliest stop match in the generated text, so the caller can cut the text
// there and keep back output that may still turn into a stop string.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Position of the first complete stop string in text, or npos.
  size_t find(std::string_view text) const;
  // Bytes at the end of text that could be the start of a stop string (hold them back when streaming).
  size_t partial_suffix(std::string_view text) const;
  bool empty() const { return stops_.empty(); }

 private:
  std::vector<std::string> stops_;
};

}  // namespace flashstar
