// Prefill matrix products on the tensor cores (mma.sync m16n8k16, fp32 accumulation). A block computes
// 128 weight rows x BN tokens. Weight tiles are decoded from the quantized bytes straight into shared
// memory (never written decoded to device memory); activations come from a copy made once per product,
// split in two FP16 terms, x = hi + lo. Block-quantized weights go in as exact FP16 integers (one term;
// gemm_int_weights.h) and a step takes two mma (W x_lo + W x_hi); the block scale (and minimum) is
// applied when a 32-column k-tile's partial sum is promoted. Float weights are split in two terms too
// and take three mma (hi.hi + hi.lo + lo.hi). Both are about fp32 accuracy (2^-22) where one FP16 term
// per operand (2^-11) moved the logits of the random test model 7x past the reference path's own drift.
// Each output element is one thread's fixed sequence of mma steps over k: deterministic, no split-k, no
// atomics.
#include <algorithm>
#include <cstdlib>

#include "cuda/cuda_util.h"
#include "cuda/weight_dispatch.h"
#include "cuda/fast_kernels.h"
#include "cuda/fast_quant.cuh"
#include "cuda/mma_f16.cuh"
#include "cuda/gemm_int_weights.h"
#include "quant/quant.h"
#include "cuda/pdl.cuh"
#include "cuda/prefill_small.h"

