// The attention route: sink attention and indexer scoring on the tensor cores, indexer top-k by radix
// select. All 64 heads of a query share its rows (one KV head), so a query's heads form the M side of
// small products: scores = Q K^T, then out = P V with V = K. Operands in two FP16 terms (x = hi + lo,
// three mma per step: about fp32 accuracy), accumulation fp32; every reduction has a fixed order, so
// results are deterministic.
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/cuda_util.h"
#include "cuda/fast_attention_rows.cuh"
#include "cuda/fast_kernels.h"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

constexpr int kHeads = 64;  // queries' heads handled by one block (4 warps x 16)
constexpr int kRowsTile = 64, kKc = 32, kLdh = kKc + 8;

// hi and lo FP16 terms of (a, b)
__device__ __forceinline__ void h2split(float a, float b, uint32_t& hi, uint32_t& lo) {
  hi = mma::pack_f16(a, b);
  lo = mma::pack_f16_lo(a, b, hi);
}
// acc += a.b with both in two terms (small products first)
__device__ __forceinline__ void mma3(float (&d)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4], uint32_t bh0,
                                     uint32_t bh1, uint32_t bl0, uint32_t bl1);
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

__device__ __forceinline__ void mma3(float (&d)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4], uint32_t bh0,
                                     uint32_t bh1, uint32_t bl0, uint32_t bl1) {
  mma::mma_f16(d, al, bh0, bh1);
  mma::mma_f16(d, ah, bl0, bl1);
  mma::mma_f16(d, ah, bh0, bh1);
}

// S[h][j] (h < 64, j < 64 rows of the tile) = q_h . row_j over `dim` values, into acc (warp w: heads
// 16w..16w+15, all 64 rows: 8 n-tiles of 8). rows[j] null = a row past the end (zeros). qs and ks hold
// the hi term, then the lo term.
__device__ void scores_tile(const float* q, int64_t q_stride, const float* const* rows, int dim, float (&acc)[8][4],
                            uint16_t* qs, uint16_t* ks) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int k0 = 0; k0 < dim; k0 += kKc) {
    // stage 64 x 32 of Q and of the rows (128 threads: 16 values each)
    {
      const int r = tid >> 1, c = (tid & 1) * 16;
      const float* src = q + r * q_stride + k0 + c;
      uint32_t* d = reinterpret_cast<uint32_t*>(qs + r * kLdh + c);
      uint32_t* dl = reinterpret_cast<uint32_t*>(qs + kHeads * kLdh + r * kLdh + c);
#pragma unroll
      for (int i = 0; i < 8; ++i) h2split(src[2 * i], src[2 * i + 1], d[i], dl[i]);
      const float* ksrc = rows[r];
      uint32_t* kd = reinterpret_cast<uint32_t*>(ks + r * kLdh + c);
      uint32_t* kl = reinterpret_cast<uint32_t*>(ks + kRowsTile * kLdh + r * kLdh + c);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if (ksrc) h2split(ksrc[k0 + c + 2 * i], ksrc[k0 + c + 2 * i + 1], kd[i], kl[i]);
        else kd[i] = kl[i] = 0u;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kKc; kk += 16) {
      uint32_t a[4], al[4];
      mma::ldmatrix_x4(a, qs + (warp * 16 + (lane & 15)) * kLdh + kk + (lane >> 4) * 8);
      mma::ldmatrix_x4(al, qs + kHeads * kLdh + (warp * 16 + (lane & 15)) * kLdh + kk + (lane >> 4) * 8);
#pragma unroll
      for (int nj = 0; nj < 4; ++nj) {
        uint32_t b[4], bl[4];
        const int off = (nj * 16 + (lane & 7) + ((lane >> 4) << 3)) * kLdh + kk + ((lane >> 3) & 1) * 8;
        mma::ldmatrix_x4(b, ks + off);
        mma::ldmatrix_x4(bl, ks + kRowsTile * kLdh + off);
        mma3(acc[2 * nj], a, al, b[0], b[1], bl[0], bl[1]);
        mma3(acc[2 * nj + 1], a, al, b[2], b[3], bl[2], bl[3]);
      }
    }
    __syncthreads();
  }
}

