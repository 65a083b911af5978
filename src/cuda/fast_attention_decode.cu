// Decode attention (<= 8 queries) in one flash-decoding launch. grid (query t, head group of 8, row
// split z), 256 threads. A block stages its split's rows 32 at a time (16-byte async copies, every copy
// of the chunk in flight at once; row addresses resolved first) and its 8 heads' queries, then per
// chunk: scores for 8 heads x 32 rows in fp32, the running max and sum-exp per head (online softmax,
// exact rescaling), and P.V into 8 x head_dim partial outputs held in registers. Each split writes
// (max, sum, partial) to the scratch; the split that finishes last (integer ticket per (t, group))
// weighs the splits in split order with the sink and writes out. Fixed orders everywhere, no float
// atomics: deterministic for a given split count. The grid is sized from max_rows (the decode step is
// a captured graph replayed at every position); splits past the live rows exit at once.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/fast_attention_rows.cuh"
#include "cuda/last_block.cuh"
#include "cuda/warp_reduce.cuh"
#include "cuda/ref_numerics.cuh"
#include "cuda/pdl.cuh"
#include "cuda/stream_lanes.h"

namespace flashstar::cuda::fast {
namespace {

constexpr int kTok = 8;         // queries (attention_decode_path)
constexpr int kGroup = 8;       // heads of a block: warp h owns head h's softmax
constexpr int kChunk = 32;      // rows staged at once: a lane per row in the softmax
constexpr int kMaxSplits = 24;  // row splits of a (query, head group); <= 32: a lane per split in the combine
// The default cap (FLASHSTAR_ATTN_DECODE_SPLITS=N sets another, 1-24). A ratio-4 layer's 640 rows (window
// and selection) are 20 chunks: 10 splits of two chunks each fill 80 SMs once and leave its last block 9
// splits' parts to weigh, where 20 splits (the old cap: 160 blocks, 28 SMs with two) left 19; 43-layer
// decode at 8k 130.3 -> 132.7 tok/s (H200, scripts/switch-ab.sh). Other bits than 24: the combine adds
// other partial sums (the same fp32 arithmetic per split).
constexpr int kDefaultSplits = 10;
constexpr int kThreads = 256;   // P.V: thread = (head half: 4 heads, float4 of the head dims)
constexpr int kStat = 2 * kGroup;  // per split: max[8], sum[8]

// One set per ticket lane (stream_lanes.h): launches on a decode fork's two streams never share one.
__device__ int g_fd_tickets[kTicketLanes][kTok * 64 / kGroup];

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

// One step of the warp reduce-scatter: lanes with bit O set keep the upper half of their N values, the
// others the lower half, each adding its partner's copy of the half it keeps.
template <int O, int N>
__device__ __forceinline__ void fold(float (&v)[32], int lane) {
  const bool up = lane & O;
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    const float send = up ? v[i] : v[i + N / 2];
    const float keep = up ? v[i + N / 2] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
  }
}
// 32 values per lane -> lane l returns the warp sum of value l (31 shuffles instead of 32 x 5).
__device__ __forceinline__ float reduce_scatter32(float (&v)[32], int lane) {
  fold<16, 32>(v, lane);
  fold<8, 16>(v, lane);
  fold<4, 8>(v, lane);
  fold<2, 4>(v, lane);
  fold<1, 2>(v, lane);
  return v[0];
}

__device__ __forceinline__ float4 fma4(float w, const float4& v, float4 acc) {
  acc.x = fmaf(w, v.x, acc.x), acc.y = fmaf(w, v.y, acc.y), acc.z = fmaf(w, v.z, acc.z), acc.w = fmaf(w, v.w, acc.w);
  return acc;
}
__device__ __forceinline__ float comp(const float4& v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}

// Phase stamps of one block (kProbe, the timing test): clock64 at entry, after the wait, after the row
// map, first chunk staged, chunk loop done, ticket taken, end; then %globaltimer at entry and at the end.
constexpr int kProbeSlots = 16;
__device__ __forceinline__ uint64_t gtimer() {
  uint64_t v;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(v));
  return v;
}
template <bool kProbe>
__device__ __forceinline__ void stamp(uint64_t* probe, int i) {
  if (kProbe && threadIdx.x == 0) {
    const int64_t b = (static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    probe[b * kProbeSlots + i] = clock64();
    if (i == 0) probe[b * kProbeSlots + 8] = gtimer();
    if (i == 6) probe[b * kProbeSlots + 9] = gtimer();
  }
}

// work: parts [n][groups][splits][8][hd], then stats [n][groups][splits][16].
// kV2 (FLASHSTAR_ATTN_DECODE_V2=1): the same arithmetic in the same order (bitwise the same output), with
// the dependent latencies of the prologue and of the last block's tail overlapped: the queries' copies
// issued before the row map's walk over the selection (they depend on t and the group only), the
// output RoPE's double sin / cos computed while the first chunk's copies are in flight (before, two
// warps computed them ahead of the first barrier: every block waited for them), and the last block's
// first parts loads issued before the split weights are computed (one L2 round trip fewer on its tail),
// and, when a split has several chunks (FLASHSTAR_ATTN_DECODE_SPLITS, or little scratch), two row stages:
// the next chunk's copies in flight while this one is computed.
// (kV2 and the probe ask for two blocks an SM, i.e. <= 128 registers: the prefetch's addresses would take
// V2 to 156 and one block an SM, two waves for the 160 blocks of a ratio-4 layer.)
template <bool kV2, bool kProbe>
__global__ void __launch_bounds__(kThreads, kV2 || kProbe ? 2 : 1)
    flash_decode_kernel(AttentionArgs a_in, float* work, int tlane, uint64_t* probe, int dbuf) {
  // PDL-PROLOGUE: only the probe's entry stamp (a test's buffer that no other kernel touches) before it
  stamp<kProbe>(probe, 0);
  pdl_wait();
  stamp<kProbe>(probe, 1);
  extern __shared__ __align__(16) float4 fd_sm[];  // rows kChunk x hd4, then queries kGroup x hd4
  __shared__ const float4* rowp[kChunk];
  __shared__ float sc[kGroup][kChunk + 1];
  __shared__ __align__(16) float ps[kChunk][kGroup];
  __shared__ __align__(16) float alpha_s[kGroup];
  __shared__ float wts[kGroup][kMaxSplits];

  const AttentionArgs a = resolved(a_in);
  const int64_t t = blockIdx.x;
  const int g = blockIdx.y, z = blockIdx.z, G = gridDim.z, h0 = g * kGroup;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int hd = a.head_dim, hd4 = hd / 4, ni = hd4 / 32;  // hd % 128 == 0, hd <= 512: ni in 1..4
  // kV2 with dbuf (a split of several chunks): two row stages, chunk ch + 1's copies in flight while
  // chunk ch is computed (the same arithmetic; only the loads move earlier)
  const bool two = kV2 && dbuf;
  float4* rows_s = fd_sm;
  float4* qs = fd_sm + (two ? 2 : 1) * kChunk * hd4;
  bool q_issued = false;
  if (kV2) {
    // rows this query can have at most (the selection holds at most top_k): a split at or past that
    // many chunks is dead whatever the selection, and skips the copies
    const int64_t pos = a.pos0 + t, lo = pos - a.n_swa + 1 > 0 ? pos - a.n_swa + 1 : 0;
    const int64_t ub = pos - lo + 1 + (a.ratio ? (a.sel ? a.top_k : (pos + 1) / a.ratio) : 0);
    if (z < (ub + kChunk - 1) / kChunk) {
      const float4* q = reinterpret_cast<const float4*>(a.q + (t * a.n_head + h0) * hd);
#pragma unroll 4
      for (int i = tid; i < kGroup * hd4; i += kThreads) cp_async16(qs + i, q + i);
      q_issued = true;
    }
  }
  const RowMap rm(a, t);
  stamp<kProbe>(probe, 2);
  // the live splits: chunks spread evenly (the same numbers in every block of the query)
  const int64_t chunks = (rm.n_rows + kChunk - 1) / kChunk;
  const int64_t cps = (chunks + G - 1) / G;  // chunks a split
  const int live = static_cast<int>((chunks + cps - 1) / cps);
  if (z >= live) {  // the whole block
    if (q_issued) cp_async_wait_all();  // no copy left in flight into a block that is gone
    return;
  }
  const int64_t c_begin = z * cps, c_end = chunks < c_begin + cps ? chunks : c_begin + cps;

  // The output's inverse RoPE angles of this thread's float4 (column c below), computed before the
  // combine: the double sin/cos would otherwise lengthen the last block's serial tail (kV2: inside the
  // first chunk's copy latency).
  const int tail0 = hd - a.out_rope_n_rot, c_out = tid & 127;  // as c of the P.V below
  const bool rot = a.out_rope_freq && c_out < hd4 && 4 * c_out >= tail0;
  float2 cs0 = make_float2(1.0f, 0.0f), cs1 = cs0;
  auto rope_cs = [&] {
    const int p = (4 * c_out - tail0) / 2;
    const double pos = static_cast<double>(a.pos0 + t);
    cs0 = d_rope_cs(pos * a.out_rope_freq[p], true), cs1 = d_rope_cs(pos * a.out_rope_freq[p + 1], true);
  };
  if (!kV2 && rot) rope_cs();
  if (!kV2) {
    const float4* q = reinterpret_cast<const float4*>(a.q + (t * a.n_head + h0) * hd);
#pragma unroll 4
    for (int i = tid; i < kGroup * hd4; i += kThreads) cp_async16(qs + i, q + i);
  }
  const float scale = static_cast<float>(1.0 / sqrt(static_cast<double>(hd)));
  float m_run = -INFINITY, l_run = 0.0f;  // head `warp`'s running max and sum (the same in every lane)
  const int hh = tid >> 7, c = tid & 127;  // P.V: heads 4hh..4hh+3, float4 c of the head dims
  float4 acc[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) acc[k] = make_float4(0, 0, 0, 0);

  // the row addresses of chunk ch (a barrier), then its copies into buf: warp w stages rows w, w + 8, ...,
  // every copy issued before any wait; the two-stage path commits them as a group of their own
  auto stage = [&](int64_t ch, float4* buf, bool commit) {
    const int64_t r0 = ch * kChunk;
    const int m = rm.n_rows - r0 < kChunk ? static_cast<int>(rm.n_rows - r0) : kChunk;
    if (tid < kChunk) rowp[tid] = tid < m ? reinterpret_cast<const float4*>(rm.row(r0 + tid)) : nullptr;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kChunk / 8; ++j) {
      const int r = warp + 8 * j;
      if (r < m) {
        const float4* src = rowp[r];
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (i < ni) cp_async16(buf + r * hd4 + lane + 32 * i, src + lane + 32 * i);
      }
    }
    if (commit) cp_async_commit();
  };
  if (two) {
    stage(c_begin, rows_s, true);
    __syncthreads();  // rowp is rewritten by the next stage
  }
  for (int64_t ch = c_begin; ch < c_end; ++ch) {
    const int64_t r0 = ch * kChunk;
    const int m = rm.n_rows - r0 < kChunk ? static_cast<int>(rm.n_rows - r0) : kChunk;
    float4* const cur = two ? rows_s + ((ch - c_begin) & 1) * kChunk * hd4 : rows_s;
    if (two) {
      if (ch + 1 < c_end) stage(ch + 1, rows_s + ((ch + 1 - c_begin) & 1) * kChunk * hd4, true);
      else cp_async_commit();  // an empty group: the wait below then leaves nothing in flight
      if (rot && ch == c_begin) rope_cs();
      cp_async_wait_one();  // all but the newest group: this chunk's rows (and the queries)
      __syncthreads();
    } else {
      stage(ch, rows_s, false);
      if (kV2 && rot && ch == c_begin) rope_cs();  // while the copies are in flight
      cp_async_wait_all();
      __syncthreads();
    }
    if (ch == c_begin) stamp<kProbe>(probe, 3);

    // scores: warp w takes rows 4w..4w+3 of the chunk, lane l dims float4 l + 32i, for all 8 heads
    // (value j * 8 + h); then a reduce-scatter over the lanes leaves row 4w + l / 8, head l % 8 in lane l.
    {
      float v[32];
#pragma unroll
      for (int k = 0; k < 32; ++k) v[k] = 0.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (i < ni) {
          const int cc = lane + 32 * i;
          float4 kr[4], qv[kGroup];
#pragma unroll
          for (int j = 0; j < 4; ++j) kr[j] = cur[(4 * warp + j) * hd4 + cc];
#pragma unroll
          for (int h = 0; h < kGroup; ++h) qv[h] = qs[h * hd4 + cc];
#pragma unroll
          for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int h = 0; h < kGroup; ++h) {
              float s = v[j * 8 + h];
              s = fmaf(qv[h].x, kr[j].x, s);
              s = fmaf(qv[h].y, kr[j].y, s);
              s = fmaf(qv[h].z, kr[j].z, s);
              v[j * 8 + h] = fmaf(qv[h].w, kr[j].w, s);
            }
        }
      }
      const float s = reduce_scatter32(v, lane);
      const int jr = 4 * warp + (lane >> 3);
      sc[lane & 7][jr] = jr < m ? s * scale : -INFINITY;  // rows past the end: stale shared memory, masked
    }
    __syncthreads();
    // online softmax: warp h, lane = row of the chunk
    {
      const float sv = sc[warp][lane];
      const float m_new = fmaxf(m_run, warp_max(sv));  // finite: every chunk has a live row
      const float alpha = m_run == -INFINITY ? 0.0f : __expf(m_run - m_new);
      const float p = lane < m ? __expf(sv - m_new) : 0.0f;
      l_run = l_run * alpha + warp_sum(p);
      m_run = m_new;
      ps[lane][warp] = p;
      if (lane == 0) alpha_s[warp] = alpha;
    }
    __syncthreads();
    // P.V: acc[k] (head 4hh + k, dims 4c..4c+3) rescaled, then the chunk's rows added in row order
    if (c < hd4) {
      const float4 al = reinterpret_cast<const float4*>(alpha_s)[hh];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float f = comp(al, k);
        acc[k].x *= f, acc[k].y *= f, acc[k].z *= f, acc[k].w *= f;
      }
      const float4* p4 = reinterpret_cast<const float4*>(&ps[0][0]) + hh;  // row r at p4[2r]
      int r = 0;
      for (; r + 4 <= m; r += 4) {
        float4 vv[4], pp[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) vv[u] = cur[(r + u) * hd4 + c], pp[u] = p4[2 * (r + u)];
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int k = 0; k < 4; ++k) acc[k] = fma4(comp(pp[u], k), vv[u], acc[k]);
      }
      for (; r < m; ++r) {
        const float4 vv = cur[r * hd4 + c], pp = p4[2 * r];
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[k] = fma4(comp(pp, k), vv, acc[k]);
      }
    }
    __syncthreads();  // rows_s, rowp, sc and ps are rewritten by the next chunk
  }
  stamp<kProbe>(probe, 4);

  const int64_t base = (t * gridDim.y + g) * G;  // this (query, group)'s first split
  const int64_t n_parts = a.n * gridDim.y * G;
  float* const parts = work;
  const float* const stats = work + n_parts * kGroup * hd;
  const int ticket = static_cast<int>(t * gridDim.y + g);
  if (live > 1) {
    float* part = parts + (base + z) * kGroup * hd;
    if (c < hd4) {
#pragma unroll
      for (int k = 0; k < 4; ++k) reinterpret_cast<float4*>(part + (4 * hh + k) * hd)[c] = acc[k];
    }
    if (lane == 0) {
      float* st = work + n_parts * kGroup * hd + (base + z) * kStat;
      st[warp] = m_run, st[kGroup + warp] = l_run;
    }
    const bool last = last_to_finish(&g_fd_tickets[tlane][ticket], live);
    stamp<kProbe>(probe, 5);
    if (!last) return;
  }
  // kV2: the first 4 splits' parts of this thread copied into the (now free) row stage before the
  // weights are computed, so that their L2 round trip overlaps the stats' (registers would do, but
  // 64 more of them cost the kernel its second block per SM). Only this thread reads its copies back.
  float4* const pre = rows_s;  // [4 splits][8 heads][hd4]: 32 x hd4 float4s, the row stage's size
  if (kV2 && c < hd4) {
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (u != z && u < live)
          cp_async16(pre + (u * kGroup + 4 * hh + k) * hd4 + c,
                     reinterpret_cast<const float4*>(parts + ((base + u) * kGroup + 4 * hh + k) * hd) + c);
  }
  // the combine (with one split, just the sink): warp h weighs head h's splits, lane = split
  {
    const float sink = a.sinks[h0 + warp];
    float mz = -INFINITY, lz = 0.0f;
    if (lane < live) {
      if (lane == z) mz = m_run, lz = l_run;
      else
        mz = __ldcg(stats + (base + lane) * kStat + warp), lz = __ldcg(stats + (base + lane) * kStat + kGroup + warp);
    }
    const float M = warp_max(fmaxf(mz, sink));
    const float e = lane < live ? __expf(mz - M) : 0.0f;
    const float L = warp_sum(lz * e) + __expf(sink - M);
    if (lane < live) wts[warp][lane] = e / L;
  }
  __syncthreads();
  if (c < hd4) {
    float4 o[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) o[k] = make_float4(0, 0, 0, 0);
    for (int z0 = 0; z0 < live; z0 += 4) {
      float4 pv[4][4];  // every load of 4 splits in flight before the (split-ordered) sum
      if (kV2 && z0 == 0) {
        cp_async_wait_all();
#pragma unroll
        for (int u = 0; u < 4; ++u)
#pragma unroll
          for (int k = 0; k < 4; ++k)
            pv[u][k] = u == z ? acc[k] : u < live ? pre[(u * kGroup + 4 * hh + k) * hd4 + c] : make_float4(0, 0, 0, 0);
      } else {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int zz = z0 + u;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const float4* src = reinterpret_cast<const float4*>(parts + ((base + zz) * kGroup + 4 * hh + k) * hd) + c;
            pv[u][k] = zz == z ? acc[k] : zz < live ? __ldcg(src) : make_float4(0, 0, 0, 0);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u)
        if (z0 + u < live) {
#pragma unroll
          for (int k = 0; k < 4; ++k) o[k] = fma4(wts[4 * hh + k][z0 + u], pv[u][k], o[k]);
        }
    }
    float* out = a.out + (t * a.n_head + h0) * hd;
    if (rot) {  // the inverse RoPE of the output (was a launch of its own)
#pragma unroll
      for (int k = 0; k < 4; ++k) d_rotate(o[k].x, o[k].y, cs0), d_rotate(o[k].z, o[k].w, cs1);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) reinterpret_cast<float4*>(out + (4 * hh + k) * hd)[c] = o[k];
  }
  if (live > 1 && tid == 0) g_fd_tickets[tlane][ticket] = 0;
  stamp<kProbe>(probe, 6);
}

}  // namespace

