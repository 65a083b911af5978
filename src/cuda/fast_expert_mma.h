// Routed-expert matrix-vector products at decode on the INT8 tensor cores (mma m16n8k32 s8): the
// weights of IQ2_XXS and Q2_K are exact small integers, the activation row is split into four signed
// 8-bit digits of a 32-bit fixed-point copy (per 256 columns, scale a power of two), so the integer sums
// are exact and the result keeps fp32 accuracy. Deterministic: fixed lane order, fixed reduction order.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/ref_kernels.h"

namespace flashstar::cuda::fast {

// Fills this unit's device copies of the IQ2_XXS grid and sign-mask tables (once per process; must run
// outside stream capture). expert_matvec also calls it lazily.
void init_expert_tables();

// Whether expert_matvec can take weights of this type and width (alignment of the call is checked there).
bool expert_matvec_supported(const DMat& W);

// Same contract as cuda::matmul_items: item i multiplies rows [mat_of_item[i] * rows_per_mat, +rows_per_mat)
// of W with row i / src_div of X (stride xs), writing Y + i * ys. Returns false, launching nothing, for
// shapes or alignments it does not take (the caller then runs another kernel).
bool expert_matvec(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                   int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s);

// The routed experts' gate, up and swiglu at decode in one launch: G = swiglu(Wg x, Wu x) as cuda::swiglu
// computes it (clamp lim, times w[item]; w may be null), bitwise equal to the three launches expert_matvec
// (gate into G), expert_matvec (up into U), cuda::swiglu(G, U, n_items, rows_per_mat, lim, w). Wg and Wu
// of one type and width; G and U are [n_items][rows_per_mat]; U is scratch (mode 2 leaves the up rows
// there, mode 1 does not touch it). Runs in expert_fused_mode(): 1, a block computes both matrices' rows of
// its items; 2, gate and up rows in separate blocks, the swiglu by the later of each pair (tickets shared by
// the device's launches: one at a time). False, launching nothing, in mode 0 and where either
// expert_matvec would refuse (the caller then runs the three launches).
bool expert_gate_up_fused(const DMat& Wg, const DMat& Wu, int64_t rows_per_mat, const int32_t* mat_of_item,
                          int32_t src_div, const float* X, int64_t xs, int64_t n_items, float lim, const float* w,
                          float* G, float* U, cudaStream_t s);
// The decode path the session runs: expert_gate_up_fused where it takes the call, else the three launches,
// the gate and up products on matvec_items (fast_kernels.h; matmul_items where it refuses) with work as its
// workspace, then cuda::swiglu. With fast_route false (the moe route off): matmul_items twice and swiglu.
void expert_gate_up_swiglu(bool fast_route, const DMat& Wg, const DMat& Wu, int64_t rows_per_mat,
                           const int32_t* mat_of_item, int32_t src_div, const float* X, int64_t xs, int64_t n_items,
                           float lim, const float* w, float* G, float* U, cudaStream_t s, float* work = nullptr,
                           int64_t work_floats = 0);
// FLASHSTAR_EXPERT_FUSED=0|1|2 (read once, default 1; 0 the three launches, for A/B comparisons);
// expert_set_fused_mode changes it (tests).
int expert_fused_mode();
void expert_set_fused_mode(int mode);
// FLASHSTAR_EXPERT_V=0|1|2 (read once, default 1): 0 the first kernel (16-byte copies a lane per row, for
// A/B comparisons); 1 and 2 stage whole 128- / 64-byte line windows of a row by 8 / 4 lanes and store the
// digits and read Q2_K quant words without bank conflicts. The same bytes reach the same registers, so the
// outputs are bitwise those of 0. expert_set_version changes it (tests).
int expert_version();
void expert_set_version(int v);

}  // namespace flashstar::cuda::fast