// grid (n queries, row tiles): scaled scores into scratch[t][h][r].
__global__ void __launch_bounds__(128) attn_scores_kernel(AttentionArgs a, float* scratch, int64_t max_rows) {
  pdl_wait();
  __shared__ __align__(16) uint16_t qs[2 * kHeads * kLdh];
  __shared__ __align__(16) uint16_t ks[2 * kRowsTile * kLdh];
  __shared__ const float* rows[kRowsTile];
  const int64_t t = blockIdx.x;
  const RowMap rm(a, t);
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kRowsTile;
  if (r0 >= rm.n_rows) return;
  if (threadIdx.x < kRowsTile) rows[threadIdx.x] = rm.row(r0 + threadIdx.x);
  __syncthreads();
  float acc[8][4] = {};
  const int hd = a.head_dim;
  scores_tile(a.q + t * a.n_head * hd, hd, rows, hd, acc, qs, ks);
  const float scale = static_cast<float>(1.0 / sqrt(static_cast<double>(hd)));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* s = scratch + t * a.n_head * max_rows;
#pragma unroll
  for (int ni = 0; ni < 8; ++ni)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int h = warp * 16 + (lane >> 2) + (c >> 1) * 8;
      const int64_t r = r0 + ni * 8 + (lane & 3) * 2 + (c & 1);
      if (r < rm.n_rows) s[h * max_rows + r] = acc[ni][c] * scale;
    }
}

// Softmax with the sink over one (query, head) score row, by one warp: the max, then 1 / the sum.
// (attn_softmax_kernel, the prefill path.)
__device__ __forceinline__ void softmax_stats(const float* s, int64_t n_rows, float sink, float& mx, float& inv) {
  const int lane = threadIdx.x & 31;
  mx = sink;
#pragma unroll 4
  for (int64_t r = lane; r < n_rows; r += 32) mx = fmaxf(mx, s[r]);
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  float sum = 0;
#pragma unroll 4
  for (int64_t r = lane; r < n_rows; r += 32) sum += __expf(s[r] - mx);
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  inv = 1.0f / (sum + __expf(sink - mx));
}

// One warp per (query, head): softmax with the sink, probabilities written back in place.
__global__ void attn_softmax_kernel(AttentionArgs a_in, float* scratch, int64_t max_rows) {
  pdl_wait();
  const AttentionArgs a = resolved(a_in);
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= a.n * a.n_head) return;
  const int64_t t = w / a.n_head;
  const int h = static_cast<int>(w % a.n_head);
  const RowMap rm(a, t);
  float* s = scratch + (t * a.n_head + h) * max_rows;
  float mx, inv;
  softmax_stats(s, rm.n_rows, a.sinks[h], mx, inv);
  for (int64_t r = lane; r < rm.n_rows; r += 32) s[r] = __expf(s[r] - mx) * inv;
}

