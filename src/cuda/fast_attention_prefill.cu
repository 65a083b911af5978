// Prefill sink attention (more than 8 queries) as one flash-attention launch on the tensor cores: scores,
// the online softmax with the sink and P.V stay on chip, the rows are read once per query.
//
// Why one query per block (its 64 heads = M 64): the output of a query is 64 x 512 fp32 = 128 KB, half
// the register file of an SM, so an SM holds about one query's accumulators at a time. Blocks of several
// queries would have to drop heads (4 queries x 16 heads is still M 64 per staged row), which reads the
// same bytes per multiply, adds masked rows (a window of 128 rows spans 3 aligned tiles of 64), and ties
// a query's bits to its neighbours; the indexer's per-query row lists (most of the work of the ratio-4
// layers) share little anyway. So every query walks its own RowMap list and its output depends on
// nothing else: chunk invariance holds by construction.
//
// Geometry (fast_attention_prefill.h): 8 warps; warp w owns heads 16 (w / 2) .. + 15 and output dims
// 256 (w % 2) .. + 255 (128 accumulator registers a lane). Q sits in shared memory as two FP16 terms
// (hi + lo, 128 KB). Rows come in tiles of 32 (double-buffered FP16 hi terms, converted from fp32 once
// per tile, the next tile's loads in flight during this tile's products). Per tile:
//   scores: each warp its 256-dim partial (Q lo.K hi, then Q hi.K hi per k16 step); the two warps of a
//           head group add the partials (in one order) through shared memory, so both hold the same bits;
//   softmax: running max over the scores (the sink joins only at the end, so the probabilities of a tile
//           keep their relative precision when the sink dominates), P = exp(s - m) in [0, 1];
//   P.V: P as two FP16 terms straight from the score registers (the accumulator layout of two n8 tiles is
//        the A layout of one k16 step), V = the same staged rows (ldmatrix .trans).
// The end: out = O f / (l f + exp(sink - M)), M = max(sink, m), f = exp(m - M) (in double), as the
// reference's softmax with the sink in the denominator.
//
// Low terms of the rows: with official numerics every cached row is exact in FP16 (raw rows f16-rounded,
// compressed rows FP8-simulated with power-of-two scales and then f16-rounded), so the K lo term is zero
// and its mma is skipped per tile (the staging ORs the lo bits; __syncthreads_or). A tile with a nonzero
// lo term (clean numerics), or every tile when the full-mma switch is on, also stages the lo term (into
// the other buffer, so its next tile is staged after it instead of during it) and adds Q hi.K lo to the
// scores and P hi.V lo to the outputs. The skipped products are exact zeros (x times +-0), and an mma
// that adds only zero products returns its accumulator unchanged: the products are exact and the sum is
// aligned to its largest addend, which is then the accumulator itself, a normal fp32 value that the
// alignment leaves whole (tests/cuda/tensor_core_model.h; IEEE c + 0 = c for c != 0). The exceptions would
// be an accumulator of exactly -0 or a subnormal one flushed by the hardware, which scores and outputs of
// O(1) do not reach. So skipping gives the same bits as the full three-mma arithmetic;
// FLASHSTAR_ATTN_PREFILL_3MMA=1 (or attention_prefill_set) forces the full path to check that on the
// device.
//
// Deterministic: fixed k order in every mma chain, fixed quad reductions, no atomics.
#include <cuda_fp16.h>

#include <cmath>
#include <cstdlib>

#include "cuda/cuda_util.h"
#include "cuda/fast_attention_prefill.h"
#include "cuda/fast_attention_rows.cuh"
#include "cuda/fast_kernels.h"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

using namespace attn_prefill;

using mma::pack_f16;
using mma::pack_f16_lo;
// ldmatrix from shared-window byte addresses (32-bit: lane bases plus compile-time step offsets)
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// The two warps of head group `pair` (64 threads) meet; shared memory written before is visible after.
__device__ __forceinline__ void pair_sync(int pair) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(1 + pair), "r"(64) : "memory");
}

// kR rounds of stage_row (2 kR rows) of fp32 values in flight: a thread's float4 of each.
template <int kR>
struct Rows {
  float4 v[kR];
};

