// Variant 2 of the grouped expert products on warpgroup MMA (FLASHSTAR_GEMM_GROUP_WGMMA_VARIANT=2;
// gemm_group_wgmma_reg.h says why and what): the dense Q8_0 kernel's structure (gemm_dense_wgmma.cu) for
// the routed experts' IQ2_XXS and Q2_K weights, with v2's bits.
//
// Block: an expert's plan tiles 2i and 2i + 1 (up to 128 items; blocks of odd tiles exit at once) x 128
// weight rows, two warpgroups of 64 rows, 1 block an SM. Per k-tile each thread decodes its A fragments
// (2 rows x 8 columns) into registers, from per-unit records of each row's sub-block factors (a pre-pass
// writes them once per row, gemm_group_wgmma_reg.h) and, per register, a table lookup (IQ2_XXS) or the raw
// qs word (Q2_K), and its warpgroup issues 4 wgmma m64nNk16 (per 16-column step W x_lo, the first
// overwriting the partial, then W x_hi) with N = 32, 64, 96 or 128 by the item count. Activations (hi and lo FP16 terms) of the gathered rows (gate / up: token item / div;
// down: the item's row) arrive by 16-byte cp.async in the dense kernel's 4-stage ring of 64-column chunks
// (128-byte swizzle), zero-filled past the count; raw weights by 4-byte cp.async in v2's layout, 256-column
// units in two buffers. One barrier per 4 k-tiles (Q2_K: two, the token sums between them). Two partial
// accumulators alternate, so the promotion of k-tile t (gemm_int::promote with the scale and minima the
// thread decoded for its rows) runs under the wgmma of t + 1 (wgmma.wait_group 1). Deterministic: each
// output element is one thread's fixed sequence of wgmma and FMAs; no split-k, no atomics; an item's
// outputs do not depend on the other items of its block.
#include <type_traits>

#include "common/error.h"
#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/gemm_group_wgmma_reg.h"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

namespace g2 = gemm_v2;
namespace gr = wgmma_reg;
namespace dq = wgmma_q8;
using G = g2::GroupGeo;
constexpr int kBM = gr::kBM, kBN = gr::kBN;

__device__ __align__(16) uint32_t g_wgr_tab[1024];  // the IQ2_XXS pair table (gr::iq2_pair_table)

// FLASHSTAR_GEMM_GROUP_Q2K_SUMS=1 (gemm_set_group_q2k_sums): Q2_K's token sums precomputed
// (group_token_sums) and copied into the k-loop (gr::tsum_group) where a scratch is given. On by default
// (measured on the H200: the same bits, the Q2_K down product 4.53 -> 4.35 ms at 4096 tokens); =0 off.
bool& q2k_sums_flag() {
  static bool on = env_choice("FLASHSTAR_GEMM_GROUP_Q2K_SUMS", 0, 1, 1) == 1;
  return on;
}

// The token sums (gr::tsum_index): thread i = row r's group g, from the FP16 copy's hi (Xb) and lo
// (Xb + lo_off) terms, as the k-loop's sums() (gemm_v2::tok_sum) form them: gemm_int::sum8 over columns
// 16 g .. + 7 and 16 g + 8 .. + 15, the two added. Float adds only, the same operands in the same order:
// the same bits.
__global__ void token_sums_kernel(const uint16_t* __restrict__ Xb, int64_t k8, int64_t lo_off, int64_t rows,
                                 int groups, float* __restrict__ out) {
  pdl_wait();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * groups) return;
  const int64_t r = i / groups;
  const int g = static_cast<int>(i - r * groups);
  float s8[2];
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const uint16_t* h = Xb + r * k8 + gr::tsum_col(g, k);
    const uint4 hv = *reinterpret_cast<const uint4*>(h);
    const uint4 lv = *reinterpret_cast<const uint4*>(h + lo_off);
    const uint32_t h4[4] = {hv.x, hv.y, hv.z, hv.w}, l4[4] = {lv.x, lv.y, lv.z, lv.w};
    s8[k] = gemm_int::sum8(h4, l4);
  }
  out[gr::tsum_index(r, g, groups)] = s8[0] + s8[1];
}

