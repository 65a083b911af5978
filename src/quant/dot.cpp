// Activation quantization (Q8_0 per 32, Q8_K per 256) and the integer dot products that consume it:
// ds4's arithmetic. Integer sums are exact inside a block; only the per-block scale products are float.
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/half.h"
#include "quant/quant.h"

namespace flashstar::quant {
namespace {

inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Round half to even like lrintf/nearbyintf in the default rounding mode, via the 1.5*2^23 trick
// (exact for |v| < 2^22; v is clamped first so inf/NaN never reach an int conversion).
inline int round_clamped(float v, int lo, int hi) {
  if (std::isnan(v)) return 0;
  v = v < -1024.0f ? -1024.0f : (v > 1024.0f ? 1024.0f : v);
  const int r = static_cast<int>((v + 12582912.0f) - 12582912.0f);
  return r < lo ? lo : (r > hi ? hi : r);
}

void check_n(const char* what, int64_t n, int64_t block) {
  if (n < 0 || n % block != 0)
    fail("%s: %lld elements is not a multiple of %lld", what, static_cast<long long>(n), static_cast<long long>(block));
}

// Shared by both Q8_0 activation variants: returns the f32 scale, fills q.
float quantize_q8_0_act_block(const float* x, int8_t* q) {
  float amax = 0.0f;
  for (int i = 0; i < QK8_0; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) amax = ax;
  }
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < QK8_0; ++i) q[i] = static_cast<int8_t>(round_clamped(x[i] * id, -128, 127));
  return d;
}

inline int32_t dot_i8(const int8_t* a, const int8_t* b, int n) {
  int32_t s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<int32_t>(a[i]) * static_cast<int32_t>(b[i]);
  return s;
}

}  // namespace

void quantize_row_q8_0_act(const float* x, BlockQ8_0* dst, int64_t n) {
  check_n("quantize_row_q8_0_act", n, QK8_0);
  for (int64_t b = 0; b < n / QK8_0; ++b) {
    int8_t q[QK8_0];
    const float d = quantize_q8_0_act_block(x + b * QK8_0, q);
    dst[b].d = f32_to_f16(d);
    std::memcpy(dst[b].qs, q, QK8_0);
  }
}

void quantize_row_q8_0_act_f32(const float* x, int8_t* q, float* d, int64_t n) {
  check_n("quantize_row_q8_0_act_f32", n, QK8_0);
  for (int64_t b = 0; b < n / QK8_0; ++b) d[b] = quantize_q8_0_act_block(x + b * QK8_0, q + b * QK8_0);
}

// The element of largest magnitude (first one on ties) keeps its sign so it maps to exactly -127;
// the scale is stored as 1/iscale, as ds4 and GGML do.
void quantize_row_q8_K(const float* x, BlockQ8_K* dst, int64_t n) {
  check_n("quantize_row_q8_K", n, QK_K);
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const float* xb = x + b * QK_K;
    BlockQ8_K out;
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < QK_K; ++i) {
      const float ax = std::fabs(xb[i]);
      if (ax > amax) {
        amax = ax;
        max = xb[i];
      }
    }
    if (amax == 0.0f) {
      std::memset(&out, 0, sizeof(out));
    } else {
      const float iscale = -127.0f / max;
      for (int i = 0; i < QK_K; ++i) out.qs[i] = static_cast<int8_t>(round_clamped(iscale * xb[i], -128, 127));
      for (int j = 0; j < QK_K / 16; ++j) {
        int sum = 0;
        for (int l = 0; l < 16; ++l) sum += out.qs[16 * j + l];
        out.bsums[j] = static_cast<int16_t>(sum);
      }
      out.d = 1.0f / iscale;
    }
    std::memcpy(&dst[b], &out, sizeof(out));
  }
}

float vec_dot_q8_0_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, int64_t n) {
  check_n("vec_dot_q8_0_q8_0", n, QK8_0);
  float sumf = 0.0f;
  for (int64_t b = 0; b < n / QK8_0; ++b) {
    const int32_t isum = dot_i8(w[b].qs, x[b].qs, QK8_0);
    sumf += (f16_to_f32(w[b].d) * f16_to_f32(x[b].d)) * static_cast<float>(isum);
  }
  return sumf;
}

