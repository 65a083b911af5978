// The hyper-connection pre step in one launch (see fast_hc_pre.h). At decode the four launches it
// replaces were each a few microseconds of mostly latency; here the mixer's weights stream through
// d / 64 blocks in a single DRAM round trip per thread, and the rest runs in the last block, which
// overlaps its loads of the streams and the norm weight with the reduction of the parts, and runs the
// Sinkhorn walk (the longest serial chain: 39 dependent normalisations) in 4 warps beside the 12 that
// form the weighted sums and norms (those need only the pre weights, a sigmoid of the mix). A pending
// post of the previous half-layer is applied by each block to its own columns while it stages them (the
// post's own launch, ~4 us at decode, is saved).
//
// Numerics: the dots are fp32 (explicit fmaf: this file is compiled with --fmad=false for the split, see
// hc_split.cuh), the sums of squares fp64 of float squares as in the reference norms; the scales are the
// reference's formula. The split, the weighted sum and the weighted norm round as hc_split_sum4 and
// rms_norm_vec do, so given the same mix the outputs would be theirs; the mix itself differs from the
// reference chain by fp32 rounding (the dot is taken before the scale, and in another order). The post
// runs the reference's element functions (d_slot_sum, d_hc_post_element) under the same flag as
// ref_ops.cu and fast_exact_ops.cu: the new streams are hc_post's / sum_slots_post's, bit for bit.
//
// Memory: the streams are read through L2 (__ldcg), never the read-only path: with a post they are
// written during the launch, and the last block reads all columns after the other blocks stored theirs
// (their stores precede their tickets' fences, last_block.cuh).
#include "cuda/cuda_util.h"
#include "cuda/fast_hc_pre.h"
#include "cuda/fast_quant.cuh"
#include "cuda/hc_split.cuh"
#include "cuda/last_block.cuh"
#include "cuda/warp_reduce.cuh"
#include "cuda/pdl.cuh"
#include "cuda/stream_lanes.h"

namespace flashstar::cuda::fast {
namespace {

using namespace hcp;
static_assert(kMix == kSplit, "the mixer has a row per split value");
static_assert(kRowsPerWarp * kRowGroups == kMix && 2 * kRowGroups == kWarps, "warps cover rows x column halves");
static_assert(kHalfCols == 4 * 32, "a warp covers 4 columns a lane");
static_assert(2 * kSplitWarps >= kMaxTok && kTailThreads % 32 == 0, "a half warp per token's split");
static_assert(int64_t(kTailThreads) * 4 * kTailPer >= kMaxDim, "the tail covers a row");
static_assert(kStreams == kHc && kColsPerPart * kHc == kPartCols && kColsPerPart % 4 == 0, "a part: 64 columns x 4 streams");
static_assert(kMaxTok * kColsPerPart <= kThreads && kMaxTok * kSplit <= kThreads, "a thread per staged column");

// One ticket per ticket lane (stream_lanes.h): launches on a decode fork's two streams never share it.
__device__ int g_hc_pre_ticket[kTicketLanes];

struct Params {
  const uint8_t* fn;
  size_t row_bytes;
  float* X;
  const float *scale, *base, *norm_w;
  float *mix, *split, *xin, *normed, *work;
  const float *post_f, *post_shared, *post_split;  // the pending post (post_kind != None)
  HcPost::Kind post_kind;
  int post_k;
  int64_t d;
  int n, parts, iters, lane;
  float norm_eps, hc_eps;
};


__device__ __forceinline__ float dot4(const float (&w)[4], float4 x) {
  return fmaf(w[3], x.w, fmaf(w[2], x.z, fmaf(w[1], x.y, w[0] * x.x)));
}
__device__ __forceinline__ double sq4(float4 x) {  // products of floats are exact in double
  return static_cast<double>(x.x) * x.x + static_cast<double>(x.y) * x.y + static_cast<double>(x.z) * x.z +
         static_cast<double>(x.w) * x.w;
}
// hc_sum_kernel's sum for one element (the same expression: the file does not contract).
__device__ __forceinline__ float pre_sum(const float* pre, float a, float b, float c, float e) {
  float acc = 0;
  acc += pre[0] * a;
  acc += pre[1] * b;
  acc += pre[2] * c;
  acc += pre[3] * e;
  return acc;
}
__device__ __forceinline__ float4 pre_sum4(const float* pre, const float4 (&x)[kHc]) {
  return make_float4(pre_sum(pre, x[0].x, x[1].x, x[2].x, x[3].x), pre_sum(pre, x[0].y, x[1].y, x[2].y, x[3].y),
                     pre_sum(pre, x[0].z, x[1].z, x[2].z, x[3].z), pre_sum(pre, x[0].w, x[1].w, x[2].w, x[3].w));
}

// This block's part: its 64 columns of the 4 streams staged in shared memory (the pending post applied
// on the way, the new values stored), then 3 mixer rows x 128 values a warp, every staged value serving
// the 3 rows.
// This thread's mixer weights: 4 columns of its warp's 3 rows.
template <GgmlType T>
__device__ __forceinline__ void part_weights(const Params& p, float (&w)[kRowsPerWarp][4]) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t c = col_of(blockIdx.x, warp, lane, p.d);
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
    load_float4w<T>(p.fn + static_cast<size_t>(row_of(warp, r)) * p.row_bytes, c, w[r]);
}

// kLean: the weights w come loaded (before the PDL wait); else they are loaded into w here, first.
template <GgmlType T, int NT, bool kLean>
__device__ __forceinline__ void part_sums(const Params& p, float (&w)[kRowsPerWarp][4], float (*s_x)[kPartCols],
                                          float (*s_sp)[kSplit], float (*s_dot)[NT][kMix], double (*s_ss)[NT]) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if constexpr (!kLean) part_weights<T>(p, w);  // the weights first: in flight while the streams are staged

