// Float-weight matrix-vector products for decode: the tiling and its summation order are described in
// fast_matvec_float.h. Block b of a launch belongs to the matrix whose block range holds it; within a
// matrix, consecutive blocks are the column parts of one row block.
#include "cuda/device_info.h"
#include "cuda/fast_matvec_float.h"

#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/cuda_util.h"
#include "cuda/float_unpack.cuh"
#include "cuda/last_block.cuh"
#include "cuda/pdl.cuh"
#include "cuda/route_block.cuh"
#include "cuda/stream_lanes.h"

namespace flashstar::cuda::fast {
namespace {

// One integer ticket per (matrix row block, token group) of a split product. They return to zero after
// each product; shared by the process, one copy per ticket lane (stream_lanes.h), so split products on
// a decode fork's two streams never share one.
constexpr int kFTickets = 4096;
__device__ int g_float_tickets[kTicketLanes * kFTickets];
__device__ int g_route_tickets[kTicketLanes];  // the fused router's whole-launch ticket

struct MatJob {
  const uint8_t* w;  // row 0 of the product (row0 applied)
  size_t row_bytes;
  float* y;
  int64_t ys;
  float* work;  // [part][token][row] partial sums when parts > 1
  int rows, parts, tiles_per_part, block0, ticket0;
};
// The router's picks after its product (float_matvec_route): route_token's arguments.
struct RouteTail {
  const float* bias;
  const int32_t* tid2eid;
  const int32_t* tokens;
  int32_t* sel;
  float* weights;
  float scale;
  int E, k, lane;
  bool norm;
};
struct Jobs {
  MatJob m[kFMaxMats];
  const float* x;
  int64_t xs, n_tok;
  int n_mats, units;
  FloatGeom g;
  RouteTail rt;
};

// Weights are read once per product: keep them out of L1 so the activations stay there.
__device__ __forceinline__ uint4 ld_stream(const uint8_t* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// kRoute (float_matvec_route): one matrix in one part, one token group; the last block to finish runs the
// router's picks over the logits the blocks stored.
// kEarly (FLASHSTAR_MV_EARLY): the weights are constants, so a block's first tile of them is
// loaded before pdl_wait(): at decode the launch follows a kernel of few blocks (hc_pre: 64), its blocks
// sit on the idle SMs and their one DRAM round trip overlaps that kernel. The same loads and sums.
template <GgmlType T, int NT, bool kRoute = false, bool kEarly = false>
__global__ void __launch_bounds__(kFThreads) mv_float_tiles(const __grid_constant__ Jobs J) {
  // PDL-PROLOGUE (kEarly): the first weight tile only before pdl_wait().
  if constexpr (!kEarly) pdl_wait();
  constexpr int E = kElems<T>;
  int mi = 0;
#pragma unroll
  for (int i = 1; i < kFMaxMats; ++i)
    if (i < J.n_mats && static_cast<int>(blockIdx.x) >= J.m[i].block0) mi = i;
  const MatJob& M = J.m[mi];
  const FloatGeom& g = J.g;
  const int local = static_cast<int>(blockIdx.x) - M.block0, rb = local / M.parts, part = local % M.parts;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c = warp % g.wc, wrow = warp / g.wc;
  const int row_base = rb * g.rows_per_block + wrow * kFRows;
  const int64_t x0 = static_cast<int64_t>(blockIdx.y) * kFMaxTok;
  const int nt = static_cast<int>(J.n_tok - x0 < kFMaxTok ? J.n_tok - x0 : kFMaxTok);
  const uint8_t* rowp[kFRows];
#pragma unroll
  for (int r = 0; r < kFRows; ++r)  // rows past the end read the last row and are never stored
    rowp[r] = M.w + static_cast<size_t>(row_base + r < M.rows ? row_base + r : M.rows - 1) * M.row_bytes;
  const float* xb = J.x + x0 * J.xs;

  float acc[kFRows][NT] = {};
  const int t_begin = part * M.tiles_per_part, t_end = min(g.tiles_per_row, t_begin + M.tiles_per_part);
  int64_t unit[kFUnits];
  bool on[kFUnits];
  uint4 wv[kFRows][kFUnits];
  // Every weight load of a tile is issued before the first is used.
  auto load = [&](int tile) {
#pragma unroll
    for (int u = 0; u < kFUnits; ++u) {
      unit[u] = float_unit(g, tile, c, u, lane);
      on[u] = unit[u] < J.units;
    }
#pragma unroll
    for (int r = 0; r < kFRows; ++r)
#pragma unroll
      for (int u = 0; u < kFUnits; ++u) wv[r][u] = on[u] ? ld_stream(rowp[r] + unit[u] * 16) : make_uint4(0, 0, 0, 0);
  };
  if constexpr (kEarly) {
    if (t_begin < t_end) load(t_begin);
    pdl_wait();
  }
  for (int tile = t_begin; tile < t_end; ++tile) {
    if (!kEarly || tile != t_begin) load(tile);
#pragma unroll
    for (int u = 0; u < kFUnits; ++u) {
      float xv[NT][E];
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const bool live = on[u] && t < nt;
        const float4* xp = reinterpret_cast<const float4*>(xb + t * J.xs + unit[u] * E);
#pragma unroll
        for (int q = 0; q < E / 4; ++q) {
          const float4 v = live ? __ldg(xp + q) : make_float4(0, 0, 0, 0);
          xv[t][4 * q] = v.x, xv[t][4 * q + 1] = v.y, xv[t][4 * q + 2] = v.z, xv[t][4 * q + 3] = v.w;
        }
      }
#pragma unroll
      for (int r = 0; r < kFRows; ++r) {
        float w[E];
        unpack<T>(wv[r][u], w);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          float s = w[0] * xv[t][0];
#pragma unroll
          for (int k = 1; k < E; ++k) s = fmaf(w[k], xv[t][k], s);
          acc[r][t] += s;
        }
      }
    }
  }