#if FS_WGMMA
// A 4-byte cp.async with a source size (0: the word zero-filled), for the token-sum copies.
__device__ __forceinline__ void cp_async4z(uint32_t dst, const void* src, uint32_t src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
#endif

#if FS_WGMMA
// One k-tile's A fragments and the row factors of the thread's two rows (rr = 0: R, 1: R + 8).
struct Frag {
  uint32_t a[2][4];
  float sc[2], n0[2], n1[2];
};

// The wgmma of one k-tile into part (N / 2 elements used), hi_addr: the stage's hi tile plus the k-tile's
// 64-byte column offset; per k16 step (32 bytes along the 128-byte rows: + 2 in the descriptor's start
// field) W x_lo, then W x_hi, as v2.
template <int N, int M>
__device__ __forceinline__ void mma_ktile(float (&part)[M], const Frag& f, uint32_t hi_addr) {
  const uint64_t d_hi = dq::desc_b(hi_addr), d_lo = dq::desc_b(hi_addr + gr::kTermBytes);
  wgmma::pin(part);
  wgmma::fence();
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    wgmma::mma_rs<N>(part, f.a[s], d_lo + 2 * s, s);
    wgmma::mma_rs<N>(part, f.a[s], d_hi + 2 * s, 1);
  }
  wgmma::commit();
}

// The k-tile's partial into the running sums: element i is row R + 8 acc_rr(i), item d_col(lane, i);
// sums: the token sums of the iteration, k-tile it (formats with minima; gr::sum_index).
template <int N, int kMins, int M>
__device__ __forceinline__ void promote(float (&acc)[M], float (&part)[M], const Frag& f, const float* sums, int it,
                                        int lane) {
  wgmma::pin(part);
#pragma unroll
  for (int g = 0; g < N / 8; ++g) {
    float4 sv = make_float4(0.f, 0.f, 0.f, 0.f);  // half 0 of items j, j + 1; half 1 of both
    if constexpr (kMins > 0) sv = *reinterpret_cast<const float4*>(sums + gr::sum_pair(it, wgmma::d_col(lane, 4 * g)));
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int i = 4 * g + c, rr = gr::acc_rr(i);
      acc[i] = gemm_int::promote<kMins>(acc[i], part[i], f.sc[rr], f.n0[rr], f.n1[rr], c & 1 ? sv.y : sv.x,
                                        c & 1 ? sv.w : sv.z);
    }
  }
}

#endif  // FS_WGMMA

