// The dense Q8_0 prefill products on warpgroup MMA (wgmma, sm_90a), with the mma.sync kernels' error
// model (gemm_int_weights.h): weights as exact FP16 integers, activations as hi + lo FP16 terms, every
// 32-column k-tile's partial sum started from zero in the tensor core and promoted into an fp32 running
// sum with the k-tile's scale (one FMA, gemm_int::promote<0>). Not bitwise equal to gemm_dense (another
// tensor-core instruction sums the products), the same arithmetic per k-tile.
//
// Why: the mma.sync kernels (dense_v2: ~108 TFLOP/s useful at 4096 tokens) are bound by issuing mma and
// ldmatrix from the warps; wgmma takes B straight from shared memory and runs a 64 x 128 x 16 product per
// instruction, so the warps only decode weights and promote. Layouts, descriptors and the pipeline are
// in gemm_dense_wgmma.h (host-replayed by the CPU tests).
//
// Block: 128 rows x 128 tokens, two warpgroups (one per 64 rows), 1 block an SM (197 KB shared memory).
// Per k-tile a warpgroup issues 4 wgmma m64n128k16 (W x_lo, W x_hi per 16 columns, the first with
// scale-d = 0) with A from registers: each thread reads its fragment's int8 pairs from the raw bytes in
// shared memory and makes exact FP16 integers with a byte permute and a subtraction (gemm_int::bytes_s).
// Two partial accumulators alternate: the tensor core runs k-tile t + 1 while the warps promote k-tile t
// (wgmma.wait_group 1). Activations (both terms) arrive by 16-byte cp.async in a 4-stage ring of 64-column
// chunks (128-byte swizzle), raw weights in 256-column units (two buffers); one barrier per 2 chunks.
// Deterministic: each output element is one thread's fixed sequence of wgmma and FMAs; no split-k, no
// atomics; a token's outputs do not depend on the other tokens of its tile.
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
#endif  // FS_WGMMA

// One k-tile's A fragments (two k16 steps) from the raw unit: rows r0 and r0 + 8 (row_addr: r0's k-tile
// block), columns 16 s + 2 (lane % 4) + {0, 1} and + 8 of step s.
struct AFrag {
  uint32_t a[2][4];
};
__device__ __forceinline__ void decode_a(uint32_t row_addr, int lane, AFrag& f) {
#if FS_WGMMA
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const uint32_t p = row_addr + static_cast<uint32_t>(rr * 8 * wq::kUnitBytes);
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const uint32_t c = p + 2u + 16u * s + 2u * static_cast<uint32_t>(lane & 3);
      // Bytes 0, 1: columns c, c + 1 (register rr: row r0 + 8 rr); bytes 2, 3: columns c + 8, c + 9 (rr + 2).
      const uint32_t w = lds16(c) | (lds16(c + 8) << 16);
      gemm_int::bytes_s(w, f.a[s][rr], f.a[s][rr + 2]);
    }
  }
#else
  (void)row_addr, (void)lane, (void)f;
#endif
}

// The 4 wgmma of one k-tile into part: per 16 columns W x_lo, then W x_hi (the mma.sync kernels' order),
// the first overwriting part. hi_addr: the stage's hi tile plus the k-tile's 64-byte column offset.
__device__ __forceinline__ void mma_ktile(float (&part)[64], const AFrag& f, uint32_t hi_addr) {
#if FS_WGMMA
  const uint64_t d_hi = wq::desc_b(hi_addr), d_lo = wq::desc_b(hi_addr + wq::kTermBytes);
  pin(part);
  wg_fence();
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    // Each k16 step is 32 bytes further along the 128-byte row: 2 in the descriptor's start field.
    wgmma_n128(part, f.a[s], d_lo + 2 * s, s);
    wgmma_n128(part, f.a[s], d_hi + 2 * s, 1);
  }
  wg_commit();
#else
  (void)part, (void)f, (void)hi_addr;
#endif
}

// The k-tile's partial into the running sums with the scales of rows r0 and r0 + 8 (read here, not held
// in registers while the wgmma run: the raw unit stays until two iterations later).
__device__ __forceinline__ void promote(float (&acc)[64], const float (&part)[64], uint32_t row_addr) {
#if FS_WGMMA
  const float sc[2] = {gemm_int::half_f32(lds16(row_addr)),
                       gemm_int::half_f32(lds16(row_addr + static_cast<uint32_t>(8 * wq::kUnitBytes)))};
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = gemm_int::promote<0>(acc[i], part[i], sc[(i >> 1) & 1], 0.f, 0.f, 0.f, 0.f);
#else
  (void)acc, (void)part, (void)row_addr;
#endif
}