  __shared__ float red[kFWarps][kFRows][NT];
#pragma unroll
  for (int r = 0; r < kFRows; ++r)
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float v = acc[r][t];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0) red[warp][r][t] = v;
    }
  __syncthreads();
  // One thread per output of the block (rows_per_block * NT <= kFThreads): column warps in warp order.
  const int outs = g.rows_per_block * nt, i = threadIdx.x;
  const int rl = i % g.rows_per_block, t = i / g.rows_per_block, row = rb * g.rows_per_block + rl;
  const bool live = i < outs && row < M.rows;
  if (live) {
    const int w0 = (rl / kFRows) * g.wc, r = rl % kFRows;
    float v = red[w0][r][t];
    for (int cc = 1; cc < g.wc; ++cc) v += red[w0 + cc][r][t];
    if (M.parts == 1) M.y[(x0 + t) * M.ys + row] = v;
    else M.work[(static_cast<int64_t>(part) * J.n_tok + x0 + t) * M.rows + row] = v;
  }
  if constexpr (kRoute) {
    int* ticket = &g_route_tickets[J.rt.lane];
    if (!last_to_finish(ticket, static_cast<int>(gridDim.x))) return;
    const RouteTail& r = J.rt;
    for (int64_t tk = 0; tk < J.n_tok; ++tk) {
      route_token(M.y, r.bias, r.tid2eid, r.tokens, r.E, r.k, r.norm, r.scale, r.sel, r.weights, tk);
      __syncthreads();  // the next token rewrites the shared picks and probabilities this one's tail reads
    }
    if (threadIdx.x == 0) *ticket = 0;
    return;
  }
  if (M.parts == 1) return;
  int* ticket = &g_float_tickets[M.ticket0 + rb * static_cast<int>(gridDim.y) + static_cast<int>(blockIdx.y)];
  if (!last_to_finish(ticket, M.parts)) return;
  if (live) {
    const float* p = M.work + (x0 + t) * M.rows + row;
    const int64_t stride = J.n_tok * M.rows;
    float v = __ldcg(p);
    for (int z = 1; z < M.parts; ++z) v += __ldcg(p + z * stride);
    M.y[(x0 + t) * M.ys + row] = v;
  }
  if (threadIdx.x == 0) *ticket = 0;
}

