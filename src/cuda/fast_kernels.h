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
void init_gemm_group_tables();  // part of init_gemm_tables (the second grouped kernel's selector table)
void init_gemm_group_wgmma_tables();  // part of init_gemm_group_tables (the wgmma grouped kernel's copy)

// Weight-streaming matrix-vector products for few tokens (decode): each warp owns four weight rows,
// stages them through shared memory with 16-byte async copies and reuses every activation load for the
// four rows. Same contract as cuda::matmul; n_tok of any size (processed in groups of up to 8). With a
// workspace, short matrices split their columns over more blocks (partial sums added in a fixed order).
bool matvec(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
            int64_t ys, cudaStream_t s, float* work = nullptr, int64_t work_floats = 0);
// Same contract as cuda::matmul_items (one activation row per item).
bool matvec_items(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                  int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s, float* work = nullptr,
                  int64_t work_floats = 0);

// Decode (1 or 2 tokens) Q8_0 products on the INT8 tensor-core kernel (fast_matvec_q8_mma.cu) with
// fewer launches; false, launching nothing, where that kernel does not take the call (W not Q8_0 or its
// layout not that of fast_matvec_q8.h, more than 2 tokens, digits past shared memory, no device): the
// caller then runs the separate launches. Rows 0..n-1 of each matrix.
// Two matrices over the same X (same cols and row_bytes; both 16 rows or more, or as many): Y0 = W0 X,
// Y1 = W1 X, each bitwise equal to its own q8_matvec call.
bool q8_decode_pair(const DMat& W0, int64_t n0, float* Y0, int64_t ys0, const DMat& W1, int64_t n1, float* Y1,
                    int64_t ys1, const float* X, int64_t n_tok, int64_t xs, cudaStream_t s);
// Y = W f(X) for a transform f of the activation rows: RmsNorm as rms_norm_rows (fast route) with weight w
// per column (may be null), eps; Swiglu as cuda::swiglu of gate rows X and up rows `up` (clamp lim,
// weight w per token row, may be null). With `out`, f(X) is also written there (rows at out_stride; it
// must not overlap X or up). Bitwise equal to the transform's launch followed by q8_matvec.
struct Q8Act {
  enum class Kind { Plain, RmsNorm, Swiglu } kind = Kind::Plain;
  const float* w = nullptr;
  float eps = 0.0f, lim = 0.0f;
  const float* up = nullptr;
  int64_t up_stride = 0;
  float* out = nullptr;
  int64_t out_stride = 0;
};
bool q8_decode_act(const DMat& W, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, const Q8Act& act,
                   float* Y, int64_t ys, cudaStream_t s);

// Activations as two FP16 terms once per product: hi = fp16(x), lo = fp16(x - hi), each a dense
// [n][k8] array (k8 = k rounded up to 8, zero padded), lo at out + n * k8 (so out holds 2 * n * k8).
void to_f16(const float* X, int64_t n, int64_t k, int64_t xs, uint16_t* out, cudaStream_t s);

// Tensor-core product Y[t][r] = W.row(row0 + r) . X[t] from to_f16's copy of X (n_tok rows), fp32
// accumulation, about fp32 accuracy. Block-quantized weights (Q8_0, Q2_K, Q4_K, IQ2_XXS) go in as exact
// FP16 integers with their block scales applied per 32-column k-tile (two mma per step, gemm_int_weights.h);
// float weights (and all weights after gemm_set_int_weights(false) or FLASHSTAR_GEMM_INT=0) as two FP16
// terms (three mma per step). Weights decoded in shared memory tile by tile, never stored in device memory.
bool gemm_supports(const DMat& W);
void gemm_set_int_weights(bool on);
bool gemm_int_weights();
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
// else pos (X already in plan order). When scatter, Y row is items[pos] instead of pos. Xb is to_f16's
// copy of x_rows rows. tsums: optional scratch of group_token_sums_floats(x_rows, W.cols) floats for the
// Q2_K token sums (gemm_set_group_q2k_sums); nullptr: the kernels form them in their loops. tsums_ready:
// it already holds group_token_sums of Xb (swiglu_f16 wrote them with the copy), else the call fills it.
bool gemm_grouped(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8, int64_t x_rows,
                  bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s,
                  float* tsums = nullptr, bool tsums_ready = false);