// Grid: (row blocks, plan tiles), the arguments of gemm_grouped_wgmma. kPre (Q2_K): the token sums
// copied from tsums (group_token_sums' scratch) instead of formed in the loop; tsums is unused without it.
template <GgmlType T, bool kPre>
__global__ void __launch_bounds__(gr::kThreads, 1)
    group_wgmma_reg(const uint8_t* __restrict__ W, size_t row_bytes, int K, int64_t rows_per_mat,
                    const int32_t* __restrict__ offset, const int32_t* __restrict__ items,
                    const int32_t* __restrict__ tiles, const int32_t* __restrict__ n_tiles,
                    const uint16_t* __restrict__ Xb, int64_t k8, int64_t lo_off, bool gather, int32_t src_div,
                    bool scatter, float* __restrict__ Y, int64_t ys, const float* __restrict__ tsums) {
  pdl_wait();
#if FS_WGMMA
  if (static_cast<int>(blockIdx.y) >= *n_tiles) return;
  const int32_t tile = tiles[blockIdx.y];
  if (tile & 1) return;
  using F = g2::FmtOf<T, G>;
  using S = gr::Smem<T, kPre>;
  constexpr int kMins = F::kMins;
  static_assert(!kPre || kMins > 0, "precomputed sums are for formats with minima");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base0 = mma::smem_addr(smem_raw), sbase = (base0 + 1023u) & ~1023u;  // swizzle atoms
  unsigned char* smem = smem_raw + (sbase - base0);
  const uint32_t xs = sbase;
  uint32_t* Raw = reinterpret_cast<uint32_t*>(smem + S::off_raw);  // [2][kRawBuf]
  float* Sums = reinterpret_cast<float*>(smem + S::off_sums);      // [4 k-tiles][half][kBN]
  // IQ2_XXS's replicated pair table and the sub-block records (gr::kTabBytes), static: each lookup's
  // address is a PRMT result plus the array's address as the instruction's immediate.
  constexpr bool kTab = T == GgmlType::IQ2_XXS;
  __shared__ __align__(16) unsigned char tab[kTab ? gr::kTabBytes : 16];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int e = tile >> 16;
  const int64_t first = offset[e] + static_cast<int64_t>(tile & 0xffff) * gr::kPlanTile;
  const int count = static_cast<int>(offset[e + 1] - first < kBN ? offset[e + 1] - first : kBN);
  const int n_used = 32 * ((count + 31) >> 5);  // the wgmma N: items past it are never read
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM, n_rows = rows_per_mat;
  const uint8_t* __restrict__ Wm = W + static_cast<size_t>(e) * static_cast<size_t>(rows_per_mat) * row_bytes;
  const int nc = K / gr::kChunkCols;

  if constexpr (kTab) {
#pragma unroll
    for (int k = 0; k < gr::kTabFillTasks / gr::kThreads; ++k) {
      const int i = tid + gr::kThreads * k;
      *reinterpret_cast<uint4*>(tab + gr::iq2_fill_off(i)) = reinterpret_cast<const uint4*>(g_wgr_tab)[i >> 3];
    }
  }

  // The activation rows of this thread's copy tasks (dq::x_task: items tid / 8 + 32 v, v = 0..3) as byte
  // offsets from Xb (32 bits: kMaxXElems); past the count, row 0's with a zero copy size (zero-filled).
  uint32_t xoff[4], xsz[4];
#pragma unroll
  for (int v = 0; v < 4; ++v) {
    const int tok = (tid >> 3) + 32 * v;
    const int64_t r = tok >= count ? 0 : gather ? items[first + tok] / src_div : first + tok;
    xoff[v] = static_cast<uint32_t>(r * k8 * 2), xsz[v] = tok >= count ? 0u : 16u;
  }
  const unsigned char* __restrict__ xt =
      g2::opaque(reinterpret_cast<const uint8_t*>(Xb)) + (tid & 7) * 16;  // the thread's 16-byte column chunk
  const uint32_t lo_bytes = static_cast<uint32_t>(lo_off * 2);
  // kPre: this thread's token-sum copies (gr::tsum_group), item sum_item(tid)'s row in the scratch as a
  // byte offset (under 2^28: kMaxXElems / 4) with its half; past the count row 0's, zero-filled.
  uint32_t toff = 0, tsz = 0;
  if constexpr (kPre) {
    const int item = gr::sum_item(tid);
    const int64_t r = item >= count ? 0 : gather ? items[first + item] / src_div : first + item;
    toff = static_cast<uint32_t>(gr::tsum_index(r, gr::sum_half(tid), K / 16) * 4);
    tsz = item >= count ? 0u : 4u;
  }
  const uint32_t xd = xs + dq::b_off(tid >> 3, tid & 7);
  const uint8_t* __restrict__ Wb = g2::opaque(Wm + static_cast<size_t>(m0) * row_bytes);
  const int rows_left = n_rows - m0 < kBM ? static_cast<int>(n_rows - m0) : kBM;
  // Both formats go through records (gr::Iq2Rec, gr::Q2kRec): raw unit u is issued an iteration earlier
  // than the dense kernel's schedule (with chunk 4u - 2's group, unit 0 with chunk 0's), turned into
  // records by the pre-pass of iteration 4u - 2 (records buffer u % 2; the next iteration's barrier
  // publishes them), and read by the fragment decode of iterations 4u and 4u + 2 (Q2_K's also read the
  // raw qs words there). Raw buffer u % 2 last held unit u - 2, last read in iteration 4u - 6 (issued in
  // 4u - 4); records buffer u % 2 was last read in iteration 4u - 6 (written in 4u - 2).
  unsigned char* Rec = smem + S::off_rec;  // Q2_K's records (IQ2_XXS's sit in the table's array)
  const int n_units = nc / gr::kChunksPerUnit;
  auto load_raw = [&](int u) {
    const uint32_t base = mma::smem_addr(Raw + (u & 1) * S::kRawBuf);
    const uint32_t ub = static_cast<uint32_t>(u * F::kBytes - g2::unit_a2<T, G::kUnitCols>(u));
#pragma unroll
    for (int v = 0; v < gr::kRawCopies<T>; ++v) {
      const int q = tid + gr::kThreads * v;
      if ((kBM * F::kWords) % gr::kThreads != 0 && q >= kBM * F::kWords) break;
      const int row = q / F::kWords, word = q - row * F::kWords;
      mma::cp_async4(base + 4u * static_cast<uint32_t>(q),
                     Wb + g2::raw_src(row, word, rows_left, static_cast<uint32_t>(row_bytes), ub));
    }
  };
  // One commit group per iteration: chunks c, c + 1 and the raw unit the schedule above gives; empty past
  // the end (keeps the wait counts).
  auto load = [&](int c) {
    if (c < nc) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t st = static_cast<uint32_t>(gr::stage_of(c + h)) * gr::kStageBytes;
#pragma unroll
        for (int v = 0; v < 2 * 4; ++v) {
          int term, tok, ch;
          dq::x_task(tid, v, term, tok, ch);
          if (tok >= n_used) continue;
          // b_off(tok, ch) = b_off(tid / 8, ch) + 128 * 32 (v % 4): the swizzle depends on tok % 8 only.
          mma::cp_async16(xd + st + static_cast<uint32_t>(term * gr::kTermBytes + (tok - (tid >> 3)) * 128),
                          xt + (xoff[v & 3] + (term ? lo_bytes : 0u) + static_cast<uint32_t>((c + h) * gr::kChunkCols * 2)),
                          xsz[v & 3]);
        }
      }
      if ((c + 2) % gr::kChunksPerUnit == 0 && (c + 2) / gr::kChunksPerUnit < n_units)
        load_raw((c + 2) / gr::kChunksPerUnit);
      if constexpr (kPre) {
        // Iteration c / 2's token sums into buffer (c / 2) % 2: last read by the promotions of iteration
        // c / 2 - 2, which every thread finished before the barrier of the iteration issuing this.
        const int it = c / gr::kChunksPerIter, item = gr::sum_item(tid), half = gr::sum_half(tid);
        if (item < n_used) {
          const uint32_t dst = sbase + static_cast<uint32_t>(S::off_sums + (it & 1) * S::kSumsBuf * 4);
#pragma unroll
          for (int i = 0; i < gr::kTilesPerIter; ++i)
            cp_async4z(dst + 4u * static_cast<uint32_t>(gr::sum_index(i, half, item)),
                       reinterpret_cast<const unsigned char*>(tsums) + toff + 4u * static_cast<uint32_t>(gr::tsum_group(it, i, 0)),
                       tsz);
        }
      }
    }
    mma::cp_async_commit();
  };
  // The pre-pass (records): thread tid's 4 sub-blocks of row rec_row(tid) of unit u.
  auto prep = [&](int u) {
    const int row = gr::rec_row(tid), a2 = g2::unit_a2<T, G::kUnitCols>(u);
    const uint32_t* rw = Raw + (u & 1) * S::kRawBuf + row * F::kStride;
#pragma unroll
    for (int k = 0; k < gr::kRecPerThread; ++k) {
      const int j = gr::rec_j(tid, k);
      if constexpr (T == GgmlType::IQ2_XXS) {
        gr::Iq2Rec r;
        gr::iq2_record(rw, a2, j, r);
        *reinterpret_cast<uint4*>(tab + gr::iq2_rec_off(row, u & 1, j)) =
            make_uint4(r.qs, r.w01, r.w23, __float_as_uint(r.scale));
      } else {
        gr::Q2kRec r;
        gr::q2k_record(rw, j, r);
        *reinterpret_cast<float4*>(Rec + gr::q2k_rec_off(0, row, u & 1, j)) = make_float4(r.n0, r.n1, r.scale, 0.0f);
        *reinterpret_cast<uint4*>(Rec + gr::q2k_rec_off(1, row, u & 1, j)) = make_uint4(r.mul0, r.add0, r.mul1, r.add1);
      }
    }
  };

  // The fragment rows: R = 64 wg + a_row(warp % 4, lane, 0) and R + 8; pair q = lane % 4.
  const int r0 = 64 * wg + dq::a_row(warp & 3, lane, 0);
  // k-tile i (0..3, a constant) of the iteration of chunk c: unit c / 4, k-tile 4 ((c / 2) % 2) + i of it
  // (an iteration is half a unit), so that the Q2_K decode's bit positions are constants.
  auto frag = [&](int c, int i, Frag& f) {
    const int u = c / gr::kChunksPerUnit, j = 4 * ((c >> 1) & 1) + i;
    if constexpr (T == GgmlType::Q2_K) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int row = r0 + 8 * rr;
        const float4 a = *reinterpret_cast<const float4*>(Rec + gr::q2k_rec_off(0, row, u & 1, j));
        const uint4 b = *reinterpret_cast<const uint4*>(Rec + gr::q2k_rec_off(1, row, u & 1, j));
        const gr::Q2kRec r{a.x, a.y, a.z, 0.0f, b.x, b.y, b.z, b.w};
        uint32_t h[4];
        gr::q2k_rec_frag(r, Raw + (u & 1) * S::kRawBuf + row * F::kStride, j, lane, h);
        f.sc[rr] = r.scale, f.n0[rr] = r.n0, f.n1[rr] = r.n1;
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          int s, rg;
          gr::frag_reg(m, rr, s, rg);
          f.a[s][rg] = h[m];
        }
      }
    } else {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const uint4 v = *reinterpret_cast<const uint4*>(tab + gr::iq2_rec_off(r0 + 8 * rr, u & 1, j));
        const gr::Iq2Rec r{v.x, v.y, v.z, __uint_as_float(v.w)};
        uint32_t h[4];
        gr::iq2_rec_frag(r, lane, tab, h);
        f.sc[rr] = r.scale, f.n0[rr] = f.n1[rr] = 0.0f;
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          int s, rg;
          gr::frag_reg(m, rr, s, rg);
          f.a[s][rg] = h[m];
        }
      }
    }
  };
  auto b_addr = [&](int t) {  // the hi tile of k-tile t's chunk, at the k-tile's 64-byte column offset
    return xs + static_cast<uint32_t>(gr::stage_of(t >> 1)) * gr::kStageBytes + static_cast<uint32_t>(64 * (t & 1));
  };
  // Token sums of k-tiles t0 .. t0 + 3 (chunks t0 / 2, + 1), items below n_used.
  auto sums = [&](int t0) {
    const int item = gr::sum_item(tid), half = gr::sum_half(tid);
    if (item >= n_used) return;
#pragma unroll
    for (int i = 0; i < gr::kTilesPerIter; ++i) {
      const int t = t0 + i;
      const unsigned char* st = smem + gr::stage_of(t >> 1) * gr::kStageBytes;
      float s8[2];
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const uint32_t off = dq::b_off(item, gr::sum_chunk(t, half, k));
        const uint4 hv = *reinterpret_cast<const uint4*>(st + off);
        const uint4 lv = *reinterpret_cast<const uint4*>(st + gr::kTermBytes + off);
        const uint32_t h4[4] = {hv.x, hv.y, hv.z, hv.w}, l4[4] = {lv.x, lv.y, lv.z, lv.w};
        s8[k] = gemm_int::sum8(h4, l4);
      }
      Sums[gr::sum_index(i, half, item)] = s8[0] + s8[1];
    }
  };

  wgmma::with_n(n_used >> 5, [&](auto n_tag) {
    constexpr int N = decltype(n_tag)::value;
    float acc[N / 2], p0[N / 2], p1[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i) acc[i] = 0.0f;
    Frag f0, f1;
    // Unit 0 in chunk 0's group, its records before the loop (the loop's first barrier publishes them).
    load_raw(0);
    load(0);
    mma::cp_async_wait<0>();
    __syncthreads();
    prep(0);
    for (int c = 0; c < nc; c += gr::kChunksPerIter) {
      mma::cp_async_wait<0>();  // chunks c, c + 1 landed (this thread's copies; the barrier: everyone's)
      wgmma::fence_proxy_async();
      __syncthreads();
      // As the dense kernel: k-tiles t .. t + 3 alternate between p0 and p1, nothing in flight across
      // iterations; the next iteration's copies go out once the tensor core has work (into the stages of
      // chunks c - 2, c - 1 and, at a unit's start, the raw buffer of unit u - 2, all read before this
      // iteration's barrier).
      const int t = 2 * c;
      frag(c, 0, f0);
      mma_ktile<N>(p0, f0, b_addr(t));
      load(c + gr::kChunksPerIter);
      // Unit (c + 2) / 4's records, its raw words landed at this iteration's wait (issued with chunk c's
      // group); read from the next iteration on, after its barrier.
      if ((c + 2) % gr::kChunksPerUnit == 0 && (c + 2) / gr::kChunksPerUnit < n_units)
        prep((c + 2) / gr::kChunksPerUnit);
      // kPre: the iteration's sums came with its chunks (load), published by the barrier above.
      const float* sums_it = Sums;
      if constexpr (kPre) sums_it += ((c / gr::kChunksPerIter) & 1) * S::kSumsBuf;
      if constexpr (kMins > 0 && !kPre) {
        // The iteration's token sums, then a barrier before any promotion reads them (the previous
        // iteration's promotions finished before this iteration's first barrier).
        sums(t);
        __syncthreads();
      }
      frag(c, 1, f1);
      mma_ktile<N>(p1, f1, b_addr(t + 1));
      wgmma::wait<1>();
      promote<N, kMins>(acc, p0, f0, sums_it, 0, lane);
      frag(c, 2, f0);
      mma_ktile<N>(p0, f0, b_addr(t + 2));
      wgmma::wait<1>();
      promote<N, kMins>(acc, p1, f1, sums_it, 1, lane);
      frag(c, 3, f1);
      mma_ktile<N>(p1, f1, b_addr(t + 3));
      wgmma::wait<1>();
      promote<N, kMins>(acc, p0, f0, sums_it, 2, lane);
      wgmma::wait<0>();
      promote<N, kMins>(acc, p1, f1, sums_it, 3, lane);
    }

    // Element i: row 64 wg + d_row(warp % 4, lane, i), item d_col(lane, i); every (row < n_rows,
    // item < count) once.
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
          const int64_t r = m0 + 64 * wg + wgmma::d_row(warp & 3, lane, i);
          if (r < n_rows) y[r] = acc[i];
        }
      }
  });