// FLASHSTAR_MV_EARLY (default 1; =0 off; mv_set_early): decode launches (one or two tokens) load their first
// weight tile before the PDL wait (kEarly).
bool& early_flag() {
  static bool on = env_choice("FLASHSTAR_MV_EARLY", 0, 1, 1) == 1;
  return on;
}

template <GgmlType T>
void launch_route(const Jobs& J, dim3 grid, cudaStream_t s) {
  const int nt = static_cast<int>(J.n_tok);
  if (nt == 1 && early_flag()) mv_float_tiles<T, 1, true, true><<<grid, kFThreads, 0, s>>>(J);
  else if (nt == 1) mv_float_tiles<T, 1, true><<<grid, kFThreads, 0, s>>>(J);
  else if (nt == 2) mv_float_tiles<T, 2, true><<<grid, kFThreads, 0, s>>>(J);
  else if (nt <= 4) mv_float_tiles<T, 4, true><<<grid, kFThreads, 0, s>>>(J);
  else mv_float_tiles<T, 8, true><<<grid, kFThreads, 0, s>>>(J);
  FS_CUDA_LAUNCH_CHECK();
}

template <GgmlType T>
void launch_t(const Jobs& J, dim3 grid, cudaStream_t s) {
  const int nt = static_cast<int>(std::min<int64_t>(J.n_tok, kFMaxTok));
  if (nt == 1 && early_flag()) mv_float_tiles<T, 1, false, true><<<grid, kFThreads, 0, s>>>(J);
  else if (nt == 2 && early_flag()) mv_float_tiles<T, 2, false, true><<<grid, kFThreads, 0, s>>>(J);
  else if (nt == 1) mv_float_tiles<T, 1><<<grid, kFThreads, 0, s>>>(J);
  else if (nt == 2) mv_float_tiles<T, 2><<<grid, kFThreads, 0, s>>>(J);
  else if (nt <= 4) mv_float_tiles<T, 4><<<grid, kFThreads, 0, s>>>(J);
  else mv_float_tiles<T, 8><<<grid, kFThreads, 0, s>>>(J);
  FS_CUDA_LAUNCH_CHECK();
}



int64_t elems_of(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return 4;
    case GgmlType::F16:
    case GgmlType::BF16: return 8;
    default: return 0;
  }
}

