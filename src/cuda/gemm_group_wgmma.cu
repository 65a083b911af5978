// The grouped expert products (routed experts, prefill) on warpgroup MMA (wgmma, sm_90a) with the second
// grouped kernel's numerics contract (fast_gemm_group.cu, gemm_group_v2.h): weights as the same exact
// FP16 integers (gemm_v2::Decode), activations as hi + lo FP16 terms, every 32-column k-tile's partial
// started from zero in the tensor core, per 16 columns W x_lo then W x_hi (v2's order), promoted into the
// fp32 running sum by gemm_int::promote with the row's scale and minima and the token sums of each
// 16-column half computed as v2 computes them (gemm_int::sum8 twice, added). The dense kernel measured
// HGMMA's k-tile sums bitwise equal to HMMA's, so this kernel is meant to give v2's bits.
//
// Why: v2 (~70-83 TFLOP/s useful) is bound by issuing ldmatrix and mma.sync from its warps; wgmma reads
// both operands from shared memory and runs a 64 x 64 x 16 product an instruction, so the warps only copy,
// decode, sum and promote.
//
// Block: v2's (128 rows x one plan tile of 64 items, 128 threads, one decoding thread a row), now one
// warpgroup; the same copies, shared-memory layout and barrier schedule (gemm_group_wgmma.h says why v2's
// swizzled tiles are wgmma's 64-byte swizzle). Per k-tile the warpgroup issues 8 wgmma (2 row halves x
// 2 k16 steps x lo, hi) m64n64k16, or m64n32k16 for a tile of 32 items or fewer, decodes the next k-tile
// while they run, waits, and promotes. Blocks an SM: three for IQ2_XXS (73 KB of shared memory, 162
// registers), two for Q2_K (77 KB, 199 registers); one block's promotion overlaps another's tensor work.
// Deterministic: each output element is one thread's fixed sequence of wgmma and FMAs; no split-k, no
// atomics; an item's outputs do not depend on the other items of its tile (zero-filled past the count).
#include <algorithm>
#include <type_traits>

#include "common/error.h"
#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/gemm_group_decode.h"
#include "cuda/gemm_group_wgmma.h"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

namespace g2 = gemm_v2;
namespace gw = wgmma_group;
using G = g2::GroupGeo;
constexpr int kBN = gw::kBN, kBK = gw::kBK;

__device__ uint32_t g_wg_sel[256];  // the IQ2_XXS selector table (gemm_v2::iq2_sel_table)
__device__ uint32_t g_wg_fast[g2::kIq2FastWords];  // DecodeFast's IQ2_XXS table (gemm_v2::iq2_fast_table)

// The running sums and the k-tile partials: [row half][N / 2 elements of the m64nN accumulator]; N = 32
// uses the first 16 of each half.
struct Accum {
  float acc[2][32], part[2][32];
};

#if FS_WGMMA
// One k-tile's 8 wgmma: A = decoded tile at a_tile (rows 0..127), B = the stage's hi tile at x_hi and lo
// at x_hi + kXTermBytes; per half, per k16 step W x_lo then W x_hi, the first overwriting the partial.
template <int N>
__device__ __forceinline__ void mma_ktile(Accum& a, uint32_t a_tile, uint32_t x_hi) {
  wgmma::pin(a.part[0]);
  wgmma::pin(a.part[1]);
  wgmma::fence();
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const uint64_t da = gw::desc_tile(a_tile + static_cast<uint32_t>(h * gw::kHalfRows) * gw::kRowBytes, s);
      const uint64_t dl = gw::desc_tile(x_hi + gw::kXTermBytes, s), dh = gw::desc_tile(x_hi, s);
      wgmma::mma_ss<N>(a.part[h], da, dl, s);
      wgmma::mma_ss<N>(a.part[h], da, dh, 1);
    }
  wgmma::commit();
}