// Integer weights (Q8_0, Q2_K, Q4_K, IQ2_XXS) run the second grouped kernel (fast_gemm_group.cu), unless
// FLASHSTAR_GEMM_GROUP_V2=0 or gemm_set_group_v2(false) puts the first back (A/B comparisons on the
// device); both compute the same bits. gemm_grouped_v2 is that kernel alone (false, launching nothing,
// where it does not take the call: other types, misaligned rows or activations).
void gemm_set_group_v2(bool on);
bool gemm_group_v2();
bool gemm_grouped_v2(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8,
                     int64_t x_rows, bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s);
// The grouped products of those formats on warpgroup MMA (gemm_group_wgmma.cu, sm_90a): v2's tiles,
// decoding and per-32-column promotion, and v2's bits (0 differing elements on the model shapes, H200,
// 2026-12-01; as the dense wgmma kernel gives dense_v2's). On by default, ahead of v2 in gemm_grouped; FLASHSTAR_GEMM_GROUP_WGMMA=0 or
// gemm_set_group_wgmma(false) turns it off. gemm_grouped_wgmma is that kernel alone, gemm_grouped's
// contract (false, launching nothing, where it does not take the call: off, other types, columns no
// multiple of 256, misaligned rows or activations, not a Hopper).
void gemm_set_group_wgmma(bool on);
bool gemm_group_wgmma();
// Its kernel variant (wgmma_group::kVariants in gemm_group_wgmma.h): FLASHSTAR_GEMM_GROUP_WGMMA_VARIANT,
// default 2; out-of-range values select 2 (the default). Variant 1 (paired tiles) was 7% faster on a layer's products at
// 4 096 tokens but no faster in the 43-layer bench (slower on 2 048-token chunks). Variant 2
// (gemm_group_wgmma_reg.cu: the dense kernel's structure, A fragments decoded in registers) gives v2's bits
// (measured on the H200) and is the default: 4L prefill +5% over variant 0.
void gemm_set_group_wgmma_variant(int v);
int gemm_group_wgmma_variant();
// Its k-tile decoders (variant 0): 0 (default, the measured kernel) v2's gemm_v2::Decode, 1
// gemm_v2::DecodeFast (gemm_group_decode.h), 2 DecodeFast for IQ2_XXS and v2's for Q2_K; the same bits
// (checked on the CPU and the H200), but 1 and 2 are 7% slower there (IQ2_XXS gate 3.42 vs 3.20 ms).
// FLASHSTAR_GEMM_GROUP_DECODE=N or gemm_set_group_decode(N).
void gemm_set_group_decode(int v);
int gemm_group_decode();
// Internal to gemm_group_wgmma*.cu: the paired kernel (variant 1) and its selector table.
void group_wgmma_pair_launch(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8,
                             int64_t x_rows, bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys,
                             cudaStream_t s);
void init_group_wgmma_pair_table(const uint32_t* sel);
// ... and the register-decoded kernel (variant 2, gemm_group_wgmma_reg.cu): false where it declines.
bool group_wgmma_reg_launch(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8,
                            int64_t x_rows, bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys,
                            cudaStream_t s, float* tsums = nullptr, bool tsums_ready = false);
void init_group_wgmma_reg_table();
bool gemm_grouped_wgmma(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8,
                        int64_t x_rows, bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys,
                        cudaStream_t s, float* tsums = nullptr, bool tsums_ready = false);
// Variant 2's Q2_K token sums precomputed (on by default; FLASHSTAR_GEMM_GROUP_Q2K_SUMS=0 or
// gemm_set_group_q2k_sums(false) off): where a call passes tsums, group_token_sums fills it first and the
// k-loop copies the sums in instead of forming them (gemm_group_wgmma_reg.h, tsum_group); the same bits.
void gemm_set_group_q2k_sums(bool on);
bool gemm_group_q2k_sums();
// out[r * (cols / 16) + g] = the sum of row r's columns 16 g .. + 15 of an FP16 copy (hi at Xb, lo at
// Xb + lo_off, rows k8 apart; cols a multiple of 16, 16-byte aligned rows) as the k-loops form it.
void group_token_sums(const uint16_t* Xb, int64_t k8, int64_t lo_off, int64_t rows, int64_t cols, float* out,
                      cudaStream_t s);