// grid (n queries, head_dim / 64): out[t][h][d] = sum_r p[h][r] row_r[d] for 64 dims.
__global__ void __launch_bounds__(128) attn_pv_kernel(AttentionArgs a, const float* scratch, int64_t max_rows) {
  pdl_wait();
  __shared__ __align__(16) uint16_t ps[2 * kHeads * kLdh];    // [term][head][row chunk]
  __shared__ __align__(16) uint16_t vs[2 * kKc * (64 + 8)];   // [term][row][dim chunk]
  const int64_t t = blockIdx.x;
  const int d0 = blockIdx.y * 64;
  const RowMap rm(a, t);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float* p = scratch + t * a.n_head * max_rows;
  float acc[8][4] = {};
  for (int64_t k0 = 0; k0 < rm.n_rows; k0 += kKc) {
    {
      const int h = tid >> 1, c = (tid & 1) * 16;
      uint32_t* d = reinterpret_cast<uint32_t*>(ps + h * kLdh + c);
      uint32_t* dl = reinterpret_cast<uint32_t*>(ps + kHeads * kLdh + h * kLdh + c);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int64_t r = k0 + c + 2 * i;
        h2split(r < rm.n_rows ? p[h * max_rows + r] : 0.0f, r + 1 < rm.n_rows ? p[h * max_rows + r + 1] : 0.0f, d[i],
                dl[i]);
      }
      const int rr = tid >> 2, dc = (tid & 3) * 16;  // 32 rows x 64 dims
      const float* src = rm.row(k0 + rr);
      uint32_t* vd = reinterpret_cast<uint32_t*>(vs + rr * 72 + dc);
      uint32_t* vl = reinterpret_cast<uint32_t*>(vs + kKc * 72 + rr * 72 + dc);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if (src) h2split(src[d0 + dc + 2 * i], src[d0 + dc + 2 * i + 1], vd[i], vl[i]);
        else vd[i] = vl[i] = 0u;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kKc; kk += 16) {
      uint32_t af[4], afl[4];
      mma::ldmatrix_x4(af, ps + (warp * 16 + (lane & 15)) * kLdh + kk + (lane >> 4) * 8);
      mma::ldmatrix_x4(afl, ps + kHeads * kLdh + (warp * 16 + (lane & 15)) * kLdh + kk + (lane >> 4) * 8);
#pragma unroll
      for (int nj = 0; nj < 4; ++nj) {
        uint32_t b[4], bl[4];
        const int off = (kk + (lane & 7) + ((lane >> 3) & 1) * 8) * 72 + nj * 16 + (lane >> 4) * 8;
        ldsm_x4_t(b, vs + off);
        ldsm_x4_t(bl, vs + kKc * 72 + off);
        mma3(acc[2 * nj], af, afl, b[0], b[1], bl[0], bl[1]);
        mma3(acc[2 * nj + 1], af, afl, b[2], b[3], bl[2], bl[3]);
      }
    }
    __syncthreads();
  }
  float* out = a.out + t * a.n_head * a.head_dim;
#pragma unroll
  for (int ni = 0; ni < 8; ++ni)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int h = warp * 16 + (lane >> 2) + (c >> 1) * 8;
      const int d = d0 + ni * 8 + (lane & 3) * 2 + (c & 1);
      out[h * a.head_dim + d] = acc[ni][c];
    }
}

// grid (n queries, row tiles): indexer score of every visible row, sum over heads of
// relu(q_h . k) * w_h * wscale, in head order.
__global__ void __launch_bounds__(128) indexer_scores_kernel(const float* iq, const float* iw, float wscale,
                                                             const float* idx_rows, int head_dim, int64_t pos0,
                                                             int ratio, float* scores, int64_t stride,
                                                             const int64_t* pos_dev) {
  pdl_wait();
  if (pos_dev) pos0 = *pos_dev;
  __shared__ __align__(16) uint16_t qs[2 * kHeads * kLdh];
  __shared__ __align__(16) uint16_t ks[2 * kRowsTile * kLdh];
  __shared__ const float* rows[kRowsTile];
  __shared__ float st[kHeads][kRowsTile + 1];
  const int64_t t = blockIdx.x;
  const int64_t n_vis = (pos0 + t + 1) / ratio;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kRowsTile;
  if (r0 >= n_vis) return;
  if (threadIdx.x < kRowsTile)
    rows[threadIdx.x] = r0 + threadIdx.x < n_vis ? idx_rows + (r0 + threadIdx.x) * head_dim : nullptr;
  __syncthreads();
  float acc[8][4] = {};
  scores_tile(iq + t * kHeads * head_dim, head_dim, rows, head_dim, acc, qs, ks);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int ni = 0; ni < 8; ++ni)
#pragma unroll
    for (int c = 0; c < 4; ++c) st[warp * 16 + (lane >> 2) + (c >> 1) * 8][ni * 8 + (lane & 3) * 2 + (c & 1)] = acc[ni][c];
  __syncthreads();
  if (threadIdx.x < kRowsTile && r0 + threadIdx.x < n_vis) {
    const float* w = iw + t * kHeads;
    float s = 0.0f;
    for (int h = 0; h < kHeads; ++h) s += fmaxf(0.0f, st[h][threadIdx.x]) * (w[h] * wscale);
    scores[t * stride + r0 + threadIdx.x] = s == 0.0f ? 0.0f : s;  // one zero: -0 ranks as +0
  }
}

