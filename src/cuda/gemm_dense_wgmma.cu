// The dense prefill products on warpgroup MMA (wgmma, sm_90a), with the mma.sync kernels' error models
// and, as measured for Q8_0, their bits. Q8_0 (gemm_int_weights.h): weights as exact FP16 integers,
// activations as hi + lo FP16 terms, every 32-column k-tile's partial sum started from zero in the tensor
// core and promoted into an fp32 running sum with the k-tile's scale (one FMA, gemm_int::promote<0>).
// F16 and BF16 (gemm_dense<T, false> in fast_gemm.cu, the compressor's, indexer's and router's
// projections): weights scaled by 2^10 and split hi + lo too, three products a 16-column step (w_lo x_hi,
// w_hi x_lo, w_hi x_hi, small terms first), the k-tile's partial promoted by a plain add, the sums scaled
// back by 2^-10 when stored. An F16 weight times 2^10 is exact in FP16 (|w| < 64: its lo term is zero), so
// the F16 kernel issues the two products of its hi term only: a zero product changes no partial (a k-tile
// partial of zero may change its sign, but the running sum starts at +0 and never becomes -0, so the
// stored bits do not see it), the same argument as the prefill attention's K lo mma. NaN and infinite
// operands give NaN or infinite outputs either way; weights of magnitude 64 or more overflow the scaled
// FP16 term in both kernels (infinite or NaN outputs, not necessarily the same ones).
// FLASHSTAR_GEMM_WGMMA_F16=3 runs the three products (the literal replica, for A/B checks).
//
// Why: the mma.sync kernels (dense_v2: ~108 TFLOP/s useful at 4096 tokens) are bound by issuing mma and
// ldmatrix from the warps; wgmma takes B straight from shared memory and runs a 64 x 128 x 16 product per
// instruction, so the warps only build the A fragments and promote. Layouts, descriptors and the pipeline
// are in gemm_dense_wgmma.h (host-replayed by the CPU tests).
//
// Block: 128 rows x 128 tokens, two warpgroups (one per 64 rows), 1 block an SM (197 KB shared memory
// for Q8_0, 193 KB for float weights). Per k-tile a warpgroup issues 4 (or 6) wgmma m64n128k16 with A from
// registers, the first with scale-d = 0. Q8_0: each thread reads its fragment's int8 pairs from the raw
// bytes in shared memory and makes exact FP16 integers with a byte permute and a subtraction
// (gemm_int::bytes_s). Float weights: ldmatrix from the chunk's weight tile, then the scale (F16: one
// HMUL2 a register, exact) or the fp32 split (BF16, F16 three-product: the mma.sync kernel's pack_f16 /
// pack_f16_lo). Two partial accumulators alternate: the tensor core runs k-tile t + 1 while the warps
// promote k-tile t (wgmma.wait_group 1). Activations (both terms) arrive by 16-byte cp.async in a 4-stage
// ring of 64-column chunks (128-byte swizzle), with float weights in the same stage; Q8_0 weights in
// 256-column raw units (two buffers); one barrier per 2 chunks. Deterministic: each output element is one
// thread's fixed sequence of wgmma and adds; no split-k, no atomics; a token's outputs do not depend on
// the other tokens of its tile.
#include <algorithm>
#include <cstdlib>

#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/gemm_dense_wgmma.h"
#include "cuda/gemm_int_weights.h"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"
#include "cuda/wgmma_tile.cuh"

