// Float-weight (F32 / F16 / BF16) matrix-vector products for decode (fast_matvec_float.cu), and the
// tiling they use, shared with a CPU test (tests/cuda/test_matvec_float.cpp) that checks the tiling
// without a GPU.
//
// Why this shape: at one or two tokens these products are latency-bound, so each thread issues all of
// its weight loads (kFRows rows x kFUnits 16-byte units) before it uses any of them, and a block covers
// a whole 4096-column F16 row in one such step: most model matrices then need no column split, and the
// ones that do (the 16384-column HC mixers) add their parts in part order in the last block to finish.
// Summation order of one output, the same for 1-8 tokens (and for any count above) and independent of
// the other matrices of a launch:
// each lane adds its units in column order (tile by tile), a fixed xor-shuffle tree over the warp, the
// column warps of a block in warp order, then the parts in part order.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/float_geom.h"
#include "cuda/ref_kernels.h"

namespace flashstar::cuda::fast {

// One output of a launch: Y[t][r] = W.row(row0 + r) . X[t] for r < n_rows.
struct MatvecOut {
  const DMat* W;
  int64_t row0, n_rows;
  float* Y;
  int64_t ys;
};

// Each of n_mats products (same type and column count, one X) in one launch; false, launching nothing,
// when the shapes do not fit (type not float, cols not a multiple of the 16-byte unit, misaligned data,
// differing types or columns, more than kFMaxMats matrices, or a split that does not fit work / the
// tickets). With work, results are bitwise those of n_mats separate float_matvec calls.
bool float_matvec_multi(const MatvecOut* outs, int n_mats, const float* X, int64_t n_tok, int64_t xs, cudaStream_t s,
                        float* work, int64_t work_floats);
// One product; splits (up to kFMaxTok tokens) only when work holds the parts, else every block loops
// over its whole rows.
bool float_matvec(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
                  int64_t ys, cudaStream_t s, float* work, int64_t work_floats);

// The decode router in one launch (FLASHSTAR_ROUTER_FUSED=1, off until measured): logits = W X as
// float_matvec computes them (W's E rows, E <= kFThreads, one part, up to kFMaxTok tokens), then the last
// block to finish runs fast::route's picks (route_block.cuh: the same function, so the same probabilities,
// picks and weights) instead of a second launch. false, launching nothing, where the product would not be
// one part or the router does not fit a block.
struct RouterArgs {
  const float* bias = nullptr;        // added to the probabilities for the picks (may be null)
  const int32_t* tid2eid = nullptr;   // hash layers: the picks by token (tokens then needed)
  const int32_t* tokens = nullptr;
  int k = 0;
  bool norm = false;
  float scale = 1.0f;
  int32_t* sel = nullptr;  // [n_tok][k]
  float* weights = nullptr;
};
bool float_matvec_route(const DMat& W, const float* X, int64_t n_tok, int64_t xs, float* logits, const RouterArgs& r,
                        cudaStream_t s, float* work, int64_t work_floats);
bool router_fused();
void router_set_fused(bool on);
// FLASHSTAR_MV_EARLY (default 1, =0 off; or mv_set_early): one- and two-token launches (the router with its
// picks: one-token ones) load their first weight tile before the PDL wait (the weights are constants), so
// that the loads overlap the kernel before them. The same loads and sums: the same bits.
void mv_set_early(bool on);
bool mv_early();

}  // namespace flashstar::cuda::fast
