// The grouped expert GEMM, second kernel: the first kernel's arithmetic (fast_gemm.cu: exact FP16
// integer weights, activations as two FP16 terms, two mma per step, the partial of each 32-column
// k-tile promoted with the row's scale and minima) with far less shared-memory and L1 traffic per mma,
// which is what bounded the first kernel (Nsight: L1 88%, DRAM 3%):
// - raw weight bytes arrive with coalesced 4-byte cp.async copies, one 256-column unit ahead, instead of
//   2-byte global loads spread over 16 rows per instruction; each thread then decodes one row's k-tile
//   from shared memory (conflict-free: odd row stride) into the FP16 tile (gemm_group_v2.h);
// - activations arrive by 16-byte cp.async in a 4-stage ring, never through registers;
// - warps own 64 rows x 32 items (2 x 2 warps per 128 x 64 block), so a 16-column step loads 8
//   fragments for 32 mma (the first kernel: 6 for 16); tiles are XOR-swizzled, not padded; the mma
//   tiles of items past the count are skipped, and a tile of 32 items or fewer is split by rows only;
// - the IQ2_XXS grid is a 1 KB table of PRMT selectors (one 4-byte lookup per 8 weights; the sign
//   parity is computed), where the first kernel read 8 bytes of grid and a sign byte.
// One barrier per k-tile: the decode of k-tile t + 1 and the mma of k-tile t share an iteration.
// Every output element is still one thread's fixed sequence of mma and fp32 operations (the same as the
// first kernel's, bitwise), deterministic, no atomics, and independent of the other items in its tile.
//
// The dense products of integer weights (fast::gemm) run the same tile code (v2_tile) on consecutive
// tokens: the first dense kernel (Nsight, 4096-token prefill: 42% of the kernel time) stalled on its
// register-staged loads one k-tile ahead. Blocks of 128 rows x 64 tokens, two an SM (each with its own
// barrier), are the default: measured on the H200 (GemmDenseV2.DISABLED_TimesBothKernelsOnTheModelShapes,
// all seven model shapes) they beat 256-row blocks (one an SM, half the activation bytes per mma read
// from L2) by 4-13%, so the second block's latency hiding outweighs the L2 traffic.
// FLASHSTAR_GEMM_DENSE_V2=256 runs the 256-row blocks for comparison.
#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/gemm_group_v2.h"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

namespace g2 = gemm_v2;
using g2::kBK;
using g2::kBN;
using g2::kMI;
using g2::kNI;
using g2::kStages;
static_assert(kBN == kMoeTileTokens, "a block takes one plan tile");

__device__ uint32_t g_v2_sel[256];

// One k-tile's mma of a warp's first MA slabs and NA item tiles into part (W x_lo + W x_hi per step,
// the small term first; exact integer weights).
template <int MA, int NA>
__device__ __forceinline__ void mma_ktile(float (&part)[kMI][kNI][4], const uint16_t* a_s, const uint16_t* x_hi,
                                          const g2::WarpTile& w, int lane) {
  const uint16_t* x_lo = x_hi + kBN * kBK;
#pragma unroll
  for (int kk = 0; kk < kBK; kk += 16) {
    uint32_t af[MA][4], bh[NA / 2][4], bl[NA / 2][4];
#pragma unroll
    for (int mi = 0; mi < MA; ++mi) {
      int r, c;
      g2::a_lane(w, mi, kk, lane, r, c);
      mma::ldmatrix_x4(af[mi], a_s + g2::swz(r, c));
    }
#pragma unroll
    for (int nj = 0; nj < NA / 2; ++nj) {
      int tk, c;
      g2::b_lane(w, nj, kk, lane, tk, c);
      mma::ldmatrix_x4(bh[nj], x_hi + g2::swz(tk, c));
      mma::ldmatrix_x4(bl[nj], x_lo + g2::swz(tk, c));
    }
#pragma unroll
    for (int mi = 0; mi < MA; ++mi)
#pragma unroll
      for (int ni = 0; ni < NA; ++ni) {
        const int nj = ni >> 1, q = (ni & 1) * 2;
        mma::mma_f16(part[mi][ni], af[mi], bl[nj][q], bl[nj][q + 1]);
        mma::mma_f16(part[mi][ni], af[mi], bh[nj][q], bh[nj][q + 1]);
      }
  }
}