namespace flashstar::cuda::fast {
namespace {

namespace wq = wgmma_q8;

// What the kernel is instantiated for: Q8_0 (kMmas 2: W x_lo, W x_hi), F16 with the zero lo term
// dropped (2: w_hi x_lo, w_hi x_hi) or kept (3), BF16 (3: its lo term is not zero for weights below 2^-24).
template <GgmlType T, int kMmas>
struct Kind {
  static constexpr bool kQ8 = T == GgmlType::Q8_0;
  static constexpr int kWTerms = kMmas == 3 ? 2 : 1;  // A fragments a step: w (or w_hi), then w_lo
  static constexpr int kStageBytes = kQ8 ? wq::kStageBytes : wq::kFStageBytes;
  static constexpr int kSmemBytes = kQ8 ? wq::kSmemBytes : wq::kFSmemBytes;
  static_assert(kQ8 ? kMmas == 2 : T == GgmlType::F16 ? kMmas == 2 || kMmas == 3 : T == GgmlType::BF16 && kMmas == 3,
                "an instantiation with the mma.sync kernel's terms");
};

// Weights are scaled by 2^10 before the split, as gemm_dense<T, false> does (fast_gemm.cu: its lo term
// would otherwise fall among the FP16 subnormals); the sums are scaled back exactly when stored.
constexpr float kWScale = 1024.0f, kOutScale = 1.0f / kWScale;
constexpr uint32_t kWScaleH2 = 0x64006400u;  // 1024 in both FP16 halves

#if FS_WGMMA
using wgmma::fence_proxy_async;
using wgmma::pin;
__device__ __forceinline__ void wg_fence() { wgmma::fence(); }
__device__ __forceinline__ void wg_commit() { wgmma::commit(); }
template <int N>
__device__ __forceinline__ void wg_wait() {
  wgmma::wait<N>();
}
__device__ __forceinline__ void wgmma_n128(float (&d)[64], const uint32_t (&a)[4], uint64_t desc, int scale_d) {
  wgmma::mma_rs_n128(d, a, desc, scale_d);
}

// A 2-byte shared-memory load (the int8 pairs and scales of the raw Q8_0 bytes).
__device__ __forceinline__ uint32_t lds16(uint32_t addr) {
  unsigned short v;
  asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(v) : "r"(addr));
  return v;
}
// ldmatrix.x4 from a shared-memory byte address (the float weight tiles).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
#endif  // FS_WGMMA

// One k-tile's A fragments (two k16 steps): term 0 the weights (Q8_0's integers, the float weights' hi
// term), term 1 the float weights' lo term (three-product kernels). Rows r0 and r0 + 8, columns
// 16 s + 2 (lane % 4) + {0, 1} and + 8 of step s.
template <int kWTerms>
struct AFrag {
  uint32_t a[kWTerms][2][4];
};

// Q8_0: from the raw unit (row_addr: row r0's k-tile block).
__device__ __forceinline__ void decode_a(uint32_t row_addr, int lane, AFrag<1>& f) {
#if FS_WGMMA
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const uint32_t p = row_addr + static_cast<uint32_t>(rr * 8 * wq::kUnitBytes);
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const uint32_t c = p + 2u + 16u * s + 2u * static_cast<uint32_t>(lane & 3);
      // Bytes 0, 1: columns c, c + 1 (register rr: row r0 + 8 rr); bytes 2, 3: columns c + 8, c + 9 (rr + 2).
      const uint32_t w = lds16(c) | (lds16(c + 8) << 16);
      gemm_int::bytes_s(w, f.a[0][s][rr], f.a[0][s][rr + 2]);
    }
  }
#else
  (void)row_addr, (void)lane, (void)f;
#endif
}

// Float weights: k-tile half h of the chunk's weight tile (w_tile), scaled and split as gemm_dense<T,
// false>'s weight loader does: hi = FP16(2^10 w), lo = FP16(2^10 w - hi). The F16 hi term alone is one
// HMUL2 (round to nearest, like the conversion of the exact fp32 product 2^10 w; never subnormal, as
// 2^10 times the least FP16 subnormal is the least normal).
template <GgmlType T, int kWTerms>
__device__ __forceinline__ void load_a(uint32_t w_tile, int wg, int warp_in_wg, int lane, int h, AFrag<kWTerms>& f) {
#if FS_WGMMA
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    uint32_t r[4];
    ldsm_x4(r, w_tile + wq::a_ldm_off(wg, warp_in_wg, lane, h, s));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (T == GgmlType::F16 && kWTerms == 1) {
        const uint32_t scale = kWScaleH2;
        const __half2 v =
            __hmul2_rn(*reinterpret_cast<const __half2*>(&r[i]), *reinterpret_cast<const __half2*>(&scale));
        f.a[0][s][i] = *reinterpret_cast<const uint32_t*>(&v);
      } else {
        float w0, w1;
        if constexpr (T == GgmlType::F16) {
          const __half2 v = *reinterpret_cast<const __half2*>(&r[i]);
          w0 = __low2float(v), w1 = __high2float(v);
        } else {
          w0 = __uint_as_float(r[i] << 16), w1 = __uint_as_float(r[i] & 0xffff0000u);
        }
        w0 *= kWScale, w1 *= kWScale;
        f.a[0][s][i] = mma::pack_f16(w0, w1);
        f.a[kWTerms - 1][s][i] = mma::pack_f16_lo(w0, w1, f.a[0][s][i]);
      }
    }
  }