// Rows [0, n_rows) of W (the caller's row0 applied; row_bytes a multiple of 16) times tokens [0, n_tok) of
// Xb (hi rows of k8 = K values, lo at lo_off); Y[t * ys + r].
__global__ void __launch_bounds__(wq::kThreads, 1)
    dense_wgmma_q8(const uint8_t* __restrict__ W, uint32_t row_bytes, int K, int64_t n_rows, int n_rb, int n_tt,
                   const uint16_t* __restrict__ Xb, int64_t k8, int64_t lo_off, int64_t n_tok, float* __restrict__ Y,
                   int64_t ys) {
  pdl_wait();
#if FS_WGMMA
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base0 = mma::smem_addr(smem_raw);
  const uint32_t sbase = (base0 + 1023u) & ~1023u;  // the swizzle atoms' alignment
  const uint32_t xs = sbase, raw = sbase + wq::kStages * wq::kStageBytes;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  int rb, tt;
  wq::dense_tile(static_cast<int>(blockIdx.x), n_rb, n_tt, rb, tt);
  const int64_t m0 = static_cast<int64_t>(rb) * wq::kBM, t0 = static_cast<int64_t>(tt) * wq::kBN;
  const int count = static_cast<int>(n_tok - t0 < wq::kBN ? n_tok - t0 : wq::kBN);
  const int rows_left = static_cast<int>(n_rows - m0 < wq::kBM ? n_rows - m0 : wq::kBM);
  const int nc = K / wq::kChunkCols;

  // Activation copies (x_task): this thread's 4 token rows x 2 terms at chunk tid % 8 of the stage; tokens
  // past the count are zero-filled (source: the tile's first token). Addresses are formed per copy, not
  // held: the accumulators need the registers.
  const uint16_t* __restrict__ xt = Xb + t0 * k8 + (tid & 7) * 8;
  const uint32_t xd = xs + wq::b_off(tid >> 3, tid & 7);
  const uint8_t* __restrict__ Wb = W + static_cast<size_t>(m0) * row_bytes;
  // One commit group per iteration: chunks c and c + 1 (and, at a unit's first chunk, its raw weights);
  // empty past the end.
  auto load = [&](int c) {
    if (c < nc) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t st = static_cast<uint32_t>(wq::stage_of(c + h) * wq::kStageBytes);
#pragma unroll
        for (int v = 0; v < wq::kXCopies; ++v) {
          int term, tok, ch;
          wq::x_task(tid, v, term, tok, ch);
          const bool ok = tok < count;
          // b_off(tok, ch) = b_off(tid / 8, ch) + 128 * 32 (v % 4): the swizzle depends on tok % 8 only.
          mma::cp_async16(xd + st + static_cast<uint32_t>(term * wq::kTermBytes + (tok - (tid >> 3)) * 128),
                          xt + term * lo_off + (ok ? tok : 0) * k8 + (c + h) * wq::kChunkCols, ok ? 16u : 0u);
        }
      }
      if (c % wq::kChunksPerUnit == 0) {
        const uint32_t buf = raw + static_cast<uint32_t>(wq::raw_buf_of(c) * wq::kRawBytes);
        const uint32_t ub = static_cast<uint32_t>(c / wq::kChunksPerUnit) * wq::kUnitBytes;
#pragma unroll
        for (int v = 0; v < wq::kRawPerThread; ++v) {
          const int q = tid + wq::kThreads * v;
          if (q < wq::kRawCopies) {
            int row, ch;
            wq::raw_task(q, row, ch);
            // Rows past the matrix repeat its last row (their outputs are never stored).
            const uint32_t src = static_cast<uint32_t>(row < rows_left ? row : rows_left - 1) * row_bytes + ub + 16u * ch;
            mma::cp_async16(buf + static_cast<uint32_t>(row * wq::kUnitBytes + 16 * ch), Wb + src, 16u);
          }
        }
      }
    }
    mma::cp_async_commit();
  };

  // The thread's fragment rows: r0 = 64 wg + a_row(warp % 4, lane, 0) and r0 + 8.
  const int r0 = 64 * wg + wq::a_row(warp & 3, lane, 0);
  auto a_addr = [&](int t) {  // raw address of row r0's block for k-tile t
    return raw + static_cast<uint32_t>(wq::raw_buf_of(t >> 1) * wq::kRawBytes) +
           wq::raw_scale_off(r0, t % (wq::kUnitCols / 32));
  };

  auto b_addr = [&](int t) {  // the hi tile of k-tile t's chunk, at the k-tile's 64-byte column offset
    return xs + static_cast<uint32_t>(wq::stage_of(t >> 1) * wq::kStageBytes + 64 * (t & 1));
  };

  float acc[64], p0[64], p1[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  AFrag f0, f1;

  load(0);
  for (int c = 0; c < nc; c += wq::kChunksPerIter) {
    mma::cp_async_wait<0>();  // chunks c, c + 1 landed (this thread's copies; the barrier: everyone's)
    fence_proxy_async();
    __syncthreads();
    // k-tiles t .. t + 3 alternate between the partials p0 and p1: the tensor core runs one k-tile while
    // the warps promote the previous one. Nothing stays in flight across iterations (the compiler
    // serialises all wgmma when an accumulator is in flight over the loop's back edge).
    const int t = 2 * c;
    decode_a(a_addr(t), lane, f0);
    mma_ktile(p0, f0, b_addr(t));
    // The next iteration's copies go out once the tensor core has work (they fill the stages of chunks
    // c - 2, c - 1, which nothing reads any more), not between the barrier and the first wgmma; here p1
    // is dead (promoted), so their addresses find registers.
    load(c + wq::kChunksPerIter);
    decode_a(a_addr(t + 1), lane, f1);
    mma_ktile(p1, f1, b_addr(t + 1));
    wg_wait<1>();
    pin(p0);
    promote(acc, p0, a_addr(t));
    decode_a(a_addr(t + 2), lane, f0);
    mma_ktile(p0, f0, b_addr(t + 2));
    wg_wait<1>();
    pin(p1);
    promote(acc, p1, a_addr(t + 1));
    decode_a(a_addr(t + 3), lane, f1);
    mma_ktile(p1, f1, b_addr(t + 3));
    wg_wait<1>();
    pin(p0);
    promote(acc, p0, a_addr(t + 2));
    wg_wait<0>();
    pin(p1);
    promote(acc, p1, a_addr(t + 3));
  }

  // Row r0 + 8 ((i / 2) % 2), token d_col(lane, i) of the tile.
#pragma unroll
  for (int i = 0; i < 64; ++i) {
    const int r = 64 * wg + wq::d_row(warp & 3, lane, i), j = wq::d_col(lane, i);
    if (r < rows_left && j < count) Y[(t0 + j) * ys + m0 + r] = acc[i];
  }
#else
  (void)W, (void)row_bytes, (void)K, (void)n_rows, (void)n_rb, (void)n_tt, (void)Xb, (void)k8, (void)lo_off;
  (void)n_tok, (void)Y, (void)ys;
  __trap();  // not built for sm_90a: the host never launches it (wgmma_built below)
#endif
}

