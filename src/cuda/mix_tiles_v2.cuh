// The second prefill mixer kernel (map and reasons: mix_tiles_v2.h). Included by prefill_small.cu only,
// so that it is compiled, like the first kernel, with --fmad=false: the same explicit fmaf chains, the
// x * scale products and the partial sums then stay separate instructions.
//
// The bits are the first kernel's: each lane forms, for (c, lane) and each of its outputs, acc = 0 then
// acc += s unit by unit (tile by tile, u = 0..kFUnits-1), s = w0 x0 then fmaf(wk, xk, s), x = X * scale
// as one product, a unit past the row adding the +0 of zero weights times zero activations (staged as
// zero-filled copies); then the same xor tree, and the column-warp sums v = red(0); v += red(1); ... in
// c order. The tree's result is the same in every lane (each level adds the same two values in every
// lane of a pair, and fp32 addition is commutative bit for bit), so the lane that keeps an output's
// running sum holds what lane 0 of the first kernel stored.
#pragma once
#include <cstdint>

#include "cuda/float_geom.h"
#include "cuda/float_unpack.cuh"
#include "cuda/mix_tiles_v2.h"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"
#include "cuda/warp_reduce.cuh"

namespace flashstar::cuda::fast {
namespace {

// A hint that bytes at p will be read soon: the activations come from DRAM into L2 a few steps ahead of
// their loads, without holding registers or shared memory (sm_90's bulk prefetch; nothing elsewhere).
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#endif
}

struct Mix2Args {
  const uint8_t* w;
  size_t row_bytes;
  int n_rows;
  const float* X;
  int64_t xs;
  const float* scale;
  int64_t n_tok;
  float* Y;
  int64_t ys;
  int units;
  FloatGeom g;
};

constexpr size_t kMix2Smem = sizeof(uint4) * mix2::kStages * mix2::kStageUnits;

// A step is one unit slot u of a phase (k = p * kFUnits + u). A block runs the phases in order; the
// weights of phase p sit in ring stage p % kStages. Stage p + kStages - 1 is refilled right after the
// barrier of phase p: every warp has then finished phase p - 1, the stage's last reader.
template <GgmlType T>
__global__ void __launch_bounds__(kFThreads, 1) mix_tiles_v2_kernel(Mix2Args a) {
  // PDL-PROLOGUE: the first stages' weights (constants) are copied before the wait.
  using namespace mix2;
  constexpr int E = kElems<T>, Q = E / 4, kCopies = kStageUnits / kFThreads;
  constexpr int kAhead = 2;  // steps between an activation chunk's L2 prefetch and its loads (~2 us)
  extern __shared__ uint4 s_w[];
  const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5, lane = tid & 31;
  const FloatGeom g = a.g;
  const int np = phases(g), steps = np * kFUnits, row_base = static_cast<int>(blockIdx.x) * kRows;

  auto stage = [&](int p) {
    const Phase ph = phase(g, p);
    const uint32_t base = mma::smem_addr(s_w + (p % kStages) * kStageUnits);
#pragma unroll
    for (int j = 0; j < kCopies; ++j) {
      const StageUnit s = stage_unit(tid + j * kFThreads);
      const int64_t unit = float_unit(g, ph.tile, ph.c, s.u, s.lane);
      const bool on = unit < a.units;
      // rows past the end copy the last row and are never stored
      const int r = row_base + s.r < a.n_rows ? row_base + s.r : a.n_rows - 1;
      mma::cp_async16(base + 16u * stage_index(s.r, s.u, s.lane),
                      a.w + static_cast<size_t>(r) * a.row_bytes + (on ? unit * 16 : 0), on ? 16u : 0u);
    }
  };
#pragma unroll 1
  for (int p = 0; p < kStages - 1; ++p) {
    if (p < np) stage(p);
    mma::cp_async_commit();
  }
  pdl_wait();

  const int64_t tw = token(blockIdx.y, warp, 0);
  const int nt = static_cast<int>(a.n_tok - tw < 0 ? 0 : (a.n_tok - tw < kWarpTok ? a.n_tok - tw : kWarpTok));
  float sc[kWarpTok];
#pragma unroll
  for (int t = 0; t < kWarpTok; ++t) sc[t] = a.scale && t < nt ? a.scale[tw + t] : 1.0f;
  const float* xw = a.X + (nt > 0 ? tw : 0) * a.xs;

  auto unit_of = [&](int k, int l) {
    const Phase ph = phase(g, k / kFUnits);
    return float_unit(g, ph.tile, ph.c, k % kFUnits, l);
  };
  auto load = [&](int k, float4 (&x)[kWarpTok][Q]) {
    const int64_t unit = unit_of(k, lane);
    const bool on = unit < a.units;
#pragma unroll
    for (int t = 0; t < kWarpTok; ++t)
#pragma unroll
      for (int q = 0; q < Q; ++q)
        x[t][q] = on && t < nt ? __ldcs(reinterpret_cast<const float4*>(xw + t * a.xs + unit * E) + q)
                               : make_float4(0, 0, 0, 0);
  };
  auto prefetch = [&](int k) {  // lane t < nt: token t's 32 units of step k (those inside the row)
    if (k >= steps || lane >= nt) return;
    const int64_t first = unit_of(k, 0), n = a.units - first < 32 ? a.units - first : 32;
    if (n > 0) prefetch_l2(xw + lane * a.xs + first * E, static_cast<uint32_t>(n * E * 4));
  };
#pragma unroll 1
  for (int k = 0; k < kAhead; ++k) prefetch(k);
  float4 xn[kWarpTok][Q];
  load(0, xn);

  float acc[kRows][kWarpTok] = {}, tot[kSlots] = {};
#pragma unroll 1
  for (int p = 0; p < np; ++p) {
    mma::cp_async_wait<kStages - 2>();
    __syncthreads();
    if (p + kStages - 1 < np) stage(p + kStages - 1);
    mma::cp_async_commit();  // (an empty group past the end keeps the wait's count)
    const Phase ph = phase(g, p);
    if (ph.tile == 0) {
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int t = 0; t < kWarpTok; ++t) acc[r][t] = 0.0f;
    }
    const uint4* ws = s_w + (p % kStages) * kStageUnits;
#pragma unroll
    for (int u = 0; u < kFUnits; ++u) {
      const int k = p * kFUnits + u;
      float4 xc[kWarpTok][Q];
#pragma unroll
      for (int t = 0; t < kWarpTok; ++t)
#pragma unroll
        for (int q = 0; q < Q; ++q) xc[t][q] = xn[t][q];
      if (k + 1 < steps) load(k + 1, xn);  // in flight while this step's products run
      prefetch(k + kAhead);
      const bool on = float_unit(g, ph.tile, ph.c, u, lane) < a.units;
      float xv[kWarpTok][E];
#pragma unroll
      for (int t = 0; t < kWarpTok; ++t)
#pragma unroll
        for (int q = 0; q < Q; ++q) {
          float4 v = xc[t][q];
          if (a.scale && on && t < nt) v.x *= sc[t], v.y *= sc[t], v.z *= sc[t], v.w *= sc[t];  // the norm's x * scale
          xv[t][4 * q] = v.x, xv[t][4 * q + 1] = v.y, xv[t][4 * q + 2] = v.z, xv[t][4 * q + 3] = v.w;
        }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float wf[E];
        unpack<T>(ws[stage_index(r, u, lane)], wf);
#pragma unroll
        for (int t = 0; t < kWarpTok; ++t) {
          float s = wf[0] * xv[t][0];
#pragma unroll
          for (int e = 1; e < E; ++e) s = fmaf(wf[e], xv[t][e], s);
          acc[r][t] += s;
        }
      }
    }
    if (ph.tile == g.tiles_per_row - 1) {  // c's partials are complete: its tree, then c's turn in the sum
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int t = 0; t < kWarpTok; ++t) {
          const float v = warp_sum(acc[r][t]);
          const int o = out_index(r, t);
          if (lane == out_lane(o)) tot[out_slot(o)] = ph.c == 0 ? v : tot[out_slot(o)] + v;
        }
    }
  }
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int o = out_at(s, lane), row = row_base + out_row(o), t = out_tok(o);
    if (row < a.n_rows && t < nt) a.Y[(tw + t) * a.ys + row] = tot[s];
  }
}

}  // namespace
}  // namespace flashstar::cuda::fast
