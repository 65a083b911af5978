// Plain fp32 building blocks of the forward pass (spec/model.md §4.0). Every function here is the
// reference semantics the GPU kernels are judged against: simple loops, fixed summation order.
#pragma once
#include <cstdint>
#include <vector>

#include "common/quant_sim.h"
#include "model/config.h"
#include "model/weights.h"

namespace flashstar::cpu {

constexpr float kNegInf = -1e30f;  // "empty slot" score, as in ds4's session caches

// Fixed-order fp32 dot product (16 independent partial sums, then a fixed tree).
float dot_f32(const float* a, const float* b, int64_t n);

// Y[t][o] = W.row(o) . X[t] for t < n_tok, o < W.rows. X rows have stride x_stride (>= W.cols),
// Y rows have stride y_stride (>= W.rows). Each weight row is dequantized once and dotted with every
// token, so a token's result is the same whatever the batch size (chunk invariance).
void matmul(const Matrix& W, const float* X, int64_t n_tok, int64_t x_stride, float* Y, int64_t y_stride);
// The same over a subset of rows [row0, row0 + n_rows) of W, written to Y columns 0..n_rows-1.
void matmul_rows(const Matrix& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t x_stride,
                 float* Y, int64_t y_stride);

// x * w / sqrt(mean(x^2) + eps); w == nullptr for the plain (unweighted) norm. Mean in double.
void rms_norm(const float* x, const float* w, float* out, int64_t n, float eps);

float sigmoid(float x);
float softplus(float x);
float silu(float x);

// Rotary embedding of the tail n_rot dims of a head, interleaved pairs (2k, 2k+1).
struct Rope {
  std::vector<double> freq;  // per pair k: angle per position
  static Rope make(const ModelConfig& c, bool compressed_layer);
  // inverse = true rotates by -theta.
  void apply(float* tail, int64_t pos, bool inverse) const;
};

// Official numerics (spec/model.md §4.0): FP8 / FP4 simulations shared with the CUDA kernels.
using flashstar::fp8_e4m3_roundtrip_blocks;
using flashstar::indexer_qat_row;
void f16_round_inplace(float* x, int64_t n);

// Hyper-connections (spec/model.md §4.2-4.3, math.md §2.2).
struct HcSplit {
  std::vector<float> pre;   // n_hc
  std::vector<float> post;  // n_hc
  std::vector<float> comb;  // n_hc x n_hc, comb[a * n_hc + b]: from old stream a to new stream b
};
// mix: the 2n + n^2 projections of the normalized state (already computed).
HcSplit hc_split(const float* mix, const std::vector<float>& scale, const std::vector<float>& base, int n_hc,
                 int iters, float eps);
void hc_weighted_sum(const float* X, const std::vector<float>& pre, int n_hc, int64_t d, float* out);
void hc_post(const float* f, const float* X, const HcSplit& s, int n_hc, int64_t d, float* X_out);

}  // namespace flashstar::cpu
