// The decode indexer's scores with its query's RoPE and (official numerics) FP4 simulation in the same
// launch (FLASHSTAR_IDX_FUSED, default 1; =0 or indexer_set_fused(false): rope_kernel, indexer_qat and
// indexer_scores_decode of fast_attention.cu, three launches in a row). Same bits as those three:
//  - RoPE: each block forms its query's rotations once (d_rope_cs of rope_kernel's angle expression, in
//    double; this file is compiled as ref_ops.cu is, --fmad=false, src/CMakeLists.txt) and every value
//    pair turns by d_rotate, the two steps of rope_kernel's d_rope_pair.
//  - FP4: qat_row_quad (row_qat_quad.cuh), what fast::indexer_qat runs on each head's 128 values.
//  - Scores: every (row, head) dot is indexer_scores_decode's fmaf chain (k ascending; x, y, z, w of each
//    float4), and its head sum the same tree: per head group g < 16 the fmaf chain of relu(dot) * w over
//    heads g, g + 16, g + 32, g + 48 (that kernel's multiply-add, contracted there, explicit here), then
//    s_g + s_(g ^ 8), then a butterfly over g with offsets 4, 2, 1. A lane here holds both groups g and
//    g + 8 (heads g + 8 m, m < 8), so the tree's first level is its own sum and the butterfly spans 8 lanes.
// Only the mapping differs: the old kernel gave a thread one row and 4 heads (4 + 1 shared float4 loads
// for 16 multiply-adds, 9 shared wavefronts a warp-step); here a lane takes 8 heads and 1 row (8 + 1 loads
// for 32, 9 wavefronts) or 2 rows (8 + 2 loads for 64, 10 wavefronts), and a block's rows are staged in
// chunks of 64 by cp.async, issued before the query is prepared so that their latency hides behind it.
#include <algorithm>

#include "cuda/cuda_util.h"
#include "cuda/device_info.h"
#include "cuda/fast_kernels.h"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"
#include "cuda/ref_numerics.cuh"
#include "cuda/row_qat_quad.cuh"

