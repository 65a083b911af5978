// Decode-time Q8_0 matrix-vector products as one persistent streaming kernel (fast_matvec_q8.cu).
// Same contracts as cuda::matmul / cuda::matmul_items (ref_kernels.h). Each returns false, launching
// nothing, when it cannot take the call: W not Q8_0, cols not a multiple of 256 (so that every row is
// 16-byte aligned at every 256 columns), row_bytes not a multiple of 16, W.data or X not 16-byte
// aligned, xs not a multiple of 4, more than 8 tokens (matvec), src_div < 1 (items). Results are
// deterministic run to run: the column splits depend on the shape and the device only, and partial
// sums are added in a fixed order inside a block (no atomics, no workspace).
// One or two tokens (and items) run on the INT8 tensor cores (fast_matvec_q8_mma.cu) where that kernel takes
// the shape (its activation digits fit in shared memory), the fp32 streaming kernel otherwise.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/ref_kernels.h"

namespace flashstar::cuda::fast {

// Y[t][r] = W.row(row0 + r) . X[t] for r < n_rows, t < n_tok (n_tok <= 8).
bool q8_matvec(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
               int64_t ys, cudaStream_t s);

// Y[i][r] = W.row(mat_of_item[i] * rows_per_mat + r) . X[i / src_div] for r < rows_per_mat, i < n_items.
bool q8_matvec_items(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                     int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s);

}  // namespace flashstar::cuda::fast
