// The CUDA reference path: one simple kernel per operation of the forward pass, fp32 accumulation,
// weights dequantized inside the kernel, fixed reduction trees (no atomics): deterministic, and
// numerically the CPU reference up to summation order. Every fast route is judged against these.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "quant/types.h"

namespace flashstar::cuda {

struct DMat {
  GgmlType type = GgmlType::F32;
  const uint8_t* data = nullptr;  // device
  int64_t cols = 0, rows = 0;
  size_t row_bytes = 0;
};

// Copies the IQ2_XXS tables into constant memory (once per process).
void init_quant_tables();

// Y[t][r] = W.row(row0 + r) . X[t], r < n_rows, t < n_tok.
void matmul(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
            int64_t ys, cudaStream_t s);
// Item i multiplies rows [mat_of_item[i] * rows_per_mat, +rows_per_mat) of W with X row src_of_item[i]:
// the routed experts of every (token, slot) pair in one launch.
void matmul_items(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                  int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s);

void embed(const DMat& E, const int32_t* tokens, int64_t n, int n_hc, float* X, cudaStream_t s);
// y = x * w / sqrt(mean(x^2) + eps) per row (w may be null); rows at strides xs / ys; in place allowed.
void rms_norm_rows(const float* x, int64_t xs, const float* w, float* y, int64_t ys, int64_t n_rows, int64_t dim,
                   float eps, cudaStream_t s);

// Hyper-connections: split = [pre n | post n | comb n*n] per token.
void hc_split(const float* mix, int64_t mix_stride, const float* scale, const float* base, int n_hc, int iters,
              float eps, float* split, int64_t n, cudaStream_t s);
void hc_weighted_sum(const float* X, const float* split, int n_hc, int64_t d, float* out, int64_t n, cudaStream_t s);
void hc_post(const float* f, float* X, const float* split, int n_hc, int64_t d, int64_t n, cudaStream_t s);
// Output head collapse: z = sum_h (sigmoid(pre_h * scale + base_h) + eps) X_h.
void hc_head(const float* X, const float* pre_mix, const float* scale, const float* base, int n_hc, int64_t d,
             float eps, float* z, int64_t n, cudaStream_t s);

// Rotary embedding of the tail n_rot dims of each head: rows r < n_rows hold n_heads heads of head_dim
// at stride head_dim; row r is at position pos0 + r * pos_step. pos_dev (when set) holds pos0 in device
// memory instead, so a captured CUDA graph replays at any position (likewise in the argument structs).
void rope(float* x, int64_t n_rows, int64_t row_stride, int n_heads, int64_t head_dim, int n_rot, const double* freq,
          int64_t pos0, int64_t pos_step, bool inverse, cudaStream_t s, const int64_t* pos_dev = nullptr);

enum class RowKind { Attention, Indexer };
// Official numerics of cached rows: FP8 of the non-rope dims (attention) or Hadamard + FP4 (indexer),
// then f16 storage. No-op when !official.
void finish_rows(float* x, int64_t n_rows, int64_t row_stride, int64_t dim, int n_rot, RowKind kind, bool official,
                 cudaStream_t s);
// Hadamard + FP4 of every head of every row (indexer queries).
void indexer_qat(float* x, int64_t n_vec, int64_t dim, cudaStream_t s);

struct CompressorArgs {
  float* state_kv;     // rows x width
  float* state_score;  // rows x width
  const float* kv;     // [n][width] projections of the chunk
  const float* gate;   // [n][width]
  const float* ape;    // [ratio][width]
  const float* norm;   // [dim]
  const double* freq;  // rope pair frequencies
  float* out_rows;     // compressed rows appended here (first new row at index floor(pos0/ratio))
  int64_t pos0, n;
  int ratio, dim, width, n_rot;
  float eps;
  RowKind kind;
  bool official;
  const int64_t* pos_dev = nullptr;  // pos0 in device memory (read instead of pos0 when set)
};
// Feeds the chunk's tokens through the compressor in order (one block, sequential over tokens).
void compressor_chunk(const CompressorArgs& a, cudaStream_t s);

// Indexer top-k per query over its visible compressed rows; writes ascending row ids.
// Head weights iw are multiplied by wscale before use (as the CPU does).
void indexer_select(const float* iq, const float* iw, float wscale, const float* idx_rows, int n_heads, int head_dim,
                    int64_t pos0, int64_t n, int ratio, int top_k, float* scratch, int64_t scratch_stride, int32_t* sel,
                    cudaStream_t s);

struct AttentionArgs {
  const float* q;         // [n][n_head * head_dim]
  const float* hist;      // raw rows, row i at absolute position hist_pos0 + i
  int64_t hist_pos0;
  const float* comp;      // compressed rows (may be null)
  const int32_t* sel;     // [n][top_k] selected rows, or null = every visible row
  int top_k;
  const float* sinks;     // [n_head]
  float* out;             // [n][n_head * head_dim]
  int64_t pos0, n;
  int n_head, head_dim, n_swa, ratio;
  const int64_t* pos_dev = nullptr;  // when set: pos0 = *pos_dev and hist_pos0 = pos0 - hist_lag
  int64_t hist_lag = 0;
  // When set, a fast path may also apply the inverse RoPE (n_rot dims, freq) to its output rows and then
  // says so (fast::sink_attention returns true); the reference kernels ignore these.
  const double* out_rope_freq = nullptr;
  int out_rope_n_rot = 0;
};
// scratch: max_rows floats per (query, head).
void sink_attention(const AttentionArgs& a, float* scratch, int64_t max_rows, cudaStream_t s);

// Router: probabilities sqrt(softplus(logit)); hash (tid2eid) or biased top-k; normalised weights.
// logits are overwritten with the probabilities.
void route(float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens, int64_t n, int n_expert,
           int k, bool norm, float scale, int32_t* sel, float* weights, cudaStream_t s);
// g = silu(min(g, lim)) * clamp(u, -lim, lim) * w[item] (w may be null).
void swiglu(float* g, const float* u, int64_t n_items, int64_t ff, float lim, const float* w, cudaStream_t s);
// out[t] = sum_i slot[t*k + i] (+ shared[t]).
void sum_slots(const float* slot, const float* shared, int64_t n, int k, int64_t d, float* out, cudaStream_t s);

}  // namespace flashstar::cuda