#else
  (void)w_tile, (void)wg, (void)warp_in_wg, (void)lane, (void)h, (void)f;
#endif
}

// The wgmma of one k-tile into part, per 16 columns in the mma.sync kernels' order, the first
// overwriting part: Q8_0 and F16 W x_lo, W x_hi; three products w_lo x_hi, w_hi x_lo, w_hi x_hi.
// hi_addr: the stage's hi tile plus the k-tile's 64-byte column offset.
template <int kMmas, int kWTerms>
__device__ __forceinline__ void mma_ktile(float (&part)[64], const AFrag<kWTerms>& f, uint32_t hi_addr) {
#if FS_WGMMA
  const uint64_t d_hi = wq::desc_b(hi_addr), d_lo = wq::desc_b(hi_addr + wq::kTermBytes);
  pin(part);
  wg_fence();
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    // Each k16 step is 32 bytes further along the 128-byte row: 2 in the descriptor's start field.
    if constexpr (kMmas == 3) {
      wgmma_n128(part, f.a[kWTerms - 1][s], d_hi + 2 * s, s);
      wgmma_n128(part, f.a[0][s], d_lo + 2 * s, 1);
    } else {
      wgmma_n128(part, f.a[0][s], d_lo + 2 * s, s);
    }
    wgmma_n128(part, f.a[0][s], d_hi + 2 * s, 1);
  }
  wg_commit();
#else
  (void)part, (void)f, (void)hi_addr;
#endif
}

// Q8_0: the k-tile's partial into the running sums with the scales of rows r0 and r0 + 8 (read here, not
// held in registers while the wgmma run: the raw unit stays until two iterations later).
__device__ __forceinline__ void promote_q8(float (&acc)[64], const float (&part)[64], uint32_t row_addr) {
#if FS_WGMMA
  const float sc[2] = {gemm_int::half_f32(lds16(row_addr)),
                       gemm_int::half_f32(lds16(row_addr + static_cast<uint32_t>(8 * wq::kUnitBytes)))};
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = gemm_int::promote<0>(acc[i], part[i], sc[(i >> 1) & 1], 0.f, 0.f, 0.f, 0.f);
#else
  (void)acc, (void)part, (void)row_addr;
#endif
}
// Float weights: gemm_dense<T, false>'s acc += part.
__device__ __forceinline__ void promote_add(float (&acc)[64], const float (&part)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] += part[i];
}