namespace flashstar::cuda::fast {

// Defined in fast_matvec.cu's unit would need relocatable device code; each unit keeps its own copy.
namespace {
__device__ uint64_t g_gemm_iq2_grid[256];
__device__ uint8_t g_gemm_iq2_signs[128];

constexpr int kBM = 128, kBK = 32, kPad = 8, kLd = kBK + kPad, kThreads = 256;
// Weights are scaled by 2^10 before the split (and the sums back at the end, exactly): dequantized
// weights are small, and their low FP16 term would otherwise fall among the subnormals (2^-24 steps).
constexpr float kWScale = 1024.0f;

// FP16 operands: 10 mantissa bits where BF16 has 7, so 8x less rounding; the range is ample for
// normalised activations and dequantized weights (tiny weights go subnormal, an absolute error of 2^-24).
using mma::pack_f16;
using mma::pack_f16_lo;

template <GgmlType T>
__device__ __forceinline__ void weight4(const uint8_t* row, int e, float (&w)[4], const Iq2Tables* tab) {
  if constexpr (T == GgmlType::F32) {
    const float4 v = *reinterpret_cast<const float4*>(row + 4 * e);
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  } else if constexpr (T == GgmlType::F16 || T == GgmlType::BF16) {
    const uint2 v = *reinterpret_cast<const uint2*>(row + 2 * e);
    const uint32_t h[4] = {v.x & 0xffff, v.x >> 16, v.y & 0xffff, v.y >> 16};
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = T == GgmlType::F16 ? h2f(h[i]) : __uint_as_float(h[i] << 16);
  } else {
    using Q = QuantTraits<T>;
    dq4<T>(row + (e / Q::kBlock) * Q::kBytes, e % Q::kBlock, w, tab);
  }
}

using mma::ldmatrix_x4;
using mma::mma_f16;

// Token rows of a tile: dense products take consecutive tokens; grouped products take the items the
// plan lists for one expert.
struct TileRows {
  const int32_t* items;  // null: dense
  int64_t first, count;  // positions [first, first + count)
  bool gather, scatter;
  int32_t src_div;
  __device__ int64_t x_row(int64_t j) const { return items && gather ? items[first + j] / src_div : first + j; }
  __device__ int64_t y_row(int64_t j) const { return items && scatter ? items[first + j] : first + j; }
};

// Shared memory of a tile: A [buf][term][kBM][kLd] and B [buf][term][BN][kLd] halves; with integer
// weights (one A term) also the rows' scales and negated minima [buf][kBM][kRs] and, where the format has
// minima, the tokens' activation sums over each 16-column half [buf][2][BN].
template <GgmlType T, bool kInt>
struct TileSmem {
  static constexpr int kTerms = kInt ? 1 : 2;
  static constexpr int kMins = kInt ? gemm_int::Traits<T>::kMins : 0;
  static constexpr int kRs = !kInt ? 0 : kMins == 0 ? 1 : kMins == 1 ? 2 : 4;
  static constexpr int bytes(int bn) {
    return (2 * kTerms * kBM * kLd + 4 * bn * kLd) * 2 + 2 * kBM * kRs * 4 + (kMins ? 2 * 2 * bn * 4 : 0);
  }
};

template <GgmlType T, bool kInt, int BN>
__device__ __forceinline__ void gemm_tile(const uint8_t* __restrict__ W, size_t row_bytes, int K, int64_t wrow0,
                                          int64_t n_rows, int64_t m0, const uint16_t* __restrict__ Xb, int64_t k8,
                                          int64_t lo_off, const TileRows& tr, float* Y, int64_t ys,
                                          const Iq2Tables* tab, uint16_t* smem) {
  using S = TileSmem<T, kInt>;
  constexpr int kTerms = S::kTerms, kMins = S::kMins, kRs = S::kRs;
  uint16_t* As = smem;
  uint16_t* Bs = As + 2 * kTerms * kBM * kLd;
  float* Rs = reinterpret_cast<float*>(Bs + 4 * BN * kLd);
  float* Ss = Rs + 2 * kBM * kRs;
  constexpr int kWarpsN = BN / 32, kWarpsM = 8 / kWarpsN, kWM = kBM / kWarpsM, kMI = kWM / 16;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;

  // A loader: thread -> (row, 16 k values); B loader: BN rows x 32 k, 8 bf16 (16 B) per thread-step.
  const int a_row = tid >> 1, a_k = (tid & 1) * 16;
  const int64_t a_grow = m0 + a_row < n_rows ? m0 + a_row : n_rows - 1;
  const uint8_t* a_ptr = W + static_cast<size_t>(wrow0 + a_grow) * row_bytes;
  constexpr int kBVec = BN * kBK / 8 / kThreads;  // uint4 per thread per tile
  const uint16_t* b_src[kBVec];
  int b_dst[kBVec];
#pragma unroll
  for (int v = 0; v < kBVec; ++v) {
    const int idx = tid + v * kThreads, row = idx >> 2, col = (idx & 3) * 8;
    b_src[v] = row < tr.count ? Xb + tr.x_row(row) * k8 + col : nullptr;
    b_dst[v] = row * kLd + col;
  }

  uint32_t a_reg[kTerms][8];
  float a_scale = 0.0f, a_min = 0.0f;
  uint4 b_reg[2][kBVec];
  auto load = [&](int k0) {
    if constexpr (kInt) {
      gemm_int::Piece pc;
      gemm_int::piece<T>(a_ptr, k0 + a_k, tab->grid, tab->signs, pc);
#pragma unroll
      for (int i = 0; i < 8; ++i) a_reg[0][i] = pc.h[i];
      a_scale = pc.scale, a_min = pc.min;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float w[4];
        weight4<T>(a_ptr, k0 + a_k + 4 * i, w, tab);
#pragma unroll
        for (int j = 0; j < 4; ++j) w[j] *= kWScale;
        a_reg[0][2 * i] = pack_f16(w[0], w[1]);
        a_reg[0][2 * i + 1] = pack_f16(w[2], w[3]);
        a_reg[kTerms - 1][2 * i] = pack_f16_lo(w[0], w[1], a_reg[0][2 * i]);
        a_reg[kTerms - 1][2 * i + 1] = pack_f16_lo(w[2], w[3], a_reg[0][2 * i + 1]);
      }
    }
#pragma unroll
    for (int v = 0; v < kBVec; ++v)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        b_reg[h][v] = b_src[v] ? *reinterpret_cast<const uint4*>(b_src[v] + h * lo_off + k0) : make_uint4(0, 0, 0, 0);
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int h = 0; h < kTerms; ++h) {
      uint16_t* a = As + (buf * kTerms + h) * kBM * kLd + a_row * kLd + a_k;
      *reinterpret_cast<uint4*>(a) = make_uint4(a_reg[h][0], a_reg[h][1], a_reg[h][2], a_reg[h][3]);
      *reinterpret_cast<uint4*>(a + 8) = make_uint4(a_reg[h][4], a_reg[h][5], a_reg[h][6], a_reg[h][7]);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int v = 0; v < kBVec; ++v) *reinterpret_cast<uint4*>(Bs + (buf * 2 + h) * BN * kLd + b_dst[v]) = b_reg[h][v];
    if constexpr (kInt) {
      float* rs = Rs + (buf * kBM + a_row) * kRs;
      if (a_k == 0) rs[0] = a_scale;
      if constexpr (kMins == 1) {
        if (a_k == 0) rs[1] = -a_min;
      } else if constexpr (kMins == 2) {
        rs[1 + (a_k >> 4)] = -a_min;
      }
    }
    if constexpr (kMins > 0) {
      // Each token's sum over a 16-column half: a thread sums its 8 columns (hi + lo), its neighbour
      // (idx ^ 1, the other 8 of the same half) adds its own; a + b == b + a, so both hold the same.
#pragma unroll
      for (int v = 0; v < kBVec; ++v) {
        const int idx = tid + v * kThreads;
        const uint32_t hi[4] = {b_reg[0][v].x, b_reg[0][v].y, b_reg[0][v].z, b_reg[0][v].w};
        const uint32_t lo[4] = {b_reg[1][v].x, b_reg[1][v].y, b_reg[1][v].z, b_reg[1][v].w};
        const float mine = gemm_int::sum8(hi, lo);
        const float sum = mine + __shfl_xor_sync(0xffffffffu, mine, 1);
        if ((idx & 1) == 0) Ss[(buf * 2 + ((idx >> 1) & 1)) * BN + (idx >> 2)] = sum;
      }
    }
  };