// The k-tile's partials into the running sums: rows (scale, -min0, -min1) from rows[], token sums of the
// two 16-column halves from sums[half * kBN + item] (formats with minima), gemm_int::promote as v2.
template <int N, int kMins>
__device__ __forceinline__ void promote(Accum& a, const float4* rows, const float* sums, int warp, int lane) {
  wgmma::pin(a.part[0]);
  wgmma::pin(a.part[1]);
#pragma unroll
  for (int h = 0; h < 2; ++h)
    gw::promote_rows<N, kMins, kBN>(a.acc[h], a.part[h], rows, sums, gw::kHalfRows * h, warp, lane);
}
#endif  // FS_WGMMA

// Grid: (row blocks of the expert matrices, plan tiles); the same arguments as gemm_group_v2. kFast: the
// k-tiles decoded by gemm_v2::DecodeFast (gemm_group_decode.h; the same tile bits in fewer instructions)
// instead of gemm_v2::Decode (FLASHSTAR_GEMM_GROUP_DECODE=0).
template <GgmlType T, bool kFast>
__global__ void __launch_bounds__(gw::kThreads, gw::blocks_per_sm(T))
    group_wgmma(const uint8_t* __restrict__ W, size_t row_bytes, int K, int64_t rows_per_mat,
                const int32_t* __restrict__ offset, const int32_t* __restrict__ items, const int32_t* __restrict__ tiles,
                const int32_t* __restrict__ n_tiles, const uint16_t* __restrict__ Xb, int64_t k8, int64_t lo_off,
                bool gather, int32_t src_div, bool scatter, float* __restrict__ Y, int64_t ys) {
  pdl_wait();
#if FS_WGMMA
  if (static_cast<int>(blockIdx.y) >= *n_tiles) return;
  using F = g2::FmtOf<T, G>;
  using S = g2::Smem<T, G>;
  constexpr int kMins = F::kMins;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // The swizzle atoms need 512-byte alignment (the launch adds the slack).
  const uint32_t base0 = mma::smem_addr(smem_raw), sbase = (base0 + gw::kAlign - 1) & ~(gw::kAlign - 1);
  unsigned char* smem = smem_raw + (sbase - base0);
  uint16_t* Xs = reinterpret_cast<uint16_t*>(smem);                // [stage][term][kBN x kBK], swizzled
  uint16_t* As = reinterpret_cast<uint16_t*>(smem + S::off_a);     // [2][kBM x kBK], swizzled
  uint32_t* Raw = reinterpret_cast<uint32_t*>(smem + S::off_raw);  // [2][kRawBuf]
  float4* Rows = reinterpret_cast<float4*>(smem + S::off_rows);    // [2][kBM]: scale, -min0, -min1
  float* Sums = reinterpret_cast<float*>(smem + S::off_sums);      // [2][half][kBN]
  // The decoders' IQ2_XXS table. DecodeFast's sits in static shared memory, whose address the compiler
  // knows, so each lookup is one LDS with the table's address as its immediate (no base register add);
  // the dynamic region then ends before off_tab (launch()).
  constexpr bool kFastTab = kFast && T == GgmlType::IQ2_XXS;
  __shared__ __align__(16) uint32_t fast_tab[kFastTab ? g2::kIq2FastWords : 4];
  uint32_t* Sel = kFastTab ? fast_tab : reinterpret_cast<uint32_t*>(smem + S::off_tab);  // [256] or [768]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int32_t tile = tiles[blockIdx.y], e = tile >> 16;
  const int64_t first = offset[e] + static_cast<int64_t>(tile & 0xffff) * kBN;
  const int count = static_cast<int>(offset[e + 1] - first < kBN ? offset[e + 1] - first : kBN);
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * G::kBM, n_rows = rows_per_mat;
  const uint8_t* __restrict__ Wm = W + static_cast<size_t>(e) * static_cast<size_t>(rows_per_mat) * row_bytes;
  const int nk = K / kBK;
  const bool n64 = gw::n_of(count) == 64;  // block-uniform

  if constexpr (kFastTab)
    for (int i = tid; i < g2::kIq2FastWords; i += G::kThreads) Sel[i] = g_wg_fast[i];
  else if constexpr (T == GgmlType::IQ2_XXS)
    for (int i = tid; i < 256; i += G::kThreads) Sel[i] = g_wg_sel[i];

  // v2's copies (gemm_v2::x_task, raw_task): item rows past the count zero-filled; rows past the matrix
  // repeat its last row (never stored).
  const uint16_t* xsrc[G::kXCopies];
  uint32_t xdst[G::kXCopies], xbytes[G::kXCopies];
  g2::x_copies<kBN>([&](int v, int& term, int& tok, int& chunk) { g2::x_task<G>(tid, v, term, tok, chunk); },
                    [&](int tok) { return gather ? items[first + tok] / src_div : first + tok; }, count, Xb, k8,
                    lo_off, Xs, xsrc, xdst, xbytes);
  const uint8_t* __restrict__ Wb = g2::opaque(Wm + static_cast<size_t>(m0) * row_bytes);
  const int rows_left = n_rows - m0 < G::kBM ? static_cast<int>(n_rows - m0) : G::kBM;
  auto load = [&](int t) {  // one commit group per k-tile, empty past the end (keeps the wait counts)
    if (t < nk) {
      g2::x_issue<kBN>(xsrc, xdst, xbytes, t);
      if (g2::starts_unit<G>(t)) g2::load_raw<T, G>(Raw, Wb, rows_left, row_bytes, tid, g2::unit_of<G>(t));
    }
    mma::cp_async_commit();
  };
  // v2's decode: row tid's k-tile t into FP16 integers (tile buffer t % 2), its scale and negated minima;
  // with minima the token sums of the 16-column halves.
  auto decode = [&](int t) {
    g2::decode_row<T, G, kFast>(Raw, Sel, As, Rows, tid, t);
    if constexpr (kMins > 0) {
      static_assert(g2::kSumTasks <= G::kThreads, "every sum task has a thread");
      if (tid >= g2::kSumTasks) return;
      int tok, half;
      g2::sum_task(tid, tok, half);
      g2::tok_sum<kBN>(Xs, Sums, t, tok, half);
    }
  };

#pragma unroll
  for (int t = 0; t < g2::kStages - 1; ++t) load(t);
  mma::cp_async_wait<g2::kProloguePending>();  // k-tile 0 landed (this thread's copies; the barrier: everyone's)
  __syncthreads();
  decode(0);

  Accum a;
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int i = 0; i < 32; ++i) a.acc[h][i] = 0.0f;
  for (int kt = 0; kt < nk; ++kt) {
    // k-tile kt + 1 landed; everyone is past k-tile kt - 1 (its wgmma waited for), so its buffers and the
    // raw unit two units back may be overwritten. The fence: this thread's cp.async data and decoded
    // tile, written by the generic proxy, are next read by the tensor core.
    mma::cp_async_wait<g2::kLoopPending>();
    wgmma::fence_proxy_async();
    __syncthreads();
    load(kt + g2::kStages - 1);

    const uint32_t a_tile = gw::a_tile_off<T>(g2::tile_buf(kt), 0) + sbase;
    const uint32_t x_hi = gw::x_tile_off(g2::x_stage(kt), 0) + sbase;
    if (n64)
      mma_ktile<64>(a, a_tile, x_hi);
    else
      mma_ktile<32>(a, a_tile, x_hi);
    // The next k-tile's decode (ALU work) while the tensor core runs this one.
    if (kt + 1 < nk) decode(kt + 1);
    wgmma::wait<0>();
    const float4* rs = Rows + g2::tile_buf(kt) * G::kBM;
    const float* ss = Sums + g2::tile_buf(kt) * 2 * kBN;
    if (n64)
      promote<64, kMins>(a, rs, ss, warp, lane);
    else
      promote<32, kMins>(a, rs, ss, warp, lane);
  }

  // Element i of half h: block row acc_row, item acc_item; every (row < n_rows, item < count) once.
  auto store = [&](auto n_tag) {
    constexpr int N = decltype(n_tag)::value;
#pragma unroll
    for (int g = 0; g < N / 8; ++g)
#pragma unroll
      for (int cj = 0; cj < 2; ++cj) {
        const int j = gw::acc_item(lane, 4 * g + cj);
        if (j >= count) continue;
        float* y = Y + (scatter ? static_cast<int64_t>(items[first + j]) : first + j) * ys;
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int rr = 0; rr < 2; ++rr) {
            const int i = 4 * g + 2 * rr + cj;
            const int64_t r = m0 + gw::acc_row(h, warp, lane, i);
            if (r < n_rows) y[r] = a.acc[h][i];
          }
      }
  };
  if (n64)
    store(std::integral_constant<int, 64>{});
  else
    store(std::integral_constant<int, 32>{});