namespace {

int& max_splits_flag() {
  static int v = [] {
    const char* e = std::getenv("FLASHSTAR_ATTN_DECODE_SPLITS");
    const int n = e ? std::atoi(e) : 0;
    return n >= 1 && n <= kMaxSplits ? n : kDefaultSplits;
  }();
  return v;
}

// The launch of flash_decode_attention; probe (kProbe): n x groups x splits blocks of kProbeSlots stamps.
template <bool kV2, bool kProbe>
int64_t flash_decode_launch(const AttentionArgs& args, float* scratch, int64_t max_rows, cudaStream_t s,
                            int64_t scratch_floats, uint64_t* probe, bool& roped) {
  AttentionArgs a = args;
  // the output's RoPE pairs are rotated inside float4 stores: the rotated tail must start on one
  if (a.out_rope_n_rot <= 0 || a.out_rope_n_rot % 4 != 0 || a.out_rope_n_rot > a.head_dim) a.out_rope_freq = nullptr;
  const int hd = a.head_dim, groups = a.n_head / kGroup;
  // rows a query can have: the window, plus the selection or every compressed row (never past max_rows)
  const int64_t cap = std::min<int64_t>(max_rows, a.n_swa + (a.ratio ? (a.sel ? a.top_k : max_rows) : 0));
  int64_t splits = std::min<int64_t>(max_splits_flag(), (cap + kChunk - 1) / kChunk);
  // each split of each (query, group): 8 x hd partial sums and 16 stats; parts are float4s
  const int64_t per_split = a.n * groups * (static_cast<int64_t>(kGroup) * hd + kStat);
  const bool aligned = reinterpret_cast<uintptr_t>(scratch) % 16 == 0;
  splits = std::min<int64_t>(splits, aligned ? scratch_floats / per_split : 1);
  if (splits < 1) splits = 1;
  // V2: two row stages when a split can have several chunks
  const int64_t chunks_cap = (cap + kChunk - 1) / kChunk;
  const int dbuf = kV2 && (chunks_cap + splits - 1) / splits > 1 ? 1 : 0;
  const int smem = ((dbuf ? 2 : 1) * kChunk + kGroup) * hd * 4;
  static int smem_set = 0;
  if (smem > smem_set) {
    FS_CUDA_CHECK(cudaFuncSetAttribute(flash_decode_kernel<kV2, kProbe>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       smem));
    smem_set = smem;
  }
  const dim3 grid(static_cast<unsigned>(a.n), static_cast<unsigned>(groups), static_cast<unsigned>(splits));
  flash_decode_kernel<kV2, kProbe><<<grid, kThreads, smem, s>>>(a, scratch, ticket_lane(s), probe, dbuf);
  FS_CUDA_LAUNCH_CHECK();
  roped = a.out_rope_freq != nullptr;
  return static_cast<int64_t>(grid.x) * grid.y * grid.z;
}

}  // namespace

bool flash_decode_attention(const AttentionArgs& args, float* scratch, int64_t max_rows, cudaStream_t s,
                            int64_t scratch_floats) {
  bool roped = false;
  if (attention_decode_v2() & kDecodeV2Flash) flash_decode_launch<true, false>(args, scratch, max_rows, s, scratch_floats, nullptr, roped);
  else flash_decode_launch<false, false>(args, scratch, max_rows, s, scratch_floats, nullptr, roped);
  return roped;
}

void attention_decode_set_max_splits(int n) { max_splits_flag() = n >= 1 && n <= kMaxSplits ? n : kDefaultSplits; }
int attention_decode_max_splits() { return max_splits_flag(); }

int64_t flash_decode_probe(const AttentionArgs& args, float* scratch, int64_t max_rows, cudaStream_t s,
                           int64_t scratch_floats, bool v2, uint64_t* stamps) {
  bool roped = false;
  return v2 ? flash_decode_launch<true, true>(args, scratch, max_rows, s, scratch_floats, stamps, roped)
            : flash_decode_launch<false, true>(args, scratch, max_rows, s, scratch_floats, stamps, roped);
}

}  // namespace flashstar::cuda::fast