// Rows row0 .. row0 + 2 kR - 1 of a tile from its pointer slot (null: a row past the end, zeros).
template <int kR>
__device__ __forceinline__ void load_rows(Rows<kR>& f, const float* const* ptr, int row0, int tid) {
#pragma unroll
  for (int i = 0; i < kR; ++i) {
    const float* p = ptr[row0 + stage_row(tid, i)];
    f.v[i] = p ? __ldg(reinterpret_cast<const float4*>(p) + stage_col4(tid)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
}
// Their hi terms (kLo: lo terms) into buf; flag gathers the lo terms' nonzero magnitude bits.
template <bool kLo, int kR>
__device__ __forceinline__ void store_rows(const Rows<kR>& f, uint16_t* buf, int row0, int tid, uint32_t& flag) {
#pragma unroll
  for (int i = 0; i < kR; ++i) {
    const float4 v = f.v[i];
    const uint32_t h01 = pack_f16(v.x, v.y), h23 = pack_f16(v.z, v.w);
    const uint32_t l01 = pack_f16_lo(v.x, v.y, h01), l23 = pack_f16_lo(v.z, v.w, h23);
    flag |= (l01 | l23) & 0x7fff7fffu;
    *reinterpret_cast<uint2*>(buf + (row0 + stage_row(tid, i)) * kLd + 4 * stage_col4(tid)) =
        kLo ? make_uint2(l01, l23) : make_uint2(h01, h23);
  }
}
// A whole tile at once (the lo path, where nothing else overlaps it).
template <bool kLo>
__device__ __forceinline__ void stage_tile(const float* const* ptr, uint16_t* buf, int tid, uint32_t& flag) {
#pragma unroll 1
  for (int r0 = 0; r0 < kTile; r0 += 2 * kStageRounds) {
    Rows<kStageRounds> f;
    load_rows(f, ptr, r0, tid);
    store_rows<kLo>(f, buf, r0, tid, flag);
  }
}

// Score partial of the warp over k16 steps kFrom..kTo-1 of its dims: s += Q lo.K + Q hi.K per step
// (kLoPass: s += Q hi.K lo, kb then holds the lo terms). qa: the lane's A address of Q hi at the warp's
// first dim (Q lo kQBytes further on); kb: the lane's B address in the row buffer at the same dim.
template <bool kLoPass, int kFrom, int kTo>
__device__ __forceinline__ void qk_steps(float (&s)[kSTiles][4], uint32_t qa, uint32_t kb) {
#pragma unroll
  for (int st = kFrom; st < kTo; ++st) {
    uint32_t ah[4], al[4];
    ldsm_x4(ah, qa + 2 * 16 * st);  // a_frag_off is linear in k0
    if (!kLoPass) ldsm_x4(al, qa + kQBytes + 2 * 16 * st);
#pragma unroll
    for (int nj = 0; nj < kSTiles / 2; ++nj) {
      uint32_t bk[4];
      ldsm_x4(bk, kb + 2 * (16 * nj * kLd + 16 * st));  // b_frag_off(lane, 16 nj, d0 + 16 st)
      if (!kLoPass) {
        mma(s[2 * nj], al, bk[0], bk[1]);
        mma(s[2 * nj + 1], al, bk[2], bk[3]);
      }
      mma(s[2 * nj], ah, bk[0], bk[1]);
      mma(s[2 * nj + 1], ah, bk[2], bk[3]);
    }
  }
}

// o += P.V over the tile's rows 16 kFrom .. 16 kTo - 1 (kLoPass: o += P hi.V lo, vb then holds the lo
// terms). p: the probabilities in accumulator layout; n8 tiles 2kk and 2kk+1 are the A operand of k16
// step kk. vb: the lane's .trans B address in the row buffer at row 0 and the warp's first dim.
template <bool kLoPass, int kFrom, int kTo>
__device__ __forceinline__ void pv_steps(float (&o)[kOutTiles][4], const float (&p)[kSTiles][4], uint32_t vb) {
#pragma unroll
  for (int kk = kFrom; kk < kTo; ++kk) {
    uint32_t ph[4], pl[4];
    ph[0] = pack_f16(p[2 * kk][0], p[2 * kk][1]);          // (row g, k 2c..2c+1)
    ph[1] = pack_f16(p[2 * kk][2], p[2 * kk][3]);          // (row g + 8, k 2c..)
    ph[2] = pack_f16(p[2 * kk + 1][0], p[2 * kk + 1][1]);  // (row g, k 2c + 8..)
    ph[3] = pack_f16(p[2 * kk + 1][2], p[2 * kk + 1][3]);  // (row g + 8, k 2c + 8..)
    if (!kLoPass) {
      pl[0] = pack_f16_lo(p[2 * kk][0], p[2 * kk][1], ph[0]);
      pl[1] = pack_f16_lo(p[2 * kk][2], p[2 * kk][3], ph[1]);
      pl[2] = pack_f16_lo(p[2 * kk + 1][0], p[2 * kk + 1][1], ph[2]);
      pl[3] = pack_f16_lo(p[2 * kk + 1][2], p[2 * kk + 1][3], ph[3]);
    }
#pragma unroll
    for (int nj = 0; nj < kOutTiles / 2; ++nj) {
      uint32_t bv[4];
      ldsm_x4_t(bv, vb + 2 * (16 * kk * kLd + 16 * nj));  // bt_frag_off(lane, 16 kk, d0 + 16 nj)
      if (!kLoPass) {
        mma(o[2 * nj], pl, bv[0], bv[1]);
        mma(o[2 * nj + 1], pl, bv[2], bv[3]);
      }
      mma(o[2 * nj], ph, bv[0], bv[1]);
      mma(o[2 * nj + 1], ph, bv[2], bv[3]);
    }
  }
}

// grid n (a block per query), kThreads threads, kSmemBytes of dynamic shared memory.
__global__ void __launch_bounds__(kThreads, 1) attn_prefill_kernel(AttentionArgs a_in, float scale, int full) {
  pdl_wait();
  extern __shared__ __align__(16) unsigned char smem[];
  uint16_t* const qh = reinterpret_cast<uint16_t*>(smem + kQOff);
  uint16_t* const ql = qh + kHeads * kLd;
  uint16_t* const kbuf = reinterpret_cast<uint16_t*>(smem + kKOff);  // buffer b at kbuf + b * kTile * kLd
  float4* const xch = reinterpret_cast<float4*>(smem + kXOff);       // warp w: [kSTiles][32 lanes]
  const float** const ptrs = reinterpret_cast<const float**>(smem + kPOff);  // tile k's rows at slot k % 4

  const AttentionArgs a = resolved(a_in);
  const int64_t t = blockIdx.x;
  const RowMap rm(a, t);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int n_tiles = static_cast<int>((rm.n_rows + kTile - 1) / kTile);  // >= 1: the window holds the query

  if (warp < 2 && warp < n_tiles) ptrs[warp * kTile + lane] = rm.row(static_cast<int64_t>(warp) * kTile + lane);
  __syncthreads();
  uint32_t flag = 0;  // the lo terms staged by this thread for the next tile
  {  // the first tile's hi terms and Q in two terms, the tile's loads in flight with Q's
    Rows<kStageRounds> top, bottom;  // rows 0..15, 16..31
    load_rows(top, ptrs, 0, tid);
    load_rows(bottom, ptrs, 2 * kStageRounds, tid);
    const float* q = a.q + t * kHeads * kDim;
#pragma unroll 2  // nothing else is live yet: 16 loads in flight
    for (int r0 = 0; r0 < kHeads; r0 += 16) {
      Rows<kStageRounds> f;
#pragma unroll
      for (int i = 0; i < kStageRounds; ++i)
        f.v[i] = __ldg(reinterpret_cast<const float4*>(q + (r0 + stage_row(tid, i)) * kDim) + stage_col4(tid));
#pragma unroll
      for (int i = 0; i < kStageRounds; ++i) {
        const float4 v = f.v[i];
        const int off = (r0 + stage_row(tid, i)) * kLd + 4 * stage_col4(tid);
        const uint32_t h01 = pack_f16(v.x, v.y), h23 = pack_f16(v.z, v.w);
        *reinterpret_cast<uint2*>(qh + off) = make_uint2(h01, h23);
        *reinterpret_cast<uint2*>(ql + off) = make_uint2(pack_f16_lo(v.x, v.y, h01), pack_f16_lo(v.z, v.w, h23));
      }
    }
    store_rows<false>(top, kbuf, 0, tid, flag);
    store_rows<false>(bottom, kbuf, 2 * kStageRounds, tid, flag);
  }

  const int m0 = warp_heads(warp), d0 = warp_dims(warp);
  // the lane's ldmatrix addresses: Q at (heads m0.., dim d0), a row buffer at (row 0, dim d0) for the
  // scores (rows as n) and for P.V (rows as k); buffer b is b * kKBytes further on
  const uint32_t qa = smem_u32(qh) + 2 * a_frag_off(lane, m0, d0);
  const uint32_t kb0 = smem_u32(kbuf) + 2 * b_frag_off(lane, 0, d0);
  const uint32_t vb0 = smem_u32(kbuf) + 2 * bt_frag_off(lane, 0, d0);
  float o[kOutTiles][4];
#pragma unroll
  for (int nt = 0; nt < kOutTiles; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
  // running max and sum of exp of rows g and g + 8 of the warp's heads (the same in the 4 lanes of a quad
  // and in both warps of the head group)
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};

#pragma unroll 1
  for (int k = 0; k < n_tiles; ++k) {
    const int cur = k & 1;  // tile k's buffer; the other one takes the next tile (or tile k's lo terms)
    uint16_t* const nb = kbuf + (cur ^ 1) * kTile * kLd;
    // Tile k staged (and the previous tile's readers done with the other buffer and the exchange).
    const bool lo_tile = (__syncthreads_or(flag != 0) != 0) || full;
    flag = 0;
    // Row pointers two tiles ahead: slot (k + 2) % 4 last served tile k - 2, finished before this barrier.
    if (warp == kWarps - 1 && k + 2 < n_tiles)
      ptrs[((k + 2) & 3) * kTile + lane] = rm.row(static_cast<int64_t>(k + 2) * kTile + lane);
    const float* const* next = ptrs + ((k + 1) & 3) * kTile;
    const bool prefetch = !lo_tile && k + 1 < n_tiles;

    float s[kSTiles][4];
#pragma unroll
    for (int j = 0; j < kSTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    // The next tile's hi terms in four quarters of 8 rows, each in flight across a stretch of products.
    constexpr int kQ = kTile / 4;  // rows a quarter
    Rows<kQ / 2> f;
    if (prefetch) load_rows(f, next, 0, tid);
    qk_steps<false, 0, kSteps / 2>(s, qa, kb0 + cur * kKBytes);
    if (prefetch) store_rows<false>(f, nb, 0, tid, flag), load_rows(f, next, kQ, tid);
    qk_steps<false, kSteps / 2, kSteps>(s, qa, kb0 + cur * kKBytes);
    if (prefetch) store_rows<false>(f, nb, kQ, tid, flag), load_rows(f, next, 2 * kQ, tid);
    if (lo_tile) {  // the lo terms of tile k into the other buffer, then s += Q hi.K lo
      uint32_t unused = 0;
      stage_tile<true>(ptrs + (k & 3) * kTile, nb, tid, unused);
      __syncthreads();
      qk_steps<true, 0, kSteps>(s, qa, kb0 + (cur ^ 1) * kKBytes);
    }

    // The head group's two partials: both warps add (dims 0..255) + (dims 256..511) (addition commutes,
    // so both get the same bits).
    {
      float4* mine = xch + warp * (kSTiles * 32);
#pragma unroll
      for (int j = 0; j < kSTiles; ++j) mine[j * 32 + lane] = make_float4(s[j][0], s[j][1], s[j][2], s[j][3]);
      pair_sync(warp >> 1);
      const float4* other = xch + (warp ^ 1) * (kSTiles * 32);
#pragma unroll
      for (int j = 0; j < kSTiles; ++j) {
        const float4 v = other[j * 32 + lane];
        s[j][0] += v.x, s[j][1] += v.y, s[j][2] += v.z, s[j][3] += v.w;
      }
    }

    // Online softmax over the tile's valid rows.
    {
      const int64_t left = rm.n_rows - static_cast<int64_t>(k) * kTile;
      const int valid = left < kTile ? static_cast<int>(left) : kTile;
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int j = 0; j < kSTiles; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          s[j][i] = 8 * j + c_col(lane, i) < valid ? s[j][i] * scale : -INFINITY;
          mx[i >> 1] = fmaxf(mx[i >> 1], s[j][i]);
        }
      float alpha[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float mn = fmaxf(m_run[r], mx[r]);  // finite: every tile has a valid row
        alpha[r] = mn == m_run[r] ? 1.0f : __expf(m_run[r] - mn);  // 0 on the first tile
        m_run[r] = mn;
      }
#pragma unroll
      for (int j = 0; j < kSTiles; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          s[j][i] = __expf(s[j][i] - m_run[i >> 1]);  // masked: exp(-inf) = 0
          sum[i >> 1] += s[j][i];
        }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);  // commutative pairs: the quad agrees
        sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
        l_run[r] = l_run[r] * alpha[r] + sum[r];
      }
      if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {  // x * 1 = x: skipping is exact
#pragma unroll
        for (int nt = 0; nt < kOutTiles; ++nt) {
          o[nt][0] *= alpha[0], o[nt][1] *= alpha[0];
          o[nt][2] *= alpha[1], o[nt][3] *= alpha[1];
        }
      }
    }

    static_assert(kTile == 32, "P.V in two k16 steps around the last quarters");
    pv_steps<false, 0, 1>(o, s, vb0 + cur * kKBytes);
    if (prefetch) store_rows<false>(f, nb, 2 * kQ, tid, flag), load_rows(f, next, 3 * kQ, tid);
    pv_steps<false, 1, 2>(o, s, vb0 + cur * kKBytes);
    if (prefetch) store_rows<false>(f, nb, 3 * kQ, tid, flag);
    if (lo_tile) pv_steps<true, 0, 2>(o, s, vb0 + (cur ^ 1) * kKBytes);
    if (lo_tile && k + 1 < n_tiles) {  // the next tile, once every warp is done with the lo terms
      __syncthreads();
      stage_tile<false>(next, nb, tid, flag);
    }
  }

  // out = O f / (l f + exp(sink - M)), M = max(sink, m), f = exp(m - M), in double: with a dominant sink
  // m - M is large and its fp32 rounding alone would cost 1e-6 of every output of the head
  float cf[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const double sink = a.sinks[m0 + c_row(lane, 2 * r)], m = m_run[r];
    const double M = fmax(sink, m), fm = exp(m - M);
    cf[r] = static_cast<float>(fm / (l_run[r] * fm + exp(sink - M)));
  }
  float* out = a.out + (t * kHeads + m0) * kDim + d0;
#pragma unroll
  for (int nt = 0; nt < kOutTiles; ++nt)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      *reinterpret_cast<float2*>(out + c_row(lane, 2 * r) * kDim + 8 * nt + c_col(lane, 0)) =
          make_float2(o[nt][2 * r] * cf[r], o[nt][2 * r + 1] * cf[r]);
}