// Decode (a few queries): the same scores in fp32 on the CUDA cores. The tensor-core tiles above give a
// query only (rows / 64) blocks, each staging Q four times; here a block stages its query once and walks
// 16-row tiles, a thread dotting one row with four heads (h, h + 16, h + 32, h + 48), the 16 threads of
// a row summing their heads' terms in a fixed butterfly. grid (n, up to kIdxDecBlocks); 256 threads.
constexpr int kIdxDecRows = 16, kIdxDecDim = 128, kIdxDecBlocks = 128, kIdxDecMaxTok = 8;
__global__ void __launch_bounds__(256) indexer_scores_decode(const float* iq, const float* iw, float wscale,
                                                             const float* idx_rows, int64_t pos0, int ratio,
                                                             float* scores, int64_t stride, const int64_t* pos_dev) {
  pdl_wait();
  constexpr int hd4 = kIdxDecDim / 4, qld = hd4 + 1;  // Q rows padded: a quarter warp's heads on distinct banks
  __shared__ float4 qs[kHeads * qld];
  __shared__ float4 rs[kIdxDecRows * hd4];
  if (pos_dev) pos0 = *pos_dev;
  const int64_t t = blockIdx.x;
  const int64_t n_vis = (pos0 + t + 1) / ratio;
  if (static_cast<int64_t>(blockIdx.y) * kIdxDecRows >= n_vis) return;
  const float4* q = reinterpret_cast<const float4*>(iq + t * kHeads * kIdxDecDim);
  for (int i = threadIdx.x; i < kHeads * hd4; i += blockDim.x) qs[(i / hd4) * qld + i % hd4] = q[i];
  const int r = threadIdx.x >> 4, hg = threadIdx.x & 15;
  float wh[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) wh[j] = iw[t * kHeads + hg + 16 * j] * wscale;
  for (int64_t r0 = static_cast<int64_t>(blockIdx.y) * kIdxDecRows; r0 < n_vis; r0 += gridDim.y * kIdxDecRows) {
    __syncthreads();  // the previous tile's rows are read
    for (int i = threadIdx.x; i < kIdxDecRows * hd4; i += blockDim.x) {
      const int64_t row = r0 + i / hd4;
      rs[i] = row < n_vis ? reinterpret_cast<const float4*>(idx_rows + row * kIdxDecDim)[i % hd4]
                          : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    __syncthreads();
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
    for (int k = 0; k < hd4; ++k) {
      const float4 x = rs[r * hd4 + k];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float4 qv = qs[(hg + 16 * j) * qld + k];
        acc[j] = fmaf(qv.x, x.x, acc[j]), acc[j] = fmaf(qv.y, x.y, acc[j]);
        acc[j] = fmaf(qv.z, x.z, acc[j]), acc[j] = fmaf(qv.w, x.w, acc[j]);
      }
    }
    float sc = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) sc += fmaxf(0.0f, acc[j]) * wh[j];
#pragma unroll
    for (int off = 8; off > 0; off >>= 1) sc += __shfl_xor_sync(0xffffffffu, sc, off);
    if (hg == 0 && r0 + r < n_vis) scores[t * stride + r0 + r] = sc == 0.0f ? 0.0f : sc;  // -0 ranks as +0
  }
}

