// The prefill's small (non-GEMM) ops at memory speed (prefill_small.cu). At a 4 096-token chunk the
// kernels they replace were decode-shaped: the hyper-connection mixer ran the decode matrix-vector
// kernel 8 tokens a block (every block re-reading the mixer, every token's streams read 6 times), the
// mixer's input norm wrote a flattened copy of the streams only the mixer read, and the post, the
// split / weighted sum, the norm and the FP16 copies of the norm and SwiGLU outputs each made a full pass
// of their own. Every entry here equals the launches it replaces BITWISE, by construction: the same
// element functions, the same fp64 sums in the same order, the same summation tree of the mixer's dots;
// only the work mapping and the number of passes change. Each returns false, launching nothing, for
// shapes it does not take (the caller then runs the old kernels). FLASHSTAR_PREFILL_SMALL=0 makes the
// session run the old kernels (A/B on the device).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/fast_hc_pre.h"
#include "cuda/ref_kernels.h"

namespace flashstar::cuda::fast {

// FLASHSTAR_PREFILL_SMALL (default on; "0" off), read once per process; prefill_small_set overrides it
// (tests). A session reads it when it starts; fast::to_f16 at each call (its 8-value kernel, fast_gemm.cu).
bool prefill_small_requested();
void prefill_small_set(bool on);

// Per token t of n (4 streams of d values at X + t * 4 d): applies `post` (when its kind is not None) to
// X as hc_post / sum_slots_post would (stored), and writes scale[t], the 1 / rms of the token's 4 d
// new values that rms_norm_rows (fast route, no weight) computes for the flattened row. That norm's
// output is then x * scale[t], which hc_mix_tiles applies on the fly: the flattened copy is never stored.
// d a multiple of 4 (d = 4096: 512 threads of 2 float4 columns).
bool hc_post_scale(const HcPost& post, float* X, int64_t d, int64_t n, float eps, float* scale, cudaStream_t s);

// Y[t][r] = W.row(row0 + r) . (X[t] * scale[t]) (scale null: X[t]) for r < n_rows, t < n_tok, X rows of
// W.cols floats at stride xs: bitwise what rms_norm_rows (no weight) then fast::matvec of the normed rows
// computes for more than 8 tokens (fast_matvec_float.cu, one column part: each lane adds its 16-byte units
// in column order, the xor tree over the warp, the 8 column warps in order), but 8 rows x 8 tokens a block
// so every weight load serves 8 tokens and every activation load 8 rows (the decode kernel's block
// geometry, float_geom: 1-8 column warps side by side). F32 / F16 / BF16 weights.
bool hc_mix_tiles_supported(const DMat& W, int64_t xs);
bool hc_mix_tiles(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t xs, const float* scale,
                  int64_t n_tok, float* Y, int64_t ys, cudaStream_t s);
// FLASHSTAR_MIX_V2 (default on; "0" off), read once per process, mix_v2_set overrides it (tests):
// hc_mix_tiles runs the second kernel (mix_tiles_v2.h: all rows of 32 tokens a block, every activation
// read once), the same bits.
bool mix_v2_requested();
void mix_v2_set(bool on);

// Per token: xin = the pre-weighted sum of the 4 streams (hc_weighted_sum with the split's pre weights,
// split as hc_split writes it), normed = rms_norm_rows(xin) with weight w (fast route), and with xb the
// two-term FP16 copy of normed that to_f16(normed, n, d, d, xb) would write. One pass instead of three
// (hc_split_sum's sum, the norm, to_f16). d a multiple of 8.
bool hc_sum_norm(const float* X, const float* split, int64_t d, const float* w, float eps, int64_t n, float* xin,
                 float* normed, uint16_t* xb, cudaStream_t s);

// swiglu(g, u, n_items, ff, lim, w) into out (may be g itself, or null: not stored) and into xb the copy
// to_f16(result, n_items, ff, ff, xb) would write: the down projection's input in one pass (the SwiGLU's
// f32 result, when no one else reads it, is never stored). ff a multiple of 8. tsums (optional; ff a
// multiple of 16): also the copy's token sums, group_token_sums(xb, ff, n_items * ff, n_items, ff) bit for
// bit (fast_kernels.h; the Q2_K down product's, gemm_set_group_q2k_sums).
bool swiglu_f16(const float* g, const float* u, int64_t n_items, int64_t ff, float lim, const float* w, float* out,
                uint16_t* xb, cudaStream_t s, float* tsums = nullptr);

// rope (ref_kernels.h) without a device position: each row's rotations formed once and applied to all of
// its heads, bitwise rope_kernel's (the same d_rope_cs and d_rotate). n_rot / 2 up to 256 pairs.
bool rope_prefill(float* x, int64_t n_rows, int64_t row_stride, int n_heads, int64_t head_dim, int n_rot,
                  const double* freq, int64_t pos0, int64_t pos_step, bool inverse, cudaStream_t s);

// The hyper-connection pre step of a prefill chunk (more than 8 tokens; fast_hc_pre.h runs decode's)
// as four launches: hc_post_scale (the pending post and the flattened norm's scales), hc_mix_tiles,
// fast::hc_split, hc_sum_norm. Bitwise what the session otherwise runs: the post (hc_post or
// sum_slots_post), rms_norm_rows of the flattened streams, the mixer's fast::matvec, hc_split_sum, the
// sublayer's rms_norm_rows and to_f16 of its output. False, launching nothing, when a piece would not
// take its shape (the caller then runs those, the post first).
struct HcPrefillArgs {
  DMat fn;                       // mixer: 24 rows x (4 d) columns, F32 / F16 / BF16
  float* X = nullptr;            // [n][4][d] streams (the post applied in place)
  HcPost post;                   // the previous half-layer's post, or none
  const float* scale = nullptr;  // [3] the split's scales
  const float* base = nullptr;   // [24]
  const float* norm_w = nullptr; // [d] the sublayer's norm weight
  float* mix = nullptr;          // [n][24]
  float* split = nullptr;        // [n][24]
  float* xin = nullptr;          // [n][d]
  float* normed = nullptr;       // [n][d]
  uint16_t* xb = nullptr;        // to_f16(normed)'s copy (2 n d halves), or null
  float* row_scale = nullptr;    // [n] scratch: the flattened norm's scales
  int64_t n = 0, d = 0;
  int iters = 0;
  float norm_eps = 0.0f, hc_eps = 0.0f;
};
bool hc_pre_prefill(const HcPrefillArgs& a, cudaStream_t s);

}  // namespace flashstar::cuda::fast
