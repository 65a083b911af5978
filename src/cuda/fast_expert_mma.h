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

}  // namespace flashstar::cuda::fast
