#include "engine/sampling.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>

namespace flashstar {

float max_above(std::span<const float> v, float m) {
  // Independent lanes without a branch, so the compiler can keep them in vector registers: a scan with a
  // data-dependent update of the best index was ~0.5 ms for a 129 280-token row, every decode step.
  constexpr int L = 16;
  float lane[L];
  for (float& x : lane) x = m;
  const size_t n = v.size(), body = n / L * L;
  for (size_t i = 0; i < body; i += L)
    for (int l = 0; l < L; ++l) lane[l] = v[i + l] > lane[l] ? v[i + l] : lane[l];  // NaN: keeps the lane
  for (size_t i = body; i < n; ++i) m = v[i] > m ? v[i] : m;
  for (float x : lane) m = x > m ? x : m;
  return m;
}

size_t first_equal(std::span<const float> v, float m, size_t from) {
  constexpr size_t L = 16;  // whole blocks tested without a branch a value, then the block's values
  size_t i = from;
  for (; i + L <= v.size(); i += L) {
    bool hit = false;
    for (size_t l = 0; l < L; ++l) hit |= v[i + l] == m;
    if (hit) break;
  }
  for (; i < v.size(); ++i)
    if (v[i] == m) return i;
  return v.size();
}

int32_t argmax(std::span<const float> logits) {
  // The first index holding the largest value above -inf (NaN never wins; ties keep the lowest id), else 0.
  const float m = max_above(logits, -std::numeric_limits<float>::infinity());
  if (!(m > -std::numeric_limits<float>::infinity())) return 0;
  return static_cast<int32_t>(first_equal(logits, m, 0));
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
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float mx = max_above(logits, -kInf);
  if (!(mx > -kInf)) return argmax(logits);  // no finite logit
  if (mx == kInf) {                           // the largest finite one
    mx = -kInf;
    for (float v : logits)
      if (std::isfinite(v)) mx = v > mx ? v : mx;
    if (mx == -kInf) return argmax(logits);
  }
  const double T = p_.temperature;
  auto prob_of = [&](float x) { return std::exp((static_cast<double>(x) - mx) / T); };
  // The top token's probability is exp(0) = 1, so the min-p bound is min_p itself.
  const double min_prob = std::max(0.0f, p_.min_p);
  const double top_p = p_.top_p > 0.0f && p_.top_p < 1.0f ? p_.top_p : 1.0;
  // Every kept token but the first has probability >= min_prob, so with a min-p cut only the tokens a few
  // temperatures below the top are candidates: one pass over the row instead of sorting the vocabulary
  // (15 ms a step for 129 280 tokens). The cut's logit bound has a margin far above the rounding of the
  // probability; the keep loop below still tests each candidate exactly. `cut` also requires min_prob
  // above 4 ulps of any mass (<= n_finite): then the top-p test with top_p = 1, which fires only once the
  // remaining mass no longer changes the sum, can end the loop only where the min-p test would, and is
  // left out (the same tokens and draw as with the sum).
  const bool cut = min_prob > 0.0 && min_prob * 0x1p52 > 4.0 * static_cast<double>(logits.size());
  float floor_x = -kInf;  // every token below it has probability < min_prob
  if (cut) {
    const double b = static_cast<double>(mx) + T * std::log(min_prob);
    const double f = b - 1e-9 * (1.0 + std::fabs(b) + std::fabs(static_cast<double>(mx)));
    floor_x = static_cast<float>(f);
    if (floor_x > f) floor_x = std::nextafter(floor_x, -kInf);
  }
  // Candidates sorted by logit (ties by id, so the order and hence the draw are deterministic): the
  // first tokens of the whole row's order.
  cand_.clear();
  for (size_t i = 0; i < logits.size(); ++i)
    if (logits[i] >= floor_x && std::isfinite(logits[i])) cand_.emplace_back(logits[i], static_cast<int32_t>(i));
  auto by_logit = [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; };
  size_t n = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
    n = static_cast<size_t>(p_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  prob_.resize(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += prob_[i] = prob_of(cand_[i].first);
  // The top-p mass is over the first min(top_k, finite) tokens of the row. Without the cut cand_ holds
  // them all; with it (and a top-p test) the ones past the cut have probability < min_prob and are added
  // in id order (not sorted: only the sum's last bits differ), only the top_k - n largest with a top-k.
  const bool mass = top_p < 1.0 || !cut;
  if (mass && cut && (p_.top_k <= 0 || n < static_cast<size_t>(p_.top_k))) {
    tail_.clear();
    for (float v : logits)
      if (v < floor_x && std::isfinite(v)) tail_.push_back(v);
    const size_t more = p_.top_k > 0 ? static_cast<size_t>(p_.top_k) - n : tail_.size();
    if (more < tail_.size()) {
      std::nth_element(tail_.begin(), tail_.begin() + static_cast<std::ptrdiff_t>(more), tail_.end(), std::greater<>());
      tail_.resize(more);
    }
    for (float v : tail_) sum += prob_of(v);
  }
  // min-p: keep tokens whose probability is at least min_p times the top one; top-p: the smallest prefix
  // whose mass reaches top_p. The top token always stays.
  size_t keep = 0;
  double kept = 0;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0 && prob_[i] < min_prob) break;
    kept += prob_[i];
    ++keep;
    if (mass && kept / sum >= top_p) break;
  }
  std::uniform_real_distribution<double> u(0.0, kept);
  double r = u(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= prob_[i];
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