  float acc[kMI][4][4] = {};
  const int nk = K / kBK;
  load(0);
  store(0);
  __syncthreads();
  for (int kt = 0; kt < nk; ++kt) {
    const int cur = kt & 1;
    if (kt + 1 < nk) load((kt + 1) * kBK);
    // The tensor cores' fp32 accumulation truncates; summing each k-tile's partial into acc with
    // ordinary (round-to-nearest) adds keeps the error from growing with k.
    float part[kMI][4][4] = {};
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t af[kTerms][kMI][4], bf[2][2][4];
#pragma unroll
      for (int h = 0; h < kTerms; ++h) {
        const uint16_t* a_s = As + (cur * kTerms + h) * kBM * kLd;
#pragma unroll
        for (int mi = 0; mi < kMI; ++mi)
          ldmatrix_x4(af[h][mi], a_s + (wm * kWM + mi * 16 + (lane & 15)) * kLd + kk + (lane >> 4) * 8);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint16_t* b_s = Bs + (cur * 2 + h) * BN * kLd;
#pragma unroll
        for (int nj = 0; nj < 2; ++nj)
          ldmatrix_x4(bf[h][nj],
                      b_s + (wn * 32 + nj * 16 + (lane & 7) + ((lane >> 4) << 3)) * kLd + kk + ((lane >> 3) & 1) * 8);
      }
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          const int nj = ni >> 1, q = (ni & 1) * 2;
          if constexpr (kInt) {  // exact integer weights: W x_lo + W x_hi, small term first
            mma_f16(part[mi][ni], af[0][mi], bf[1][nj][q], bf[1][nj][q + 1]);
            mma_f16(part[mi][ni], af[0][mi], bf[0][nj][q], bf[0][nj][q + 1]);
          } else {
            mma_f16(part[mi][ni], af[kTerms - 1][mi], bf[0][nj][q], bf[0][nj][q + 1]);  // small terms first
            mma_f16(part[mi][ni], af[0][mi], bf[1][nj][q], bf[1][nj][q + 1]);
            mma_f16(part[mi][ni], af[0][mi], bf[0][nj][q], bf[0][nj][q + 1]);
          }
        }
    }
    if constexpr (kInt) {
      // Rows r0 = .. + lane / 4 and r0 + 8 of each mi; tokens j0 = .. + 2 (lane % 4) and j0 + 1 of each ni.
      float sc[kMI][2], mn0[kMI][2] = {}, mn1[kMI][2] = {};
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          const float* rs = Rs + (cur * kBM + wm * kWM + mi * 16 + (lane >> 2) + rr * 8) * kRs;
          sc[mi][rr] = rs[0];
          if constexpr (kMins > 0) mn0[mi][rr] = rs[1];
          if constexpr (kMins > 1) mn1[mi][rr] = rs[2];
        }
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int j = wn * 32 + ni * 8 + (lane & 3) * 2;
        float2 s0 = make_float2(0.0f, 0.0f), s1 = s0;
        if constexpr (kMins > 0) {
          s0 = *reinterpret_cast<const float2*>(Ss + (cur * 2 + 0) * BN + j);
          s1 = *reinterpret_cast<const float2*>(Ss + (cur * 2 + 1) * BN + j);
        }
