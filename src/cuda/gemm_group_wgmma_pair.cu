// Variant 1 of the grouped expert products on warpgroup MMA (gemm_group_wgmma.h says why): a block takes
// two plan tiles of one expert (up to 128 items) and 128 weight rows, two warpgroups of 64 rows each,
// every k-tile decoded once by two threads a row. Everything else is gemm_group_wgmma.cu's kernel:
// v2's copies, swizzled tiles, barrier schedule (one barrier a k-tile, wait_group 0 before promoting),
// decode, token sums and per-k-tile promotion, so the same bits as v2.
//
// Resources: 1 block an SM (launch bounds 256, 1: 64 + 64 accumulator registers a thread for N = 128),
// ~109 KB of shared memory (IQ2_XXS) / ~113 KB (Q2_K).
#include <type_traits>

#include "common/error.h"
#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/gemm_group_wgmma.h"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

namespace g2 = gemm_v2;
namespace gw = wgmma_group;
namespace gp = wgmma_group::wgmma_pair;
using G = g2::GroupGeo;  // the raw-unit geometry (256-column units, 8 k-tiles)
constexpr int kBN = gp::kBN, kBK = gp::kBK, kBM = gp::kBM;

__device__ uint32_t g_wgp_sel[256];  // the IQ2_XXS selector table

#if FS_WGMMA
// One k-tile of this warpgroup's 64 rows (a_tile) x N items: per k16 step W x_lo (the first overwriting
// the partial) then W x_hi, as v2 and v0.
template <int N>
__device__ __forceinline__ void mma_ktile(float (&part)[64], uint32_t a_tile, uint32_t x_hi) {
  wgmma::pin(part);
  wgmma::fence();
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    const uint64_t da = gw::desc_tile(a_tile, s);
    wgmma::mma_ss<N>(part, da, gw::desc_tile(x_hi + gp::kXTermBytes, s), s);
    wgmma::mma_ss<N>(part, da, gw::desc_tile(x_hi, s), 1);
  }
  wgmma::commit();
}

// The partials into the running sums (v0's promote with 128-item sums): rows = this warpgroup's 64 row
// factors, sums[half * kBN + item].
template <int N, int kMins>
__device__ __forceinline__ void promote(float (&acc)[64], float (&part)[64], const float4* rows, const float* sums,
                                        int wq, int lane) {
  wgmma::pin(part);
  gw::promote_rows<N, kMins, kBN>(acc, part, rows, sums, 0, wq, lane);
}

#endif  // FS_WGMMA

