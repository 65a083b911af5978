// Random tensor contents for synthetic models: a small fast PRNG, value distributions, and generators
// that emit valid quantized blocks directly (random codes and scales with d chosen so the dequantized
// values have the requested standard deviation) instead of running the quantizer over 80 GB.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quant/types.h"

namespace flashstar::synth {

inline uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// xoshiro256**: deterministic, seeded per (tensor, chunk) so output never depends on thread count.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& x : s_) x = splitmix64(seed);
  }
  uint64_t next() {
    const uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(((next() >> 32) * n) >> 32); }
  // Approximately standard normal (sum of four 16-bit uniforms, rescaled): cheap and bounded at ±3.46.
  float normal() {
    const uint64_t r = next();
    const float s = static_cast<float>((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
    return (s * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
  }
  void fill_bytes(uint8_t* p, size_t n);

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// How a tensor's values are drawn.
struct Dist {
  enum Kind { Normal, Uniform } kind = Normal;
  float a = 0, b = 1;  // Normal: mean a, std b. Uniform: [a, b).
  static Dist normal(float std, float mean = 0) { return {Normal, mean, std}; }
  static Dist uniform(float lo, float hi) { return {Uniform, lo, hi}; }
  float draw(Rng& r) const { return kind == Normal ? a + b * r.normal() : a + (b - a) * r.uniform(); }
};

// Fills n_rows rows of n0 elements of type t (F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS). Quantized
// types accept only zero-mean Normal distributions and produce values with about that std.
void fill_rows(GgmlType t, const Dist& d, Rng& rng, int64_t n0, int64_t n_rows, uint8_t* dst);

// n_used distinct expert ids in [0, n_expert) for each of n_tokens tokens (int32, token-major).
void fill_expert_ids(Rng& rng, uint32_t n_expert, uint32_t n_used, int64_t n_tokens, int32_t* dst);

}  // namespace flashstar::synth