  const bool post = p.post_kind != HcPost::Kind::None;
  const int st = stage_token(tid);
  const int64_t i = stage_col(blockIdx.x, tid);
  float col[kHc], f = 0.0f;
  if (st < p.n) {
#pragma unroll
    for (int s = 0; s < kHc; ++s) col[s] = __ldcg(p.X + (st * kHc + s) * p.d + i);
    if (p.post_kind == HcPost::Kind::Plain) f = __ldg(p.post_f + st * p.d + i);
    else if (post) f = d_slot_sum(p.post_f, p.post_shared, p.post_k, p.d, st, i);
  }
  if (post) {  // uniform over the block
    if (tid < p.n * kSplit) s_sp[tid / kSplit][tid % kSplit] = __ldcg(p.post_split + tid);
    __syncthreads();
  }
  if (st < p.n) {
    if (post) d_hc_post_element(f, col, s_sp[st], kHc, 1, 0, 0);  // col as a 1-column X
#pragma unroll
    for (int s = 0; s < kHc; ++s) {
      if (post) p.X[(st * kHc + s) * p.d + i] = col[s];
      s_x[st][s * kColsPerPart + tid % kColsPerPart] = col[s];
    }
  }
  __syncthreads();

  float4 x[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t)
    x[t] = t < p.n ? *reinterpret_cast<const float4*>(&s_x[t][part_value(warp, lane)]) : make_float4(0, 0, 0, 0);
  float acc[kRowsPerWarp][NT];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[r][t] = dot4(w[r], x[t]);
  const int half = warp / kRowGroups;
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (t >= p.n) break;  // uniform over the block
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float v = warp_sum(acc[r][t]);
      if (lane == 0) s_dot[half][t][row_of(warp, r)] = v;
    }
    if (warp % kRowGroups == 0) {
      const double q = warp_sum(sq4(x[t]));
      if (lane == 0) s_ss[half][t] = q;
    }
  }
  __syncthreads();
  if (tid < p.n * kMix) {
    const int t = tid / kMix, row = tid % kMix;
    p.work[dot_slot(blockIdx.x, t, row, p.n)] = s_dot[0][t][row] + s_dot[1][t][row];
  } else if (tid < p.n * (kMix + 1)) {
    const int t = tid - p.n * kMix;
    reinterpret_cast<double*>(p.work + ss_offset(p.parts, p.n))[ss_slot(blockIdx.x, t, p.n)] = s_ss[0][t] + s_ss[1][t];
  }
}

