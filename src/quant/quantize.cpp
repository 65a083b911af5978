// Reference quantizers for the plain types, Q8_0 and the K-quants (IQ2_XXS lives in quantize_iq2.cpp).
// All are deterministic: the result depends only on the input values, never on threads or history.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/half.h"
#include "quant/quant.h"

namespace flashstar::quant {
namespace {

void check_n(const char* what, int64_t n, int64_t block) {
  if (n < 0 || n % block != 0)
    fail("%s: %lld elements is not a multiple of %lld", what, static_cast<long long>(n), static_cast<long long>(block));
}

// Round half away from zero (C roundf), with inf/NaN kept away from the int conversion.
inline int round_away(float v, int lo, int hi) {
  if (std::isnan(v)) return 0;
  const float r = std::round(v);
  return r <= static_cast<float>(lo) ? lo : (r >= static_cast<float>(hi) ? hi : static_cast<int>(r));
}

constexpr float kMaxHalf = 65504.0f;

// f16-representable scale: scales beyond the f16 range saturate instead of becoming inf.
inline uint16_t scale_to_f16(float d) { return f32_to_f16(std::min(d, kMaxHalf)); }

// Importance weights for n elements: the caller's (negatives as 0) or all ones. A sub-block whose
// weights are all zero falls back to ones so every fit stays well defined.
void make_weights(const float* importance, int64_t n, int sub, float* w) {
  for (int64_t i = 0; i < n; ++i) w[i] = importance ? std::max(importance[i], 0.0f) : 1.0f;
  for (int64_t s = 0; s < n; s += sub) {
    float sum = 0;
    for (int i = 0; i < sub; ++i) sum += w[s + i];
    if (!(sum > 0)) std::fill(w + s, w + s + sub, 1.0f);
  }
}

// One K-quant sub-block is y = a*q - b with q in [0, nmax], a >= 0, b >= 0 (the formats store a
// non-negative min that is subtracted). Weighted squared error of the best q for given (a, b).
float affine_error(const float* x, const float* w, int n, int nmax, float a, float b, uint8_t* q_out) {
  float err = 0;
  const float ia = a > 0 ? 1.0f / a : 0.0f;
  const float top = static_cast<float>(nmax);
  for (int i = 0; i < n; ++i) {
    float v = (x[i] + b) * ia;
    v = v > 0.0f ? v : 0.0f;  // also maps NaN to 0
    v = v < top ? v : top;
    const int q = static_cast<int>(v + 0.5f);
    if (q_out) q_out[i] = static_cast<uint8_t>(q);
    const float e = a * static_cast<float>(q) - b - x[i];
    err += w[i] * e * e;
  }
  return err;
}

// Continuous (a, b) for one sub-block: scan inverse scales around nmax/(max-min), and for each
// assignment of levels solve the weighted least-squares line, then polish by re-assigning levels.
// Scan width and polish count were tuned on Gaussian data: wider or longer searches gained < 0.5%
// relative error at several times the cost.
constexpr int kSteps = 5, kPolish = 3;
constexpr float kStepSize = 0.2f;

void fit_affine(const float* x, const float* w, int n, int nmax, float* a_out, float* b_out) {
  float lo = 0, hi = x[0];
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (!(hi > lo)) {  // constant non-positive sub-block: the min alone represents it
    *a_out = 0;
    *b_out = -lo;
    return;
  }
  float best_a = (hi - lo) / static_cast<float>(nmax), best_b = -lo;
  float best_err = affine_error(x, w, n, nmax, best_a, best_b, nullptr);
  uint8_t q[32];
  auto solve = [&](const uint8_t* levels, float* a, float* b) {
    double sw = 0, sq = 0, sqq = 0, sx = 0, sqx = 0;
    for (int i = 0; i < n; ++i) {
      const double lq = levels[i];
      sw += w[i];
      sq += w[i] * lq;
      sqq += w[i] * lq * lq;
      sx += w[i] * x[i];
      sqx += w[i] * lq * x[i];
    }
    const double det = sw * sqq - sq * sq;
    if (!(det > 0)) return false;
    double aa = (sw * sqx - sq * sx) / det;
    double cc = (sqq * sx - sq * sqx) / det;  // offset: y = aa*q + cc
    if (cc > 0) {                             // format needs offset <= 0
      cc = 0;
      aa = sqq > 0 ? sqx / sqq : 0;
    }
    if (!(aa > 0)) return false;
    *a = static_cast<float>(aa);
    *b = static_cast<float>(-cc);
    return true;
  };
  const float range = hi - lo;
  for (int step = -kSteps; step <= kSteps; ++step) {
    const float iscale = (static_cast<float>(nmax) + kStepSize * static_cast<float>(step)) / range;
    for (int i = 0; i < n; ++i) {
      const float v = std::min((x[i] - lo) * iscale, static_cast<float>(nmax));
      q[i] = static_cast<uint8_t>(v > 0.0f ? static_cast<int>(v + 0.5f) : 0);
    }
    float a, b;
    if (!solve(q, &a, &b)) continue;
    for (int iter = 0; iter < kPolish; ++iter) {
      const float err = affine_error(x, w, n, nmax, a, b, q);
      if (err < best_err) {
        best_err = err;
        best_a = a;
        best_b = b;
      }
      if (iter + 1 == kPolish || !solve(q, &a, &b)) break;
    }
  }
  *a_out = best_a;
  *b_out = best_b;
}

// Shared K-quant driver: fits every sub-block, picks the super-scales (d, dmin) from a few
// candidates, and for each sub-block the integer (scale, min) pair near the continuous fit with the
// lowest error under the exact dequantization formula (d*sc*q - dmin*m, in float).
struct KQuantResult {
  uint16_t d, dmin;
  uint8_t sc[16], m[16];
  uint8_t q[QK_K];
};

void quantize_kblock(const float* x, const float* w, int nsub, int sub_len, int nmax, int smax, KQuantResult* r) {
  std::memset(r, 0, sizeof(*r));  // NaN input never wins a comparison; leave defined bytes then
  float a[16], b[16];
  float amax = 0, bmax = 0;
  for (int s = 0; s < nsub; ++s) {
    fit_affine(x + s * sub_len, w + s * sub_len, sub_len, nmax, &a[s], &b[s]);
    amax = std::max(amax, a[s]);
    bmax = std::max(bmax, b[s]);
  }
  static constexpr float kFactors[] = {1.0f, 0.95f};
  float best_total = INFINITY;
  for (float fd : kFactors) {
    for (float fm : kFactors) {
      const uint16_t d16 = scale_to_f16(amax / static_cast<float>(smax) * fd);
      const uint16_t m16 = scale_to_f16(bmax / static_cast<float>(smax) * fm);
      const float d = f16_to_f32(d16), dmin = f16_to_f32(m16);
      KQuantResult cand{};
      cand.d = d16;
      cand.dmin = m16;
      float total = 0;
      for (int s = 0; s < nsub && total < best_total; ++s) {
        const int sc0 = d > 0 ? round_away(a[s] / d, 0, smax) : 0;
        const int m0 = dmin > 0 ? round_away(b[s] / dmin, 0, smax) : 0;
        float best = INFINITY;
        for (int sc = std::max(0, sc0 - 1); sc <= std::min(smax, sc0 + 1); ++sc) {
          for (int m = std::max(0, m0 - 1); m <= std::min(smax, m0 + 1); ++m) {
            uint8_t q[32];
            const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
            const float err = affine_error(x + s * sub_len, w + s * sub_len, sub_len, nmax, dl, ml, q);
            if (err < best) {
              best = err;
              cand.sc[s] = static_cast<uint8_t>(sc);
              cand.m[s] = static_cast<uint8_t>(m);
              std::memcpy(cand.q + s * sub_len, q, static_cast<size_t>(sub_len));
            }
          }
        }
        total += best;
      }
      if (total < best_total) {
        best_total = total;
        *r = cand;
      }
    }
  }
}

}  // namespace

// Every type this engine reads it can also write.
bool can_quantize(GgmlType t) { return can_dequantize(t); }

// gguf-py / GGML reference: d = amax/127 in f32, q = round-half-away(x * (1/d)), d stored as f16.
void quantize_row_q8_0(const float* x, BlockQ8_0* dst, int64_t n) {
  check_n("quantize_row_q8_0", n, QK8_0);
  for (int64_t b = 0; b < n / QK8_0; ++b) {
    const float* xb = x + b * QK8_0;
    float amax = 0;
    for (int i = 0; i < QK8_0; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ8_0 out;
    out.d = f32_to_f16(d);
    for (int i = 0; i < QK8_0; ++i) out.qs[i] = static_cast<int8_t>(round_away(xb[i] * id, -128, 127));
    std::memcpy(&dst[b], &out, sizeof(out));
  }
}

void quantize_row_q2_K(const float* x, BlockQ2_K* dst, int64_t n, const float* importance) {
  check_n("quantize_row_q2_K", n, QK_K);
  for (int64_t b = 0; b < n / QK_K; ++b) {
    float w[QK_K];
    make_weights(importance ? importance + b * QK_K : nullptr, QK_K, 16, w);
    KQuantResult r;
    quantize_kblock(x + b * QK_K, w, 16, 16, 3, 15, &r);
    BlockQ2_K out;
    std::memset(&out, 0, sizeof(out));
    for (int s = 0; s < 16; ++s) out.scales[s] = static_cast<uint8_t>(r.sc[s] | (r.m[s] << 4));
    // Element 128h + 32j + 16half + l lives in qs[32h + 16half + l] at bit 2j.
    for (int i = 0; i < QK_K; ++i) {
      const int h = i / 128, j = (i % 128) / 32, rest = i % 32;
      out.qs[32 * h + rest] = static_cast<uint8_t>(out.qs[32 * h + rest] | (r.q[i] << (2 * j)));
    }
    out.d = r.d;
    out.dmin = r.dmin;
    std::memcpy(&dst[b], &out, sizeof(out));
  }
}

void quantize_row_q4_K(const float* x, BlockQ4_K* dst, int64_t n, const float* importance) {
  check_n("quantize_row_q4_K", n, QK_K);
  for (int64_t b = 0; b < n / QK_K; ++b) {
    float w[QK_K];
    make_weights(importance ? importance + b * QK_K : nullptr, QK_K, 32, w);
    KQuantResult r;
    quantize_kblock(x + b * QK_K, w, 8, 32, 15, 63, &r);
    BlockQ4_K out;
    out.d = r.d;
    out.dmin = r.dmin;
    // Inverse of q4_K_scale_min: low 6 bits of pairs 0..3 in bytes 0..7, pairs 4..7 split into a
    // nibble in bytes 8..11 and their top 2 bits in the spare bits 6..7 of bytes 0..7.
    for (int j = 0; j < 4; ++j) {
      out.scales[j] = static_cast<uint8_t>(r.sc[j] | ((r.sc[j + 4] >> 4) << 6));
      out.scales[j + 4] = static_cast<uint8_t>(r.m[j] | ((r.m[j + 4] >> 4) << 6));
      out.scales[j + 8] = static_cast<uint8_t>((r.sc[j + 4] & 15) | ((r.m[j + 4] & 15) << 4));
    }
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        out.qs[32 * c + l] = static_cast<uint8_t>(r.q[64 * c + l] | (r.q[64 * c + 32 + l] << 4));
    std::memcpy(&dst[b], &out, sizeof(out));
  }
}

void quantize_row(GgmlType t, const float* src, void* dst, int64_t n, const float* importance) {
  if (!can_quantize(t)) fail("quantize: tensor type %s is not supported", type_name(t));
  auto* out = static_cast<uint8_t*>(dst);
  switch (t) {
    case GgmlType::F32: std::memcpy(out, src, static_cast<size_t>(std::max<int64_t>(n, 0)) * 4); break;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = t == GgmlType::F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      break;
    case GgmlType::Q8_0: quantize_row_q8_0(src, static_cast<BlockQ8_0*>(dst), n); break;
    case GgmlType::Q2_K: quantize_row_q2_K(src, static_cast<BlockQ2_K*>(dst), n, importance); break;
    case GgmlType::Q4_K: quantize_row_q4_K(src, static_cast<BlockQ4_K*>(dst), n, importance); break;
    case GgmlType::IQ2_XXS: quantize_row_iq2_xxs(src, static_cast<BlockIQ2_XXS*>(dst), n, importance); break;
    default: break;
  }
}

}  // namespace flashstar::quant