// On by default: bitwise equal to dense_v2 (GemmDenseWgmma tests, 4L logits; H200, 2026-12-01) and 2.1x
// faster. FLASHSTAR_GEMM_WGMMA=0 (or gemm_set_wgmma(false)) puts the mma.sync kernels back.
bool& wgmma_flag() {
  static bool on = env_on("FLASHSTAR_GEMM_WGMMA");
  return on;
}

// Whether the device is a Hopper (the kernel's code exists only for sm_90a), once.
bool wgmma_device() {
  static const bool ok = sm90_kernel(reinterpret_cast<const void*>(dense_wgmma_q8));
  return ok;
}

}  // namespace

void gemm_set_wgmma(bool on) { wgmma_flag() = on; }
bool gemm_wgmma() { return wgmma_flag(); }

bool gemm_dense_wgmma(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y,
                      int64_t ys, cudaStream_t s) {
  if (!wgmma_flag() || W.type != GgmlType::Q8_0 || n_rows <= 0 || n_tok <= 0) return false;
  // Whole 256-column raw units, 16-byte copies of weights and activations, 32-bit offsets in a block.
  const uint8_t* w0 = W.data + static_cast<size_t>(row0) * W.row_bytes;
  if (W.cols <= 0 || W.cols % wq::kUnitCols != 0 || W.cols > (int64_t{1} << 24) || W.row_bytes % 16 != 0 ||
      static_cast<int64_t>(W.row_bytes) < W.cols / 32 * 34 || W.row_bytes > (size_t{1} << 24) ||
      reinterpret_cast<uintptr_t>(w0) % 16 != 0 || reinterpret_cast<uintptr_t>(Xb) % 16 != 0 ||
      row0 < 0 || row0 + n_rows > W.rows)
    return false;
  const int64_t n_rb = (n_rows + wq::kBM - 1) / wq::kBM, n_tt = (n_tok + wq::kBN - 1) / wq::kBN;
  if (n_rb * n_tt > INT32_MAX || !wgmma_device()) return false;
  static const bool attr = [] {
    FS_CUDA_CHECK(cudaFuncSetAttribute(dense_wgmma_q8, cudaFuncAttributeMaxDynamicSharedMemorySize, wq::kSmemBytes));
    return true;
  }();
  (void)attr;
  dense_wgmma_q8<<<static_cast<unsigned>(n_rb * n_tt), wq::kThreads, wq::kSmemBytes, s>>>(
      w0, static_cast<uint32_t>(W.row_bytes), static_cast<int>(W.cols), n_rows, static_cast<int>(n_rb),
      static_cast<int>(n_tt), Xb, W.cols, n_tok * W.cols, n_tok, Y, ys);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace flashstar::cuda::fast