// Tail warps' barrier (named barrier 1): the split warps have left the block's barrier by then.
__device__ __forceinline__ void tail_sync() { asm volatile("bar.sync 1, %0;\n" ::"n"(kTailThreads) : "memory"); }

// kLean (FLASHSTAR_HC_PRE_LEAN, default 1; measured: docs/PERFORMANCE.md, eleventh session): the mixer weights, scales and base, all constants,
// are fetched before pdl_wait() (they then arrive while the previous kernel finishes), and the ticket takes
// one thread's fences (last_to_finish_lean) instead of every thread's. The same values in the same order.
// kLater (HcPreArgs::split_later): the split warps leave at once; the split is fast::hc_split's of the
// stored mix, launched by the caller outside this kernel's critical path.
template <GgmlType T, int NT, bool kLean, bool kLater>
__global__ void __launch_bounds__(kThreads, 1) hc_pre_kernel(Params p) {
  // PDL-PROLOGUE (kLean): constants only before pdl_wait().
  if constexpr (!kLean) pdl_wait();
  __shared__ __align__(16) float s_x[NT][kPartCols];
  __shared__ float s_sp[NT][kSplit];
  __shared__ float s_dot[2][NT][kMix];
  __shared__ double s_ss[2][NT];
  __shared__ float s_scale[3], s_base[kMix];
  __shared__ float s_tot[NT * kMix], s_mix[NT * kMix], s_pre[NT * kHc], s_r[NT];
  __shared__ float s_split[(NT + 1) / 2 * 2 * kSplit];
  __shared__ double s_sstot[NT], s_red[2][kTailThreads / 32];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // The last block reads these: shared copies now (every block; they arrive with the part's loads), and
  // the norm weight's lines fetched into L2 across the blocks.
  if (tid < 3) s_scale[tid] = p.scale[tid];
  else if (tid < 3 + kMix) s_base[tid - 3] = p.base[tid - 3];
  {
    const int64_t lines = (p.d * 4 + 127) / 128;
    const int64_t l = blockIdx.x + static_cast<int64_t>(tid) * gridDim.x;
    if (l < lines) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p.norm_w + l * 32));
  }
  float w[kRowsPerWarp][4];
  if constexpr (kLean) {
    part_weights<T>(p, w);
    pdl_wait();
  }
  part_sums<T, NT, kLean>(p, w, s_x, s_sp, s_dot, s_ss);
  if (!(kLean ? last_to_finish_lean(&g_hc_pre_ticket[p.lane], p.parts)
              : last_to_finish(&g_hc_pre_ticket[p.lane], p.parts)))
    return;
  if (tid == 0) g_hc_pre_ticket[p.lane] = 0;  // every block has taken its ticket

  // Thread tt of the tail holds float4s tt, tt + kTailThreads, ... of a row; its stream values and norm
  // weights are loaded now, in flight while the parts are added (the streams through L2: other blocks
  // may have just written them).
  const int tt = tid - kSplitWarps * 32;
  const int64_t d4 = p.d / 4;
  const float4* X4 = reinterpret_cast<const float4*>(p.X);
  float4 xs[kTailPer][kHc], wn[kTailPer];
  auto load_x = [&](int t) {
#pragma unroll
    for (int k = 0; k < kTailPer; ++k) {
      const int64_t j = tt + static_cast<int64_t>(k) * kTailThreads;
#pragma unroll
      for (int s = 0; s < kHc; ++s)
        xs[k][s] = tt >= 0 && j < d4 ? __ldcg(X4 + (t * kHc + s) * d4 + j) : make_float4(0, 0, 0, 0);
    }
  };
  load_x(0);