#pragma unroll
        for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
          for (int c = 0; c < 4; ++c)
            acc[mi][ni][c] = gemm_int::promote<kMins>(acc[mi][ni][c], part[mi][ni][c], sc[mi][c >> 1], mn0[mi][c >> 1],
                                                      mn1[mi][c >> 1], c & 1 ? s0.y : s0.x, c & 1 ? s1.y : s1.x);
      }
    } else {
#pragma unroll
      for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[mi][ni][c] += part[mi][ni][c];
    }
    if (kt + 1 < nk) store(cur ^ 1);
    __syncthreads();
  }
  constexpr float kOut = kInt ? 1.0f : 1.0f / kWScale;
#pragma unroll
  for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int64_t r = m0 + wm * kWM + mi * 16 + (lane >> 2) + (c >> 1) * 8;
        const int j = wn * 32 + ni * 8 + (lane & 3) * 2 + (c & 1);
        if (r < n_rows && j < tr.count) Y[tr.y_row(j) * ys + r] = acc[mi][ni][c] * kOut;
      }
}

template <GgmlType T>
__device__ __forceinline__ const Iq2Tables* load_tables(Iq2Tables* tab) {
  if constexpr (T == GgmlType::IQ2_XXS) {
    for (int i = threadIdx.x; i < 256; i += kThreads) tab->grid[i] = g_gemm_iq2_grid[i];
    for (int i = threadIdx.x; i < 128; i += kThreads) tab->signs[i] = g_gemm_iq2_signs[i];
    __syncthreads();
  }
  return tab;
}

template <GgmlType T, bool kInt>
__global__ void __launch_bounds__(kThreads) gemm_dense(const uint8_t* W, size_t row_bytes, int K, int64_t row0,
                                                        int64_t n_rows, const uint16_t* Xb, int64_t k8, int64_t lo_off,
                                                        int64_t n_tok, float* Y, int64_t ys) {
  pdl_wait();
  extern __shared__ __align__(16) uint16_t smem_h[];
  __shared__ Iq2Tables tab;
  load_tables<T>(&tab);
  TileRows tr{nullptr, static_cast<int64_t>(blockIdx.y) * 128, 0, false, false, 1};
  tr.count = n_tok - tr.first < 128 ? n_tok - tr.first : 128;
  gemm_tile<T, kInt, 128>(W, row_bytes, K, row0, n_rows, static_cast<int64_t>(blockIdx.x) * kBM, Xb, k8, lo_off, tr,
                          Y, ys, &tab, smem_h);
}

// Integer weights fit two blocks per SM (16 warps to hide the loads) in 128 registers.
template <GgmlType T, bool kInt>
__global__ void __launch_bounds__(kThreads, kInt ? 2 : 1) gemm_group(const uint8_t* W, size_t row_bytes, int K, int64_t rows_per_mat,
                                                        const int32_t* offset, const int32_t* items, const int32_t* tiles,
                                                        const int32_t* n_tiles, const uint16_t* Xb, int64_t k8,
                                                        int64_t lo_off, bool gather, int32_t src_div, bool scatter,
                                                        float* Y, int64_t ys) {
  pdl_wait();
  if (static_cast<int>(blockIdx.y) >= *n_tiles) return;
  extern __shared__ __align__(16) uint16_t smem_h[];
  __shared__ Iq2Tables tab;
  load_tables<T>(&tab);
  const int32_t tile = tiles[blockIdx.y], e = tile >> 16, i = tile & 0xffff;
  TileRows tr{items, offset[e] + static_cast<int64_t>(i) * kMoeTileTokens, 0, gather, scatter, src_div};
  tr.count = offset[e + 1] - tr.first < kMoeTileTokens ? offset[e + 1] - tr.first : kMoeTileTokens;
  gemm_tile<T, kInt, kMoeTileTokens>(W, row_bytes, K, static_cast<int64_t>(e) * rows_per_mat, rows_per_mat,
                                     static_cast<int64_t>(blockIdx.x) * kBM, Xb, k8, lo_off, tr, Y, ys, &tab, smem_h);
}

bool shape_ok(const DMat& W) {
  switch (W.type) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: case GgmlType::Q8_0: case GgmlType::Q2_K:
    case GgmlType::Q4_K: case GgmlType::IQ2_XXS: break;
    default: return false;
  }
  return W.cols % 256 == 0 && reinterpret_cast<uintptr_t>(W.data) % 16 == 0 && W.row_bytes % 4 == 0;
}