inline int64_t group_token_sums_floats(int64_t rows, int64_t cols) { return rows * (cols / 16); }
// The dense products of those formats run on the second grouped kernel's tiles (fast_gemm_group.cu),
// the first kernel's bits, in blocks of 128 weight rows (two an SM) or 256 (one), unless
// FLASHSTAR_GEMM_DENSE_V2=0 or gemm_set_dense_v2(0) puts the first kernel back (=256 / 256: 256-row
// blocks). gemm_dense_v2 is that kernel alone, gemm's contract (false, launching nothing, where it does
// not take the call: off, other types, misaligned rows or activations).
void gemm_set_dense_v2(int block_rows);
int gemm_dense_v2_rows();
bool gemm_dense_v2(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y,
                   int64_t ys, cudaStream_t s);
// The dense Q8_0, F16 and BF16 products on warpgroup MMA (gemm_dense_wgmma.cu, sm_90a): the mma.sync
// kernels' terms, order and per-32-column promotion and, as measured for Q8_0, their bits (F16 / BF16:
// gemm_dense<T, false>'s three-product split; F16 issues the two of its hi term, its lo term being zero).
// On by default, ahead of the dense kernels above, for more than 64 tokens (fewer: a 128-token tile
// mostly idle; dense_v2 / gemm_dense take them); FLASHSTAR_GEMM_WGMMA=0 or gemm_set_wgmma(false) turns
// all of it off. The float weights too by default (measured bitwise on the H200; F16 issues the two
// products of its hi term, its lo term being zero; BF16 always three): FLASHSTAR_GEMM_WGMMA_F16=0 or
// gemm_set_wgmma_f16(0) puts them back on the mma.sync kernel, =3 makes F16 issue all three. gemm_dense_wgmma is that kernel alone, gemm's contract (false, launching nothing, where it does
// not take the call: off, other types, columns no multiple of 256 (Q8_0) or 128 (F16, BF16), misaligned
// rows or activations, not a Hopper).
void gemm_set_wgmma(bool on);
bool gemm_wgmma();
void gemm_set_wgmma_f16(int mode);
int gemm_wgmma_f16();
bool gemm_dense_wgmma(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y,
                      int64_t ys, cudaStream_t s);

// Sink attention (same contract as cuda::sink_attention): scores and P.V on the tensor cores with the
// 64 heads of a query as the M side; scratch holds the scores, then the probabilities. Up to 8 queries
// (decode) run one fp32 flash-decoding launch instead (fast_attention_decode.cu): scratch_floats of
// scratch hold the row splits' partial outputs (fewer splits when short; one split needs none), combined
// in split order by the last split.
bool attention_supported(const AttentionArgs& a);
bool attention_decode_path(const AttentionArgs& a);  // the flash-decoding kernel (it reads AttentionArgs::pos_dev)
// Returns true when it also applied the inverse RoPE asked for by a.out_rope_freq (the decode path does).
bool sink_attention(const AttentionArgs& a, float* scratch, int64_t max_rows, cudaStream_t s,
                    int64_t scratch_floats = 0);
// Prefill attention as one flash-attention launch (fast_attention_prefill.cu): a block per query, 64 heads
// x 512 dims only, any query count (sink_attention takes it for more than 8 queries unless
// FLASHSTAR_ATTN_PREFILL_V2=0 or attention_prefill_set(false, ...)). A query's output depends on its own
// rows only. Rows exact in FP16 (official numerics) skip the K lo term's mma; full_mma (or
// FLASHSTAR_ATTN_PREFILL_3MMA=1) always runs it, which must give the same bits on such rows. Returns
// false, launching nothing, for a shape, alignment or device (212 KiB of shared memory a block) it does
// not take. Never applies the output RoPE.
bool attention_prefill(const AttentionArgs& a, cudaStream_t s);
void attention_prefill_set(bool v2, bool full_mma);
bool attention_prefill_v2();
bool attention_prefill_full_mma();
// Indexer top-k (same contract as cuda::indexer_select): scores on the tensor cores, radix select.
// With prep, iq holds the projected queries before their RoPE and FP4 simulation, and the decode scores
// launch (up to 8 queries of 128 values, where indexer_fused says yes) applies both itself
// (fast_indexer_decode.cu): the same scores and rows, bit for bit, as rope (each head's last n_rot values
// at position pos0 + t, or *pos_dev + t, by freq; not inverse), then with qat fast::indexer_qat, then
// indexer_select without prep. iq is not written.
struct IndexerQueryPrep {
  int n_rot = 0;
  const double* freq = nullptr;
  bool qat = false;
};
bool indexer_supported(int n_heads, int head_dim, int64_t n);
void indexer_select(const float* iq, const float* iw, float wscale, const float* idx_rows, int n_heads, int head_dim,
                    int64_t pos0, int64_t n, int ratio, int top_k, float* scratch, int64_t scratch_stride,
                    int32_t* sel, cudaStream_t s, const int64_t* pos_dev = nullptr,
                    const IndexerQueryPrep* prep = nullptr);
