// Prefill indexer scores (more than 8 queries) as a GEMM: a block takes 4 consecutive queries (their
// 4 x 64 heads staged once in FP16) and walks tiles of 64 index rows, each row tile converted to FP16
// once for all 4 queries; the per-query tile kernel of fast_attention.cu re-read and re-converted both
// operands for every 64 x 64 product, and with the official numerics it spent three mma per step on
// operands whose low FP16 terms are all zero.
//
// Exactness: with the official numerics the queries and the keys went through Hadamard + FP4 E2M1
// (values {0.5 .. 6} x 2^k with a power-of-two block scale), so x = hi exactly and lo = x - hi = 0; the
// block ORs the staged lo terms (__syncthreads_or) and, when all are zero, runs one mma per step. That
// is bitwise what three mma give: the two skipped products are exact zeros (lo x anything), and adding
// exact zeros to an fp32 accumulator C leaves C unchanged (the exact sum is C itself, representable;
// a flushed subnormal C would be flushed by the next real mma on both paths alike). When a value is too
// small for FP16 (scale below 2^-23: hi, and lo, round to zero or to a subnormal) the lo term is what
// the three-mma path would use too: zero means the same products there, nonzero takes the three-mma
// path. Clean numerics (no FP4) give nonzero lo terms: three mma, as before.
//
// Numerics otherwise equal the per-query kernel element for element: the same two-term split, the same
// mma order per 16-wide k step (Q lo x K hi, Q hi x K lo, Q hi x K hi; here K is the A operand and Q
// the B operand, the same three dot products), and the same head-ordered sum
// s = fma(max(0, d_h), w_h * wscale, s) for h = 0..63 from s = 0, a zero written as +0. A query's
// scores do not depend on the other queries of its block or on the row split: every output element is
// its own dot product, and the exactness switch changes nothing bitwise (above).
// Index maps: indexer_prefill_map.h (checked on the host by tests/test_indexer_prefill_map.cpp).
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>

#include "cuda/device_info.h"
#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/indexer_prefill_map.h"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

using namespace ipf;

// hi and lo FP16 terms of (a, b), as fast_attention.cu splits them
__device__ __forceinline__ void split2(float a, float b, uint32_t& hi, uint32_t& lo) {
  hi = mma::pack_f16(a, b);
  lo = mma::pack_f16_lo(a, b, hi);
}
// 8 values into an hi chunk and a lo chunk; nz collects the lo bits (the sign of a zero ignored)
__device__ __forceinline__ void split8(const float4& x0, const float4& x1, uint4& hi, uint4& lo, uint32_t& nz) {
  split2(x0.x, x0.y, hi.x, lo.x);
  split2(x0.z, x0.w, hi.y, lo.y);
  split2(x1.x, x1.y, hi.z, lo.z);
  split2(x1.z, x1.w, hi.w, lo.w);
  nz |= (lo.x | lo.y | lo.z | lo.w) & 0x7fff7fffu;
}


