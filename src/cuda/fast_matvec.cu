// Decode-time matrix-vector products at memory speed. A warp owns four weight rows: it streams them
// chunk by chunk into shared memory with 16-byte cp.async copies (double-buffered, so the next chunk is
// in flight while this one is used), and every activation float4 it loads serves the four rows. The
// lane order and the final shuffle tree are fixed: results are deterministic.
#include <algorithm>

#include "cuda/cuda_util.h"
#include "cuda/weight_dispatch.h"
#include "cuda/fast_kernels.h"
#include "cuda/fast_expert_mma.h"
#include "cuda/fast_matvec_float.h"
#include "cuda/fast_matvec_q8.h"
#include "cuda/fast_quant.cuh"
#include "cuda/last_block.cuh"
#include "quant/quant.h"
#include "cuda/pdl.cuh"
#include "cuda/stream_lanes.h"

namespace flashstar::cuda::fast {
namespace {

constexpr int kWarps = 4, kRowsPerWarp = 4, kThreads = kWarps * 32, kMaxTok = 8;
constexpr int kGroups = 2;  // row groups of four per warp in the quantized kernels
constexpr int64_t kQ8StreamTokens = 2;  // beyond, the streaming Q8_0 kernel turns compute-bound

__device__ uint64_t g_iq2_grid[256];
__device__ uint8_t g_iq2_signs[128];

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Which weight rows, activation rows and output rows a block's y index stands for.
struct Work {
  int64_t wbase, x0, y0;
  int nt;
};
__device__ __forceinline__ Work work_of(const int32_t* mat_of_item, int64_t rows_per_mat, int32_t src_div, int64_t row0,
                                        int64_t n_tok) {
  Work w;
  const int64_t y = blockIdx.y;
  if (mat_of_item) {
    w.wbase = static_cast<int64_t>(mat_of_item[y]) * rows_per_mat;
    w.x0 = y / src_div, w.y0 = y, w.nt = 1;
  } else {
    w.wbase = row0, w.x0 = y * kMaxTok, w.y0 = y * kMaxTok;
    w.nt = static_cast<int>(n_tok - w.x0 < kMaxTok ? n_tok - w.x0 : kMaxTok);
  }
  return w;
}

// Short matrices split their columns over blockIdx.z parts (enough blocks to fill the card); each part
// writes partial sums to `work` ([part][token][row]) and the last part of a row block to finish (an
// integer ticket per row block) adds them in part order: the same sums as a separate reduction kernel,
// one launch fewer. The tickets return to zero after each product; they are shared by the process, one
// row per ticket lane (stream_lanes.h), so split products on a decode fork's two streams never share one.
constexpr int kMaxSplitBlocks = 264;
__device__ int g_split_tickets[kTicketLanes][kMaxSplitBlocks];

struct Split {
  int parts;
  float* work;
  int64_t n_tok;  // tokens (or items) of the whole product
  int lane = 0;   // ticket lane of the launch's stream
};

template <int NT>
__device__ __forceinline__ void finish(float (&acc)[kRowsPerWarp][NT], int64_t r0, int64_t n_rows, const Work& wk,
                                       float* Y, int64_t ys, const Split& sp) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float v = acc[r][t];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0 && r0 + r < n_rows && t < wk.nt) {
        if (sp.parts == 1) Y[(wk.y0 + t) * ys + r0 + r] = v;
        else sp.work[(blockIdx.z * sp.n_tok + wk.y0 + t) * n_rows + r0 + r] = v;
      }
    }
}