// Integer weights (two mma per step) for the formats gemm_int::Traits takes, unless FLASHSTAR_GEMM_INT=0
// or gemm_set_int_weights(false) puts the three-mma split back (for A/B comparisons on the device).
bool& int_weights_flag() {
  static bool on = env_on("FLASHSTAR_GEMM_INT");
  return on;
}

template <GgmlType T, bool kInt>
void dense_run(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y, int64_t ys,
               cudaStream_t s) {
  const int64_t k8 = (W.cols + 7) / 8 * 8;
  constexpr int sm = TileSmem<T, kInt>::bytes(128);
  static bool attr = false;
  if (!attr) {
    FS_CUDA_CHECK(cudaFuncSetAttribute(gemm_dense<T, kInt>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    attr = true;
  }
  for (int64_t t0 = 0; t0 < n_tok; t0 += 65535ll * 128) {
    const int64_t nt = std::min<int64_t>(65535ll * 128, n_tok - t0);
    const dim3 grid(static_cast<unsigned>((n_rows + kBM - 1) / kBM), static_cast<unsigned>((nt + 127) / 128));
    gemm_dense<T, kInt><<<grid, kThreads, sm, s>>>(W.data, W.row_bytes, static_cast<int>(W.cols), row0, n_rows,
                                                   Xb + t0 * k8, k8, n_tok * k8, nt, Y + t0 * ys, ys);
    FS_CUDA_LAUNCH_CHECK();
  }
}

template <GgmlType T>
struct DenseLaunch {
  static void run(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y, int64_t ys,
                  cudaStream_t s) {
    if constexpr (gemm_int::Traits<T>::kInt) {
      if (int_weights_flag()) return dense_run<T, true>(W, row0, n_rows, Xb, n_tok, Y, ys, s);
    }
    dense_run<T, false>(W, row0, n_rows, Xb, n_tok, Y, ys, s);
  }
};

template <GgmlType T, bool kInt>
void group_run(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8, int64_t x_rows,
               bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s) {
  constexpr int sm = TileSmem<T, kInt>::bytes(kMoeTileTokens);
  static bool attr = false;
  if (!attr) {
    FS_CUDA_CHECK(cudaFuncSetAttribute(gemm_group<T, kInt>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    attr = true;
  }
  const dim3 grid(static_cast<unsigned>((rows_per_mat + kBM - 1) / kBM), static_cast<unsigned>(p.max_tiles));
  gemm_group<T, kInt><<<grid, kThreads, sm, s>>>(W.data, W.row_bytes, static_cast<int>(W.cols), rows_per_mat, p.offset,
                                                 p.items, p.tiles, p.n_tiles, Xb, k8, x_rows * k8, gather, src_div,
                                                 scatter, Y, ys);
  FS_CUDA_LAUNCH_CHECK();
}

template <GgmlType T>
struct GroupLaunch {
  static void run(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8,
                  int64_t x_rows, bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s) {
    if constexpr (gemm_int::Traits<T>::kInt) {
      if (int_weights_flag())
        return group_run<T, true>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
    }
    group_run<T, false>(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
  }
};

__global__ void to_f16_kernel(const float* X, int64_t k, int64_t xs, int64_t k8, uint16_t* out, int64_t lo_off) {
  pdl_wait();
  const int64_t row = blockIdx.y;
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 2; i < k8; i += 2ll * gridDim.x * blockDim.x) {
    const float a = i < k ? X[row * xs + i] : 0.0f, b = i + 1 < k ? X[row * xs + i + 1] : 0.0f;
    const uint32_t hi = pack_f16(a, b);
    *reinterpret_cast<uint32_t*>(out + row * k8 + i) = hi;
    *reinterpret_cast<uint32_t*>(out + lo_off + row * k8 + i) = pack_f16_lo(a, b, hi);
  }
}

// to_f16_kernel with a thread per 8 values (two float4 loads, one 16-byte store per term) where k is a
// multiple of 8 and the rows are 16-byte aligned: the same pack_f16 / pack_f16_lo on the same pairs, so the
// same bits; the scalar kernel's two 4-byte loads and stores per thread left its 2 GB a prefill layer
// short of the card's bandwidth (FLASHSTAR_PREFILL_SMALL=0 puts it back).
__global__ void to_f16_vec8_kernel(const float* X, int64_t k, int64_t xs, uint16_t* out, int64_t lo_off) {
  pdl_wait();
  const int64_t row = blockIdx.y, per_row = k / 8;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < per_row;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4* p = reinterpret_cast<const float4*>(X + row * xs + 8 * c);
    const float4 a = p[0], b = p[1];
    const uint4 hi = make_uint4(pack_f16(a.x, a.y), pack_f16(a.z, a.w), pack_f16(b.x, b.y), pack_f16(b.z, b.w));
    *reinterpret_cast<uint4*>(out + row * k + 8 * c) = hi;
    *reinterpret_cast<uint4*>(out + lo_off + row * k + 8 * c) =
        make_uint4(pack_f16_lo(a.x, a.y, hi.x), pack_f16_lo(a.z, a.w, hi.y), pack_f16_lo(b.x, b.y, hi.z),
                   pack_f16_lo(b.z, b.w, hi.w));
  }
}

// Per expert, in one block each: count, then (after the scan) write its items in item order.
__global__ void moe_count_kernel(const int32_t* sel, int64_t n_items, int32_t* count) {
  pdl_wait();
  __shared__ int32_t warp_sum[32];
  const int e = blockIdx.x;
  int c = 0;
  for (int64_t i = threadIdx.x; i < n_items; i += blockDim.x) c += sel[i] == e;
  for (int off = 16; off > 0; off >>= 1) c += __shfl_xor_sync(0xffffffffu, c, off);
  if ((threadIdx.x & 31) == 0) warp_sum[threadIdx.x >> 5] = c;
  __syncthreads();
  if (threadIdx.x == 0) {
    int t = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x) / 32; ++w) t += warp_sum[w];
    count[e] = t;
  }
}
__global__ void moe_scan_kernel(const int32_t* count, int n_expert, int32_t* offset, int32_t* tiles, int32_t* n_tiles) {
  pdl_wait();
  if (threadIdx.x != 0) return;
  int32_t o = 0, nt = 0;
  for (int e = 0; e < n_expert; ++e) {
    offset[e] = o;
    o += count[e];
    for (int i = 0; i * kMoeTileTokens < count[e]; ++i) tiles[nt++] = (e << 16) | i;
  }
  offset[n_expert] = o;
  *n_tiles = nt;
}
// One block of kPlaceWarps warps per expert; a round covers 32 x kPlaceWarps consecutive items, each warp
// ballots its 32 and adds the hit counts of the warps before it, so items keep their order. (One warp
// scanning all n_items took ~260 us at 24 576 items: a chain of 768 dependent rounds.)
constexpr int kPlaceWarps = 32;
__global__ void __launch_bounds__(32 * kPlaceWarps) moe_place_kernel(const int32_t* sel, int64_t n_items,
                                                                      const int32_t* offset, int32_t* items) {
  pdl_wait();
  __shared__ int32_t hits[2][kPlaceWarps];  // alternate rounds: one barrier per round
  const int e = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int32_t base = offset[e];
  int r = 0;
  for (int64_t i0 = 0; i0 < n_items; i0 += 32 * kPlaceWarps, r ^= 1) {
    const int64_t i = i0 + 32 * warp + lane;
    const bool hit = i < n_items && sel[i] == e;
    const unsigned mask = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) hits[r][warp] = __popc(mask);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < kPlaceWarps; ++w) {
      const int h = hits[r][w];
      before += w < warp ? h : 0;
      total += h;
    }
    if (hit) items[base + before + __popc(mask & ((1u << lane) - 1))] = static_cast<int32_t>(i);
    base += total;
  }
}