// Rows [0, n_rows) of W (the caller's row0 applied; row_bytes a multiple of 16) times tokens [0, n_tok) of
// Xb (hi rows of k8 = K values, lo at lo_off); Y[t * ys + r].
template <GgmlType T, int kMmas>
__global__ void __launch_bounds__(wq::kThreads, 1)
    dense_wgmma(const uint8_t* __restrict__ W, uint32_t row_bytes, int K, int64_t n_rows, int n_rb, int n_tt,
                const uint16_t* __restrict__ Xb, int64_t k8, int64_t lo_off, int64_t n_tok, float* __restrict__ Y,
                int64_t ys) {
  pdl_wait();
#if FS_WGMMA
  using KT = Kind<T, kMmas>;
  constexpr bool kQ8 = KT::kQ8;
  constexpr uint32_t kStage = KT::kStageBytes;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base0 = mma::smem_addr(smem_raw);
  const uint32_t sbase = (base0 + 1023u) & ~1023u;  // the swizzle atoms' alignment
  const uint32_t xs = sbase, raw = sbase + wq::kStages * kStage;  // raw: Q8_0 only

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  int rb, tt;
  wq::dense_tile(static_cast<int>(blockIdx.x), n_rb, n_tt, rb, tt);
  const int64_t m0 = static_cast<int64_t>(rb) * wq::kBM, t0 = static_cast<int64_t>(tt) * wq::kBN;
  const int count = static_cast<int>(n_tok - t0 < wq::kBN ? n_tok - t0 : wq::kBN);
  const int rows_left = static_cast<int>(n_rows - m0 < wq::kBM ? n_rows - m0 : wq::kBM);
  const int nc = K / wq::kChunkCols;

  // Activation copies (x_task): this thread's 4 token rows x 2 terms at chunk tid % 8 of the stage; tokens
  // past the count are zero-filled (source: the tile's first token). Addresses are formed per copy, not
  // held: the accumulators need the registers. Float weights: rows tid / 8 + 32 v of the chunk's tile,
  // the same destinations in the stage's third tile.
  const uint16_t* __restrict__ xt = Xb + t0 * k8 + (tid & 7) * 8;
  const uint32_t xd = xs + wq::b_off(tid >> 3, tid & 7);
  const uint8_t* __restrict__ Wb = W + static_cast<size_t>(m0) * row_bytes;
  // One commit group per iteration: chunks c and c + 1 (and their weights: float tiles, or at a unit's
  // first chunk its raw Q8_0 bytes); empty past the end.
  auto load = [&](int c) {
    if (c < nc) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t st = static_cast<uint32_t>(wq::stage_of(c + h)) * kStage;
#pragma unroll
        for (int v = 0; v < wq::kXCopies; ++v) {
          int term, tok, ch;
          wq::x_task(tid, v, term, tok, ch);
          const bool ok = tok < count;
          // b_off(tok, ch) = b_off(tid / 8, ch) + 128 * 32 (v % 4): the swizzle depends on tok % 8 only.
          mma::cp_async16(xd + st + static_cast<uint32_t>(term * wq::kTermBytes + (tok - (tid >> 3)) * 128),
                          xt + term * lo_off + (ok ? tok : 0) * k8 + (c + h) * wq::kChunkCols, ok ? 16u : 0u);
        }
        if constexpr (!kQ8) {
#pragma unroll
          for (int v = 0; v < wq::kWCopies; ++v) {
            int term, row, ch;
            wq::x_task(tid, v, term, row, ch);
            // Rows past the matrix repeat its last row (their outputs are never stored).
            const uint32_t src = static_cast<uint32_t>(row < rows_left ? row : rows_left - 1) * row_bytes +
                                 static_cast<uint32_t>((c + h) * wq::kChunkCols * 2 + 16 * ch);
            mma::cp_async16(xd + st + static_cast<uint32_t>(2 * wq::kTermBytes + (row - (tid >> 3)) * 128), Wb + src,
                            16u);
          }
        }
      }
      if constexpr (kQ8) {
        if (c % wq::kChunksPerUnit == 0) {
          const uint32_t buf = raw + static_cast<uint32_t>(wq::raw_buf_of(c) * wq::kRawBytes);
          const uint32_t ub = static_cast<uint32_t>(c / wq::kChunksPerUnit) * wq::kUnitBytes;
#pragma unroll
          for (int v = 0; v < wq::kRawPerThread; ++v) {
            const int q = tid + wq::kThreads * v;
            if (q < wq::kRawCopies) {
              int row, ch;
              wq::raw_task(q, row, ch);
              const uint32_t src = static_cast<uint32_t>(row < rows_left ? row : rows_left - 1) * row_bytes + ub + 16u * ch;
              mma::cp_async16(buf + static_cast<uint32_t>(row * wq::kUnitBytes + 16 * ch), Wb + src, 16u);
            }
          }
        }
      }
    }
    mma::cp_async_commit();
  };

  // The thread's fragment rows: r0 = 64 wg + a_row(warp % 4, lane, 0) and r0 + 8.
  const int r0 = 64 * wg + wq::a_row(warp & 3, lane, 0);
  auto a_addr = [&](int t) {  // Q8_0: raw address of row r0's block for k-tile t
    return raw + static_cast<uint32_t>(wq::raw_buf_of(t >> 1) * wq::kRawBytes) +
           wq::raw_scale_off(r0, t % (wq::kUnitCols / 32));
  };
  auto b_addr = [&](int t) {  // the hi tile of k-tile t's chunk, at the k-tile's 64-byte column offset
    return xs + static_cast<uint32_t>(wq::stage_of(t >> 1)) * kStage + static_cast<uint32_t>(64 * (t & 1));
  };
  using Frag = AFrag<KT::kWTerms>;
  auto frag = [&](int t, Frag& f) {
    if constexpr (kQ8)
      decode_a(a_addr(t), lane, f);
    else
      load_a<T, KT::kWTerms>(xs + static_cast<uint32_t>(wq::stage_of(t >> 1)) * kStage + 2u * wq::kTermBytes, wg,
                             warp & 3, lane, t & 1, f);
  };
  auto promote = [&](float (&acc)[64], const float (&part)[64], int t) {
    if constexpr (kQ8)
      promote_q8(acc, part, a_addr(t));
    else
      promote_add(acc, part);
  };

  float acc[64], p0[64], p1[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  Frag f0, f1;

  load(0);
  for (int c = 0; c < nc; c += wq::kChunksPerIter) {
    mma::cp_async_wait<0>();  // chunks c, c + 1 landed (this thread's copies; the barrier: everyone's)
    fence_proxy_async();
    __syncthreads();
    // k-tiles t .. t + 3 alternate between the partials p0 and p1: the tensor core runs one k-tile while
    // the warps promote the previous one. Nothing stays in flight across iterations (the compiler
    // serialises all wgmma when an accumulator is in flight over the loop's back edge).
    const int t = 2 * c;
    frag(t, f0);
    mma_ktile<kMmas>(p0, f0, b_addr(t));
    // The next iteration's copies go out once the tensor core has work (they fill the stages of chunks
    // c - 2, c - 1, which nothing reads any more), not between the barrier and the first wgmma; here p1
    // is dead (promoted), so their addresses find registers.
    load(c + wq::kChunksPerIter);
    frag(t + 1, f1);
    mma_ktile<kMmas>(p1, f1, b_addr(t + 1));
    wg_wait<1>();
    pin(p0);
    promote(acc, p0, t);
    frag(t + 2, f0);
    mma_ktile<kMmas>(p0, f0, b_addr(t + 2));
    wg_wait<1>();
    pin(p1);
    promote(acc, p1, t + 1);
    frag(t + 3, f1);
    mma_ktile<kMmas>(p1, f1, b_addr(t + 3));
    wg_wait<1>();
    pin(p0);
    promote(acc, p0, t + 2);
    wg_wait<0>();
    pin(p1);
    promote(acc, p1, t + 3);
  }

  // Row r0 + 8 ((i / 2) % 2), token d_col(lane, i) of the tile; float weights' sums scaled back (exact).
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    const int r = 64 * wg + wq::d_row(warp & 3, lane, i), j = wq::d_col(lane, i);
    if (r < rows_left && j < count) Y[(t0 + j) * ys + m0 + r] = kQ8 ? acc[i] : acc[i] * kOutScale;
  }
