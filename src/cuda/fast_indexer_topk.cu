// Decode top-k of the indexer (the default; FLASHSTAR_ATTN_DECODE_V2=0 or =flash the old one-block radix
// select of fast_attention.cu). The old kernel (256 threads) made four 8-bit passes over all n_vis
// scores from global memory plus a final pass of 2 barriers per 256 rows: about 9.3 us at 4k-8k context
// for a few microseconds of work, nearly all of it dependent latency (L2 loads, barriers, a serial final
// walk of n_vis / 256 steps). Here, one block of 1024 threads per query:
//   - the scores are read once (8 loads a thread in flight), turned into order keys and kept in shared
//     memory (up to itk::kMaxStaged rows; beyond it the passes read global memory again), and the first
//     digit's histogram is built in the same sweep;
//   - three digits of 11/11/10 bits instead of four of 8 (indexer_topk_plan.h): one pass fewer;
//   - the histogram adds are warp-aggregated (one atomic per distinct bin of a warp): the scores share
//     their high digits (sign, exponent), so per-lane atomics to one address serialized;
//   - the final pass gives warp w a contiguous range of rows: the warps count their kept rows, one
//     barrier and a scan over the 32 warps, then every warp writes its ids with no further barrier.
// The selection is the same set as the old kernel's: both find the exact key of the top_k-th largest
// score (a property of the keys, not of the digit split) and keep the rows above it plus the lowest-id
// rows equal to it; both write the kept ids in ascending row order. tests/test_indexer_topk_plan.cpp
// checks the steps on the host, tests/cuda/test_indexer_topk.cpp old against new on the GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/indexer_topk_plan.h"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

using itk::kThreads;
using itk::kWarps;

// Adds one to `bin` for each lane with `valid`, one atomic per distinct bin of the warp: equal scores
// share every digit, and most scores share the first one, so per-lane atomics on one shared address
// serialized up to 32 deep. Integer counts: the order of the adds does not matter. Every lane calls it.
__device__ __forceinline__ void hist_add(int* hist, uint32_t bin, bool valid) {
  const unsigned act = __ballot_sync(0xffffffffu, valid);
  if (!valid) return;
  const unsigned peers = __match_any_sync(act, bin);
  if ((threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
}

// The key of row i: from the staged copy, or the score again from global memory past kMaxStaged.
struct Keys {
  const float* sc;
  const uint32_t* sk;
  bool staged;
  __device__ uint32_t operator()(int64_t i) const { return staged ? sk[i] : itk::order_key(sc[i]); }
};

constexpr int kBatch = 8;  // loads a thread has in flight in a sweep

__global__ void __launch_bounds__(kThreads) indexer_topk_v2_kernel(const float* scores, int64_t stride, int64_t pos0,
                                                                   int ratio, int top_k, int32_t* sel,
                                                                   const int64_t* pos_dev, int64_t staged_cap) {
  pdl_wait();
  extern __shared__ uint32_t keys_s[];
  __shared__ int hist[itk::kMaxBins];
  __shared__ int wtot[kWarps];
  __shared__ int wcnt[kWarps][2];
  __shared__ uint32_t s_prefix;
  __shared__ int s_rem;
  if (pos_dev) pos0 = *pos_dev;
  const int64_t t = blockIdx.x;
  const int64_t n_vis = (pos0 + t + 1) / ratio;
  int32_t* out = sel + t * top_k;
  if (n_vis <= top_k) {  // every row (as the old kernel)
    for (int i = threadIdx.x; i < top_k; i += kThreads) out[i] = i < n_vis ? i : -1;
    return;
  }
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const unsigned lt = (1u << lane) - 1u;  // lanes below this one
  const float* sc = scores + t * stride;
  const Keys key{sc, keys_s, n_vis <= staged_cap};
  for (int i = tid; i < itk::kMaxBins; i += kThreads) hist[i] = 0;
  __syncthreads();
  // the first sweep: keys staged and the first digit counted (loop bounds uniform per warp: hist_add's
  // ballots need every lane)
  for (int64_t b0 = 0; b0 < n_vis; b0 += kBatch * kThreads) {
    uint32_t k[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int64_t i = b0 + u * kThreads + tid;
      k[u] = i < n_vis ? itk::order_key(sc[i]) : 0u;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int64_t i = b0 + u * kThreads + tid;
      if (i < n_vis && key.staged) keys_s[i] = k[u];
      hist_add(hist, itk::digit(k[u], 0), i < n_vis);
    }
  }
  __syncthreads();

  uint32_t prefix = 0;
  int rem = top_k;  // keys still to take at and below the prefix
  for (int p = 0;;) {
    // The bucket b with S(b) >= rem > S(b + 1), S(b) = matching keys in buckets b and above. Thread
    // owns bins 2 tid, 2 tid + 1 (bins past the digit's width stay zero); it zeroes them for the next
    // pass once read. Suffix sums over the lanes, then over the warps, by shuffles.
    {
      const int b_lo = tid * itk::kBinsPerThread;
      const int h0 = hist[b_lo], h1 = hist[b_lo + 1];
      hist[b_lo] = 0, hist[b_lo + 1] = 0;
      int suf = h0 + h1;
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const int v = __shfl_down_sync(0xffffffffu, suf, off);
        if (lane + off < 32) suf += v;
      }
      if (lane == 0) wtot[warp] = suf;
      __syncthreads();
      int wsuf = wtot[lane];
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const int v = __shfl_down_sync(0xffffffffu, wsuf, off);
        if (lane + off < 32) wsuf += v;
      }
      const int later = __shfl_sync(0xffffffffu, wsuf, (warp + 1) & 31);
      const int after = suf - h0 - h1 + (warp + 1 < kWarps ? later : 0);  // S(b_lo + 2)
      int new_rem = 0;
      const int bin = itk::pick_bin(b_lo, h0, h1, after, rem, new_rem);
      if (bin >= 0) s_rem = new_rem, s_prefix = prefix | (static_cast<uint32_t>(bin) << itk::shift_of(p));
      __syncthreads();
      prefix = s_prefix, rem = s_rem;
    }
    if (++p == itk::kPasses) break;
    const uint32_t km = itk::known_mask(p);
    for (int64_t b0 = 0; b0 < n_vis; b0 += kBatch * kThreads) {
      uint32_t k[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int64_t i = b0 + u * kThreads + tid;
        k[u] = i < n_vis ? key(i) : 0u;
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int64_t i = b0 + u * kThreads + tid;
        hist_add(hist, itk::digit(k[u], p), i < n_vis && (k[u] & km) == prefix);
      }
    }
    __syncthreads();
  }

  // The final pass: `prefix` is the top_k-th largest key; keep the rows above it and the first `rem`
  // rows equal to it. Warp w counts its range, then writes at (kept rows of earlier warps) + (kept
  // rows earlier in its range), so the ids come out ascending.
  const uint32_t thr = prefix;
  const int take_eq = rem;
  const int64_t wb = itk::warp_begin(n_vis, warp), we = itk::warp_end(n_vis, warp);
  int gt = 0, eq = 0;
  for (int64_t r0 = wb; r0 < we; r0 += 32) {
    const int64_t i = r0 + lane;
    const uint32_t k = i < we ? key(i) : 0u;
    gt += __popc(__ballot_sync(0xffffffffu, i < we && k > thr));
    eq += __popc(__ballot_sync(0xffffffffu, i < we && k == thr));
  }
  if (lane == 0) wcnt[warp][0] = gt, wcnt[warp][1] = eq;
  __syncthreads();
  int gi = wcnt[lane][0], ei = wcnt[lane][1];  // inclusive prefix sums over the warps
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int g = __shfl_up_sync(0xffffffffu, gi, off), e = __shfl_up_sync(0xffffffffu, ei, off);
    if (lane >= off) gi += g, ei += e;
  }
  const int gt_before = warp ? __shfl_sync(0xffffffffu, gi, warp - 1) : 0;
  const int eq_before = warp ? __shfl_sync(0xffffffffu, ei, warp - 1) : 0;
  int pos = gt_before + min(eq_before, take_eq), eq_rank = eq_before;
  for (int64_t r0 = wb; r0 < we; r0 += 32) {
    const int64_t i = r0 + lane;
    const uint32_t k = i < we ? key(i) : 0u;
    const bool is_gt = i < we && k > thr, is_eq = i < we && k == thr;
    const unsigned eq_m = __ballot_sync(0xffffffffu, is_eq);
    const bool keep = is_gt || (is_eq && eq_rank + __popc(eq_m & lt) < take_eq);
    const unsigned keep_m = __ballot_sync(0xffffffffu, keep);
    const int p = pos + __popc(keep_m & lt);
    if (keep && p < top_k) out[p] = static_cast<int32_t>(i);
    pos += __popc(keep_m), eq_rank += __popc(eq_m);
  }
}

