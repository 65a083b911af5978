// The hyper-connection "pre" step of a decode half-layer in one launch (fast_hc_pre.cu): what the session
// otherwise runs as four kernels (unweighted RMS norm of the flattened streams, the 24-row mixer product,
// hc_split + the weighted sum of the streams, the sublayer's weighted RMS norm). Every block takes the
// same 64 columns of the 4 streams (a part: 256 values of the flattened state) and stores its partial
// mixer dots and sum of squares in a workspace; the last block to finish (last_block.cuh) adds the parts
// in part order, forms
// mix = (fn . x) / rms(x) (spec math.md 2.2: the same as normalising x first, up to rounding), runs the
// split (hc_split.cuh, the function of the fused_ops split) and the weighted sum, and normalises the result.
//
// The previous half-layer's hyper-connection post may be left pending (HcPost): element i of the 4 new
// streams depends only on element i of the old ones, so each block first applies it to its own columns
// (stores the new streams and takes its sums from them), bitwise as hc_post / sum_slots_post would, and
// the last block, after every block's ticket, reads the new streams of all columns. That saves the post's
// launch at decode.
//
// The work mapping is written as host/device functions so that a CPU test (tests/cuda/test_hc_pre.cpp,
// HcPreSim) can replay the kernel's sums, part for part and lane for lane, without a device.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/ref_kernels.h"

#if defined(__CUDACC__)
#define HCP_HD __host__ __device__ __forceinline__
#else
#define HCP_HD inline
#endif