// Called by every thread of a split block after finish(): the block that completes a row block last
// sums its parts (reading them from L2, where the other blocks' fenced stores are) and resets the ticket.
// kSumLanes lanes share an output, each adding every kSumLanes-th part, then a fixed shuffle tree: the
// loads of one output are in flight together (one thread walking 64 parts waited 64 L2 latencies), and
// the order depends on the part count alone, not on how many tokens the product has.
constexpr int kSumLanes = 8;
__device__ void reduce_if_last(const Split& sp, int64_t n_rows, const Work& wk, float* Y, int64_t ys, int kRows) {
  int* const ticket = &g_split_tickets[sp.lane][blockIdx.x];
  if (!last_to_finish(ticket, sp.parts)) return;
  const int64_t rb = static_cast<int64_t>(blockIdx.x) * kRows;
  const int sub = threadIdx.x % kSumLanes, groups = blockDim.x / kSumLanes;
  const int outputs = kRows * wk.nt, passes = (outputs + groups - 1) / groups;
  for (int pass = 0; pass < passes; ++pass) {  // uniform trip count: every lane reaches the shuffles
    const int i = pass * groups + static_cast<int>(threadIdx.x) / kSumLanes;
    const int64_t r = rb + i % kRows, t = wk.y0 + i / kRows;
    const bool live = i < outputs && r < n_rows;
    float v = 0.0f;
    if (live)
      for (int z = sub; z < sp.parts; z += kSumLanes) v += __ldcg(sp.work + (z * sp.n_tok + t) * n_rows + r);
#pragma unroll
    for (int off = kSumLanes / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (live && sub == 0) Y[t * ys + r] = v;
  }
  if (threadIdx.x == 0) *ticket = 0;
}

// Decode steps of 8 weights sharing one scale (Q8_0: a quarter block; IQ2_XXS: one grid entry): the scale
// multiplies the 8-term sum once, and the integers become floats through their mantissa.
template <int NT>
__device__ __forceinline__ void q8_0_step8(const uint8_t* blk, int j, const float4 (&xa)[NT], const float4 (&xb)[NT],
                                           float (&acc)[NT]) {
  const float d = h2f(lds_u16(blk));
  const uint32_t q0 = lds_u32_2(blk + 2 + j) ^ 0x80808080u, q1 = lds_u32_2(blk + 6 + j) ^ 0x80808080u;
  float w[8];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    w[k] = __int_as_float(__byte_perm(q0, 0x4B00u, 0x5440u + k)) - 8388736.0f;
    w[4 + k] = __int_as_float(__byte_perm(q1, 0x4B00u, 0x5440u + k)) - 8388736.0f;
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float s = w[0] * xa[t].x + w[1] * xa[t].y + w[2] * xa[t].z + w[3] * xa[t].w + w[4] * xb[t].x +
                    w[5] * xb[t].y + w[6] * xb[t].z + w[7] * xb[t].w;
    acc[t] = fmaf(d, s, acc[t]);
  }
}
template <int NT>
__device__ __forceinline__ void iq2_xxs_step8(const uint8_t* sb, int e, const Iq2Tables* tab, const float4 (&xa)[NT],
                                              const float4 (&xb)[NT], float (&acc)[NT]) {
  const int g = e >> 5, k = (e & 31) >> 3;  // sub-block of 32, grid entry of 8 within it
  const uint32_t a = lds_u32_2(sb + 2 + 8 * g), sg = lds_u32_2(sb + 6 + 8 * g);
  const float db = h2f(lds_u16(sb)) * (0.5f + u2f(sg >> 28)) * 0.25f;
  const uint64_t grid = tab->grid[(a >> (8 * k)) & 255];
  const uint32_t signs = tab->signs[(sg >> (7 * k)) & 127];
  const uint32_t lo = static_cast<uint32_t>(grid), hi = static_cast<uint32_t>(grid >> 32);
  float w[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    w[i] = byte_u(lo, i), w[4 + i] = byte_u(hi, i);
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) w[i] = (signs >> i) & 1 ? -w[i] : w[i];
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float s = w[0] * xa[t].x + w[1] * xa[t].y + w[2] * xa[t].z + w[3] * xa[t].w + w[4] * xb[t].x +
                    w[5] * xb[t].y + w[6] * xb[t].z + w[7] * xb[t].w;
    acc[t] = fmaf(db, s, acc[t]);
  }
}