#pragma unroll
  for (int k = 0; k < kTailPer; ++k) {
    const int64_t j = tt + static_cast<int64_t>(k) * kTailThreads;
    wn[k] = tt >= 0 && j < d4 ? __ldg(reinterpret_cast<const float4*>(p.norm_w) + j) : make_float4(0, 0, 0, 0);
  }

  // The parts in a fixed order: lane `sub` of a group of kSumLanes takes every kSumLanes-th part, then
  // a shuffle tree; the loads of one output are in flight together.
  const int outs = p.n * (kMix + 1), dots = p.n * kMix;
  const int grp = tid / kSumLanes, sub = tid % kSumLanes;
  const double* dwork = reinterpret_cast<const double*>(p.work + ss_offset(p.parts, p.n));
  for (int o0 = 0; o0 < outs; o0 += kThreads / kSumLanes) {  // uniform trip count: every lane shuffles
    const int o = o0 + grp;
    float v = 0.0f;
    double dv = 0.0;
    if (o < dots) {
#pragma unroll 8
      for (int z = sub; z < p.parts; z += kSumLanes) v += __ldcg(p.work + dot_slot(z, o / kMix, o % kMix, p.n));
    } else if (o < outs) {
#pragma unroll 8
      for (int z = sub; z < p.parts; z += kSumLanes) dv += __ldcg(dwork + ss_slot(z, o - dots, p.n));
    }
#pragma unroll
    for (int off = kSumLanes / 2; off > 0; off >>= 1) {
      v += __shfl_xor_sync(0xffffffffu, v, off);
      dv += __shfl_xor_sync(0xffffffffu, dv, off);
    }
    if (sub == 0 && o < dots) s_tot[o] = v;
    else if (sub == 0 && o < outs) s_sstot[o - dots] = dv;
  }
  __syncthreads();
  if (tid < p.n)
    s_r[tid] = static_cast<float>(1.0 / sqrt(s_sstot[tid] / static_cast<double>(kHc * p.d) + p.norm_eps));
  __syncthreads();
  if (tid < dots) {
    const int t = tid / kMix, i = tid % kMix;
    const float m = s_tot[tid] * s_r[t];
    s_mix[tid] = m;
    if (p.mix) p.mix[tid] = m;
    // the pre weights as the split computes them (same function, same value): the weighted sum need not
    // wait for the Sinkhorn walk
    if (i < kHc) s_pre[t * kHc + i] = d_hc_pre(m, s_scale[0], s_base[i], p.hc_eps);
  }
  __syncthreads();

  // The split warps: a half warp per token (whole warps call it: shuffles), off the tail's path.
  if (warp < kSplitWarps) {
    if (kLater || 2 * warp >= p.n) return;
    const int t = tid / 16, tc = t < p.n ? t : p.n - 1;
    hc_split_half_warp(s_mix + tc * kMix, s_scale, s_base, p.iters, p.hc_eps, t < p.n, s_split + t * kSplit);
    __syncwarp();
    if (t < p.n)
      for (int i = tid % 16; i < kSplit; i += 16) p.split[t * kSplit + i] = s_split[t * kSplit + i];
    return;
  }

  // The tail: per token the weighted sum of the streams (stored), its sum of squares over the tail's
  // threads, the weighted norm.
  const int twarp = tt / 32;
  for (int t = 0; t < p.n; ++t) {
    const float* pre = s_pre + t * kHc;
    float4 u[kTailPer];
    double q = 0.0;
#pragma unroll
    for (int k = 0; k < kTailPer; ++k) {
      const int64_t j = tt + static_cast<int64_t>(k) * kTailThreads;
      u[k] = pre_sum4(pre, xs[k]);
      if (j < d4) {
        reinterpret_cast<float4*>(p.xin + t * p.d)[j] = u[k];
        q += sq4(u[k]);
      }
    }
    if (t + 1 < p.n) load_x(t + 1);  // in flight during this token's norm
    q = warp_sum(q);
    if (lane == 0) s_red[t & 1][twarp] = q;  // alternate buffers: one barrier per token
    tail_sync();
    double ss = 0.0;
    for (int w = 0; w < kTailThreads / 32; ++w) ss += s_red[t & 1][w];
    const float r = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(p.d) + p.norm_eps));
#pragma unroll
    for (int k = 0; k < kTailPer; ++k) {
      const int64_t j = tt + static_cast<int64_t>(k) * kTailThreads;
      if (j < d4)
        reinterpret_cast<float4*>(p.normed + t * p.d)[j] =
            make_float4(u[k].x * r * wn[k].x, u[k].y * r * wn[k].y, u[k].z * r * wn[k].z, u[k].w * r * wn[k].w);
    }
  }
}