namespace flashstar::cuda::fast {
namespace {

constexpr int kHeads = 64, kDim = 128, kDim4 = kDim / 4;
constexpr int kLd = kDim4 + 1;  // float4 stride of a staged head or row: 8 heads' (or rows') float4 k on 8 bank quads
constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kChunk = 64;      // rows staged at once, two buffers; a chunk of 64 is one 8-row tile a warp
constexpr int kTile = 4;        // rows of a one-row-a-lane tile; a block's rows are a multiple of it
constexpr int kMaxTok = 8, kMaxBlocks = 128;
constexpr size_t kSmemBytes = (kHeads + 2 * kChunk) * kLd * sizeof(float4) + kDim / 2 * sizeof(float2);

struct FusedArgs {
  const float* iq;  // n x 64 heads x 128, projected, before RoPE
  const float* iw;
  float wscale;
  const float* rows;
  int64_t pos0;
  int ratio;
  float* scores;
  int64_t stride;
  const int64_t* pos_dev;
  int n_rot;
  const double* freq;
  bool qat;
};

// cp.async of chunk c (rows r0 + 64 c ...) into buffer c % 2, whole 4-row tiles, slots at or past r1 zero.
__device__ __forceinline__ void stage_chunk(const float* rows, int64_t r0, int64_t r1, int c, float4* rs) {
  const int64_t base = r0 + static_cast<int64_t>(c) * kChunk;
  const int n = static_cast<int>(min(static_cast<int64_t>(kChunk), r1 - base));
  const int slots = (n + kTile - 1) / kTile * kTile * kDim4;
  float4* buf = rs + (c & 1) * kChunk * kLd;
  for (int i = threadIdx.x; i < slots; i += kThreads) {
    const int r = i / kDim4, k = i % kDim4;
    const bool in = r < n;
    mma::cp_async16(mma::smem_addr(buf + r * kLd + k), rows + (in ? (base + r) * kDim + 4 * k : 0), in ? 16u : 0u);
  }
}

// The scores of the staged rows tile[rq + 4 i] (i < R, rq = lane / 8) into out[row0 + ...] (rows below r1):
// lane g = lane % 8 dots each with heads g + 8 m (m < 8).
template <int R>
__device__ __forceinline__ void score_tile(const float4* qs, const float4* tile, const float (&w)[8], int64_t row0,
                                           int64_t r1, float* out) {
  const int lane = threadIdx.x & 31, g = lane & 7, rq = lane >> 3;
  float acc[R][8];
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int m = 0; m < 8; ++m) acc[i][m] = 0.0f;
#pragma unroll 2
  for (int k = 0; k < kDim4; ++k) {
    float4 x[R];
#pragma unroll
    for (int i = 0; i < R; ++i) x[i] = tile[(rq + 4 * i) * kLd + k];
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const float4 q = qs[(g + 8 * m) * kLd + k];
#pragma unroll
      for (int i = 0; i < R; ++i) {
        acc[i][m] = fmaf(q.x, x[i].x, acc[i][m]), acc[i][m] = fmaf(q.y, x[i].y, acc[i][m]);
        acc[i][m] = fmaf(q.z, x[i].z, acc[i][m]), acc[i][m] = fmaf(q.w, x[i].w, acc[i][m]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < R; ++i) {
    float lo = 0.0f, hi = 0.0f;  // head groups g (heads g + 16 j) and g + 8 (heads g + 8 + 16 j)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      lo = fmaf(fmaxf(0.0f, acc[i][2 * j]), w[2 * j], lo);
      hi = fmaf(fmaxf(0.0f, acc[i][2 * j + 1]), w[2 * j + 1], hi);
    }
    float sc = lo + hi;
#pragma unroll
    for (int off = 4; off > 0; off >>= 1) sc += __shfl_xor_sync(0xffffffffu, sc, off);
    const int64_t r = row0 + rq + 4 * i;
    if (g == 0 && r < r1) out[r] = sc == 0.0f ? 0.0f : sc;  // -0 ranks as +0
  }
}

// grid (n queries, blocks); block y scores rows [y per, (y + 1) per) of its query (per: a multiple of 4
// splitting the visible rows over the blocks), or exits at once when it has none.
__global__ void __launch_bounds__(kThreads, 2) indexer_fused_kernel(FusedArgs a) {
  pdl_wait();
  extern __shared__ float4 smem[];
  float4* qs = smem;                                                 // [head][k]: the prepared query
  float4* rs = smem + kHeads * kLd;                                  // [2][row][k]: row chunks
  float2* cs = reinterpret_cast<float2*>(rs + 2 * kChunk * kLd);   // [pair]: the RoPE rotations
  const int64_t pos0 = a.pos_dev ? *a.pos_dev : a.pos0;
  const int64_t t = blockIdx.x, n_vis = (pos0 + t + 1) / a.ratio;
  const int64_t per = ((n_vis + gridDim.y - 1) / gridDim.y + kTile - 1) / kTile * kTile;
  const int64_t r0 = blockIdx.y * per;
  if (r0 >= n_vis) return;
  const int64_t r1 = min(r0 + per, n_vis);
  const int n_chunks = static_cast<int>((r1 - r0 + kChunk - 1) / kChunk);
  // the query (first: the preparation waits for it): warp w holds heads 8 w .. 8 w + 7, a lane quad a
  // head (row_qat_quad.cuh's layout); then the scores' head weights, lane g's heads g + 8 m
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j = lane & 3, h = warp * 8 + (lane >> 2);
  const float4* q = reinterpret_cast<const float4*>(a.iq + (t * kHeads + h) * kDim) + j;
  float4 v[kQuadRegs];
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m) v[m] = q[4 * m];
  float w[8];
#pragma unroll
  for (int m = 0; m < 8; ++m) w[m] = a.iw[t * kHeads + (lane & 7) + 8 * m] * a.wscale;
  // the first two row chunks, in flight while the query is prepared
  stage_chunk(a.rows, r0, r1, 0, rs);
  mma::cp_async_commit();
  if (n_chunks > 1) stage_chunk(a.rows, r0, r1, 1, rs);
  mma::cp_async_commit();
  if (warp == 0)
    for (int p = lane; p < a.n_rot / 2; p += 32) cs[p] = d_rope_cs(static_cast<double>(pos0 + t) * a.freq[p], false);
  __syncthreads();  // cs
  // RoPE of the head's last n_rot values: pair p is values tail + 2 p, tail + 2 p + 1 (an x, y or z, w pair)
  const int tail = kDim - a.n_rot;
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m) {
    const int e = 16 * m + 4 * j;
    if (e >= tail) d_rotate(v[m].x, v[m].y, cs[(e - tail) / 2]);
    if (e + 2 >= tail) d_rotate(v[m].z, v[m].w, cs[(e + 2 - tail) / 2]);
  }
  if (a.qat) qat_row_quad(v);
#pragma unroll
  for (int m = 0; m < kQuadRegs; ++m) qs[h * kLd + 4 * m + j] = v[m];
  float* out = a.scores + t * a.stride;
  for (int c = 0; c < n_chunks; ++c) {
    mma::cp_async_wait<1>();  // chunk c is in (c + 1 may not be)
    __syncthreads();          // every thread's copies; at c = 0 also the query
    const int64_t row0 = r0 + static_cast<int64_t>(c) * kChunk;
    const float4* buf = rs + (c & 1) * kChunk * kLd;
    const int n = static_cast<int>(min(static_cast<int64_t>(kChunk), r1 - row0));
    if (n == kChunk) {
      score_tile<2>(qs, buf + warp * 8 * kLd, w, row0 + warp * 8, r1, out);
    } else {
      for (int tile = warp; tile * kTile < n; tile += kWarps)
        score_tile<1>(qs, buf + tile * kTile * kLd, w, row0 + tile * kTile, r1, out);
    }
    __syncthreads();  // buffer c % 2 is read
    if (c + 2 < n_chunks) stage_chunk(a.rows, r0, r1, c + 2, rs);
    mma::cp_async_commit();
  }
}