// Builds the launch; `split` false: one part per matrix (the caller had no room for partial sums).
// route: the router's tail (float_matvec_route), taken only where the product is one part of one token
// group (as its float_matvec call would run it), else false with nothing launched.
bool plan_and_launch(const MatvecOut* outs, int n_mats, const float* X, int64_t n_tok, int64_t xs, cudaStream_t s,
                     float* work, int64_t work_floats, bool split_or_fail, const RouteTail* route = nullptr) {
  if (n_mats < 1 || n_mats > kFMaxMats || n_tok <= 0) return false;
  const GgmlType type = outs[0].W->type;
  const int64_t cols = outs[0].W->cols, e = elems_of(type);
  if (!e || cols <= 0 || cols % e || cols / e >= (1ll << 30) || !aligned16(X) || xs % 4) return false;
  const int64_t groups = (n_tok + kFMaxTok - 1) / kFMaxTok;
  if (groups > 65535) return false;
  Jobs J{};
  J.x = X, J.xs = xs, J.n_tok = n_tok, J.n_mats = n_mats, J.units = static_cast<int>(cols / e);
  J.g = float_geom(J.units);
  int64_t blocks = 0, tickets = 0, wused = 0;
  const int lane_ticket0 = ticket_lane(s) * kFTickets;
  for (int i = 0; i < n_mats; ++i) {
    const MatvecOut& o = outs[i];
    const DMat& W = *o.W;
    if (W.type != type || W.cols != cols || W.row_bytes % 16 || !aligned16(W.data) || o.row0 < 0 || o.n_rows <= 0 ||
        o.n_rows >= (1 << 30) || (W.rows > 0 && W.rows < o.row0 + o.n_rows))
      return false;
    const int64_t row_blocks = (o.n_rows + J.g.rows_per_block - 1) / J.g.rows_per_block;
    // Only one token group (decode) splits: prefill chunks of any size > kFMaxTok then add in the same
    // order (whole and chunked prefill stay bitwise equal), whatever the workspace holds.
    int parts = groups == 1 ? float_parts(J.g, row_blocks, current_sm_count()) : 1;
    if (parts > 1 && (!work || wused + parts * n_tok * o.n_rows > work_floats ||
                      tickets + row_blocks * groups > kFTickets)) {
      if (split_or_fail) return false;
      parts = 1;
    }
    MatJob& m = J.m[i];
    m.w = W.data + static_cast<size_t>(o.row0) * W.row_bytes, m.row_bytes = W.row_bytes;
    m.y = o.Y, m.ys = o.ys, m.rows = static_cast<int>(o.n_rows), m.parts = parts;
    m.tiles_per_part = (J.g.tiles_per_row + parts - 1) / parts;
    m.block0 = static_cast<int>(blocks), m.ticket0 = lane_ticket0 + static_cast<int>(tickets);
    m.work = parts > 1 ? work + wused : nullptr;
    blocks += row_blocks * parts;
    if (parts > 1) tickets += row_blocks * groups, wused += parts * n_tok * o.n_rows;
    if (blocks > (1ll << 30)) return false;
  }
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(groups));
  if (route) {
    if (n_mats != 1 || groups != 1 || J.m[0].parts != 1) return false;
    J.rt = *route;
    switch (type) {
      case GgmlType::F32: launch_route<GgmlType::F32>(J, grid, s); break;
      case GgmlType::F16: launch_route<GgmlType::F16>(J, grid, s); break;
      default: launch_route<GgmlType::BF16>(J, grid, s); break;
    }
    return true;
  }
  switch (type) {
    case GgmlType::F32: launch_t<GgmlType::F32>(J, grid, s); break;
    case GgmlType::F16: launch_t<GgmlType::F16>(J, grid, s); break;
    default: launch_t<GgmlType::BF16>(J, grid, s); break;
  }
  return true;
}

}  // namespace

bool float_matvec_multi(const MatvecOut* outs, int n_mats, const float* X, int64_t n_tok, int64_t xs, cudaStream_t s,
                        float* work, int64_t work_floats) {
  return plan_and_launch(outs, n_mats, X, n_tok, xs, s, work, work_floats, true);
}

bool& router_fused_flag() {
  static bool on = env_choice("FLASHSTAR_ROUTER_FUSED", 0, 1, 0) == 1;
  return on;
}
bool router_fused() { return router_fused_flag(); }
void mv_set_early(bool on) { early_flag() = on; }
bool mv_early() { return early_flag(); }
void router_set_fused(bool on) { router_fused_flag() = on; }

bool float_matvec_route(const DMat& W, const float* X, int64_t n_tok, int64_t xs, float* logits, const RouterArgs& r,
                        cudaStream_t s, float* work, int64_t work_floats) {
  if (n_tok <= 0 || n_tok > kFMaxTok || W.rows <= 0 || W.rows > kFThreads || r.k < 1 || r.k > 32 || r.k > W.rows ||
      !r.sel || !r.weights || (r.tid2eid && !r.tokens))
    return false;
  const MatvecOut o{&W, 0, W.rows, logits, W.rows};
  RouteTail t{r.bias, r.tid2eid, r.tokens, r.sel, r.weights, r.scale, static_cast<int>(W.rows), r.k, ticket_lane(s),
              r.norm};
  return plan_and_launch(&o, 1, X, n_tok, xs, s, work, work_floats, false, &t);
}

bool float_matvec(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
                  int64_t ys, cudaStream_t s, float* work, int64_t work_floats) {
  if (n_rows <= 0 || n_tok <= 0) return true;
  const MatvecOut o{&W, row0, n_rows, Y, ys};
  return plan_and_launch(&o, 1, X, n_tok, xs, s, work, work_floats, false);
}

}  // namespace flashstar::cuda::fast