template <GgmlType T, bool kLean>
void launch(const Params& p, bool later, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(p.parts));
  if (later && p.n == 1) hc_pre_kernel<T, 1, kLean, true><<<grid, kThreads, 0, s>>>(p);
  else if (later) hc_pre_kernel<T, 2, kLean, true><<<grid, kThreads, 0, s>>>(p);  // hc_pre_supported: n <= 2
  else if (p.n == 1) hc_pre_kernel<T, 1, kLean, false><<<grid, kThreads, 0, s>>>(p);
  else if (p.n == 2) hc_pre_kernel<T, 2, kLean, false><<<grid, kThreads, 0, s>>>(p);
  else if (p.n <= 4) hc_pre_kernel<T, 4, kLean, false><<<grid, kThreads, 0, s>>>(p);
  else hc_pre_kernel<T, 8, kLean, false><<<grid, kThreads, 0, s>>>(p);
  FS_CUDA_LAUNCH_CHECK();
}

bool& lean_flag() {
  static bool on = env_choice("FLASHSTAR_HC_PRE_LEAN", 0, 1, 1) == 1;
  return on;
}

bool al(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

}  // namespace

bool hc_pre_supported(const HcPreArgs& a) {
  const DMat& W = a.fn;
  if (a.n_hc != kHc || a.d <= 0 || a.d % (kPartCols / kHc) || a.d > kMaxDim || a.n_tok < 0 || a.n_tok > kMaxTok ||
      a.iters < 0)
    return false;
  if ((W.type != GgmlType::F32 && W.type != GgmlType::F16) || !W.data || W.rows != kMix || W.cols != kHc * a.d ||
      W.row_bytes % 16 || !al(W.data, 16))
    return false;
  if (!a.X || !a.scale || !a.base || !a.norm_w || !a.split || !a.xin || !a.normed || !a.work)
    return false;
  if (!al(a.X, 16) || !al(a.norm_w, 16) || !al(a.xin, 16) || !al(a.normed, 16) || !al(a.work, 8)) return false;
  const HcPost& q = a.post;
  if (q.kind != HcPost::Kind::None && !q.split) return false;
  if (q.kind == HcPost::Kind::Plain && !q.f) return false;
  if (q.kind == HcPost::Kind::Slots && (q.k < 0 || q.k > kMaxSlots || (q.k > 0 && !q.f) || (q.k == 0 && !q.shared)))
    return false;
  if (a.split_later && (!a.mix || a.n_tok > 2)) return false;
  return a.work_floats >= work_floats(kHc * a.d / kPartCols, a.n_tok);
}

void hc_pre_set_lean(bool on) { lean_flag() = on; }
bool hc_pre_lean() { return lean_flag(); }

bool hc_pre(const HcPreArgs& a, cudaStream_t s) {
  if (!hc_pre_supported(a)) return false;
  if (a.n_tok == 0) return true;
  Params p;
  p.fn = a.fn.data, p.row_bytes = a.fn.row_bytes;
  p.X = a.X, p.scale = a.scale, p.base = a.base, p.norm_w = a.norm_w;
  p.mix = a.mix, p.split = a.split, p.xin = a.xin, p.normed = a.normed, p.work = a.work;
  p.d = a.d, p.n = static_cast<int>(a.n_tok), p.parts = static_cast<int>(kHc * a.d / kPartCols), p.iters = a.iters;
  p.norm_eps = a.norm_eps, p.hc_eps = a.hc_eps, p.lane = ticket_lane(s);
  p.post_kind = a.post.kind, p.post_f = a.post.f, p.post_shared = a.post.shared, p.post_split = a.post.split;
  p.post_k = a.post.k;
  const bool lean = lean_flag(), later = a.split_later;
  if (a.fn.type == GgmlType::F16)
    lean ? launch<GgmlType::F16, true>(p, later, s) : launch<GgmlType::F16, false>(p, later, s);
  else lean ? launch<GgmlType::F32, true>(p, later, s) : launch<GgmlType::F32, false>(p, later, s);
  return true;
}

}  // namespace flashstar::cuda::fast