// Whether the session leaves the indexer query's RoPE and FP4 simulation to indexer_select (prep): the
// switch (FLASHSTAR_IDX_FUSED at start, default 1; =0 or indexer_set_fused(false) off: rope, indexer_qat
// and the scores in three launches) and the shape (64 heads of 128, 1..8 queries, n_rot even <= 128).
bool indexer_fused(int n_heads, int head_dim, int64_t n, int n_rot);
void indexer_set_fused(bool on);
bool indexer_fused_on();
// The scores launch of indexer_select with prep (internal to fast_attention.cu; max_vis as there).
void indexer_scores_fused(const float* iq, const float* iw, float wscale, const float* idx_rows, int64_t pos0,
                          int64_t n, int ratio, float* scores, int64_t stride, const int64_t* pos_dev,
                          const IndexerQueryPrep& prep, int64_t max_vis, cudaStream_t s);
// The top-k launch of indexer_select alone, over given scores: version 1 the one-block radix select of
// fast_attention.cu (8-bit digits, 256 threads), 2 the decode kernel of fast_indexer_topk.cu (keys staged
// in shared memory, 11/11/10-bit digits, 1024 threads). Both select the same rows in the same order.
// max_vis: the most rows any query sees (sizes version 2's shared memory; rows past it are read from
// global memory each pass). indexer_select runs version 2 for <= 8 queries when attention_decode_v2().
void indexer_topk(const float* scores, int64_t stride, int64_t pos0, int64_t n, int ratio, int top_k, int32_t* sel,
                  cudaStream_t s, const int64_t* pos_dev, int version, int64_t max_vis);
void indexer_topk_v2(const float* scores, int64_t stride, int64_t pos0, int64_t n, int ratio, int top_k, int32_t* sel,
                     cudaStream_t s, const int64_t* pos_dev, int64_t max_vis);
// The decode attention's new kernels: FLASHSTAR_ATTN_DECODE_V2 at start picks the top-k above
// (kDecodeV2TopK, the default: same rows, 12.4 -> 10.3 us at 8k and 73.7 -> 27.5 us at 64k on the H200),
// flash_decode_attention's reordered prologue and tail (kDecodeV2Flash, =flash; measured 3-10% slower, so
// off), both (=1) or neither (=0). attention_decode_set_v2 takes the bits.
constexpr int kDecodeV2TopK = 1, kDecodeV2Flash = 2;
int attention_decode_v2();
void attention_decode_set_v2(int parts);
// The most row splits of the decode attention (default 10, cap 24; FLASHSTAR_ATTN_DECODE_SPLITS=N at start):
// fewer splits walk more chunks each and leave the last block fewer parts to combine. A different split
// count gives different bits (the online softmax and the combine group the rows differently).
void attention_decode_set_max_splits(int n);
int attention_decode_max_splits();
// The decode attention's launch with per-block phase stamps (clock64 x 7: entry, after the wait, after
// the row map, first chunk staged, chunks done, ticket taken, end; then %globaltimer at entry and end)
// into stamps[block][16], block = (z * groups + g) * n + t (dead splits stamp 0-2 only, not-last ones
// 0-5); v2 as the switch would pick. Returns the block count. (The timing test: where the time goes.)
int64_t flash_decode_probe(const AttentionArgs& a, float* scratch, int64_t max_rows, cudaStream_t s,
                           int64_t scratch_floats, bool v2, uint64_t* stamps);
// Its scores for more than 8 queries (fast_indexer_prefill.cu): 4 queries per block against tiles of 64
// rows, one mma per step when the staged operands are exact in FP16 (the official FP4 numerics), else
// three. Mode 1 (default) that kernel, 0 the per-query tile kernel of fast_attention.cu, 3 the new
// kernel with three mma always (bitwise A/B of the one-mma path); FLASHSTAR_INDEXER_PREFILL_V2=0 or =3
// sets it at start. indexer_scores_prefill returns false for what it does not take (mode 0, head_dim
// not 128, unaligned operands): the caller runs the old kernel.
void indexer_set_prefill_mode(int mode);
int indexer_prefill_mode();
bool indexer_scores_prefill(const float* iq, const float* iw, float wscale, const float* idx_rows, int head_dim,
                            int64_t pos0, int64_t n, int ratio, float* scores, int64_t stride, cudaStream_t s);