int& decode_v2_flag() {
  static int on = [] {
    const char* v = std::getenv("FLASHSTAR_ATTN_DECODE_V2");
    if (!v || !*v) return kDecodeV2TopK;
    const std::string s = v;
    if (s == "0") return 0;
    if (s == "1") return kDecodeV2TopK | kDecodeV2Flash;
    if (s == "topk") return kDecodeV2TopK;
    if (s == "flash") return kDecodeV2Flash;
    fail("FLASHSTAR_ATTN_DECODE_V2=%s: expected 0, 1, topk or flash", v);
  }();
  return on;
}

}  // namespace

int attention_decode_v2() { return decode_v2_flag(); }
void attention_decode_set_v2(int parts) { decode_v2_flag() = parts & (kDecodeV2TopK | kDecodeV2Flash); }

void indexer_topk_v2(const float* scores, int64_t stride, int64_t pos0, int64_t n, int ratio, int top_k, int32_t* sel,
                     cudaStream_t s, const int64_t* pos_dev, int64_t max_vis) {
  if (n <= 0) return;
  // shared memory for the largest row count a query can have (the decode graph: the scratch row)
  const int64_t cap = std::max<int64_t>(0, std::min<int64_t>(max_vis, itk::kMaxStaged));
  const int smem = static_cast<int>(cap * 4);
  static int smem_set = 0;
  if (smem > smem_set) {
    FS_CUDA_CHECK(cudaFuncSetAttribute(indexer_topk_v2_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    smem_set = smem;
  }
  indexer_topk_v2_kernel<<<static_cast<unsigned>(n), kThreads, smem, s>>>(scores, stride, pos0, ratio, top_k, sel,
                                                                           pos_dev, cap);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace flashstar::cuda::fast