__global__ void gather_kernel(const float* w, const int32_t* items, int64_t n, float* out) {
  pdl_wait();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = w[items[i]];
}

}  // namespace

void moe_gather(const float* w, const MoePlan& p, int64_t n_items, float* out, cudaStream_t s) {
  if (n_items <= 0) return;
  gather_kernel<<<static_cast<unsigned>((n_items + 255) / 256), 256, 0, s>>>(w, p.items, n_items, out);
  FS_CUDA_LAUNCH_CHECK();
}

void init_gemm_tables() {
  FS_CUDA_CHECK(cudaMemcpyToSymbol(g_gemm_iq2_grid, quant::kIq2xxsGrid, sizeof(g_gemm_iq2_grid)));
  FS_CUDA_CHECK(cudaMemcpyToSymbol(g_gemm_iq2_signs, quant::kIq2xsSigns, sizeof(g_gemm_iq2_signs)));
  init_gemm_group_tables();
}

int moe_max_tiles(int64_t n_items, int n_expert) {
  return static_cast<int>(n_items / kMoeTileTokens + n_expert);
}

void moe_plan(const int32_t* sel, int64_t n_items, int n_expert, const MoePlan& p, cudaStream_t s) {
  moe_count_kernel<<<n_expert, 256, 0, s>>>(sel, n_items, p.count);
  FS_CUDA_LAUNCH_CHECK();
  moe_scan_kernel<<<1, 32, 0, s>>>(p.count, n_expert, p.offset, p.tiles, p.n_tiles);
  FS_CUDA_LAUNCH_CHECK();
  moe_place_kernel<<<n_expert, 32 * kPlaceWarps, 0, s>>>(sel, n_items, p.offset, p.items);
  FS_CUDA_LAUNCH_CHECK();
}