// The compressor over a whole chunk at once (same contract as cuda::compressor_chunk): one block per
// completed row, then the slot state rebuilt; tmp holds 2 x state floats.
bool compressor_supported(const CompressorArgs& a);
void compressor_chunk(const CompressorArgs& a, float* tmp, cudaStream_t s);

// The router (same contract as cuda::route) with a block per token (a thread per expert).
bool route_supported(int n_expert, int k);
void route(float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens, int64_t n, int n_expert,
           int k, bool norm, float scale, int32_t* sel, float* weights, cudaStream_t s);

// Row-parallel versions of reference ops that run a thread per row or token (fast_exact_ops.cu): bitwise
// equal to finish_rows, indexer_qat and hc_split of ref_kernels.h (false: shape not taken).
bool finish_rows(float* x, int64_t n_rows, int64_t row_stride, int64_t dim, int n_rot, RowKind kind, bool official,
                 cudaStream_t s);
// indexer_qat takes vectors of 128 (16-byte aligned) a lane quad each (row_qat_quad.cuh), other dims a
// block each (indexer_qat_block, that kernel for any dim: the tests compare the two).
bool indexer_qat(float* x, int64_t n_vec, int64_t dim, cudaStream_t s);
bool indexer_qat_block(float* x, int64_t n_vec, int64_t dim, cudaStream_t s);
bool hc_split(const float* mix, int64_t ms, const float* scale, const float* base, int n_hc, int iters, float eps,
              float* split, int64_t n, cudaStream_t s);
// Rows of dim values at stride dim, in place: RMS norm (weight w, may be null) as rms_norm_rows, then the
// RoPE rotation of each row's last n_rot values at position pos0 + row / rows_per_pos (*pos_dev when set),
// then with fp8_rows the cached attention row's FP8 simulation and f16 storage (finish_rows, official
// numerics). Bitwise equal to those three launches.
bool norm_rope_rows(float* x, int64_t n_rows, int64_t dim, const float* w, float eps, int rows_per_pos, int n_rot,
                    const double* freq, int64_t pos0, const int64_t* pos_dev, bool fp8_rows, cudaStream_t s);
// norm_rope_rows of two row sets of the same width in one launch (each with its own weight, positions and
// FP8 flag); each row bitwise equal to its norm_rope_rows call.
struct NormRopeJob {
  float* x = nullptr;
  int64_t rows = 0;
  const float* w = nullptr;
  int rows_per_pos = 1;
  bool fp8 = false;
};
bool norm_rope_pair(const NormRopeJob& a, const NormRopeJob& b, int64_t dim, float eps, int n_rot, const double* freq,
                    int64_t pos0, const int64_t* pos_dev, cudaStream_t s);
// norm_rope_pair for prefill (no device position): set a (the query heads) on a warp per row when its rows
// are 512 wide without the FP8 finish, bitwise the block kernel's rows (fast_ops.cu), set b on
// norm_rope_pair; otherwise norm_rope_pair of both. Same return as norm_rope_pair.
bool norm_rope_pair_prefill(const NormRopeJob& a, const NormRopeJob& b, int64_t dim, float eps, int n_rot,
                            const double* freq, int64_t pos0, cudaStream_t s);
// hc_split then hc_weighted_sum in one launch (a block per token), and sum_slots then hc_post in one:
// bitwise equal to the reference kernels they replace (n_hc = 4 only).
bool hc_split_sum(const float* mix, int64_t ms, const float* scale, const float* base, int n_hc, int iters, float eps,
                  float* split, const float* X, int64_t d, float* out, int64_t n, cudaStream_t s);
bool sum_slots_post(const float* slot, const float* shared, int k, float* X, const float* split, int n_hc, int64_t d,
                    int64_t n, cudaStream_t s);
// RMS norm rows (same contract as cuda::rms_norm_rows) with a block streaming float4s; the double sum
// is taken in another fixed order than the reference's.
bool rms_norm_rows(const float* x, int64_t xs, const float* w, float* y, int64_t ys, int64_t n_rows, int64_t dim,
                   float eps, cudaStream_t s);

}  // namespace flashstar::cuda::fast