#else
  (void)W, (void)row_bytes, (void)K, (void)n_rows, (void)n_rb, (void)n_tt, (void)Xb, (void)k8, (void)lo_off;
  (void)n_tok, (void)Y, (void)ys;
  __trap();  // not built for sm_90a: the host never launches it (wgmma_device below)
#endif
}

// On by default: bitwise equal to dense_v2 (GemmDenseWgmma tests, 4L logits; H200, 2026-12-01) and 2.1x
// faster. FLASHSTAR_GEMM_WGMMA=0 (or gemm_set_wgmma(false)) puts the mma.sync kernels back, for every type.
bool& wgmma_flag() {
  static bool on = env_on("FLASHSTAR_GEMM_WGMMA");
  return on;
}
// The float-weight kernels: 2 (the default: F16 issues its hi term's two products, BF16 always three;
// measured on the H200: logits bitwise equal to the mma.sync kernel's, 3.14x on a 4L prefill's F16
// products), 3 (F16 too issues three), 0 (float weights on the mma.sync kernel).
// FLASHSTAR_GEMM_WGMMA_F16=0 / =3.
int& wgmma_f16_flag() {
  static int mode = [] {
    const char* v = std::getenv("FLASHSTAR_GEMM_WGMMA_F16");
    return v && v[0] == '0' ? 0 : v && v[0] == '3' ? 3 : 2;
  }();
  return mode;
}