// A block's tile: rows m0 .. m0 + G::kBM - 1 of the matrix at Wm (n_rows rows) times `count` items from
// plan position (or token) `first`; item j's activations are row x_row(j) of Xb, its outputs row y_row(j)
// of Y. Dense products: consecutive tokens, no gather or scatter.
struct Tile {
  const uint8_t* Wm;
  int64_t n_rows, m0;
  const int32_t* items;  // plan order's item ids (null for dense products)
  int64_t first;
  int count;
  bool gather, scatter;
  int32_t src_div;
  __device__ int64_t x_row(int j) const { return gather ? items[first + j] / src_div : first + j; }
  __device__ int64_t y_row(int j) const { return scatter ? items[first + j] : first + j; }
};

// One block tile; tile_of() names it (called where the grouped kernel always read its plan tile, so
// that this kernel's code stays what it was before the dense kernel shared it).
template <GgmlType T, class G, class TileOf>
__device__ __forceinline__ void v2_tile(size_t row_bytes, int K, const uint16_t* __restrict__ Xb, int64_t k8,
                                        int64_t lo_off, float* __restrict__ Y, int64_t ys, TileOf tile_of) {
  using F = g2::FmtOf<T, G>;
  using S = g2::Smem<T, G>;
  constexpr int kMins = F::kMins, kXTerm = kBN * kBK, kXStage = 2 * kXTerm, kATile = G::kBM * kBK;
  constexpr int kThreads = G::kThreads;
  extern __shared__ __align__(16) unsigned char smem[];
  uint16_t* Xs = reinterpret_cast<uint16_t*>(smem);                // [stage][term][kBN x kBK], swizzled
  uint16_t* As = reinterpret_cast<uint16_t*>(smem + S::off_a);     // [2][kBM x kBK], swizzled
  uint32_t* Raw = reinterpret_cast<uint32_t*>(smem + S::off_raw);  // [2][kRawBuf]
  float4* Rows = reinterpret_cast<float4*>(smem + S::off_rows);    // [2][kBM]: scale, -min0, -min1
  float* Sums = reinterpret_cast<float*>(smem + S::off_sums);      // [2][half][kBN]
  uint32_t* Sel = reinterpret_cast<uint32_t*>(smem + S::off_tab);  // [256]

  const int tid = threadIdx.x, lane = tid & 31;
  const Tile it = tile_of();
  const uint8_t* __restrict__ Wm = it.Wm;
  const int64_t n_rows = it.n_rows, m0 = it.m0;
  const int count = it.count;
  const int nk = K / kBK;
  const g2::WarpTile w = g2::warp_tile(tid >> 5, count);  // warp-uniform

  if constexpr (T == GgmlType::IQ2_XXS)
    for (int i = tid; i < 256; i += kThreads) Sel[i] = g_v2_sel[i];

  // The activation copies of this thread (gemm_v2::x_task): item rows past the tile's count are zero-filled.
  const uint16_t* xsrc[G::kXCopies];
  uint32_t xdst[G::kXCopies], xbytes[G::kXCopies];
  g2::x_copies<kBN>([&](int v, int& term, int& tok, int& chunk) { g2::x_task<G>(tid, v, term, tok, chunk); },
                    [&](int tok) { return it.x_row(tok); }, count, Xb, k8, lo_off, Xs, xsrc, xdst, xbytes);
  // A unit's raw words for all kBM rows (rows past the matrix repeat its last row; never stored).
  const uint8_t* __restrict__ Wb = g2::opaque(Wm + static_cast<size_t>(m0) * row_bytes);
  const int rows_left = n_rows - m0 < G::kBM ? static_cast<int>(n_rows - m0) : G::kBM;
  auto load = [&](int t) {  // one commit group per k-tile, empty past the end (keeps the wait counts)
    if (t < nk) {
      g2::x_issue<kBN>(xsrc, xdst, xbytes, t);
      if (g2::starts_unit<G>(t)) g2::load_raw<T, G>(Raw, Wb, rows_left, row_bytes, tid, g2::unit_of<G>(t));
    }
    mma::cp_async_commit();
  };
  // Row tid's k-tile t: FP16 integers, scale and minima; with minima also the token sums of its 16-column
  // halves.
  auto decode = [&](int t) {
    g2::decode_row<T, G>(Raw, Sel, As, Rows, tid, t);
    if constexpr (kMins > 0) {
      if (kThreads > g2::kSumTasks && tid >= g2::kSumTasks) return;  // the first kSumTasks threads sum
      int tok, half;
      g2::sum_task(tid, tok, half);
      g2::tok_sum<kBN>(Xs, Sums, t, tok, half);
    }
  };

#pragma unroll
  for (int t = 0; t < kStages - 1; ++t) load(t);
  mma::cp_async_wait<g2::kProloguePending>();  // k-tile 0 landed (this thread's copies; the barrier: everyone's)
  __syncthreads();
  decode(0);

  float acc[kMI][kNI][4] = {};
  for (int kt = 0; kt < nk; ++kt) {
    // k-tile kt + 1 landed; everyone is past k-tile kt - 1, so its buffers (and the raw unit two units
    // back) may be overwritten.
    mma::cp_async_wait<g2::kLoopPending>();
    __syncthreads();
    load(kt + kStages - 1);

    // The tensor cores' fp32 accumulation truncates; each k-tile's partial is promoted into acc with
    // round-to-nearest operations, so the error does not grow with k.
    float part[kMI][kNI][4] = {};
    const uint16_t* a_s = As + g2::tile_buf(kt) * kATile;
    const uint16_t* x_hi = Xs + g2::x_stage(kt) * kXStage;
    // Unpredicated mma blocks for the four shapes a warp can have (per-mma predicates would serialise
    // each lo/hi pair); item tiles run in pairs (a pair past the count computes on zeros, unstored).
    if (w.m_act == kMI) {
      if (w.n_act > kNI / 2)
        mma_ktile<kMI, kNI>(part, a_s, x_hi, w, lane);
      else
        mma_ktile<kMI, kNI / 2>(part, a_s, x_hi, w, lane);
    } else {
      if (w.n_act > kNI / 2)
        mma_ktile<kMI / 2, kNI>(part, a_s, x_hi, w, lane);
      else
        mma_ktile<kMI / 2, kNI / 2>(part, a_s, x_hi, w, lane);
    }
    // The next k-tile's decode (ALU work) issues while the tensor cores work through the mma queue.
    if (kt + 1 < nk) decode(kt + 1);
    // Rows r0 = .. + lane / 4 and r0 + 8 of each slab; items j0 = .. + 2 (lane % 4) and j0 + 1 of each ni.
    float sc[kMI][2], n0[kMI][2] = {}, n1[kMI][2] = {};
    const float4* rs = Rows + g2::tile_buf(kt) * G::kBM;
#pragma unroll
    for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        if (mi >= w.m_act) continue;
        const int r = g2::acc_row(w, mi, lane, rr);
        if constexpr (kMins == 0) {
          sc[mi][rr] = rs[r].x;
        } else {
          const float4 f = rs[r];
          sc[mi][rr] = f.x, n0[mi][rr] = f.y, n1[mi][rr] = f.z;
        }
      }
#pragma unroll
    for (int ni = 0; ni < kNI; ++ni) {
      if (ni >= w.n_act) continue;
      const int j = g2::acc_tok(w, ni, lane, 0);
      float2 s0 = make_float2(0.0f, 0.0f), s1 = s0;
      if constexpr (kMins > 0) {
        s0 = *reinterpret_cast<const float2*>(Sums + (g2::tile_buf(kt) * 2 + 0) * kBN + j);
        s1 = *reinterpret_cast<const float2*>(Sums + (g2::tile_buf(kt) * 2 + 1) * kBN + j);
      }
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (mi >= w.m_act) continue;
          acc[mi][ni][c] = gemm_int::promote<kMins>(acc[mi][ni][c], part[mi][ni][c], sc[mi][c >> 1], n0[mi][c >> 1],
                                                    n1[mi][c >> 1], c & 1 ? s0.y : s0.x, c & 1 ? s1.y : s1.x);
        }
    }
  }