void to_f16(const float* X, int64_t n, int64_t k, int64_t xs, uint16_t* out, cudaStream_t s) {
  if (n <= 0) return;
  const int64_t k8 = (k + 7) / 8 * 8;
  if (k8 == k && xs % 4 == 0 && reinterpret_cast<uintptr_t>(X) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
      prefill_small_requested()) {
    for (int64_t r0 = 0; r0 < n; r0 += 65535) {
      const dim3 grid(static_cast<unsigned>(std::min<int64_t>((k / 8 + 255) / 256, 64)),
                      static_cast<unsigned>(std::min<int64_t>(65535, n - r0)));
      to_f16_vec8_kernel<<<grid, 256, 0, s>>>(X + r0 * xs, k, xs, out + r0 * k, n * k);
      FS_CUDA_LAUNCH_CHECK();
    }
    return;
  }
  for (int64_t r0 = 0; r0 < n; r0 += 65535) {
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>((k8 / 2 + 255) / 256, 64)),
                    static_cast<unsigned>(std::min<int64_t>(65535, n - r0)));
    to_f16_kernel<<<grid, 256, 0, s>>>(X + r0 * xs, k, xs, k8, out + r0 * k8, n * k8);
    FS_CUDA_LAUNCH_CHECK();
  }
}

bool gemm_supports(const DMat& W) { return shape_ok(W); }

void gemm_set_int_weights(bool on) { int_weights_flag() = on; }
bool gemm_int_weights() { return int_weights_flag(); }

bool gemm(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y, int64_t ys,
          cudaStream_t s) {
  if (!shape_ok(W)) return false;
  if (n_rows <= 0 || n_tok <= 0) return true;
  // The Q8_0 warpgroup kernel has the integer-weight numerics (FLASHSTAR_GEMM_INT=0 turns them off); the
  // float-weight ones have gemm_dense<T, false>'s, which float weights always take.
  if ((int_weights_flag() || W.type != GgmlType::Q8_0) && n_tok > 64 &&
      gemm_dense_wgmma(W, row0, n_rows, Xb, n_tok, Y, ys, s))
    return true;
  if (int_weights_flag() && gemm_dense_v2(W, row0, n_rows, Xb, n_tok, Y, ys, s)) return true;
  dispatch_weight_type<DenseLaunch>(W.type, W, row0, n_rows, Xb, n_tok, Y, ys, s);
  return true;
}

bool gemm_grouped(const DMat& W, int64_t rows_per_mat, const MoePlan& p, const uint16_t* Xb, int64_t k8, int64_t x_rows,
                  bool gather, int32_t src_div, bool scatter, float* Y, int64_t ys, cudaStream_t s, float* tsums,
                  bool tsums_ready) {
  if (!shape_ok(W) || p.max_tiles > 65535) return false;
  if (int_weights_flag() &&
      gemm_grouped_wgmma(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s, tsums, tsums_ready))
    return true;
  if (int_weights_flag() && gemm_group_v2() &&
      gemm_grouped_v2(W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s))
    return true;
  dispatch_weight_type<GroupLaunch>(W.type, W, rows_per_mat, p, Xb, k8, x_rows, gather, src_div, scatter, Y, ys, s);
  return true;
}

}  // namespace flashstar::cuda::fast