// Whether the device is a Hopper (the kernels' code exists only for sm_90a), once.
bool wgmma_device() {
  static const bool ok = sm90_kernel(reinterpret_cast<const void*>(dense_wgmma<GgmlType::Q8_0, 2>));
  return ok;
}

template <GgmlType T, int kMmas>
void launch(const uint8_t* w0, const DMat& W, int64_t n_rows, int64_t n_rb, int64_t n_tt, const uint16_t* Xb,
            int64_t n_tok, float* Y, int64_t ys, cudaStream_t s) {
  constexpr int sm = Kind<T, kMmas>::kSmemBytes;
  static const bool attr = [] {
    FS_CUDA_CHECK(cudaFuncSetAttribute(dense_wgmma<T, kMmas>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    return true;
  }();
  (void)attr;
  dense_wgmma<T, kMmas><<<static_cast<unsigned>(n_rb * n_tt), wq::kThreads, sm, s>>>(
      w0, static_cast<uint32_t>(W.row_bytes), static_cast<int>(W.cols), n_rows, static_cast<int>(n_rb),
      static_cast<int>(n_tt), Xb, W.cols, n_tok * W.cols, n_tok, Y, ys);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace

void gemm_set_wgmma(bool on) { wgmma_flag() = on; }
bool gemm_wgmma() { return wgmma_flag(); }
void gemm_set_wgmma_f16(int mode) { wgmma_f16_flag() = mode == 0 ? 0 : mode == 3 ? 3 : 2; }
int gemm_wgmma_f16() { return wgmma_f16_flag(); }

bool gemm_dense_wgmma(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y,
                      int64_t ys, cudaStream_t s) {
  if (!wgmma_flag() || n_rows <= 0 || n_tok <= 0) return false;
  const bool q8 = W.type == GgmlType::Q8_0;
  const int f16 = wgmma_f16_flag();
  if (!q8 && !((W.type == GgmlType::F16 || W.type == GgmlType::BF16) && f16 != 0)) return false;
  // Whole iterations (Q8_0: 256-column raw units; float weights: 2 chunks of 64 columns), 16-byte copies
  // of weights and activations, 32-bit offsets in a block.
  const int64_t unit = q8 ? wq::kUnitCols : wq::kChunksPerIter * wq::kChunkCols;
  const int64_t need = q8 ? W.cols / 32 * 34 : W.cols * 2;
  const uint8_t* w0 = W.data + static_cast<size_t>(row0) * W.row_bytes;
  if (W.cols <= 0 || W.cols % unit != 0 || W.cols > (int64_t{1} << 24) || W.row_bytes % 16 != 0 ||
      static_cast<int64_t>(W.row_bytes) < need || W.row_bytes > (size_t{1} << 24) ||
      reinterpret_cast<uintptr_t>(w0) % 16 != 0 || reinterpret_cast<uintptr_t>(Xb) % 16 != 0 ||
      row0 < 0 || row0 + n_rows > W.rows)
    return false;
  const int64_t n_rb = (n_rows + wq::kBM - 1) / wq::kBM, n_tt = (n_tok + wq::kBN - 1) / wq::kBN;
  if (n_rb * n_tt > INT32_MAX || !wgmma_device()) return false;
  if (q8)
    launch<GgmlType::Q8_0, 2>(w0, W, n_rows, n_rb, n_tt, Xb, n_tok, Y, ys, s);
  else if (W.type == GgmlType::BF16)
    launch<GgmlType::BF16, 3>(w0, W, n_rows, n_rb, n_tt, Xb, n_tok, Y, ys, s);
  else if (f16 == 3)
    launch<GgmlType::F16, 3>(w0, W, n_rows, n_rb, n_tt, Xb, n_tok, Y, ys, s);
  else
    launch<GgmlType::F16, 2>(w0, W, n_rows, n_rb, n_tt, Xb, n_tok, Y, ys, s);
  return true;
}

}  // namespace flashstar::cuda::fast
