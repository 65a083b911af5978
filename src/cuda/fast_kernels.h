// Fast routes: tensor-core and bandwidth-bound kernels that compute what the reference kernels
// (ref_kernels.h) compute, up to rounding. Each entry returns false when it cannot take the shape or
// alignment it was given; the caller then runs the reference kernel. Deterministic: fixed per-thread
// order and fixed reduction trees, no atomics.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/ref_kernels.h"

namespace flashstar::cuda::fast {

// Fills the per-unit copies of the quantization tables this file's kernels use.
void init_tables();
void init_gemm_tables();  // part of init_tables (the GEMM unit's own copy)

// Weight-streaming matrix-vector products for few tokens (decode): each warp owns four weight rows,
// stages them through shared memory with 16-byte async copies and reuses every activation load for the
// four rows. Same contract as cuda::matmul; n_tok of any size (processed in groups of up to 8).
bool matvec(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
            int64_t ys, cudaStream_t s);
// Same contract as cuda::matmul_items (one activation row per item).
bool matvec_items(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                  int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s);

// Activations to FP16 once per product (row stride xs, cols k, into a dense [n][k8] buffer, k8 = k
// rounded up to 8, zero padded). The tensor-core products read this copy.
void to_f16(const float* X, int64_t n, int64_t k, int64_t xs, uint16_t* out, cudaStream_t s);

// Tensor-core product Y[t][r] = W.row(row0 + r) . Xb[t] (FP16 operands, fp32 accumulation): weights
// dequantized to FP16 in shared memory tile by tile, never stored dequantized in device memory.
bool gemm_supports(const DMat& W);
bool gemm(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y, int64_t ys,
          cudaStream_t s);

// Routed experts as grouped GEMMs. `plan` (built on the device by moe_plan) lists, per expert, the
// items routed to it in item order; gemm_grouped multiplies each expert's rows with the gathered
// activation rows of its items.
struct MoePlan {
  int32_t* count;      // [n_expert]
  int32_t* offset;     // [n_expert + 1] exclusive prefix sums
  int32_t* items;      // [n_items] item ids grouped by expert (stable)
  int32_t* tiles;      // [max_tiles] (expert << 16 | tile index within the expert)
  int32_t* n_tiles;    // [1]
  int max_tiles;       // n_items / kTileTokens + n_expert
};
constexpr int kMoeTileTokens = 64;
int moe_max_tiles(int64_t n_items, int n_expert);
void moe_plan(const int32_t* sel, int64_t n_items, int n_expert, const MoePlan& p, cudaStream_t s);
// out[pos] = w[items[pos]]: per-item values (routing weights) in plan order.
void moe_gather(const float* w, const MoePlan& p, int64_t n_items, float* out, cudaStream_t s);
// Y[pos] (pos = position in plan order) = W_e . X[row(pos)], row(pos) = items[pos] / src_div when gather,
// else pos (X already in plan order). When scatter, Y row is items[pos] instead of pos.
bool gemm_grouped(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8, bool gather,
                  int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s);

// Sink attention (same contract as cuda::sink_attention): scores and P.V on the tensor cores with the
// 64 heads of a query as the M side; scratch holds the scores, then the probabilities.
bool attention_supported(const AttentionArgs& a);
void sink_attention(const AttentionArgs& a, float* scratch, int64_t max_rows, cudaStream_t s);
// Indexer top-k (same contract as cuda::indexer_select): scores on the tensor cores, radix select.
bool indexer_supported(int n_heads, int head_dim, int64_t n);
void indexer_select(const float* iq, const float* iw, float wscale, const float* idx_rows, int n_heads, int head_dim,
                    int64_t pos0, int64_t n, int ratio, int top_k, float* scratch, int64_t scratch_stride,
                    int32_t* sel, cudaStream_t s);

// The compressor over a whole chunk at once (same contract as cuda::compressor_chunk): one block per
// completed row, then the slot state rebuilt; tmp holds 2 x state floats.
bool compressor_supported(const CompressorArgs& a);
void compressor_chunk(const CompressorArgs& a, float* tmp, cudaStream_t s);

}  // namespace flashstar::cuda::fast