#else
  (void)W, (void)row_bytes, (void)K, (void)rows_per_mat, (void)offset, (void)items, (void)tiles, (void)n_tiles;
  (void)Xb, (void)k8, (void)lo_off, (void)gather, (void)src_div, (void)scatter, (void)Y, (void)ys;
  __trap();  // not built for sm_90a: the host never launches it (group_wgmma_device below)
#endif
}

// On by default: bitwise equal to v2 (GemmGroupWgmma tests, 4L logits; H200, 2026-12-01) and 1.33x faster.
// FLASHSTAR_GEMM_GROUP_WGMMA=0 (or gemm_set_group_wgmma(false)) puts v2 back.
bool& flag() {
  static bool on = env_on("FLASHSTAR_GEMM_GROUP_WGMMA");
  return on;
}
// The kernel variant (gemm_group_wgmma.h, kVariants): FLASHSTAR_GEMM_GROUP_WGMMA_VARIANT=N, default 2
// (register-decoded weights: on the H200 0 differing elements against v2 on the model shapes at 17, 300
// and 4 096 tokens and every tile edge, 4L prefill +5% over variant 0).
int& variant() {
  static int v = env_choice("FLASHSTAR_GEMM_GROUP_WGMMA_VARIANT", 0, gw::kVariants - 1, 2);
  return v;
}