// The next K tile's fp32 values into registers (rows at or past `rows_end` as zeros): issued before
// the current tile's product so that their latency hides behind it.
__device__ __forceinline__ void load_k(float4 (&pf)[kKChunks][2], const float* rows, int64_t r0, int64_t rows_end,
                                       int tid) {
#pragma unroll
  for (int j = 0; j < kKChunks; ++j) {
    const int c = tid + j * kThreads;
    const int64_t r = r0 + chunk_row(c);
    if (r < rows_end) {
      const float4* p = reinterpret_cast<const float4*>(rows + r * kDim + chunk_col(c));
      pf[j][0] = __ldg(p);
      pf[j][1] = __ldg(p + 1);
    } else {
      pf[j][0] = pf[j][1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  }
}
__device__ __forceinline__ uint32_t store_k(const float4 (&pf)[kKChunks][2], uint16_t* khi, uint16_t* klo, int tid) {
  uint32_t nz = 0;
#pragma unroll
  for (int j = 0; j < kKChunks; ++j) {
    const int c = tid + j * kThreads;
    uint4 hi, lo;
    split8(pf[j][0], pf[j][1], hi, lo, nz);
    const int off = chunk_row(c) * kLd + chunk_col(c);
    *reinterpret_cast<uint4*>(khi + off) = hi;
    *reinterpret_cast<uint4*>(klo + off) = lo;
  }
  return nz;
}

// The warp's 32 rows x 64 heads over k = 0..127. kExact: hi terms only (one mma per step); else the
// three mma of fast_attention.cu's mma3 in its order, per element: Q lo K hi, Q hi K lo, Q hi K hi.
template <bool kExact>
__device__ __forceinline__ void tile_product(float (&acc)[2][8][4], const uint16_t* khi, const uint16_t* klo,
                                             const uint16_t* qhi, const uint16_t* qlo, int lane) {
#pragma unroll 2
  for (int k0 = 0; k0 < kDim; k0 += 16) {
    uint32_t a[2][4], al[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int off = a_ldsm_row(lane, mt) * kLd + k0 + a_ldsm_col(lane);
      mma::ldmatrix_x4(a[mt], khi + off);
      if (!kExact) mma::ldmatrix_x4(al[mt], klo + off);
    }
#pragma unroll
    for (int nj = 0; nj < 4; ++nj) {
      uint32_t b[4], bl[4];
      const int off = b_ldsm_row(lane, nj) * kLd + k0 + b_ldsm_col(lane);
      mma::ldmatrix_x4(b, qhi + off);
      if (!kExact) mma::ldmatrix_x4(bl, qlo + off);
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          float (&d)[4] = acc[mt][2 * nj + h];
          if (!kExact) {
            mma::mma_f16(d, a[mt], bl[2 * h], bl[2 * h + 1]);   // Q lo . K hi
            mma::mma_f16(d, al[mt], b[2 * h], b[2 * h + 1]);   // Q hi . K lo
          }
          mma::mma_f16(d, a[mt], b[2 * h], b[2 * h + 1]);      // Q hi . K hi
        }
    }
  }
}

// Scores of the warp's 32 rows: per row s = fma(max(0, d_h), w_h, s) over h = 0..63 in order. Lane q of
// a quad holds heads 16q..16q+15 of the quad's 4 row slots, so the chain runs in 4 hops: every lane
// continues the running sums with its own 16 heads, and the sums of lane k (the only ones that are
// right after hop k) go to the whole quad. Lane q then writes slot q.
__device__ __forceinline__ void epilogue(const float (&acc)[2][8][4], const float (&wl)[16], float* srow,
                                         int64_t row0, int64_t vis, int lane) {
  float res[4];
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    const int mt = s >> 1, hh = s & 1;
    float x[16];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) x[2 * nt + e] = fmaxf(0.0f, acc[mt][nt][2 * hh + e]);
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      float v = sum;
#pragma unroll
      for (int i = 0; i < 16; ++i) v = __fmaf_rn(x[i], wl[i], v);
      sum = __shfl_sync(0xffffffffu, v, (lane & ~3) | k);
    }
    res[s] = sum;
  }
  const int ws = write_slot(lane);
  const float mine = ws == 0 ? res[0] : ws == 1 ? res[1] : ws == 2 ? res[2] : res[3];
  const int64_t r = row0 + slot_row(lane, ws);
  if (r < vis) srow[r] = mine == 0.0f ? 0.0f : mine;  // one zero: -0 ranks as +0
}