// A warp owns kGroups groups of four rows and streams (group, chunk) steps back to back through two
// staging buffers: the next step's copy is in flight while this one is computed, also across groups
// (rows of one chunk, as in attn_q_b, otherwise load and then compute with nothing overlapping).
template <GgmlType T, int NT>
__global__ void __launch_bounds__(kThreads) mv_quant(const uint8_t* __restrict__ W, size_t row_bytes, int cols,
                                                      int64_t n_rows, int64_t row0, const int32_t* mat_of_item,
                                                      int64_t rows_per_mat, int32_t src_div,
                                                      const float* __restrict__ X, int64_t xs, float* Y, int64_t ys,
                                                      int64_t n_tok, Split sp) {
  pdl_wait();
  using Q = QuantTraits<T>;
  constexpr int kChunkBytes = Q::kChunk / Q::kBlock * Q::kBytes;
  constexpr int kVec = kChunkBytes / 16;
  extern __shared__ __align__(16) uint8_t smem[];
  Iq2Tables* tab = reinterpret_cast<Iq2Tables*>(smem);
  uint8_t* bufs = smem + (T == GgmlType::IQ2_XXS ? sizeof(Iq2Tables) : 0);
  if constexpr (T == GgmlType::IQ2_XXS) {
    for (int i = threadIdx.x; i < 256; i += kThreads) tab->grid[i] = g_iq2_grid[i];
    for (int i = threadIdx.x; i < 128; i += kThreads) tab->signs[i] = g_iq2_signs[i];
    __syncthreads();
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const Work wk = work_of(mat_of_item, rows_per_mat, src_div, row0, n_tok);
  const int64_t rbase = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kRowsPerWarp * kGroups;
  uint8_t* buf = bufs + static_cast<size_t>(warp) * 2 * kRowsPerWarp * kChunkBytes;
  const uint8_t* wmat = W + static_cast<size_t>(wk.wbase) * row_bytes;
  const int all_chunks = cols / Q::kChunk, per = (all_chunks + sp.parts - 1) / sp.parts;
  const int c_begin = blockIdx.z * per, nc = min(all_chunks, c_begin + per) - c_begin;
  const int64_t groups_left = rbase >= n_rows ? 0 : (n_rows - rbase + kRowsPerWarp - 1) / kRowsPerWarp;
  const int ng = static_cast<int>(groups_left < kGroups ? groups_left : kGroups);
  const int steps = nc > 0 ? ng * nc : 0;
  auto stage = [&](int it) {
    const int64_t gr = rbase + (it / nc) * kRowsPerWarp;
    const size_t coff = static_cast<size_t>(c_begin + it % nc) * kChunkBytes;
    uint8_t* dst = buf + (it & 1) * kRowsPerWarp * kChunkBytes;
    for (int v = lane; v < kRowsPerWarp * kVec; v += 32) {
      const int r = v / kVec, o = (v % kVec) * 16;
      const int64_t row = gr + r < n_rows ? gr + r : n_rows - 1;
      cp_async16(dst + r * kChunkBytes + o, wmat + static_cast<size_t>(row) * row_bytes + coff + o);
    }
    cp_async_commit();
  };
  float acc[kRowsPerWarp][NT] = {};
  if (steps > 0) stage(0);
  for (int it = 0; it < steps; ++it) {
    if (it + 1 < steps) {
      stage(it + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncwarp();
    const int c = c_begin + it % nc;
    const uint8_t* cb = buf + (it & 1) * kRowsPerWarp * kChunkBytes;
    const float* xc = X + wk.x0 * xs + static_cast<int64_t>(c) * Q::kChunk;
    if constexpr (T == GgmlType::Q8_0 || T == GgmlType::IQ2_XXS) {
#pragma unroll 2
      for (int e = 8 * lane; e < Q::kChunk; e += 256) {
        float4 xa[NT], xb[NT];
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          const bool on = t < wk.nt;
          xa[t] = on ? __ldg(reinterpret_cast<const float4*>(xc + t * xs + e)) : make_float4(0, 0, 0, 0);
          xb[t] = on ? __ldg(reinterpret_cast<const float4*>(xc + t * xs + e + 4)) : make_float4(0, 0, 0, 0);
        }
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
          if constexpr (T == GgmlType::Q8_0) q8_0_step8<NT>(cb + r * kChunkBytes + (e >> 5) * 34, e & 31, xa, xb, acc[r]);
          else iq2_xxs_step8<NT>(cb + r * kChunkBytes + (e >> 8) * 66, e & 255, tab, xa, xb, acc[r]);
        }
      }
    } else {
#pragma unroll 2
      for (int e = 4 * lane; e < Q::kChunk; e += 128) {
        float4 x[NT];
#pragma unroll
        for (int t = 0; t < NT; ++t)
          x[t] = t < wk.nt ? __ldg(reinterpret_cast<const float4*>(xc + t * xs + e)) : make_float4(0, 0, 0, 0);
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
          float w[4];
          dq4<T>(cb + r * kChunkBytes, e, w, tab);
#pragma unroll
          for (int t = 0; t < NT; ++t) acc[r][t] += w[0] * x[t].x + w[1] * x[t].y + w[2] * x[t].z + w[3] * x[t].w;
        }
      }
    }
    __syncwarp();  // this buffer is refilled two steps later
    if (it % nc == nc - 1) {  // the group's last chunk: its rows are done
      finish<NT>(acc, rbase + (it / nc) * kRowsPerWarp, n_rows, wk, Y, ys, sp);
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.0f;
    }
  }
  if (sp.parts > 1) reduce_if_last(sp, n_rows, wk, Y, ys, kWarps * kRowsPerWarp * kGroups);
}