// Grid: (row blocks, plan tiles) as v0; the blocks of odd plan tiles exit (their items are the previous
// tile's block's second half).
template <GgmlType T>
__global__ void __launch_bounds__(gp::kThreads, 1)
    group_wgmma_pair(const uint8_t* __restrict__ W, size_t row_bytes, int K, int64_t rows_per_mat,
                     const int32_t* __restrict__ offset, const int32_t* __restrict__ items,
                     const int32_t* __restrict__ tiles, const int32_t* __restrict__ n_tiles,
                     const uint16_t* __restrict__ Xb, int64_t k8, int64_t lo_off, bool gather, int32_t src_div,
                     bool scatter, float* __restrict__ Y, int64_t ys) {
  pdl_wait();
#if FS_WGMMA
  if (static_cast<int>(blockIdx.y) >= *n_tiles) return;
  const int32_t tile = tiles[blockIdx.y];
  if (tile & 1) return;
  using F = g2::FmtOf<T, G>;
  using S = gp::Smem<T>;
  constexpr int kMins = F::kMins, kATile = kBM * kBK;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base0 = mma::smem_addr(smem_raw), sbase = (base0 + gw::kAlign - 1) & ~(gw::kAlign - 1);
  unsigned char* smem = smem_raw + (sbase - base0);
  uint16_t* Xs = reinterpret_cast<uint16_t*>(smem);
  uint16_t* As = reinterpret_cast<uint16_t*>(smem + S::off_a);
  uint32_t* Raw = reinterpret_cast<uint32_t*>(smem + S::off_raw);
  float4* Rows = reinterpret_cast<float4*>(smem + S::off_rows);
  float* Sums = reinterpret_cast<float*>(smem + S::off_sums);
  uint32_t* Sel = reinterpret_cast<uint32_t*>(smem + S::off_tab);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2, wq = warp & 3;
  const int e = tile >> 16;
  const int64_t first = offset[e] + static_cast<int64_t>(tile & 0xffff) * g2::kBN;
  const int count = static_cast<int>(offset[e + 1] - first < kBN ? offset[e + 1] - first : kBN);
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM, n_rows = rows_per_mat;
  const uint8_t* __restrict__ Wm = W + static_cast<size_t>(e) * static_cast<size_t>(rows_per_mat) * row_bytes;
  const int nk = K / kBK;
  const int nsel = (count + 31) >> 5;  // block-uniform, 1..4

  if constexpr (T == GgmlType::IQ2_XXS)
    for (int i = tid; i < 256; i += gp::kThreads) Sel[i] = g_wgp_sel[i];

  const uint16_t* xsrc[gp::kXCopies];
  uint32_t xdst[gp::kXCopies], xbytes[gp::kXCopies];
  g2::x_copies<kBN>([&](int v, int& term, int& tok, int& chunk) { gp::x_task(tid, v, term, tok, chunk); },
                    [&](int tok) { return gather ? items[first + tok] / src_div : first + tok; }, count, Xb, k8,
                    lo_off, Xs, xsrc, xdst, xbytes);
  const uint8_t* __restrict__ Wb = g2::opaque(Wm + static_cast<size_t>(m0) * row_bytes);
  const int rows_left = n_rows - m0 < kBM ? static_cast<int>(n_rows - m0) : kBM;
  constexpr int kRawTasks = kBM * F::kWords, kRawCopies = (kRawTasks + gp::kThreads - 1) / gp::kThreads;
  auto load = [&](int t) {  // one commit group per k-tile, empty past the end (keeps the wait counts)
    if (t < nk) {
      g2::x_issue<kBN>(xsrc, xdst, xbytes, t);
      if (g2::starts_unit<G>(t)) {
        const int u = g2::unit_of<G>(t);
        const uint32_t base = mma::smem_addr(Raw + g2::raw_buf(u) * S::kRawBuf);
        const uint32_t ub = static_cast<uint32_t>(u * F::kBytes - g2::unit_a2<T, G::kUnitCols>(u));
#pragma unroll 4
        for (int v = 0; v < kRawCopies; ++v) {
          const int q = tid + gp::kThreads * v;
          if (kRawTasks % gp::kThreads != 0 && q >= kRawTasks) break;
          const int row = q / F::kWords, word = q - row * F::kWords, slot = q + row * (F::kStride - F::kWords);
          mma::cp_async4(base + 4u * static_cast<uint32_t>(slot),
                         Wb + g2::raw_src(row, word, rows_left, static_cast<uint32_t>(row_bytes), ub));
        }
      }
    }
    mma::cp_async_commit();
  };
  const int drow = gp::dec_row(tid), dc = gp::dec_half(tid);
  auto decode = [&](int t) {
    const int u = g2::unit_of<G>(t);
    uint32_t h[8];
    float sc, mn0, mn1;
    gp::Decode16<T>::run(Raw + g2::raw_buf(u) * S::kRawBuf + drow * F::kStride, g2::unit_a2<T, G::kUnitCols>(u),
                         t % G::kTilesPerUnit, dc, Sel, h, sc, mn0, mn1);
    uint16_t* a = As + g2::tile_buf(t) * kATile;
#pragma unroll
    for (int cc = 0; cc < 2; ++cc)
      *reinterpret_cast<uint4*>(a + g2::swz(drow, 2 * dc + cc)) = make_uint4(h[4 * cc], h[4 * cc + 1], h[4 * cc + 2], h[4 * cc + 3]);
    if (dc == 0) Rows[g2::tile_buf(t) * kBM + drow] = make_float4(sc, -mn0, -mn1, 0.0f);
    if constexpr (kMins > 0) {
      g2::tok_sum<kBN>(Xs, Sums, t, tid >> 1, tid & 1);  // 2 kBN tasks, one a thread: item tid / 2, half tid % 2
    }
  };
  static_assert(2 * kBN == gp::kThreads, "one sum task a thread");

#pragma unroll
  for (int t = 0; t < g2::kStages - 1; ++t) load(t);
  mma::cp_async_wait<g2::kProloguePending>();
  __syncthreads();
  decode(0);

  // One k-loop per wgmma width: a branch per width inside one loop makes ptxas serialise the wgmma
  // (C7511; the paths' in-flight accumulators differ at the joins).
  wgmma::with_n(nsel, [&](auto n_tag) {
  constexpr int N = decltype(n_tag)::value;
  float acc[64], part[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  for (int kt = 0; kt < nk; ++kt) {
    // v0's schedule: k-tile kt + 1 landed, everyone past k-tile kt - 1 (its wgmma waited for).
    mma::cp_async_wait<g2::kLoopPending>();
    wgmma::fence_proxy_async();
    __syncthreads();
    load(kt + g2::kStages - 1);
    const uint32_t a_tile = sbase + static_cast<uint32_t>(S::off_a) + static_cast<uint32_t>(g2::tile_buf(kt)) * gp::kATileBytes +
                            static_cast<uint32_t>(wg * gw::kHalfRows) * gw::kRowBytes;
    const uint32_t x_hi = sbase + static_cast<uint32_t>(g2::x_stage(kt)) * gp::kXStageBytes;
    mma_ktile<N>(part, a_tile, x_hi);
    if (kt + 1 < nk) decode(kt + 1);
    wgmma::wait<0>();
    const float4* rs = Rows + g2::tile_buf(kt) * kBM + wg * gw::kHalfRows;
    const float* ss = Sums + g2::tile_buf(kt) * 2 * kBN;
    promote<N, kMins>(acc, part, rs, ss, wq, lane);
  }

  // Element i: row 64 wg + d_row, item d_col; every (row < n_rows, item < count) once.
#pragma unroll
    for (int g = 0; g < N / 8; ++g)
#pragma unroll
      for (int cj = 0; cj < 2; ++cj) {
        const int j = wgmma::d_col(lane, 4 * g + cj);
        if (j >= count) continue;
        float* y = Y + (scatter ? static_cast<int64_t>(items[first + j]) : first + j) * ys;
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          const int i = 4 * g + 2 * rr + cj;
          const int64_t r = m0 + wg * gw::kHalfRows + wgmma::d_row(wq, lane, i);
          if (r < n_rows) y[r] = acc[i];
        }
      }
  });
#else
  (void)W, (void)row_bytes, (void)K, (void)rows_per_mat, (void)offset, (void)items, (void)tiles, (void)n_tiles;
  (void)Xb, (void)k8, (void)lo_off, (void)gather, (void)src_div, (void)scatter, (void)Y, (void)ys;
  __trap();
#endif
}