// The k-tile decoders of variant 0 (FLASHSTAR_GEMM_GROUP_DECODE): 0 (default: the kernel measured on the
// H200) gemm_v2::Decode (v2's) for both formats, 1 gemm_v2::DecodeFast for both, 2 DecodeFast for IQ2_XXS
// and v2's for Q2_K (whose decode the new one does not shorten: gemm_group_decode.h). All give the same
// bits (CPU: the tiles; H200: the products against v2 and 4L logits). 0 stays the default: on the H200
// DecodeFast's IQ2_XXS gate took 3.42 ms against 3.20 (fewer instructions, but its two shared-memory
// tables' lookups cost more than the register decode's extra ALU work).
int& decode_mode() {
  static int v = env_choice("FLASHSTAR_GEMM_GROUP_DECODE", 0, 2, 0);
  return v;
}

// Whether the device is a Hopper with this kernel's sm_90a code, once.
bool group_wgmma_device() {
  static const bool ok = sm90_kernel(reinterpret_cast<const void*>(group_wgmma<GgmlType::Q2_K, true>));
  return ok;
}

template <GgmlType T, bool kFast>
void launch(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8, int64_t x_rows,
            bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s) {
  // DecodeFast's IQ2_XXS table is static (the kernel's fast_tab), so the dynamic region stops at off_tab.
  constexpr bool kFastTab = kFast && T == GgmlType::IQ2_XXS;
  using S = g2::Smem<T, G>;
  constexpr int sm = (kFastTab ? S::off_tab : S::bytes) + static_cast<int>(gw::kAlign);
  constexpr int st = kFastTab ? g2::kIq2FastWords * 4 : 16;
  static_assert(S::off_tab + S::kTab == S::bytes, "the table is the last region");
  static_assert(gw::blocks_per_sm(T) * (sm + st + 1024) <= 228 * 1024, "the blocks an SM fit its shared memory");
  static const bool attr = [] {
    FS_CUDA_CHECK(cudaFuncSetAttribute(group_wgmma<T, kFast>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    FS_CUDA_CHECK(cudaFuncSetAttribute(group_wgmma<T, kFast>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)attr;
  const dim3 grid(static_cast<unsigned>((rows_per_mat + G::kBM - 1) / G::kBM), static_cast<unsigned>(p.max_tiles));
  group_wgmma<T, kFast><<<grid, gw::kThreads, sm, s>>>(W.data, W.row_bytes, static_cast<int>(W.cols), rows_per_mat,
                                                       p.offset, p.items, p.tiles, p.n_tiles, Xb, k8, x_rows * k8,
                                                       gather, src_div, scatter, Y, ys);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace

void init_gemm_group_wgmma_tables() {
  uint32_t sel[256], fast[g2::kIq2FastWords];
  if (!g2::iq2_sel_table(sel) || !g2::iq2_fast_table(fast)) fail("IQ2_XXS grid bytes outside {8, 25, 43}");
  FS_CUDA_CHECK(cudaMemcpyToSymbol(g_wg_sel, sel, sizeof(sel)));
  FS_CUDA_CHECK(cudaMemcpyToSymbol(g_wg_fast, fast, sizeof(fast)));
  init_group_wgmma_pair_table(sel);
  init_group_wgmma_reg_table();
}

void gemm_set_group_wgmma(bool on) { flag() = on; }
void gemm_set_group_wgmma_variant(int v) { variant() = v >= 0 && v < gw::kVariants ? v : 2; }
int gemm_group_wgmma_variant() { return variant(); }
bool gemm_group_wgmma() { return flag(); }
void gemm_set_group_decode(int v) { decode_mode() = v >= 0 && v <= 2 ? v : 0; }
int gemm_group_decode() { return decode_mode(); }

bool gemm_grouped_wgmma(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8,
                        int64_t x_rows, bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys,
                        cudaStream_t s, float* tsums, bool tsums_ready) {
  if (!flag() || rows_per_mat <= 0 || p.max_tiles <= 0 || p.max_tiles > 65535) return false;
  // v2's conditions: whole 256-column units read as 4-byte words (byte offsets in 32 bits), activations
  // as 16-byte chunks.
  if (W.cols <= 0 || W.cols % 256 != 0 || W.cols > k8 || k8 % 8 != 0 || W.row_bytes % 4 != 0 ||
      W.row_bytes > g2::kMaxRowBytes || reinterpret_cast<uintptr_t>(W.data) % 4 != 0 ||
      reinterpret_cast<uintptr_t>(Xb) % 16 != 0 || W.cols > (int64_t{1} << 30) ||
      (rows_per_mat + G::kBM - 1) / G::kBM > INT32_MAX)
    return false;
  // The model's routed-expert formats only: Q4_K and Q8_0 compiled here get their wgmma serialised by
  // ptxas (C7511, register pressure around their decode), so v2 keeps them.
  if (W.type != GgmlType::IQ2_XXS && W.type != GgmlType::Q2_K) return false;
  if (!group_wgmma_device()) return false;
  if (variant() == 2)
    return group_wgmma_reg_launch(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s, tsums, tsums_ready);
  if (variant() == 1)
    group_wgmma_pair_launch(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
  else if (W.type == GgmlType::IQ2_XXS && decode_mode() != 0)
    launch<GgmlType::IQ2_XXS, true>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
  else if (W.type == GgmlType::IQ2_XXS)
    launch<GgmlType::IQ2_XXS, false>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
  else if (decode_mode() == 1)
    launch<GgmlType::Q2_K, true>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
  else
    launch<GgmlType::Q2_K, false>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
  return true;
}

}  // namespace flashstar::cuda::fast