template <GgmlType T, int NT>
__global__ void __launch_bounds__(kThreads) mv_float(const uint8_t* __restrict__ W, size_t row_bytes, int cols,
                                                      int64_t n_rows, int64_t row0, const int32_t* mat_of_item,
                                                      int64_t rows_per_mat, int32_t src_div,
                                                      const float* __restrict__ X, int64_t xs, float* Y, int64_t ys,
                                                      int64_t n_tok, Split sp) {
  pdl_wait();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const Work wk = work_of(mat_of_item, rows_per_mat, src_div, row0, n_tok);
  const int64_t r0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
  const uint8_t* rows[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
    rows[r] = W + static_cast<size_t>(wk.wbase + (r0 + r < n_rows ? r0 + r : n_rows - 1)) * row_bytes;
  float acc[kRowsPerWarp][NT] = {};
  const int per = (cols / 128 + sp.parts - 1) / sp.parts * 128, e_end = min(cols, static_cast<int>(blockIdx.z + 1) * per);
  for (int e = blockIdx.z * per + 4 * lane; e < e_end; e += 128) {
    float4 x[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t)
      x[t] = t < wk.nt ? __ldg(reinterpret_cast<const float4*>(X + (wk.x0 + t) * xs + e)) : make_float4(0, 0, 0, 0);
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      float w[4];
      load_float4w<T>(rows[r], e, w);
#pragma unroll
      for (int t = 0; t < NT; ++t) acc[r][t] += w[0] * x[t].x + w[1] * x[t].y + w[2] * x[t].z + w[3] * x[t].w;
    }
  }
  finish<NT>(acc, r0, n_rows, wk, Y, ys, sp);
  if (sp.parts > 1) reduce_if_last(sp, n_rows, wk, Y, ys, kWarps * kRowsPerWarp);
}

// Rows a block covers: the quantized kernels stream kGroups groups per warp, the float ones one.
constexpr int64_t rows_per_block_of(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16 ? kWarps * kRowsPerWarp
                                                                         : kWarps * kRowsPerWarp * kGroups;
}

template <GgmlType T>
constexpr size_t smem_bytes() {
  if constexpr (T == GgmlType::F32 || T == GgmlType::F16 || T == GgmlType::BF16) {
    return 0;
  } else {
    using Q = QuantTraits<T>;
    return (T == GgmlType::IQ2_XXS ? sizeof(Iq2Tables) : 0) +
           static_cast<size_t>(kWarps) * 2 * kRowsPerWarp * (Q::kChunk / Q::kBlock * Q::kBytes);
  }
}

