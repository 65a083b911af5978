#include "engine/sampling.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace flashstar {

int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  float bv = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); ++i)
    if (logits[i] > bv) {  // NaN never wins; ties keep the lowest id
      bv = logits[i];
      best = static_cast<int32_t>(i);
    }
  return best;
}

void log_softmax(std::span<const float> logits, std::vector<float>& out) {
  out.resize(logits.size());
  float mx = -std::numeric_limits<float>::infinity();
  for (float v : logits)
    if (std::isfinite(v)) mx = std::max(mx, v);
  double sum = 0;
  for (float v : logits)
    if (std::isfinite(v)) sum += std::exp(static_cast<double>(v) - mx);
  const double lse = mx + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i)
    out[i] = std::isfinite(logits[i]) ? static_cast<float>(logits[i] - lse) : -std::numeric_limits<float>::infinity();
}

Sampler::Sampler(const SamplingParams& p) : p_(p) {
  seed_ = p.seed ? p.seed : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) | 1;
  rng_.seed(seed_);
}

int32_t Sampler::sample(std::span<const float> logits, bool greedy) {
  if (greedy || p_.temperature <= 0.0f || logits.empty()) return argmax(logits);
  // Candidates sorted by logit (ties by id, so the order and hence the draw are deterministic).
  cand_.clear();
  for (size_t i = 0; i < logits.size(); ++i)
    if (std::isfinite(logits[i])) cand_.emplace_back(logits[i], static_cast<int32_t>(i));
  if (cand_.empty()) return argmax(logits);
  auto by_logit = [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; };
  size_t n = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
    n = static_cast<size_t>(p_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  const float mx = cand_[0].first;
  double sum = 0;
  std::vector<double> prob(n);
  for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp((static_cast<double>(cand_[i].first) - mx) / p_.temperature);
  // min-p: keep tokens whose probability is at least min_p times the top one; top-p: the smallest prefix
  // whose mass reaches top_p. The top token always stays.
  const double min_prob = prob[0] * std::max(0.0f, p_.min_p);
  const double top_p = p_.top_p > 0.0f && p_.top_p < 1.0f ? p_.top_p : 1.0;
  size_t keep = 0;
  double kept = 0;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0 && prob[i] < min_prob) break;
    kept += prob[i];
    ++keep;
    if (kept / sum >= top_p) break;
  }
  std::uniform_real_distribution<double> u(0.0, kept);
  double r = u(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r < 0) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

size_t StopMatcher::find(std::string_view text) const {
  size_t best = std::string_view::npos;
  for (const auto& s : stops_) {
    if (s.empty()) continue;
    const size_t at = text.find(s);
    if (at < best) best = at;
  }
  return best;
}

size_t StopMatcher::partial_suffix(std::string_view text) const {
  size_t hold = 0;
  for (const auto& s : stops_)
    for (size_t k = std::min(s.size() - (s.empty() ? 0 : 1), text.size()); k > hold; --k)
      if (text.substr(text.size() - k) == std::string_view(s).substr(0, k)) {
        hold = k;
        break;
      }
  return hold;
}

}  // namespace flashstar