#pragma unroll
  for (int ni = 0; ni < kNI; ++ni)
#pragma unroll
    for (int cj = 0; cj < 2; ++cj) {
      const int j = g2::acc_tok(w, ni, lane, cj);
      if (ni >= w.n_act || j >= count) continue;
      float* y = Y + it.y_row(j) * ys;
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          const int64_t r = m0 + g2::acc_row(w, mi, lane, rr);
          if (mi < w.m_act && r < n_rows) y[r] = acc[mi][ni][rr * 2 + cj];
        }
    }
}

template <GgmlType T>
__global__ void __launch_bounds__(g2::GroupGeo::kThreads, 2)
    gemm_group_v2(const uint8_t* __restrict__ W, size_t row_bytes, int K, int64_t rows_per_mat,
                  const int32_t* __restrict__ offset, const int32_t* __restrict__ items,
                  const int32_t* __restrict__ tiles, const int32_t* __restrict__ n_tiles,
                  const uint16_t* __restrict__ Xb, int64_t k8, int64_t lo_off, bool gather, int32_t src_div,
                  bool scatter, float* __restrict__ Y, int64_t ys) {
  pdl_wait();
  if (static_cast<int>(blockIdx.y) >= *n_tiles) return;
  v2_tile<T, g2::GroupGeo>(row_bytes, K, Xb, k8, lo_off, Y, ys, [&] {
    const int32_t tile = tiles[blockIdx.y], e = tile >> 16;
    const int64_t first = offset[e] + static_cast<int64_t>(tile & 0xffff) * kBN;
    const int count = static_cast<int>(offset[e + 1] - first < kBN ? offset[e + 1] - first : kBN);
    const int64_t m0 = static_cast<int64_t>(blockIdx.x) * g2::GroupGeo::kBM;
    return Tile{W + static_cast<size_t>(e) * static_cast<size_t>(rows_per_mat) * row_bytes,
                rows_per_mat, m0, items, first, count, gather, scatter, src_div};
  });
}

