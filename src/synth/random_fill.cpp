#include "synth/random_fill.h"

#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "quant/quant.h"

namespace flashstar::synth {
namespace {

using namespace flashstar::quant;

// RMS of the integer part of each format under the code distributions drawn below; the block scale d
// is std / rms so the dequantized values get the requested spread.
double q8_rms() {
  // Uniform int8 over [-128, 127].
  double s = 0;
  for (int q = -128; q < 128; ++q) s += double(q) * q;
  return std::sqrt(s / 256);
}
// Q2_K: value = d*sc*q - dmin*m with q in 0..3 uniform, sc uniform in 8..15, m = sc, dmin = 1.5 d,
// i.e. d*sc*(q - 1.5): zero mean, variance d^2 E[sc^2] Var(q).
constexpr int kQ2ScLo = 8, kQ2ScHi = 15;
double q2k_rms() {
  double s = 0;
  for (int sc = kQ2ScLo; sc <= kQ2ScHi; ++sc) s += double(sc) * sc;
  return std::sqrt(s / (kQ2ScHi - kQ2ScLo + 1) * 1.25);
}
// Q4_K: the same idea with 6-bit scales in 32..63, q in 0..15 (variance 21.25), dmin = 7.5 d.
constexpr int kQ4ScLo = 32, kQ4ScHi = 63;
double q4k_rms() {
  double s = 0;
  for (int sc = kQ4ScLo; sc <= kQ4ScHi; ++sc) s += double(sc) * sc;
  return std::sqrt(s / (kQ4ScHi - kQ4ScLo + 1) * 21.25);
}
// IQ2_XXS: value = d * (0.5 + s) * 0.25 * grid * sign with s uniform in 0..15 and grid entries uniform.
double iq2xxs_rms() {
  double g2 = 0;
  for (int i = 0; i < 256; ++i)
    for (int j = 0; j < 8; ++j) {
      const double g = static_cast<double>((kIq2xxsGrid[i] >> (8 * j)) & 0xff);
      g2 += g * g;
    }
  g2 /= 256 * 8;
  double s2 = 0;
  for (int s = 0; s < 16; ++s) s2 += (0.5 + s) * (0.5 + s);
  s2 /= 16;
  return 0.25 * std::sqrt(s2 * g2);
}

uint16_t f16_of(double v) { return f32_to_f16(static_cast<float>(v)); }

}  // namespace

void Rng::fill_bytes(uint8_t* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t r = next();
    std::memcpy(p + i, &r, 8);
  }
  if (i < n) {
    const uint64_t r = next();
    std::memcpy(p + i, &r, n - i);
  }
}

void fill_rows(GgmlType t, const Dist& d, Rng& rng, int64_t n0, int64_t n_rows, uint8_t* dst) {
  const int64_t n = n0 * n_rows;
  const bool quantized = t == GgmlType::Q8_0 || t == GgmlType::Q2_K || t == GgmlType::Q4_K || t == GgmlType::IQ2_XXS;
  if (quantized && (d.kind != Dist::Normal || d.a != 0))
    fail("synth: %s tensors need a zero-mean normal distribution", type_name(t));
  const double std = d.b;
  switch (t) {
    case GgmlType::F32:
      for (int64_t i = 0; i < n; ++i) {
        const float v = d.draw(rng);
        std::memcpy(dst + 4 * i, &v, 4);
      }
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_f16(d.draw(rng));
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(d.draw(rng));
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case GgmlType::Q8_0: {
      static const double rms = q8_rms();
      const uint16_t dd = f16_of(std / rms);
      BlockQ8_0 b;
      for (int64_t i = 0; i < n / QK8_0; ++i) {
        b.d = dd;
        rng.fill_bytes(reinterpret_cast<uint8_t*>(b.qs), QK8_0);
        std::memcpy(dst + i * sizeof b, &b, sizeof b);
      }
      return;
    }
    case GgmlType::Q2_K: {
      static const double rms = q2k_rms();
      const double dv = std / rms;
      BlockQ2_K b;
      b.d = f16_of(dv);
      b.dmin = f16_of(1.5 * f16_to_f32(b.d));
      for (int64_t i = 0; i < n / QK_K; ++i) {
        for (int j = 0; j < QK_K / 16; ++j) {
          const int sc = kQ2ScLo + static_cast<int>(rng.below(kQ2ScHi - kQ2ScLo + 1));
          b.scales[j] = static_cast<uint8_t>(sc | (sc << 4));
        }
        rng.fill_bytes(b.qs, sizeof b.qs);
        std::memcpy(dst + i * sizeof b, &b, sizeof b);
      }
      return;
    }
    case GgmlType::Q4_K: {
      static const double rms = q4k_rms();
      BlockQ4_K b;
      b.d = f16_of(std / rms);
      b.dmin = f16_of(7.5 * f16_to_f32(b.d));
      for (int64_t i = 0; i < n / QK_K; ++i) {
        int sc[8];
        for (int& s : sc) s = kQ4ScLo + static_cast<int>(rng.below(kQ4ScHi - kQ4ScLo + 1));
        const int* m = sc;  // min code equals scale code: zero mean per sub-block
        // 6-bit packing of (scale, min) pairs, shared/spec/model.md §3 "Q4_K".
        for (int j = 0; j < 4; ++j) {
          b.scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
          b.scales[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
          b.scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
        }
        rng.fill_bytes(b.qs, sizeof b.qs);
        std::memcpy(dst + i * sizeof b, &b, sizeof b);
      }
      return;
    }
    case GgmlType::IQ2_XXS: {
      static const double rms = iq2xxs_rms();
      BlockIQ2_XXS b;
      b.d = f16_of(std / rms);
      // Every bit pattern is valid: grid indices, 7-bit sign indices and 4-bit scales.
      for (int64_t i = 0; i < n / QK_K; ++i) {
        rng.fill_bytes(reinterpret_cast<uint8_t*>(b.qs), sizeof b.qs);
        std::memcpy(dst + i * sizeof b, &b, sizeof b);
      }
      return;
    }
    default:
      fail("synth: cannot generate tensors of type %s", type_name(t));
  }
}

void fill_expert_ids(Rng& rng, uint32_t n_expert, uint32_t n_used, int64_t n_tokens, int32_t* dst) {
  if (n_used > n_expert) fail("synth: %u distinct experts asked of %u", n_used, n_expert);
  // Partial Fisher-Yates on a permutation carried across tokens: each prefix is a uniform random
  // subset whatever permutation it starts from.
  std::vector<int32_t> perm(n_expert);
  std::iota(perm.begin(), perm.end(), 0);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (uint32_t k = 0; k < n_used; ++k) {
      const uint32_t j = k + rng.below(n_expert - k);
      std::swap(perm[k], perm[j]);
      dst[t * n_used + k] = perm[k];
    }
  }
}

}  // namespace flashstar::synth
