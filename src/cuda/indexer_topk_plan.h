// Index math of the decode top-k (fast_indexer_topk.cu), host and device: the radix digits, which bins a
// thread owns in the bucket search, which rows a warp walks in the final pass, and a host emulation of
// the whole selection in the kernel's own steps. They live here so that tests/test_indexer_topk_plan.cpp
// checks them without a GPU against a sort: the selection must be the old kernel's set (the top_k rows
// by (score desc, row asc)) whatever the digit split.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__CUDACC__)
#define ITK_HD __host__ __device__ __forceinline__
#else
#define ITK_HD inline
#endif

namespace flashstar::cuda::itk {

constexpr int kThreads = 1024;  // one block per query: 32 warps
constexpr int kWarps = kThreads / 32;
// Three digits of 11, 11 and 10 bits (the old kernel: four of 8). Each pass is a histogram, a bucket
// search and three barriers, so one pass fewer is a quarter of the dependent steps; 2048 bins keep the
// histogram (8 KiB) and the search (two bins a thread) small.
constexpr int kPasses = 3;
// (functions, not arrays: device code cannot read a host constexpr array)
ITK_HD constexpr int shift_of(int pass) { return pass == 0 ? 21 : pass == 1 ? 10 : 0; }
ITK_HD constexpr int bits_of(int pass) { return pass == 2 ? 10 : 11; }
constexpr int kMaxBins = 2048;
constexpr int kBinsPerThread = kMaxBins / kThreads;  // 2
// Keys staged in shared memory: up to this many rows (192 KiB), beyond it each pass reads the scores
// again from global memory (the same steps, so the same result).
constexpr int64_t kMaxStaged = 49152;

ITK_HD uint32_t order_key(float f) {  // larger key = larger score; -0 below +0 (the scores never hold -0)
#if defined(__CUDA_ARCH__)
  const uint32_t u = __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
#endif
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
ITK_HD uint32_t digit_mask(int pass) { return ((1u << bits_of(pass)) - 1u) << shift_of(pass); }
ITK_HD uint32_t digit(uint32_t key, int pass) { return (key >> shift_of(pass)) & ((1u << bits_of(pass)) - 1u); }
// bits of the key fixed before `pass` (all higher digits)
ITK_HD uint32_t known_mask(int pass) { return pass == 0 ? 0u : ~((1u << (shift_of(pass - 1))) - 1u); }

// The bucket search of one thread, which owns bins b_lo and b_lo + 1 (counts h0, h1) with `after` keys in
// the bins above them: the bin b with S(b) >= rem > S(b + 1) (S(b): keys in bins b and above) if it is
// one of this thread's, else -1; new_rem = the keys still to take inside that bin. Exactly one thread
// of the block answers: S falls from the whole count (>= rem) to 0 (< rem) across the bins.
ITK_HD int pick_bin(int b_lo, int h0, int h1, int after, int rem, int& new_rem) {
  if (after < rem && after + h1 >= rem) {
    new_rem = rem - after;
    return b_lo + 1;
  }
  if (after + h1 < rem && after + h1 + h0 >= rem) {
    new_rem = rem - after - h1;
    return b_lo;
  }
  return -1;
}

// The final pass: warp w walks rows [begin, end) in steps of 32 (lane l: row begin + 32 j + l), so that a
// warp's rows are contiguous and ascending and the warps' ranges follow each other: the output position
// of a kept row is (kept rows of earlier warps) + (kept rows earlier in this warp).
ITK_HD int64_t warp_span(int64_t n_vis) { return (n_vis + 32 * kWarps - 1) / (32 * kWarps) * 32; }
ITK_HD int64_t warp_begin(int64_t n_vis, int w) {
  const int64_t b = w * warp_span(n_vis);
  return b < n_vis ? b : n_vis;
}
ITK_HD int64_t warp_end(int64_t n_vis, int w) { return warp_begin(n_vis, w + 1); }

// Host emulation of the kernel, step for step: three histogram passes with the same bucket search
// (S(b) = keys in buckets >= b, the bucket with S(b) >= rem > S(b + 1)), then the per-warp final pass.
// Returns the top_k row ids in ascending order (n_vis <= top_k: 0..n_vis-1, then -1).
inline std::vector<int32_t> emulate(const float* scores, int64_t n_vis, int top_k) {
  std::vector<int32_t> out(static_cast<size_t>(top_k), -1);
  if (n_vis <= top_k) {
    for (int64_t i = 0; i < n_vis; ++i) out[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    return out;
  }
  uint32_t prefix = 0;
  int64_t rem = top_k;
  for (int p = 0; p < kPasses; ++p) {
    std::vector<int64_t> hist(kMaxBins, 0);
    for (int64_t i = 0; i < n_vis; ++i) {
      const uint32_t k = order_key(scores[i]);
      if ((k & known_mask(p)) == prefix) ++hist[digit(k, p)];
    }
    int64_t above = 0;  // S(b + 1)
    for (int b = kMaxBins - 1; b >= 0; --b) {
      if (above < rem && above + hist[b] >= rem) {
        rem -= above;
        prefix |= static_cast<uint32_t>(b) << shift_of(p);
        break;
      }
      above += hist[b];
    }
  }
  int64_t gt_before = 0, eq_before = 0;
  for (int w = 0; w < kWarps; ++w) {
    int64_t gt = 0, eq = 0;
    for (int64_t i = warp_begin(n_vis, w); i < warp_end(n_vis, w); ++i) {
      const uint32_t k = order_key(scores[i]);
      if (k > prefix) ++gt;
      else if (k == prefix) ++eq;
    }
    int64_t pos = gt_before + (eq_before < rem ? eq_before : rem), eq_rank = eq_before;
    for (int64_t i = warp_begin(n_vis, w); i < warp_end(n_vis, w); ++i) {
      const uint32_t k = order_key(scores[i]);
      const bool keep = k > prefix || (k == prefix && eq_rank++ < rem);
      if (keep && pos < top_k) out[static_cast<size_t>(pos++)] = static_cast<int32_t>(i);
    }
    gt_before += gt, eq_before += eq;
  }
  return out;
}

}  // namespace flashstar::cuda::itk