__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// One block per query: the top_k rows by (score desc, row asc), written as ascending row ids.
__global__ void __launch_bounds__(256) indexer_topk_kernel(const float* scores, int64_t stride, int64_t pos0, int ratio,
                                                           int top_k, int32_t* sel, const int64_t* pos_dev) {
  pdl_wait();
  if (pos_dev) pos0 = *pos_dev;
  __shared__ int hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int s_remaining;
  __shared__ int warp_cnt[8][2];
  const int64_t t = blockIdx.x;
  const int64_t n_vis = (pos0 + t + 1) / ratio;
  int32_t* out = sel + t * top_k;
  if (n_vis <= top_k) {
    for (int i = threadIdx.x; i < top_k; i += blockDim.x) out[i] = i < n_vis ? i : -1;
    return;
  }
  const float* sc = scores + t * stride;
  uint32_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) s_remaining = top_k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n_vis; i += blockDim.x) {
      const uint32_t k = order_key(sc[i]);
      if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255], 1);  // integer counts: order-free
    }
    __syncthreads();
    // The digit that holds the rem-th largest key: bucket b with S(b) >= rem > S(b + 1), S(b) = keys in
    // buckets b..255, found by every thread at once (a serial walk over the buckets by one thread cost
    // about 4 us per digit). Thread b owns bucket b; suffix sums within the warp, then over the warps.
    {
      const int b = threadIdx.x, rem = s_remaining;
      const int h = hist[b];
      int suf = h;  // inclusive suffix sum within the warp (lanes above this one)
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        const int v = __shfl_down_sync(0xffffffffu, suf, off);
        if ((b & 31) + off < 32) suf += v;
      }
      if ((b & 31) == 0) warp_cnt[b >> 5][0] = suf;
      __syncthreads();
      for (int w = (b >> 5) + 1; w < 8; ++w) suf += warp_cnt[w][0];
      const int above = suf - h;  // S(b + 1)
      if (above < rem && (suf >= rem || b == 0)) {
        s_remaining = rem - above;
        s_prefix = prefix | (static_cast<uint32_t>(b) << shift);
      }
    }
    __syncthreads();
    prefix = s_prefix;
    mask |= 255u << shift;
  }
  const uint32_t thr = prefix;
  const int take_eq = s_remaining;  // rows equal to the threshold to keep, lowest ids first
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int eq_before = 0, out_before = 0;
  for (int64_t i0 = 0; i0 < n_vis; i0 += blockDim.x) {
    const int64_t i = i0 + threadIdx.x;
    const uint32_t k = i < n_vis ? order_key(sc[i]) : 0u;
    const bool gt = i < n_vis && k > thr, eq = i < n_vis && k == thr;
    const unsigned eq_m = __ballot_sync(0xffffffffu, eq);
    if (lane == 0) warp_cnt[warp][0] = __popc(eq_m);
    __syncthreads();
    int eq_rank = eq_before + __popc(eq_m & ((1u << lane) - 1));
    for (int w = 0; w < warp; ++w) eq_rank += warp_cnt[w][0];
    const bool keep = gt || (eq && eq_rank < take_eq);
    const unsigned keep_m = __ballot_sync(0xffffffffu, keep);
    if (lane == 0) warp_cnt[warp][1] = __popc(keep_m);
    __syncthreads();
    int pos = out_before + __popc(keep_m & ((1u << lane) - 1));
    for (int w = 0; w < warp; ++w) pos += warp_cnt[w][1];
    if (keep && pos < top_k) out[pos] = static_cast<int32_t>(i);
    for (int w = 0; w < static_cast<int>(blockDim.x) / 32; ++w) eq_before += warp_cnt[w][0], out_before += warp_cnt[w][1];
    __syncthreads();
  }
}

constexpr int kDecMaxTok = 8;  // queries of the decode path (fast_attention_decode.cu)

}  // namespace

bool attention_supported(const AttentionArgs& a) {
  return a.n_head == kHeads && a.head_dim % 64 == 0 && a.n <= 65535;
}

bool attention_decode_path(const AttentionArgs& a) {
  return attention_supported(a) && a.n <= kDecMaxTok && a.head_dim % 128 == 0 && a.head_dim <= 512;
}

