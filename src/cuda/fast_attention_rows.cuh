// Attention rows of a query (shared by the attention kernels of fast_attention.cu and
// fast_attention_decode.cu): the raw sliding window first, then the compressed rows (selected or all).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/ref_kernels.h"

namespace flashstar::cuda::fast {

// Row j of query t's attention rows: the raw window first, then the compressed rows (selected or all).
// Built by whole warps (every lane of a warp constructs it together): the selected rows are a prefix of
// sel[t] ended by -1, and the warp finds its length with ballots instead of a serial walk.
__device__ __forceinline__ AttentionArgs resolved(AttentionArgs a) {
  if (a.pos_dev) a.pos0 = *a.pos_dev, a.hist_pos0 = a.pos0 - a.hist_lag;
  return a;
}

struct RowMap {
  const AttentionArgs* a;
  int64_t t, raw_lo, n_raw, n_rows;
  __device__ RowMap(const AttentionArgs& args, int64_t t_) : a(&args), t(t_) {
    const int64_t pos = a->pos0 + t;
    raw_lo = pos - a->n_swa + 1 > 0 ? pos - a->n_swa + 1 : 0;
    n_raw = pos - raw_lo + 1;
    int64_t n_comp = 0;
    if (a->ratio) {
      n_comp = (pos + 1) / a->ratio;
      if (a->sel) {
        const int lane = threadIdx.x & 31;
        const int32_t* s = a->sel + t * a->top_k;
        int64_t first_neg = a->top_k;
        // 8 loads in flight per lane before the ballots (one at a time was 16 dependent L2 trips for 512)
        constexpr int kBatch = 8;
        for (int c0 = 0; c0 < a->top_k && first_neg == a->top_k; c0 += 32 * kBatch) {
          bool neg[kBatch];
#pragma unroll
          for (int b = 0; b < kBatch; ++b) {
            const int c = c0 + 32 * b + lane;
            neg[b] = c < a->top_k && s[c] < 0;
          }
#pragma unroll
          for (int b = 0; b < kBatch; ++b) {
            const unsigned m = __ballot_sync(0xffffffffu, neg[b]);
            if (m && first_neg == a->top_k) first_neg = c0 + 32 * b + __ffs(m) - 1;
          }
        }
        n_comp = first_neg;
      }
    }
    n_rows = n_raw + n_comp;
  }
  __device__ const float* row(int64_t r) const {
    if (r >= n_rows) return nullptr;
    const int hd = a->head_dim;
    if (r < n_raw) return a->hist + (raw_lo + r - a->hist_pos0) * hd;
    const int64_t c = r - n_raw;
    return a->comp + (a->sel ? a->sel[t * a->top_k + c] : c) * hd;
  }
};

// The decode path (<= 8 queries): one flash-decoding launch (fast_attention_decode.cu). scratch holds
// the row splits' partial outputs; with too little of it (scratch_floats) the rows split fewer ways.
// Returns true when it applied the inverse RoPE of a.out_rope_freq to the output.
bool flash_decode_attention(const AttentionArgs& a, float* scratch, int64_t max_rows, cudaStream_t s,
                            int64_t scratch_floats);

}  // namespace flashstar::cuda::fast
