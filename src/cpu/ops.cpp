#include "cpu/ops.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "common/half.h"
#include "common/parallel.h"
#include "quant/quant.h"

namespace flashstar::cpu {

float dot_f32(const float* a, const float* b, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * b[i];
  for (int w = 8; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

void matmul_rows(const Matrix& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t x_stride,
                 float* Y, int64_t y_stride) {
  if (n_rows <= 0 || n_tok <= 0) return;
  const int64_t cols = W.cols;
  // Enough rows per task that tiny matrices do not drown in scheduling overhead.
  const int64_t min_rows = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols * n_tok));
  parallel_for(
      n_rows,
      [&](int64_t r0, int64_t r1) {
        std::vector<float> buf(static_cast<size_t>(cols));
        for (int64_t r = r0; r < r1; ++r) {
          const float* w;
          if (W.type == GgmlType::F32) {
            w = reinterpret_cast<const float*>(W.row(row0 + r));
          } else {
            quant::dequantize_row(W.type, W.row(row0 + r), buf.data(), cols);
            w = buf.data();
          }
          for (int64_t t = 0; t < n_tok; ++t) Y[t * y_stride + r] = dot_f32(w, X + t * x_stride, cols);
        }
      },
      min_rows);
}

void matmul(const Matrix& W, const float* X, int64_t n_tok, int64_t x_stride, float* Y, int64_t y_stride) {
  matmul_rows(W, 0, W.rows, X, n_tok, x_stride, Y, y_stride);
}

void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  if (w) {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale;
  }
}

float sigmoid(float x) {
  if (x >= 0) return 1.0f / (1.0f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.0f + e);
}

float softplus(float x) {
  if (x > 20.0f) return x;
  if (x < -20.0f) return std::exp(x);
  return std::log1p(std::exp(x));
}

float silu(float x) { return x * sigmoid(x); }

Rope Rope::make(const ModelConfig& c, bool compressed_layer) {
  Rope r;
  const int64_t half = c.n_rot / 2;
  const double base = compressed_layer ? c.compress_rope_freq_base : c.rope_freq_base;
  r.freq.resize(static_cast<size_t>(half));
  for (int64_t k = 0; k < half; ++k) r.freq[k] = std::pow(base, -2.0 * static_cast<double>(k) / c.n_rot);
  if (compressed_layer && c.rope_scaling_factor > 1.0) {
    // YaRN frequency blend without magnitude scaling (spec/model.md §4.0).
    const double two_pi = 2.0 * M_PI, lb = std::log(base);
    auto corr = [&](double beta) {
      return c.n_rot * std::log(static_cast<double>(c.rope_orig_ctx) / (beta * two_pi)) / (2.0 * lb);
    };
    const double low = std::max(0.0, std::floor(corr(c.yarn_beta_fast)));
    const double high = std::min(static_cast<double>(c.n_rot - 1), std::ceil(corr(c.yarn_beta_slow)));
    for (int64_t k = 0; k < half; ++k) {
      const double lin = std::clamp((static_cast<double>(k) - low) / std::max(0.001, high - low), 0.0, 1.0);
      const double ramp = 1.0 - lin;  // 1: keep the base frequency, 0: fully interpolated
      r.freq[k] = r.freq[k] / c.rope_scaling_factor * (1.0 - ramp) + r.freq[k] * ramp;
    }
  }
  return r;
}

void Rope::apply(float* tail, int64_t pos, bool inverse) const {
  for (size_t k = 0; k < freq.size(); ++k) {
    const double th = static_cast<double>(pos) * freq[k];
    const float c = static_cast<float>(std::cos(th));
    const float s = static_cast<float>(inverse ? -std::sin(th) : std::sin(th));
    const float a = tail[2 * k], b = tail[2 * k + 1];
    tail[2 * k] = a * c - b * s;
    tail[2 * k + 1] = a * s + b * c;
  }
}

void f16_round_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = f16_round(x[i]);
}

HcSplit hc_split(const float* mix, const std::vector<float>& scale, const std::vector<float>& base, int n, int iters,
                 float eps) {
  HcSplit s;
  s.pre.resize(n);
  s.post.resize(n);
  s.comb.resize(static_cast<size_t>(n) * n);
  for (int i = 0; i < n; ++i) {
    s.pre[i] = sigmoid(mix[i] * scale[0] + base[i]) + eps;
    s.post[i] = 2.0f * sigmoid(mix[n + i] * scale[1] + base[n + i]);
  }
  float* M = s.comb.data();
  for (int a = 0; a < n; ++a) {
    float mx = -INFINITY;
    for (int b = 0; b < n; ++b) {
      M[a * n + b] = mix[2 * n + a * n + b] * scale[2] + base[2 * n + a * n + b];
      mx = std::max(mx, M[a * n + b]);
    }
    float sum = 0;
    for (int b = 0; b < n; ++b) {
      M[a * n + b] = std::exp(M[a * n + b] - mx);
      sum += M[a * n + b];
    }
    for (int b = 0; b < n; ++b) M[a * n + b] = M[a * n + b] / sum + eps;
  }
  auto col_norm = [&] {
    for (int b = 0; b < n; ++b) {
      float sum = 0;
      for (int a = 0; a < n; ++a) sum += M[a * n + b];
      for (int a = 0; a < n; ++a) M[a * n + b] /= (sum + eps);
    }
  };
  col_norm();
  for (int it = 1; it < iters; ++it) {
    for (int a = 0; a < n; ++a) {
      float sum = 0;
      for (int b = 0; b < n; ++b) sum += M[a * n + b];
      for (int b = 0; b < n; ++b) M[a * n + b] /= (sum + eps);
    }
    col_norm();
  }
  return s;
}

void hc_weighted_sum(const float* X, const std::vector<float>& pre, int n_hc, int64_t d, float* out) {
  for (int64_t i = 0; i < d; ++i) {
    float acc = 0;
    for (int s = 0; s < n_hc; ++s) acc += pre[s] * X[s * d + i];
    out[i] = acc;
  }
}

void hc_post(const float* f, const float* X, const HcSplit& s, int n, int64_t d, float* X_out) {
  for (int b = 0; b < n; ++b)
    for (int64_t i = 0; i < d; ++i) {
      float acc = s.post[b] * f[i];
      for (int a = 0; a < n; ++a) acc += s.comb[a * n + b] * X[a * d + i];
      X_out[b * d + i] = acc;
    }
}

}  // namespace flashstar::cpu