bool sink_attention(const AttentionArgs& a, float* scratch, int64_t max_rows, cudaStream_t s, int64_t scratch_floats) {
  if (a.n <= 0) return false;
  const int64_t warps = a.n * a.n_head;
  if (attention_decode_path(a)) return flash_decode_attention(a, scratch, max_rows, s, scratch_floats);
  if (attention_prefill_v2() && attention_prefill(a, s)) return false;  // fast_attention_prefill.cu
  const dim3 g1(static_cast<unsigned>(a.n), static_cast<unsigned>((max_rows + kRowsTile - 1) / kRowsTile));
  attn_scores_kernel<<<g1, 128, 0, s>>>(a, scratch, max_rows);
  FS_CUDA_LAUNCH_CHECK();
  attn_softmax_kernel<<<static_cast<unsigned>((warps * 32 + 255) / 256), 256, 0, s>>>(a, scratch, max_rows);
  FS_CUDA_LAUNCH_CHECK();
  attn_pv_kernel<<<dim3(static_cast<unsigned>(a.n), static_cast<unsigned>(a.head_dim / 64)), 128, 0, s>>>(a, scratch,
                                                                                                           max_rows);
  FS_CUDA_LAUNCH_CHECK();
  return false;
}

bool indexer_supported(int n_heads, int head_dim, int64_t n) {
  return n_heads == kHeads && head_dim % kKc == 0 && n <= 65535;
}

void indexer_select(const float* iq, const float* iw, float wscale, const float* idx_rows, int n_heads, int head_dim,
                    int64_t pos0, int64_t n, int ratio, int top_k, float* scratch, int64_t scratch_stride,
                    int32_t* sel, cudaStream_t s, const int64_t* pos_dev, const IndexerQueryPrep* prep) {
  (void)n_heads;
  if (n <= 0) return;
  // with the position on the device, enough row tiles for the whole scratch row (the extra ones exit)
  const int64_t max_vis = pos_dev ? scratch_stride : (pos0 + n) / ratio;
  if (prep) {
    if (n > kIdxDecMaxTok || head_dim != kIdxDecDim) fail("internal: indexer query preparation at prefill");
    indexer_scores_fused(iq, iw, wscale, idx_rows, pos0, n, ratio, scratch, scratch_stride, pos_dev, *prep, max_vis, s);
  } else if (n <= kIdxDecMaxTok && head_dim == kIdxDecDim) {
    const int64_t blocks = std::min<int64_t>((max_vis + kIdxDecRows - 1) / kIdxDecRows, kIdxDecBlocks);
    if (blocks > 0) {
      indexer_scores_decode<<<dim3(static_cast<unsigned>(n), static_cast<unsigned>(blocks)), 256, 0, s>>>(
          iq, iw, wscale, idx_rows, pos0, ratio, scratch, scratch_stride, pos_dev);
      FS_CUDA_LAUNCH_CHECK();
    }
  } else if (pos_dev ||  // (the decode graph: never more than 8 queries)
             !indexer_scores_prefill(iq, iw, wscale, idx_rows, head_dim, pos0, n, ratio, scratch, scratch_stride, s)) {
    const dim3 g(static_cast<unsigned>(n), static_cast<unsigned>((max_vis + kRowsTile - 1) / kRowsTile));
    if (g.y > 0) {
      indexer_scores_kernel<<<g, 128, 0, s>>>(iq, iw, wscale, idx_rows, head_dim, pos0, ratio, scratch,
                                              scratch_stride, pos_dev);
      FS_CUDA_LAUNCH_CHECK();
    }
  }
  indexer_topk(scratch, scratch_stride, pos0, n, ratio, top_k, sel, s, pos_dev,
               n <= kIdxDecMaxTok && (attention_decode_v2() & kDecodeV2TopK) ? 2 : 1, max_vis);
}

void indexer_topk(const float* scores, int64_t stride, int64_t pos0, int64_t n, int ratio, int top_k, int32_t* sel,
                  cudaStream_t s, const int64_t* pos_dev, int version, int64_t max_vis) {
  if (n <= 0) return;
  if (version == 2) {
    indexer_topk_v2(scores, stride, pos0, n, ratio, top_k, sel, s, pos_dev, max_vis);
    return;
  }
  indexer_topk_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(scores, stride, pos0, ratio, top_k, sel, pos_dev);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace flashstar::cuda::fast
