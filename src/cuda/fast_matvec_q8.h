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

// Items whose matrix follows from the item alone: Y[i] = W.rows((i % n_groups) * rows_per_mat, +rows_per_mat)
// . X[i] (the grouped attention output at decode, one activation row per item), on the INT8 kernel only
// (false, launching nothing, where it does not take the call), bitwise equal to q8_matvec_items with that
// table. With no table to read, the kernel fetches its first weights before it waits for the previous
// kernel (pdl.cuh).
bool q8_decode_groups(const DMat& W, int64_t rows_per_mat, int32_t n_groups, const float* X, int64_t xs,
                      int64_t n_items, float* Y, int64_t ys, cudaStream_t s);

// The INT8 kernel's geometry, for A/B comparisons on the device (every setting computes the same bits):
// warps a block (8: two blocks an SM in clusters of two where the call's shared memory lets two fit, else
// 16; 16: one block an SM), the same for products of more than 128 MiB of weights (the output head), and
// the stages each warp asks L2 for ahead of its copies (0-8). From FLASHSTAR_Q8_STREAM_WARPS (8),
// FLASHSTAR_Q8_STREAM_HEAD_WARPS (16) and FLASHSTAR_Q8_STREAM_L2AHEAD (2), read once; q8_stream_set
// replaces them (tests) for the launches made after it.
struct Q8StreamSettings {
  int warps = 8, head_warps = 16, l2_ahead = 2;
};
void q8_stream_set(const Q8StreamSettings& st);
Q8StreamSettings q8_stream_settings();

}  // namespace flashstar::cuda::fast