// grid (ceil(n / 4) query groups, row splits), kThreads threads, kSmemBytes of dynamic shared memory.
// Group x holds queries 4x..4x+3 (the last groups first: they have the most rows); split y takes the
// row tiles y, y + splits, ... up to the group's last visible row. Scores of query t go to
// scores[t * stride + r] for r < (pos0 + t + 1) / ratio only (the top-k reads no further).
__global__ void __launch_bounds__(kThreads, 1)
    indexer_prefill_kernel(const float* iq, const float* iw, float wscale, const float* rows, int64_t pos0, int64_t n,
                           int ratio, float* scores, int64_t stride, int force3) {
  pdl_wait();
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* const qhi = smem;
  uint16_t* const qlo = qhi + kQRows * kLd;
  uint16_t* const khi = qlo + kQRows * kLd;        // [2 buffers][kTR][kLd]
  uint16_t* const klo = khi + 2 * kTR * kLd;
  const int64_t t0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kQG;
  const int64_t t_last = (t0 + kQG < n ? t0 + kQG : n) - 1;
  const int64_t rows_end = (pos0 + t_last + 1) / ratio;  // the group's visible rows (the last query's)
  const int64_t n_tiles = (rows_end + kTR - 1) / kTR;
  int64_t tile = blockIdx.y;
  if (tile >= n_tiles) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int qi = warp >> 1, rbase = (warp & 1) * 32;
  const int64_t t = t0 + qi;
  const int64_t vis = t < n ? (pos0 + t + 1) / ratio : 0;

  float wl[16];  // w_h * wscale of the lane's heads 16q..16q+15, rounded as fast_attention.cu does
#pragma unroll
  for (int i = 0; i < 16; ++i) wl[i] = t < n ? __fmul_rn(iw[t * kHeads + 16 * (lane & 3) + i], wscale) : 0.0f;

  // Q of the group, once: smem row qi * 64 + p holds head q_row_head(p) of query t0 + qi; queries past n
  // as zeros.
  uint32_t nzq = 0;
#pragma unroll 4
  for (int j = 0; j < kQChunks; ++j) {
    const int c = tid + j * kThreads;
    const int r = chunk_row(c), tq = r / kHeads;
    float4 x0 = make_float4(0.0f, 0.0f, 0.0f, 0.0f), x1 = x0;
    if (t0 + tq < n) {
      const int64_t h = (t0 + tq) * kHeads + q_row_head(r % kHeads);
      const float4* p = reinterpret_cast<const float4*>(iq + h * kDim + chunk_col(c));
      x0 = __ldg(p);
      x1 = __ldg(p + 1);
    }
    uint4 hi, lo;
    split8(x0, x1, hi, lo, nzq);
    *reinterpret_cast<uint4*>(qhi + r * kLd + chunk_col(c)) = hi;
    *reinterpret_cast<uint4*>(qlo + r * kLd + chunk_col(c)) = lo;
  }
  float4 pf[kKChunks][2];
  load_k(pf, rows, tile * kTR, rows_end, tid);
  const uint32_t nzk0 = store_k(pf, khi, klo, tid);
  const bool q_inexact = __syncthreads_or(nzq != 0) != 0;
  bool k_inexact = __syncthreads_or(nzk0 != 0) != 0;

  float* const srow = scores + t * stride;
  for (int buf = 0;; buf ^= 1) {
    const int64_t r0 = tile * kTR, next = tile + gridDim.y;
    const bool has_next = next < n_tiles;
    if (has_next) load_k(pf, rows, next * kTR, rows_end, tid);
    if (r0 + rbase < vis) {  // warp-uniform: some of the warp's rows are visible to its query
      const uint16_t* kh = khi + buf * kTR * kLd + rbase * kLd;
      const uint16_t* kl = klo + buf * kTR * kLd + rbase * kLd;
      const uint16_t* qh = qhi + qi * kHeads * kLd;
      const uint16_t* ql = qlo + qi * kHeads * kLd;
      float acc[2][8][4] = {};
      if (force3 || q_inexact || k_inexact) tile_product<false>(acc, kh, kl, qh, ql, lane);
      else tile_product<true>(acc, kh, kl, qh, ql, lane);
      epilogue(acc, wl, srow, r0 + rbase, vis, lane);
    }
    if (!has_next) break;
    // The other buffer was last read before the previous barrier; this barrier publishes it.
    const uint32_t nz = store_k(pf, khi + (buf ^ 1) * kTR * kLd, klo + (buf ^ 1) * kTR * kLd, tid);
    k_inexact = __syncthreads_or(nz != 0) != 0;
    tile = next;
  }
}

int& mode_flag() {
  static int mode = [] {
    const char* v = std::getenv("FLASHSTAR_INDEXER_PREFILL_V2");
    if (v && v[0] == '0') return 0;
    if (v && v[0] == '3') return 3;
    return 1;
  }();
  return mode;
}



}  // namespace

void indexer_set_prefill_mode(int mode) { mode_flag() = mode; }
int indexer_prefill_mode() { return mode_flag(); }

bool indexer_scores_prefill(const float* iq, const float* iw, float wscale, const float* idx_rows, int head_dim,
                            int64_t pos0, int64_t n, int ratio, float* scores, int64_t stride, cudaStream_t s) {
  const int mode = mode_flag();
  if (mode == 0 || head_dim != kDim || n <= 0 || ratio <= 0 || !aligned16(iq) || !aligned16(idx_rows)) return false;
  const int64_t groups = (n + kQG - 1) / kQG;
  if (groups > 65535) return false;
  const int64_t tiles = ((pos0 + n) / ratio + kTR - 1) / kTR;  // of the last group, the largest
  if (tiles <= 0) return true;                                 // no query sees a row: nothing to score
  // Row splits only when the groups alone leave SMs idle (few queries); each split keeps 4 tiles or
  // more: staging the group's Q converts as much as 4 K tiles do, small next to their products.
  const int64_t want = 2 * static_cast<int64_t>(current_sm_count());
  int64_t splits = 1;
  if (groups < want) splits = std::min<int64_t>((want + groups - 1) / groups, std::max<int64_t>(1, tiles / 4));
  splits = std::min<int64_t>(splits, 65535);
  // 204 KiB of shared memory: a device that cannot give it (before Hopper) keeps the old kernel.
  static const bool smem_ok = [] {
    if (cudaFuncSetAttribute(indexer_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes) ==
        cudaSuccess)
      return true;
    (void)cudaGetLastError();  // not an error of a later launch
    return false;
  }();
  if (!smem_ok) return false;
  const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(splits));
  indexer_prefill_kernel<<<grid, kThreads, kSmemBytes, s>>>(iq, iw, wscale, idx_rows, pos0, n, ratio, scores, stride,
                                                             mode == 3 ? 1 : 0);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace flashstar::cuda::fast