template <GgmlType T, int NT>
void launch(const DMat& W, int64_t row0, int64_t n_rows, const int32_t* mat, int64_t rpm, int32_t src_div,
            const float* X, int64_t xs, float* Y, int64_t ys, int64_t n_tok, int64_t grid_y, const Split& sp,
            cudaStream_t s) {
  constexpr size_t sm = smem_bytes<T>();
  const int64_t rows_per_block = rows_per_block_of(T);
  const dim3 grid(static_cast<unsigned>((n_rows + rows_per_block - 1) / rows_per_block), static_cast<unsigned>(grid_y),
                  static_cast<unsigned>(sp.parts));
  if constexpr (sm == 0) {
    mv_float<T, NT><<<grid, kThreads, 0, s>>>(W.data, W.row_bytes, static_cast<int>(W.cols), n_rows, row0, mat, rpm,
                                              src_div, X, xs, Y, ys, n_tok, sp);
  } else {
    static bool attr = false;
    if (!attr) {
      FS_CUDA_CHECK(cudaFuncSetAttribute(mv_quant<T, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sm)));
      attr = true;
    }
    mv_quant<T, NT><<<grid, kThreads, sm, s>>>(W.data, W.row_bytes, static_cast<int>(W.cols), n_rows, row0, mat, rpm,
                                               src_div, X, xs, Y, ys, n_tok, sp);
  }
  FS_CUDA_LAUNCH_CHECK();
}

template <GgmlType T>
void launch_nt(int nt, const DMat& W, int64_t row0, int64_t n_rows, const int32_t* mat, int64_t rpm, int32_t src_div,
               const float* X, int64_t xs, float* Y, int64_t ys, int64_t n_tok, int64_t grid_y, const Split& sp,
               cudaStream_t s) {
  if (nt == 1) launch<T, 1>(W, row0, n_rows, mat, rpm, src_div, X, xs, Y, ys, n_tok, grid_y, sp, s);
  else if (nt == 2) launch<T, 2>(W, row0, n_rows, mat, rpm, src_div, X, xs, Y, ys, n_tok, grid_y, sp, s);
  else if (nt <= 4) launch<T, 4>(W, row0, n_rows, mat, rpm, src_div, X, xs, Y, ys, n_tok, grid_y, sp, s);
  else launch<T, 8>(W, row0, n_rows, mat, rpm, src_div, X, xs, Y, ys, n_tok, grid_y, sp, s);
}

template <GgmlType T>
struct NtLaunch {
  static void run(int nt, const DMat& W, int64_t row0, int64_t n_rows, const int32_t* mat, int64_t rpm, int32_t src_div,
                  const float* X, int64_t xs, float* Y, int64_t ys, int64_t n_tok, int64_t grid_y, const Split& sp,
                  cudaStream_t s) {
    launch_nt<T>(nt, W, row0, n_rows, mat, rpm, src_div, X, xs, Y, ys, n_tok, grid_y, sp, s);
  }
};

int64_t chunk_of(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0: return QuantTraits<GgmlType::Q8_0>::kChunk;
    case GgmlType::Q2_K: return QuantTraits<GgmlType::Q2_K>::kChunk;
    case GgmlType::Q4_K: return QuantTraits<GgmlType::Q4_K>::kChunk;
    case GgmlType::IQ2_XXS: return QuantTraits<GgmlType::IQ2_XXS>::kChunk;
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16: return 128;
    default: return 0;
  }
}

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

// Shapes and alignments these kernels assume; anything else goes to the reference kernel.
bool supported(const DMat& W, const float* X, int64_t xs) {
  const int64_t ch = chunk_of(W.type);
  return ch && W.cols % ch == 0 && W.row_bytes % 16 == 0 && aligned(W.data, 16) && aligned(X, 16) && xs % 4 == 0 &&
         W.cols < (1ll << 30);
}

