// The official numerics the released model applies to cached rows (spec/model.md §4.0): FP8 E4M3 round
// trips with power-of-two block scales, Hadamard + FP4 E2M1 for indexer rows. One definition for the CPU
// reference and the CUDA kernels, so both round identically.
#pragma once
#include <math.h>

#include <cstdint>

#include "common/half.h"

namespace flashstar {

// 2^ceil(log2(y)) for y > 0, exactly.
FS_HD float pow2_ceil(float y) {
  int e;
  const float m = frexpf(y, &e);  // y = m * 2^e, m in [0.5, 1)
  return ldexpf(1.0f, m == 0.5f ? e - 1 : e);
}

// Nearest E4M3FN value (max 448), ties to the even code.
FS_HD float e4m3_round(float v) {
  const float a = fminf(fabsf(v), 448.0f);
  float q;
  if (a < 0.015625f) {  // below the smallest normal 2^-6: uniform steps of 2^-9
    q = rintf(a * 512.0f) / 512.0f;
  } else {
    int e;
    frexpf(a, &e);                            // a in [2^(e-1), 2^e)
    const float quantum = ldexpf(1.0f, e - 4);  // 3 mantissa bits
    q = rintf(a / quantum) * quantum;
  }
  q = fminf(q, 448.0f);
  return signbit(v) ? -q : q;
}

// Nearest FP4 E2M1 magnitude {0, .5, 1, 1.5, 2, 3, 4, 6}, ties to the even code.
FS_HD float e2m1_round(float v) {
  const float mags[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float a = fminf(fabsf(v), 6.0f);
  int best = 0;
  float best_d = a;
  for (int i = 1; i < 8; ++i) {
    const float d = fabsf(a - mags[i]);
    if (d < best_d || (d == best_d && (i % 2 == 0) && (best % 2 != 0))) {
      best = i;
      best_d = d;
    }
  }
  return signbit(v) ? -mags[best] : mags[best];
}

// One scale block of the FP8 and FP4 round trips: the scale from the block's largest magnitude, then
// each value. The serial row functions below and the CUDA row-parallel kernels share these.
FS_HD float fp8_block_scale(float amax) { return pow2_ceil(fmaxf(amax, 1e-4f) / 448.0f); }
FS_HD float fp8_roundtrip(float v, float scale) { return e4m3_round(fminf(fmaxf(v / scale, -448.0f), 448.0f)) * scale; }
FS_HD float fp4_block_scale(float amax) { return pow2_ceil(fmaxf(amax, 7.052966104933725e-38f) / 6.0f); }
FS_HD float fp4_roundtrip(float v, float scale) { return e2m1_round(fminf(fmaxf(v / scale, -6.0f), 6.0f)) * scale; }
// e2m1_round of a value c in [-6, 6] in a few operations: the E2M1 magnitudes are the multiples of 0.5
// up to 2, of 1 up to 4 and of 2 up to 6, so the nearest is rintf at that spacing, whose ties go to the
// even multiple, which is the even code. (Between two neighbours the distances above are exact, so the
// search picks the nearest and on a tie the even code; a farther magnitude is never as near.) Equal to
// e2m1_round, bit for bit, on every float of [-6, 6] (checked exhaustively; QuantSim tests check a part).
FS_HD float e2m1_round_grid(float c) {
  const float a = fabsf(c);
  const bool lo = a < 2.0f, mid = a < 4.0f;
  const float q = rintf(a * (lo ? 2.0f : mid ? 1.0f : 0.5f)) * (lo ? 0.5f : mid ? 1.0f : 2.0f);
  return signbit(c) ? -q : q;
}
// fp4_roundtrip for a scale from fp4_block_scale (a power of two, or what it makes of an infinite amax),
// given inv = 1 / scale: v * inv and v / scale round the same exact value v 2^-k (inv is exact), and
// e2m1_round_grid is e2m1_round on the clamped value, so the result is fp4_roundtrip's bit for bit.
FS_HD float fp4_roundtrip_pow2(float v, float scale, float inv) {
  return e2m1_round_grid(fminf(fmaxf(v * inv, -6.0f), 6.0f)) * scale;
}
// The factor after the unnormalised Hadamard butterflies of n values.
FS_HD float hadamard_scale(int64_t n) { return static_cast<float>(1.0 / sqrt(static_cast<double>(n))); }

// FP8 round trip in blocks: scale = 2^ceil(log2(max(amax, 1e-4) / 448)).
FS_HD void fp8_e4m3_roundtrip_blocks(float* x, int64_t n, int64_t block) {
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    const int64_t b1 = b0 + block < n ? b0 + block : n;
    float amax = 0;
    for (int64_t i = b0; i < b1; ++i) amax = fmaxf(amax, fabsf(x[i]));
    const float scale = fp8_block_scale(amax);
    for (int64_t i = b0; i < b1; ++i) x[i] = fp8_roundtrip(x[i], scale);
  }
}

// Unnormalised Walsh-Hadamard butterflies (natural order), then the 1/sqrt(n) scale; n a power of two.
FS_HD void hadamard_inplace(float* x, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float s = hadamard_scale(n);
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

// Indexer quantisation-aware rounding: Hadamard, then FP4 in blocks of 32 (scale from amax / 6).
FS_HD void indexer_qat_row(float* x, int64_t n) {
  hadamard_inplace(x, n);
  for (int64_t b0 = 0; b0 < n; b0 += 32) {
    const int64_t b1 = b0 + 32 < n ? b0 + 32 : n;
    float amax = 0;
    for (int64_t i = b0; i < b1; ++i) amax = fmaxf(amax, fabsf(x[i]));
    const float scale = fp4_block_scale(amax);
    for (int64_t i = b0; i < b1; ++i) x[i] = fp4_roundtrip(x[i], scale);
  }
}

}  // namespace flashstar