namespace flashstar::cuda::fast {

// The post of the previous half-layer, still to be applied to X: stream b of token t becomes
// post[b] f + sum_a comb[a][b] X[a] (d_hc_post_element), with f the sublayer's output.
struct HcPost {
  enum class Kind { None, Plain, Slots };
  Kind kind = Kind::None;
  // Plain: f = [n_tok][d] (hc_post's f). Slots: f = [n_tok][k][d] routed slots, plus shared ([n_tok][d],
  // optional), summed as sum_slots does (sum_slots_post's arguments).
  const float* f = nullptr;
  const float* shared = nullptr;
  int k = 0;
  // [n_tok][24] the previous split (pre | post | comb); may be HcPreArgs::split itself (it is read by every
  // block before the new split is written).
  const float* split = nullptr;
};

struct HcPreArgs {
  DMat fn;                        // mixer: 24 rows x (4 d) columns, F16 or F32
  float* X = nullptr;             // [n_tok][4][d] hyper-connection streams (written only with a post)
  HcPost post;                    // applied to X first when its kind is not None
  const float* scale = nullptr;   // [3] (pre, post, comb)
  const float* base = nullptr;    // [24]
  const float* norm_w = nullptr;  // [d] weight of the sublayer's RMS norm
  float* mix = nullptr;           // [n_tok][24] the mixer's output (optional: null stores nothing)
  float* split = nullptr;         // [n_tok][24] pre | post | comb, as hc_split writes it
  float* xin = nullptr;           // [n_tok][d] sum of pre-weighted streams (hc_weighted_sum)
  float* normed = nullptr;        // [n_tok][d] RMS norm of xin with norm_w
  int64_t n_tok = 0, d = 0;
  int n_hc = 4, iters = 0;
  float norm_eps = 0.0f, hc_eps = 0.0f;  // the RMS norms' epsilon (both), the split's
  float* work = nullptr;                 // partial sums: hcp::work_floats(parts, n_tok) floats, 8-byte aligned
  int64_t work_floats = 0;
  // 1-2 tokens, mix given: the split (the Sinkhorn walk, the last block's longest chain) is not formed
  // here; the caller runs fast::hc_split of mix (the same function, the same bits) where it is off the
  // critical path (the session: FLASHSTAR_HC_SPLIT_SIDE, a side branch joined before split is read).
  bool split_later = false;
};

// Whether hc_pre takes these arguments: 4 streams, d a multiple of 64 up to 4096, 1..8 tokens, a 24-row
// F16 or F32 mixer, 16-byte aligned rows and vectors, a large enough workspace; a post with its inputs
// (f, split; Slots: 0..kMaxSlots slots, f or shared given).
bool hc_pre_supported(const HcPreArgs& a);
// One launch applying the pending post (when given) and computing mix (when asked), split, xin and normed;
// false (nothing launched, X untouched) when not supported.
// The blocks share one ticket per process and ticket lane (stream_lanes.h): launches on a decode fork's
// two streams take different ones; two sessions' streams must not run it at once.
bool hc_pre(const HcPreArgs& a, cudaStream_t s);
// FLASHSTAR_HC_PRE_LEAN (default 1; =0 off; or hc_pre_set_lean): the constants fetched before the PDL
// wait and the ticket with one thread's fences (fast_hc_pre.cu); the same values in the same order.
void hc_pre_set_lean(bool on);
bool hc_pre_lean();

namespace hcp {

constexpr int kThreads = 512, kWarps = kThreads / 32;
constexpr int kMix = 24, kRowGroups = 8, kRowsPerWarp = kMix / kRowGroups;  // warp w: rows of group w % 8
constexpr int kHalfCols = 128, kPartCols = 2 * kHalfCols;  // warp w: column half w / 8 of its part
constexpr int kStreams = 4, kColsPerPart = kPartCols / kStreams;  // a part: 64 columns of each stream
constexpr int kMaxTok = 8, kMaxSlots = 64;
constexpr int kSumLanes = 8;                 // lanes adding one output's parts in the last block
// The last block, once the mix is formed: warps below kSplitWarps run the split (a half warp per token)
// while the others (the tail) form the weighted sums and the norms; a tail thread holds kTailPer float4s.
constexpr int kSplitWarps = kMaxTok / 2, kTailThreads = kThreads - 32 * kSplitWarps, kTailPer = 3;
constexpr int64_t kMaxDim = 4096;

// A part's values in the block (shared memory, per token): stream s's 64 columns at s * 64. A warp's
// half h covers values [128 h, 128 h + 128): streams 2 h and 2 h + 1; a lane 4 consecutive columns.
HCP_HD int part_value(int warp, int lane) { return (warp / kRowGroups) * kHalfCols + 4 * lane; }
// Index in the flattened [4][d] state of a part's value v (stream v / 64, column v % 64 of the part).
HCP_HD int64_t flat_of(int64_t part, int v, int64_t d) {
  return (v / kColsPerPart) * d + part * kColsPerPart + v % kColsPerPart;
}
// First of the 4 columns that lane `lane` of warp `warp` covers in part `part` (flattened index).
HCP_HD int64_t col_of(int64_t part, int warp, int lane, int64_t d) { return flat_of(part, part_value(warp, lane), d); }
// The staging of a part (and the post): thread tid < n * 64 loads column part * 64 + tid % 64 of token
// tid / 64's 4 streams (and applies the post to them).
HCP_HD int stage_token(int tid) { return tid / kColsPerPart; }
HCP_HD int64_t stage_col(int64_t part, int tid) { return part * kColsPerPart + tid % kColsPerPart; }
HCP_HD int row_of(int warp, int r) { return (warp % kRowGroups) * kRowsPerWarp + r; }

// Workspace: part p's dot of token t with mixer row r (floats), then its sums of squares (doubles).
HCP_HD int64_t dot_slot(int64_t part, int64_t t, int row, int64_t n) { return (part * n + t) * kMix + row; }
HCP_HD int64_t ss_offset(int64_t parts, int64_t n) { return (parts * n * kMix + 1) / 2 * 2; }  // in floats
HCP_HD int64_t ss_slot(int64_t part, int64_t t, int64_t n) { return part * n + t; }        // in doubles
HCP_HD int64_t work_floats(int64_t parts, int64_t n) { return ss_offset(parts, n) + 2 * parts * n; }

// Last block: output o < n * 24 is token o / 24's dot with row o % 24, o = n * 24 + t token t's sum of
// squares; the kSumLanes lanes of group o % (kThreads / kSumLanes) add parts sub, sub + kSumLanes, ...
// then a shuffle tree (xor 4, 2, 1). The float4 at index j of a d-row goes to tail thread j % kTailThreads.

}  // namespace hcp
}  // namespace flashstar::cuda::fast