float vec_dot_q8_0_q8_0_f32(const BlockQ8_0* w, const int8_t* xq, const float* xd, int64_t n) {
  check_n("vec_dot_q8_0_q8_0_f32", n, QK8_0);
  float sumf = 0.0f;
  for (int64_t b = 0; b < n / QK8_0; ++b) {
    const int32_t isum = dot_i8(w[b].qs, xq + b * QK8_0, QK8_0);
    sumf += (f16_to_f32(w[b].d) * xd[b]) * static_cast<float>(isum);
  }
  return sumf;
}

// The min term uses the activation's bsums: Σ_i dmin·m·q8_i = dmin·m·bsum, so the 2-bit values
// enter the integer sum unsigned.
float vec_dot_q2_K_q8_K(const BlockQ2_K* w, const BlockQ8_K* x, int64_t n) {
  check_n("vec_dot_q2_K_q8_K", n, QK_K);
  float sumf = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const BlockQ2_K& wb = w[b];
    const BlockQ8_K& xb = x[b];
    int32_t isum = 0, summ = 0;
    for (int s = 0; s < 16; ++s) {
      const int h = s / 8, j = (s % 8) / 2, half = s % 2;
      const uint8_t* q2 = wb.qs + 32 * h + 16 * half;
      const int8_t* q8 = xb.qs + 16 * s;
      int32_t sub = 0;
      for (int l = 0; l < 16; ++l) sub += static_cast<int32_t>((q2[l] >> (2 * j)) & 3) * q8[l];
      isum += (wb.scales[s] & 15) * sub;
      summ += (wb.scales[s] >> 4) * static_cast<int32_t>(xb.bsums[s]);
    }
    const float xd = xb.d;
    const float dall = xd * f16_to_f32(wb.d);
    const float dmin = xd * f16_to_f32(wb.dmin);
    sumf += dall * static_cast<float>(isum) - dmin * static_cast<float>(summ);
  }
  return sumf;
}

float vec_dot_q4_K_q8_K(const BlockQ4_K* w, const BlockQ8_K* x, int64_t n) {
  check_n("vec_dot_q4_K_q8_K", n, QK_K);
  float sumf = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const BlockQ4_K& wb = w[b];
    const BlockQ8_K& xb = x[b];
    int32_t isum = 0, summ = 0;
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      q4_K_scale_min(wb.scales, j, &sc, &m);
      const uint8_t* q4 = wb.qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      const int8_t* q8 = xb.qs + 32 * j;
      int32_t sub = 0;
      for (int l = 0; l < 32; ++l) sub += static_cast<int32_t>((q4[l] >> shift) & 15) * q8[l];
      isum += sc * sub;
      summ += m * (static_cast<int32_t>(xb.bsums[2 * j]) + xb.bsums[2 * j + 1]);
    }
    const float xd = xb.d;
    const float dall = xd * f16_to_f32(wb.d);
    const float dmin = xd * f16_to_f32(wb.dmin);
    sumf += dall * static_cast<float>(isum) - dmin * static_cast<float>(summ);
  }
  return sumf;
}

// Group scale (0.5 + s)/4 = (2s+1)/8: the integer (2s+1) goes inside the sum, the 1/8 at the very end.
float vec_dot_iq2_xxs_q8_K(const BlockIQ2_XXS* w, const BlockQ8_K* x, int64_t n) {
  check_n("vec_dot_iq2_xxs_q8_K", n, QK_K);
  float sumf = 0.0f;
  for (int64_t b = 0; b < n / QK_K; ++b) {
    const uint8_t* qs = reinterpret_cast<const uint8_t*>(&w[b]) + 2;  // u16 qs[32], read bytewise
    const int8_t* q8 = x[b].qs;
    int32_t bsum = 0;
    for (int g = 0; g < 8; ++g) {
      const uint32_t a = load_u32(qs + 8 * g);
      const uint32_t s = load_u32(qs + 8 * g + 4);
      int32_t sumi = 0;
      for (int k = 0; k < 4; ++k) {
        const uint64_t grid = kIq2xxsGrid[(a >> (8 * k)) & 255];
        const uint8_t signs = kIq2xsSigns[(s >> (7 * k)) & 127];
        for (int j = 0; j < 8; ++j) {
          const int32_t v = static_cast<int32_t>((grid >> (8 * j)) & 255) * q8[32 * g + 8 * k + j];
          sumi += (signs >> j) & 1 ? -v : v;
        }
      }
      bsum += sumi * static_cast<int32_t>(2 * (s >> 28) + 1);
    }
    const float xd = x[b].d;
    sumf += (f16_to_f32(w[b].d) * xd) * static_cast<float>(bsum);
  }
  return 0.125f * sumf;
}

}  // namespace flashstar::quant