bool& v2_flag() {
  static bool on = env_on("FLASHSTAR_ATTN_PREFILL_V2");
  return on;
}
bool& full_mma_flag() {
  static bool on = [] {
    const char* v = std::getenv("FLASHSTAR_ATTN_PREFILL_3MMA");
    return v && v[0] == '1';
  }();
  return on;
}

bool aligned(const void* p, uintptr_t n) { return reinterpret_cast<uintptr_t>(p) % n == 0; }

}  // namespace

void attention_prefill_set(bool v2, bool full_mma) { v2_flag() = v2, full_mma_flag() = full_mma; }
bool attention_prefill_v2() { return v2_flag(); }
bool attention_prefill_full_mma() { return full_mma_flag(); }

bool attention_prefill(const AttentionArgs& a, cudaStream_t s) {
  // rows and Q by float4, the output by float2
  if (a.n <= 0 || a.n > 0x7fffffff || a.n_head != kHeads || a.head_dim != kDim) return false;
  if (!aligned(a.q, 16) || !aligned(a.hist, 16) || (a.ratio && !aligned(a.comp, 16)) || !aligned(a.out, 8)) return false;
  // 212 KiB of shared memory: a device that cannot give it (before Hopper) keeps the three launches.
  static const bool smem_ok = [] {
    if (cudaFuncSetAttribute(attn_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes) ==
        cudaSuccess)
      return true;
    (void)cudaGetLastError();  // not an error of a later launch
    return false;
  }();
  if (!smem_ok) return false;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(kDim)));
  attn_prefill_kernel<<<static_cast<unsigned>(a.n), kThreads, kSmemBytes, s>>>(a, scale, full_mma_flag() ? 1 : 0);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace flashstar::cuda::fast