#else
  (void)W, (void)row_bytes, (void)K, (void)rows_per_mat, (void)offset, (void)items, (void)tiles, (void)n_tiles;
  (void)Xb, (void)k8, (void)lo_off, (void)gather, (void)src_div, (void)scatter, (void)Y, (void)ys, (void)tsums;
  __trap();  // not built for sm_90a: the host never launches it (gemm_grouped_wgmma checks the device)
#endif
}

template <GgmlType T, bool kPre = false>
void launch(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8, int64_t x_rows,
            bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s,
            const float* tsums = nullptr) {
  constexpr int sm = gr::Smem<T, kPre>::bytes + 1024;  // + the slack to align the base to 1024 bytes
  static_assert(sm + (T == GgmlType::IQ2_XXS ? gr::kTabBytes : 16) + 1024 <= 227 * 1024, "one block an SM fits");
  static const bool attr = [] {
    FS_CUDA_CHECK(cudaFuncSetAttribute(group_wgmma_reg<T, kPre>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    FS_CUDA_CHECK(cudaFuncSetAttribute(group_wgmma_reg<T, kPre>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)attr;
  const dim3 grid(static_cast<unsigned>((rows_per_mat + kBM - 1) / kBM), static_cast<unsigned>(p.max_tiles));
  group_wgmma_reg<T, kPre><<<grid, gr::kThreads, sm, s>>>(W.data, W.row_bytes, static_cast<int>(W.cols), rows_per_mat,
                                                    p.offset, p.items, p.tiles, p.n_tiles, Xb, k8, x_rows * k8,
                                                    gather, src_div, scatter, Y, ys, tsums);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace

void gemm_set_group_q2k_sums(bool on) { q2k_sums_flag() = on; }
bool gemm_group_q2k_sums() { return q2k_sums_flag(); }

void group_token_sums(const uint16_t* Xb, int64_t k8, int64_t lo_off, int64_t rows, int64_t cols, float* out,
                      cudaStream_t s) {
  const int64_t n = rows * (cols / 16);
  if (n <= 0) return;
  constexpr int kT = 256;
  token_sums_kernel<<<static_cast<unsigned>((n + kT - 1) / kT), kT, 0, s>>>(Xb, k8, lo_off, rows,
                                                                            static_cast<int>(cols / 16), out);
  FS_CUDA_LAUNCH_CHECK();
}

void init_group_wgmma_reg_table() {
  uint32_t tab[1024];
  if (!gr::iq2_pair_table(tab)) fail("IQ2_XXS grid bytes outside {8, 25, 43}");
  FS_CUDA_CHECK(cudaMemcpyToSymbol(g_wgr_tab, tab, sizeof(tab)));
}

// Called by gemm_grouped_wgmma (gemm_group_wgmma.cu) after its checks (IQ2_XXS or Q2_K, 256-column units,
// 4-byte raw words, 16-byte activation rows, a Hopper); false (nothing launched) for what it does not take.
bool group_wgmma_reg_launch(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8,
                            int64_t x_rows, bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys,
                            cudaStream_t s, float* tsums, bool tsums_ready) {
  // Whole iterations of 4 k-tiles (implied by the 256-column units); token rows and item rows as int.
  if (W.cols % (gr::kTilesPerIter * 32) != 0 || x_rows > INT32_MAX || x_rows * k8 >= gr::kMaxXElems) return false;
  if (W.type == GgmlType::IQ2_XXS)
    launch<GgmlType::IQ2_XXS>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
  else if (W.type == GgmlType::Q2_K && q2k_sums_flag() && tsums) {
    // The sums of all x_rows rows (unless the FP16 copy's writer formed them), then the product copying
    // them in (stream order).
    if (!tsums_ready) group_token_sums(Xb, k8, x_rows * k8, x_rows, W.cols, tsums, s);
    launch<GgmlType::Q2_K, true>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s, tsums);
  } else if (W.type == GgmlType::Q2_K)
    launch<GgmlType::Q2_K>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
  else
    return false;
  return true;
}

}  // namespace flashstar::cuda::fast