// Dense: rows [0, n_rows) of W (the caller's row0 applied) times tokens [0, n_tok); block b takes row
// block and token tile g2::dense_tile(b).
template <GgmlType T, class G>
__global__ void __launch_bounds__(G::kThreads, G::kBlocksPerSm)
    dense_v2(const uint8_t* __restrict__ W, size_t row_bytes, int K, int64_t n_rows, int n_rb, int n_tt,
             const uint16_t* __restrict__ Xb, int64_t k8, int64_t lo_off, int64_t n_tok, float* __restrict__ Y,
             int64_t ys) {
  pdl_wait();
  v2_tile<T, G>(row_bytes, K, Xb, k8, lo_off, Y, ys, [&] {
    int rb, tt;
    g2::dense_tile<G>(static_cast<int>(blockIdx.x), n_rb, n_tt, rb, tt);
    const int64_t first = static_cast<int64_t>(tt) * kBN;
    const int count = static_cast<int>(n_tok - first < kBN ? n_tok - first : kBN);
    return Tile{W, n_rows, static_cast<int64_t>(rb) * G::kBM, nullptr, first, count, false, false, 1};
  });
}

bool& v2_flag() {
  static bool on = env_on("FLASHSTAR_GEMM_GROUP_V2");
  return on;
}

// The dense kernel's block rows: 128 (default), 256 (FLASHSTAR_GEMM_DENSE_V2=256), or 0, off
// (FLASHSTAR_GEMM_DENSE_V2=0: the first kernel, for A/B comparisons on the device).
int& dense_rows_flag() {
  static int rows = [] {
    const char* v = std::getenv("FLASHSTAR_GEMM_DENSE_V2");
    return !v ? 128 : v[0] == '0' ? 0 : std::atoi(v) == 256 ? 256 : 128;
  }();
  return rows;
}

// A kernel's dynamic shared memory (beyond the default 48 KB) and all of the unified L1 as shared
// memory, so that the blocks an SM is meant to hold fit; once per kernel.
template <class Kernel>
void smem_attrs(Kernel k, int bytes) {
  FS_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  FS_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout,
                                     cudaSharedmemCarveoutMaxShared));
}

template <GgmlType T>
struct GroupLaunch {
  static void run(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8,
                  int64_t x_rows, bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s) {
    using G = g2::GroupGeo;
    constexpr int sm = g2::Smem<T, G>::bytes;
    static const bool attr = (smem_attrs(gemm_group_v2<T>, sm), true);
    (void)attr;
    const dim3 grid(static_cast<unsigned>((rows_per_mat + G::kBM - 1) / G::kBM), static_cast<unsigned>(p.max_tiles));
    gemm_group_v2<T><<<grid, G::kThreads, sm, s>>>(W.data, W.row_bytes, static_cast<int>(W.cols), rows_per_mat,
                                                   p.offset, p.items, p.tiles, p.n_tiles, Xb, k8, x_rows * k8, gather,
                                                   src_div, scatter, Y, ys);
    FS_CUDA_LAUNCH_CHECK();
  }
};

// The dense geometry: Q8_0 in 128-column units (4 k-tiles; 256-column units would take 141 KB of raw
// staging at 256 rows and keep 128-row blocks at one an SM, where these fit two), the other formats in
// their 256-column blocks.
template <GgmlType T, int BM>
using DenseGeo = g2::Geo<BM, T == GgmlType::Q8_0 ? 128 : 256>;