bool& fused_flag() {
  static bool on = env_choice("FLASHSTAR_IDX_FUSED", 0, 1, 1) == 1;
  return on;
}

// The query counts and RoPE widths the kernel takes (its heads are 64 of 128 values).
bool takes(int64_t n, int n_rot) { return n >= 1 && n <= kMaxTok && n_rot >= 0 && n_rot <= kDim && n_rot % 2 == 0; }

}  // namespace

bool indexer_fused(int n_heads, int head_dim, int64_t n, int n_rot) {
  return fused_flag() && n_heads == kHeads && head_dim == kDim && takes(n, n_rot);
}
void indexer_set_fused(bool on) { fused_flag() = on; }
bool indexer_fused_on() { return fused_flag(); }

void indexer_scores_fused(const float* iq, const float* iw, float wscale, const float* idx_rows, int64_t pos0,
                          int64_t n, int ratio, float* scores, int64_t stride, const int64_t* pos_dev,
                          const IndexerQueryPrep& prep, int64_t max_vis, cudaStream_t s) {
  if (!takes(n, prep.n_rot) || !aligned16(iq) || !aligned16(idx_rows))
    fail("internal: the fused decode indexer does not take %lld queries, n_rot %d or unaligned rows",
         static_cast<long long>(n), prep.n_rot);
  const int64_t blocks = std::min<int64_t>((max_vis + kTile - 1) / kTile, kMaxBlocks);
  if (blocks <= 0) return;
  static bool smem_set = false;
  if (!smem_set) {
    FS_CUDA_CHECK(cudaFuncSetAttribute(indexer_fused_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(kSmemBytes)));
    smem_set = true;
  }
  const FusedArgs a{iq, iw, wscale, idx_rows, pos0, ratio, scores, stride, pos_dev, prep.n_rot, prep.freq, prep.qat};
  indexer_fused_kernel<<<dim3(static_cast<unsigned>(n), static_cast<unsigned>(blocks)), kThreads, kSmemBytes, s>>>(a);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace flashstar::cuda::fast