template <GgmlType T>
void launch(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8, int64_t x_rows,
            bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s) {
  constexpr int sm = gp::Smem<T>::bytes + static_cast<int>(gw::kAlign);
  static_assert(sm + 1024 <= 228 * 1024, "one block an SM fits");
  static const bool attr = [] {
    FS_CUDA_CHECK(cudaFuncSetAttribute(group_wgmma_pair<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    FS_CUDA_CHECK(cudaFuncSetAttribute(group_wgmma_pair<T>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)attr;
  const dim3 grid(static_cast<unsigned>((rows_per_mat + kBM - 1) / kBM), static_cast<unsigned>(p.max_tiles));
  group_wgmma_pair<T><<<grid, gp::kThreads, sm, s>>>(W.data, W.row_bytes, static_cast<int>(W.cols), rows_per_mat,
                                                     p.offset, p.items, p.tiles, p.n_tiles, Xb, k8, x_rows * k8,
                                                     gather, src_div, scatter, Y, ys);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace

void init_group_wgmma_pair_table(const uint32_t* sel) {
  FS_CUDA_CHECK(cudaMemcpyToSymbol(g_wgp_sel, sel, 256 * sizeof(uint32_t)));
}

// Called by gemm_grouped_wgmma (gemm_group_wgmma.cu) after its checks, for IQ2_XXS and Q2_K.
void group_wgmma_pair_launch(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8,
                             int64_t x_rows, bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys,
                             cudaStream_t s) {
  if (W.type == GgmlType::IQ2_XXS)
    launch<GgmlType::IQ2_XXS>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
  else
    launch<GgmlType::Q2_K>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
}

}  // namespace flashstar::cuda::fast