template <GgmlType T, int BM>
void dense_launch(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y,
                  int64_t ys, int n_rb, int n_tt, cudaStream_t s) {
  using G = DenseGeo<T, BM>;
  constexpr int sm = g2::Smem<T, G>::bytes;
  static const bool attr = (smem_attrs(dense_v2<T, G>, sm), true);
  (void)attr;
  dense_v2<T, G><<<n_rb * n_tt, G::kThreads, sm, s>>>(W.data + static_cast<size_t>(row0) * W.row_bytes, W.row_bytes,
                                                      static_cast<int>(W.cols), n_rows, n_rb, n_tt, Xb, W.cols,
                                                      n_tok * W.cols, n_tok, Y, ys);
  FS_CUDA_LAUNCH_CHECK();
}

template <GgmlType T>
struct DenseLaunch {
  static void run(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y,
                  int64_t ys, int bm, int n_rb, int n_tt, cudaStream_t s) {
    if (bm == 128) return dense_launch<T, 128>(W, row0, n_rows, Xb, n_tok, Y, ys, n_rb, n_tt, s);
    dense_launch<T, 256>(W, row0, n_rows, Xb, n_tok, Y, ys, n_rb, n_tt, s);
  }
};

// Launch<T>::run(args...) for the formats these kernels decode; false, launching nothing, for the others.
template <template <GgmlType> class Launch, typename... Args>
bool int_dispatch(GgmlType t, Args&&... args) {
  switch (t) {
    case GgmlType::IQ2_XXS: Launch<GgmlType::IQ2_XXS>::run(args...); return true;
    case GgmlType::Q2_K: Launch<GgmlType::Q2_K>::run(args...); return true;
    case GgmlType::Q4_K: Launch<GgmlType::Q4_K>::run(args...); return true;
    case GgmlType::Q8_0: Launch<GgmlType::Q8_0>::run(args...); return true;
    default: return false;
  }
}

// Raw rows are read as 4-byte words (whole 256-column units, byte offsets in 32 bits) and activations
// as 16-byte chunks.
bool v2_takes(const DMat& W, const uint16_t* Xb, int64_t k8) {
  return W.cols > 0 && W.cols % 256 == 0 && W.cols <= k8 && k8 % 8 == 0 && W.row_bytes % 4 == 0 &&
         W.row_bytes <= g2::kMaxRowBytes &&
         reinterpret_cast<uintptr_t>(W.data) % 4 == 0 && reinterpret_cast<uintptr_t>(Xb) % 16 == 0 &&
         W.cols <= (int64_t{1} << 30);
}

}  // namespace

void init_gemm_group_tables() {
  uint32_t sel[256];
  if (!g2::iq2_sel_table(sel)) fail("IQ2_XXS grid bytes outside {8, 25, 43}");
  FS_CUDA_CHECK(cudaMemcpyToSymbol(g_v2_sel, sel, sizeof(sel)));
  init_gemm_group_wgmma_tables();  // the wgmma grouped kernel's own copy (gemm_group_wgmma.cu)
}

void gemm_set_group_v2(bool on) { v2_flag() = on; }
bool gemm_group_v2() { return v2_flag(); }

bool gemm_grouped_v2(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8,
                     int64_t x_rows, bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s) {
  if (!v2_takes(W, Xb, k8) || p.max_tiles > 65535) return false;
  return int_dispatch<GroupLaunch>(W.type, W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
}

void gemm_set_dense_v2(int block_rows) { dense_rows_flag() = block_rows == 0 ? 0 : block_rows == 256 ? 256 : 128; }
int gemm_dense_v2_rows() { return dense_rows_flag(); }

bool gemm_dense_v2(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y,
                   int64_t ys, cudaStream_t s) {
  const int bm = dense_rows_flag();
  if (bm == 0 || !v2_takes(W, Xb, W.cols) || n_rows <= 0 || n_tok <= 0) return false;
  const int64_t n_rb = (n_rows + bm - 1) / bm, n_tt = (n_tok + kBN - 1) / kBN;
  if (n_rb * n_tt > INT32_MAX) return false;  // one-dimensional grid, int block indices
  return int_dispatch<DenseLaunch>(W.type, W, row0, n_rows, Xb, n_tok, Y, ys, bm, static_cast<int>(n_rb),
                                   static_cast<int>(n_tt), s);
}

}  // namespace flashstar::cuda::fast