bool run(const DMat& W, int64_t row0, int64_t n_rows, const int32_t* mat, int64_t rpm, int32_t src_div, const float* X,
         int64_t xs, float* Y, int64_t ys, int64_t n_tok, int64_t grid_y, int nt, float* work, int64_t work_floats,
         cudaStream_t s) {
  if (!supported(W, X, xs)) return false;
  // Enough blocks for every multiprocessor twice over: split the columns of short matrices.
  Split sp{1, work, mat ? grid_y : n_tok, ticket_lane(s)};
  // Only one group of tokens (decode) splits, and the part count depends on the matrix alone, so a
  // token's result never depends on how many tokens share its product.
  const int64_t rpb = rows_per_block_of(W.type), blocks = (n_rows + rpb - 1) / rpb;
  const int64_t max_parts = W.cols / (chunk_of(W.type) * (chunk_of(W.type) == 128 ? 2 : 1));
  if (work && !mat && n_tok <= kMaxTok && blocks < kMaxSplitBlocks && max_parts > 1) {
    int parts = static_cast<int>(std::min<int64_t>({max_parts, (kMaxSplitBlocks + blocks - 1) / blocks, 64}));
    while (parts > 1 && parts * sp.n_tok * n_rows > work_floats) --parts;
    sp.parts = parts;
  }
  dispatch_weight_type<NtLaunch>(W.type, nt, W, row0, n_rows, mat, rpm, src_div, X, xs, Y, ys, n_tok, grid_y, sp, s);
  return true;
}

}  // namespace

void init_tables() {
  static bool done = false;
  if (done) return;
  FS_CUDA_CHECK(cudaMemcpyToSymbol(g_iq2_grid, quant::kIq2xxsGrid, sizeof(g_iq2_grid)));
  FS_CUDA_CHECK(cudaMemcpyToSymbol(g_iq2_signs, quant::kIq2xsSigns, sizeof(g_iq2_signs)));
  const int zeros[kTicketLanes][kMaxSplitBlocks] = {};
  FS_CUDA_CHECK(cudaMemcpyToSymbol(g_split_tickets, zeros, sizeof(zeros)));
  init_gemm_tables();
  init_expert_tables();
  done = true;
}

bool matvec(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
            int64_t ys, cudaStream_t s, float* work, int64_t work_floats) {
  if (n_rows <= 0 || n_tok <= 0) return true;
  // Q8_0 at one or two tokens: the persistent streaming kernel (fast_matvec_q8.cu)
  if (W.type == GgmlType::Q8_0 && n_tok <= kQ8StreamTokens && q8_matvec(W, row0, n_rows, X, n_tok, xs, Y, ys, s)) return true;
  // Float weights: every load of a step in flight at once, whole rows per block (fast_matvec_float.cu)
  if (float_matvec(W, row0, n_rows, X, n_tok, xs, Y, ys, s, work, work_floats)) return true;
  const int64_t groups = (n_tok + kMaxTok - 1) / kMaxTok;
  if (groups > 65535) return false;
  return run(W, row0, n_rows, nullptr, 0, 1, X, xs, Y, ys, n_tok, groups, static_cast<int>(std::min<int64_t>(n_tok, kMaxTok)),
             work, work_floats, s);
}

bool matvec_items(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                  int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s, float* work, int64_t work_floats) {
  if (n_items <= 0) return true;
  // IQ2_XXS / Q2_K experts: INT8 tensor cores with four-digit activations (fast_expert_mma.cu)
  if (expert_matvec(W, rows_per_mat, mat_of_item, src_div, X, xs, n_items, Y, ys, s)) return true;
  if (W.type == GgmlType::Q8_0 && q8_matvec_items(W, rows_per_mat, mat_of_item, src_div, X, xs, n_items, Y, ys, s))
    return true;
  if (n_items > 65535) return false;
  return run(W, 0, rows_per_mat, mat_of_item, rows_per_mat, src_div, X, xs, Y, ys, n_items, n_items, 1, work,
             work_floats, s);
}

}  // namespace flashstar::cuda::fast
