// Decode Q8_0 matrix-vector products (1-2 tokens) on the INT8 tensor cores: a Q8_0 block's 32 int8 weights
// are an mma.m16n8k32 A operand as they lie in memory (no decoding), the activations four signed base-256
// digits per element (the expert kernel's scheme, fast_expert_mma.cu), one B column per digit and token
// (columns 0-3 token 0, 4-7 token 1; with one token 4-7 repeat 0-3 and are never read). Per 32 columns and
// 16 rows a warp issues one mma, then per row one LEA (digit pairs c_even + 256 c_odd, exact in int32), one
// I2F and one FMA with the block's d; the piece's power-of-two activation scale multiplies the 256-column
// sum once. Lane mapping, digit order and the exactness argument: fast_matvec_q8_mma.h.
//
// Per lane and 16 x 256 piece (128 weights): 48 LDS.32 + 8 PRMT + 16 F16->F32 (weights and d), 8 LDS.64
// (digits), 8 IMMA, 16 IMAD (digit pairs) + 16 I2F + 16 FFMA, 9 cp.async with their address adds, ~10 of
// loop and scale. SASS (sm_90a): 153 instructions in the stage body, ~45 in the copies and loop: ~1.5 per
// weight (the fp32 kernel: ~4.1).
//
// Geometry: a stage is one 256-column piece of a 16-row tile (4352 bytes, 272 16-byte cp.async copies,
// 8.5 per lane); a unit is a tile x all columns. One block of 16 warps per SM, each warp a ring of 2
// stages (139 KB per SM in flight at most). Blocks take contiguous unit ranges, each block's (unit, piece)
// sequence is cut into 16 contiguous warp ranges; a unit cut between warps leaves per-row partial sums in
// shared memory, added in warp order (as fast_matvec_q8.cu). Before streaming, the block converts the
// activation rows its units read into digits in shared memory (the weight copies of the first stages are
// already in flight): plain products one row per token, items the rows of their first to last item
// (q8_mma_items refuses shapes where a block would need more than fit).
//
// Pairs (q8_decode_pair): two matrices over the same X in one launch. Each keeps the partition a launch
// of its own would have (grid min(units, SMs), the same block and warp cuts), so its sums are bitwise
// those of two launches; the two partitions lie side by side when they fit the SMs together (q_a + kv:
// 64 + 32 blocks), else block b runs share b of the first matrix then share b of the second (shared
// gate + up: 128 blocks of two units), the copies of the second already in flight during the first: one
// launch ramp instead of two. Activation transforms (q8_decode_act) act on X while its digits are made:
// RMS norm (every block forms the per-token scale as rms_norm_vec does, in its order and roundings) and
// swiglu (the reference element's roundings); block 0 may write the transformed rows out.
//
// Deterministic: integer sums are exact, float sums in a fixed order, no atomics, no workspace.
#include "cuda/device_info.h"
#include "cuda/fast_matvec_q8_mma.h"

#include <algorithm>
#include <mutex>
#include <vector>

#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/pdl.cuh"
#include "cuda/swiglu_el.cuh"

namespace flashstar::cuda::fast {
namespace q8m {
namespace {

constexpr int kWarps = 16, kThreads = 32 * kWarps, kStages = 2;
constexpr int kCopiesFull = kStageBytes / 16 / 32;  // 8 copies every lane makes per stage ...
constexpr int kCopies = kCopiesFull + 1;            // ... and a ninth for lanes 0-15 (272 in all)
static_assert(kCopiesFull * 32 + 16 == kStageBytes / 16);
constexpr int kRingBytes = kWarps * kStages * kStageBytes;
constexpr int kPartBytes = 2 * kWarps * 2 * 2 * kRows * 4;  // [job][warp][first / last unit][token][row]
constexpr int kMaxTok = 2;
constexpr int kNormThreads = 512;  // rms_norm_vec's block size limit (fast_ops.cu)
static_assert(kThreads >= kNormThreads && 2 * kMaxTok * kWarps * 8 <= kPartBytes);
enum : int { kActPlain = 0, kActNorm = 1, kActSwiglu = 2 };

// One weight matrix of a launch (a pair has two): its rows, output, and its own partition (grid blocks
// cutting its units exactly as a launch for it alone would, so that a pair's sums equal two launches').
struct Mat {
  const uint8_t* W;
  int64_t n;     // rows per group: n_rows, or rows_per_mat for items
  int64_t row0;  // first weight row (plain products)
  float* Y;
  int64_t ys;
  int upg;    // units per group
  int units;  // all units
  int grid;   // blocks of its partition
};

struct Args {
  Mat m[2];
  int nm;        // matrices: 1, or 2 (a pair, same X)
  bool overlay;  // pair: block b runs share b of both (else blocks [0, grid0) matrix 0, then matrix 1)
  int64_t rb;    // row stride in bytes (the same for both)
  const int32_t* mat;  // matrix of each item; null for plain products (one group of nt tokens)
  int32_t src_div;
  const float* X;
  int64_t xs;
  int nt;          // tokens (plain) or 1 (items)
  int k;           // pieces per row: stages per unit
  uint64_t kmagic;  // ceil(2^40 / k): x / k as (x kmagic) >> 40 for 0 <= x < 2^23, x k < 2^40 (lean kernel)
  int slot_bytes;  // digits of one activation row: k * kDigitBytes
  int off_sc;      // shared-memory offset of the scales [slot][piece][half]
  // Activation transform (plain products only), applied to X before the digits.
  int act;
  const float* aw;  // norm: weight per column (may be null); swiglu: weight per token (may be null)
  float eps, lim;
  const float* up;  // swiglu: the up rows (X holds the gate rows)
  int64_t ups;
  float* aout;  // where block 0 writes the transformed rows (may be null)
  int64_t aos;
  bool mat_const;  // mat never changes (q8_constant_items): the kConst kernel, first stages before the wait
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// c = A B with a zero accumulator (A rows g / g + 8 in a0 / a1 at k-slots 4t.., a2 / a3 at 16+4t..).
__device__ __forceinline__ void mma0(uint32_t (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                     uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
      : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0u));
}

// A block's share of one matrix: matrix m's units [u0, u1), of which this warp streams stages [pa, pb)
// of the (unit, piece) sequence.
struct Job {
  int m, u0, u1, pa, pb;
};
__device__ __forceinline__ int job_count(const Args& a) {
  if (a.nm == 1 || !a.overlay) return 1;
  return (static_cast<int>(blockIdx.x) < a.m[0].grid) + (static_cast<int>(blockIdx.x) < a.m[1].grid);
}
// Job j of this block: its matrix m and block index b within m's partition, then m's units
// [units b / grid, units (b + 1) / grid) and this warp's 1/16 of their stages. kLean (FLASHSTAR_Q8_LEAN, default on):
// the same values in 32-bit unsigned arithmetic (run() takes the lean kernel only where units x grid and a
// block's stages x kWarps stay below 2^31), formed once per warp and job (Jobs) instead of at each use. The
// default kernel divides in 64 bits at every use: on the H200 the sixteen 64-bit division calls and the unit
// bookkeeping are most of a small launch's ~2 250 instructions a warp, ten of the calls before its first
// weight copy.
// Where warp w's share of a block's L stages begins (w = kWarps: L): in 32 bits (kLean), else 64.
template <bool kLean>
__device__ __forceinline__ int warp_cut(int L, int w) {
  if constexpr (kLean) return static_cast<int>(static_cast<unsigned>(L) * static_cast<unsigned>(w) / kWarps);
  else return static_cast<int>(static_cast<int64_t>(L) * w / kWarps);
}
template <bool kLean = false>
__device__ __forceinline__ Job job_at(const Args& a, int j, int warp) {
  int b = static_cast<int>(blockIdx.x), m = 0;
  if (a.nm == 2) {
    if (a.overlay) m = (j == 0 && b < a.m[0].grid) ? 0 : 1;
    else if (b >= a.m[0].grid) m = 1, b -= a.m[0].grid;
  }
  const Mat& mt = a.m[m];
  Job r;
  r.m = m;
  if constexpr (kLean) {
    const unsigned units = static_cast<unsigned>(mt.units), grid = static_cast<unsigned>(mt.grid);
    r.u0 = static_cast<int>(units * static_cast<unsigned>(b) / grid);
    r.u1 = static_cast<int>(units * static_cast<unsigned>(b + 1) / grid);
  } else {
    r.u0 = static_cast<int>(static_cast<int64_t>(mt.units) * b / mt.grid);
    r.u1 = static_cast<int>(static_cast<int64_t>(mt.units) * (b + 1) / mt.grid);
  }
  const int L = (r.u1 - r.u0) * a.k;
  r.pa = warp_cut<kLean>(L, warp), r.pb = warp_cut<kLean>(L, warp + 1);
  return r;
}
// x / a.k for 0 <= x: a multiply and a shift in the lean kernel (run() checks x k < 2^40 for every x it
// divides), the division otherwise.
template <bool kLean>
__device__ __forceinline__ int div_k(const Args& a, int x) {
  if constexpr (kLean) return static_cast<int>((static_cast<uint64_t>(x) * a.kmagic) >> 40);
  else return x / a.k;
}

// A warp's (at most two) jobs, formed once (kLean), or job_at at each call.
template <bool kLean>
struct Jobs {
  Job j0, j1;
  __device__ __forceinline__ Jobs(const Args& a, int nj, int warp) {
    if constexpr (kLean) {
      j0 = job_at<true>(a, 0, warp);
      if (nj > 1) j1 = job_at<true>(a, 1, warp);
    }
  }
  __device__ __forceinline__ Job at(const Args& a, int j, int warp) const {
    if constexpr (kLean) return j == 0 ? j0 : j1;
    else return job_at(a, j, warp);
  }
};

// Where unit u of matrix m lies: its group (item), its own first row, and the first row of the 16-row
// window it streams. The last unit of a group slides its window back inside the group (rows before
// `first` are computed but not written) so that no row is clamped; groups shorter than 16 rows clamp.
struct Unit {
  int g;
  int64_t first, base;
};
template <bool kLean = false>
__device__ __forceinline__ Unit unit_at(const Args& a, int m, int u) {
  const int upg = a.m[m].upg;
  const int64_t n = a.m[m].n;
  Unit r;
  r.g = kLean && !a.mat ? 0 : u / upg;  // a plain product is one group: u < units = upg
  r.first = static_cast<int64_t>(u - r.g * upg) * kRows;
  r.base = min(r.first, max(n - kRows, int64_t{0}));
  return r;
}

// The copy side of a warp's pipeline: the next stage to fetch, across the block's jobs.
struct Fetch {
  int j, m, u, k, left;  // job, its matrix, unit, piece; stages left in the job
  const uint8_t* rows;   // the unit's window in W; null until looked up
};
// Moves f to the next job with stages for this warp, once its current one is done.
template <bool kLean>
__device__ __forceinline__ void next_job(const Args& a, Fetch& f, int nj, int warp, const Jobs<kLean>& J) {
  while (f.left == 0 && ++f.j < nj) {
    const Job jb = J.at(a, f.j, warp);
    if constexpr (kLean) {
      const int q = div_k<kLean>(a, jb.pa);
      f.u = jb.u0 + q, f.k = jb.pa - q * a.k;
    } else {
      f.u = jb.u0 + jb.pa / a.k, f.k = jb.pa % a.k;
    }
    f.m = jb.m, f.left = jb.pb - jb.pa, f.rows = nullptr;
  }
}
template <bool kLean>
__device__ __forceinline__ void fetch(const Args& a, Fetch& f, const uint32_t (&goff)[kCopies], uint8_t* dst,
                                      int lane, int nj, int warp, const Jobs<kLean>& J) {
  if (!f.rows) {
    const Unit un = unit_at<kLean>(a, f.m, f.u);
    const int64_t w0 = a.mat ? static_cast<int64_t>(a.mat[un.g]) * a.m[0].n : a.m[f.m].row0;
    f.rows = a.m[f.m].W + (w0 + un.base) * a.rb;
  }
  const uint8_t* src = f.rows + static_cast<int64_t>(f.k) * kPieceBytes;
  asm("" : "+l"(src));  // one 64-bit add per copy, not the stage offset folded into each
#pragma unroll
  for (int i = 0; i < kCopiesFull; ++i) cp_async16(dst + i * 512, src + goff[i]);
  if (lane < 16) cp_async16(dst + kCopiesFull * 512, src + goff[kCopiesFull]);
  if (++f.k == a.k) f.k = 0, ++f.u, f.rows = nullptr;
  --f.left;
  next_job(a, f, nj, warp, J);
}

// The per-token 1 / rms exactly as rms_norm_vec (fast_ops.cu) forms it for a row of dim values: nth =
// norm_threads(dim) threads, each with four double partial sums of float squares (x^2 by DFMA onto y^2,
// then z, w: the contraction fast_ops.cu compiles to, written out so that it cannot differ), a shuffle
// tree per warp, the warps' sums in warp order. Threads past nth only take part in the barrier.
template <int NT>
__device__ void norm_scales(const Args& a, int dim, double* red, float (&sc)[NT]) {
  const int n4 = dim / 4, nth = min(kNormThreads, max(32, (n4 + 31) / 32 * 32));
  const int tid = static_cast<int>(threadIdx.x);
  auto sq4 = [](float4 v) {
    double d = __dmul_rn(static_cast<double>(v.y), static_cast<double>(v.y));
    d = __fma_rn(static_cast<double>(v.x), static_cast<double>(v.x), d);
    d = __fma_rn(static_cast<double>(v.z), static_cast<double>(v.z), d);
    return __fma_rn(static_cast<double>(v.w), static_cast<double>(v.w), d);
  };
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (tid >= nth) continue;
    const float4* xr = reinterpret_cast<const float4*>(a.X + t * a.xs);
    double acc[4] = {0, 0, 0, 0};
    int i = tid;
    for (; i + 3 * nth < n4; i += 4 * nth) {
      float4 v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) v[u] = xr[i + u * nth];
#pragma unroll
      for (int u = 0; u < 4; ++u) acc[u] = __dadd_rn(acc[u], sq4(v[u]));
    }
    for (; i < n4; i += nth) acc[0] = __dadd_rn(acc[0], sq4(xr[i]));
    double s = __dadd_rn(__dadd_rn(acc[0], acc[1]), __dadd_rn(acc[2], acc[3]));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s = __dadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
    if ((tid & 31) == 0) red[t * kWarps + (tid >> 5)] = s;
  }
  __syncthreads();
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    double ss = 0;
    for (int w = 0; w < nth / 32; ++w) ss = __dadd_rn(ss, red[t * kWarps + w]);
    sc[t] = static_cast<float>(
        __ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(__ddiv_rn(ss, static_cast<double>(dim)), static_cast<double>(a.eps)))));
  }
}

// kConst (Args::mat_const, FLASHSTAR_Q8_CONST_ITEMS): items by a constant array, fetched early as dense ones.
template <int NT, bool kLean, bool kConst = false>
__global__ void __launch_bounds__(kThreads, 1) q8_mma_stream(const Args a) {
  // PDL-PROLOGUE: dense weights are constants, so their first stages are fetched before pdl_wait() and
  // stream in while the previous kernel finishes; the experts' rows depend on the routing: wait first
  // (items by a constant array, mat_const, are fetched early as dense ones).
  if (a.mat && !kConst) pdl_wait();
  extern __shared__ __align__(16) uint8_t smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int K = a.k, nj = job_count(a);
  const uint8_t* ring = smem + warp * (kStages * kStageBytes);
  uint8_t* ring_dst = smem + warp * (kStages * kStageBytes) + lane * 16;
  float* part = reinterpret_cast<float*>(smem + kRingBytes);
  uint8_t* dig = smem + kRingBytes + kPartBytes;
  float* scl = reinterpret_cast<float*>(smem + a.off_sc);

  // Copy i of this lane moves stage bytes 16 (32 i + lane): row r, 16-byte word w of its piece. Rows past
  // a short group repeat its last row (never written back; both matrices of a pair have 16 rows or more,
  // or the same rows).
  uint32_t goff[kCopies];
  // kLean: the same offsets in 32 bits (rows < 16, rb < 2^27: layout_ok)
  const int last_row = kLean ? static_cast<int>(min(a.m[0].n - 1, int64_t{kRows - 1})) : 0;
  const uint32_t rb32 = static_cast<uint32_t>(a.rb);
#pragma unroll
  for (int i = 0; i < kCopies; ++i) {
    const int idx = min(32 * i + lane, kStageBytes / 16 - 1), r = idx / 17, w = idx - 17 * r;
    if constexpr (kLean) goff[i] = static_cast<uint32_t>(min(r, last_row)) * rb32 + 16u * w;
    else goff[i] = static_cast<uint32_t>(min(static_cast<int64_t>(r), a.m[0].n - 1) * a.rb + 16 * w);
  }
  const Jobs<kLean> J(a, nj, warp);
  int total = 0;  // this warp's stages over all jobs
  for (int j = 0; j < nj; ++j) {
    const Job jb = J.at(a, j, warp);
    total += jb.pb - jb.pa;
  }
  Fetch f{-1, 0, 0, 0, 0, nullptr};
  next_job(a, f, nj, warp, J);
#pragma unroll
  for (int i = 0; i < kStages; ++i) {
    if (i < total) fetch(a, f, goff, ring_dst + i * kStageBytes, lane, nj, warp, J);
    cp_async_commit();
  }
  if (!a.mat || kConst) pdl_wait();

  // While those are in flight: the activation rows [x0, x0 + nsl) as digits, one warp per (row, piece).
  const Job j0 = J.at(a, 0, warp);
  int x0 = 0, nsl = NT;
  if (a.mat) {
    const int upg = a.m[0].upg;
    x0 = (j0.u0 / upg) / a.src_div;
    nsl = ((j0.u1 - 1) / upg) / a.src_div - x0 + 1;
  }
  float nsc[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) nsc[t] = 1.0f;
  if (a.act == kActNorm) norm_scales<NT>(a, K * kPieceCols, reinterpret_cast<double*>(part), nsc);
  {
    const int j = lane >> 2, t = lane & 3;
    const XCols xc = x_cols(j, t);
    const bool write_out = a.aout && blockIdx.x == 0;
    for (int w = warp; w < nsl * K; w += kWarps) {
      const int sl = div_k<kLean>(a, w), pc = w - sl * K, row = x0 + sl, col = pc * kPieceCols + 32 * j;
      auto ld8 = [&](const float* b, float (&v)[8]) {
        const float2 p = __ldg(reinterpret_cast<const float2*>(b + xc.lo));
        const float2 q = __ldg(reinterpret_cast<const float2*>(b + xc.lo + 2));
        const float2 r = __ldg(reinterpret_cast<const float2*>(b + xc.hi_a));
        const float2 s = __ldg(reinterpret_cast<const float2*>(b + xc.hi_b));
        v[0] = p.x, v[1] = p.y, v[2] = q.x, v[3] = q.y, v[4] = r.x, v[5] = r.y, v[6] = s.x, v[7] = s.y;
      };
      float x[8];
      ld8(a.X + static_cast<int64_t>(row) * a.xs + col, x);
      if (a.act == kActNorm) {  // rms_norm_vec's (x scale) w
        const float sc = (NT == 2 && sl) ? nsc[NT - 1] : nsc[0];
        if (a.aw) {
          float g[8];
          ld8(a.aw + col, g);
#pragma unroll
          for (int i = 0; i < 8; ++i) x[i] = __fmul_rn(__fmul_rn(x[i], sc), g[i]);
        } else {
#pragma unroll
          for (int i = 0; i < 8; ++i) x[i] = __fmul_rn(x[i], sc);
        }
      } else if (a.act == kActSwiglu) {
        float u[8];
        ld8(a.up + static_cast<int64_t>(row) * a.ups + col, u);
#pragma unroll
        for (int i = 0; i < 8; ++i) x[i] = swiglu_el(x[i], u[i], a.lim);
        if (a.aw) {  // the reference multiplies by 1 without a weight: exact, so skipped
          const float tw = a.aw[row];
#pragma unroll
          for (int i = 0; i < 8; ++i) x[i] = __fmul_rn(x[i], tw);
        }
      }
      if (write_out) {
        float* o = a.aout + static_cast<int64_t>(row) * a.aos + col;
        *reinterpret_cast<float2*>(o + xc.lo) = make_float2(x[0], x[1]);
        *reinterpret_cast<float2*>(o + xc.lo + 2) = make_float2(x[2], x[3]);
        *reinterpret_cast<float2*>(o + xc.hi_a) = make_float2(x[4], x[5]);
        *reinterpret_cast<float2*>(o + xc.hi_b) = make_float2(x[6], x[7]);
      }
      bool finite;
      const int E = digits::warp_exponent(x, kExpFloor, finite);
      uint32_t lo[4], hi[4];
      lane_digits(x, E, lo, hi);
      uint8_t* d = dig + sl * a.slot_bytes + pc * kDigitBytes + j * 128 + 8 * t;
#pragma unroll
      for (int k = 0; k < 4; ++k) *reinterpret_cast<uint2*>(d + 32 * k) = make_uint2(lo[k], hi[k]);
      // A non-finite activation makes the piece's scale, and so its rows, NaN.
      if (lane < 2) scl[(sl * K + pc) * 2 + lane] = finite ? digit_scale(E, lane) : __int_as_float(0x7fc00000);
    }
  }
  __syncthreads();

  const int g = lane >> 2, t = lane & 3, h = t & 1, tok = t >> 1;
  const uint32_t sel = even_hi_sel(t);
  // Token slot of this lane's B columns (g / 4) and C columns (t / 2): with one token, all read slot 0.
  const int bslot = NT == 2 ? g >> 2 : 0, cslot = NT == 2 ? tok : 0;
  auto unit_slot = [&](const Unit& v) { return a.mat ? v.g / a.src_div - x0 : 0; };
  int it = 0;  // stages computed so far (all jobs): the ring slot
  for (int jj = 0; jj < nj; ++jj) {
    const Job jb = jj == 0 ? j0 : J.at(a, jj, warp);
    if (jb.pa >= jb.pb) continue;
    const int64_t n = a.m[jb.m].n, ys = a.m[jb.m].ys;
    float* const Ym = a.m[jb.m].Y;
    float acc0 = 0.0f, acc1 = 0.0f;  // rows g, g + 8 of this lane's token and digit half
    const int q0 = div_k<kLean>(a, jb.pa);
    const int ufirst = jb.u0 + q0;
    int cu = ufirst, ck = kLean ? jb.pa - q0 * K : jb.pa % K;
    Unit un = unit_at<kLean>(a, jb.m, cu);
    // This unit's digits (B registers of lane g, t) and scales (C columns of lane t).
    int us = unit_slot(un);
    const uint8_t* bl = dig + (us + bslot) * a.slot_bytes + b_offset(g, t);
    const float* sl = scl + (us + cslot) * K * 2 + h;
    float* yu = Ym + (a.mat ? un.g : 0) * ys;
    for (int p = jb.pa; p < jb.pb; ++p, ++it) {
      cp_async_wait<kStages - 1>();  // this lane's copies of stage it have landed ...
      __syncwarp();                  // ... and every other lane's
      {
        const uint8_t* pr = ring + (it % kStages) * kStageBytes + g * kPieceBytes;
        const uint8_t* pt = pr + 4 * t;
        const uint8_t* bp = bl + ck * kDigitBytes;
        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const PairA x = pair_a(pr + 68 * m, pt + 68 * m, sel);
          const PairA y = pair_a(pr + 68 * m + 8 * kPieceBytes, pt + 68 * m + 8 * kPieceBytes, sel);
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const uint2 b = *reinterpret_cast<const uint2*>(bp + (2 * m + e) * 128);
            uint32_t c[4];
            mma0(c, x.lo[e], y.lo[e], x.hi[e], y.hi[e], b.x, b.y);
            s0 = fmaf(combine(c[0], c[1]), x.d[e], s0);
            s1 = fmaf(combine(c[2], c[3]), y.d[e], s1);
          }
        }
        const float sc = sl[2 * ck];
        acc0 = fmaf(s0, sc, acc0), acc1 = fmaf(s1, sc, acc1);
      }
      __syncwarp();  // every lane is done with this slot ...
      if (it + kStages < total) fetch(a, f, goff, ring_dst + (it % kStages) * kStageBytes, lane, nj, warp, J);  // ... refill it
      cp_async_commit();
      if (ck == K - 1 || p == jb.pb - 1) {  // this warp's part of unit cu is done
        // Digit halves h = 0, 1 are lanes t, t ^ 1: their sum is the row's value for token t / 2.
        const float v0 = acc0 + __shfl_xor_sync(0xffffffffu, acc0, 1);
        const float v1 = acc1 + __shfl_xor_sync(0xffffffffu, acc1, 1);
        const int st0 = (cu - jb.u0) * K;
        const bool whole = st0 >= jb.pa && st0 + K <= jb.pb;
        const int ps = cu == ufirst ? 0 : 1;  // a cut unit is the warp's first or its last
        if (h == 0 && tok < a.nt) {
          if (whole) {
            const int64_t r = un.base + g;
            if (r >= un.first && r < n) yu[tok * ys + r] = v0;
            if (r + 8 >= un.first && r + 8 < n) yu[tok * ys + r + 8] = v1;
          } else {
            float* pp = part + (((jj * kWarps + warp) * 2 + ps) * 2 + tok) * kRows;
            pp[g] = v0, pp[g + 8] = v1;
          }
        }
        acc0 = acc1 = 0.0f;
        if (ck == K - 1 && p + 1 < jb.pb) {
          ck = 0;
          un = unit_at<kLean>(a, jb.m, ++cu);
          us = unit_slot(un);
          bl = dig + (us + bslot) * a.slot_bytes + b_offset(g, t);
          sl = scl + (us + cslot) * K * 2 + h;
          yu = Ym + (a.mat ? un.g : 0) * ys;
        }
      } else {
        ++ck;
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  // Per job, a unit that starts in this warp's range and ends past it: add the parts of the following
  // warps (each holds it as its first unit, slot 0) in warp order, and write the rows.
  for (int jj = 0; jj < nj; ++jj) {
    const Job jb = J.at(a, jj, warp);
    if (jb.pa >= jb.pb) continue;
    const int L = (jb.u1 - jb.u0) * K;
    const int ul = jb.u0 + div_k<kLean>(a, jb.pb - 1), s0 = (ul - jb.u0) * K, s1 = s0 + K;
    if (s0 < jb.pa || s1 <= jb.pb) continue;
    const int ps = ul == jb.u0 + div_k<kLean>(a, jb.pa) ? 0 : 1;
    const Unit ue = unit_at<kLean>(a, jb.m, ul);
    const int64_t n = a.m[jb.m].n, ys = a.m[jb.m].ys;
    float* ye = a.m[jb.m].Y + (a.mat ? ue.g : 0) * ys;
    for (int o = lane; o < kRows * a.nt; o += 32) {
      const int row = o % kRows, tk = o / kRows;
      float v = part[(((jj * kWarps + warp) * 2 + ps) * 2 + tk) * kRows + row];
      for (int w = warp + 1; w < kWarps; ++w) {
        const int qa = warp_cut<kLean>(L, w), qb = warp_cut<kLean>(L, w + 1);
        if (qa >= s1) break;
        if (qb > qa) v += part[(((jj * kWarps + w) * 2) * 2 + tk) * kRows + row];
      }
      const int64_t r = ue.base + row;
      if (r >= ue.first && r < n) ye[tk * ys + r] = v;
    }
  }
}

struct Device {
  int sms = 0, smem = 0;  // multiprocessors; dynamic shared memory a block may opt into
};
// Asked once; the kernels' shared-memory limit raised to the device's. sms = 0: cannot run here.
template <int NT, bool kLean, bool kConst = false>
const Device& device() {
  static const Device d = [] {
    Device r;
    int dev = 0, per_sm = 0;
    auto ok = [](cudaError_t e) { return e == cudaSuccess; };
    if (!ok(cudaGetDevice(&dev)) || !ok(cudaDeviceGetAttribute(&r.sms, cudaDevAttrMultiProcessorCount, dev)) ||
        !ok(cudaDeviceGetAttribute(&r.smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) ||
        !ok(cudaFuncSetAttribute(q8_mma_stream<NT, kLean, kConst>, cudaFuncAttributeMaxDynamicSharedMemorySize, r.smem)) ||
        !ok(cudaFuncSetAttribute(q8_mma_stream<NT, kLean, kConst>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 static_cast<int>(cudaSharedmemCarveoutMaxShared))) ||
        !ok(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, q8_mma_stream<NT, kLean, kConst>, kThreads,
                                                          kRingBytes + kPartBytes)) ||
        per_sm < 1)
      r.sms = 0;
    (void)cudaGetLastError();
    return r;
  }();
  return d;
}

size_t smem_bytes(int slots, int k) {
  return static_cast<size_t>(kRingBytes + kPartBytes) + static_cast<size_t>(slots) * k * (kDigitBytes + 8);
}

// Units and grids of the matrices, and the activation rows a block converts; false where the kernel does
// not take the shape. groups: items (matrix 0 of an items call), else 1.
// FLASHSTAR_Q8_LEAN (default 1; =0 the 64-bit cuts; q8_set_lean): the kernel with the lean cuts (job_at<true>), where they fit 32 bits.
bool& lean_flag() {
  static bool on = env_choice("FLASHSTAR_Q8_LEAN", 0, 1, 1) == 1;
  return on;
}
bool last_lean = false;  // which kernel the last launch took (tests)
// FLASHSTAR_Q8_CONST_ITEMS=1 (q8_set_const_items), and the registered constant item arrays.
bool& const_items_flag() {
  static bool on = env_choice("FLASHSTAR_Q8_CONST_ITEMS", 0, 1, 0) == 1;
  return on;
}
std::mutex const_mu;
std::vector<const int32_t*>& const_items() {
  static std::vector<const int32_t*> v;
  return v;
}
bool is_const_items(const int32_t* mat) {
  if (!const_items_flag()) return false;
  std::lock_guard<std::mutex> lock(const_mu);
  return std::find(const_items().begin(), const_items().end(), mat) != const_items().end();
}

template <int NT>
bool run(Args a, int64_t cols, int64_t groups, cudaStream_t s) {
  const Device& dev = device<NT, false>();
  if (dev.sms <= 0) return false;
  const int64_t k = cols / kPieceCols;
  if (k < 1) return false;
  for (int m = 0; m < a.nm; ++m) {
    Mat& mt = a.m[m];
    const int64_t upg = (mt.n + kRows - 1) / kRows, units = (m == 0 ? groups : 1) * upg;
    if (mt.n >= (int64_t{1} << 31) || units >= (int64_t{1} << 30) || k * units >= (int64_t{1} << 30)) return false;
    mt.upg = static_cast<int>(upg), mt.units = static_cast<int>(units);
    mt.grid = static_cast<int>(std::min<int64_t>(units, dev.sms));
  }
  a.k = static_cast<int>(k);
  a.kmagic = ((uint64_t{1} << 40) + static_cast<uint64_t>(k) - 1) / static_cast<uint64_t>(k);
  // A pair: both partitions side by side where they fit the device at once, else overlaid (block b runs
  // share b of matrix 0, then of matrix 1, its copies for the second already in flight during the first).
  a.overlay = a.nm == 2 && a.m[0].grid + a.m[1].grid > dev.sms;
  const int grid = a.nm == 1 ? a.m[0].grid : a.overlay ? std::max(a.m[0].grid, a.m[1].grid) : a.m[0].grid + a.m[1].grid;
  int slots = NT;
  if (a.mat) {  // distinct activation rows of each block's units (as the kernel cuts them)
    slots = 1;
    const int64_t units = a.m[0].units, upg = a.m[0].upg;
    for (int b = 0; b < grid; ++b) {
      const int64_t u0 = units * b / grid, u1 = units * (b + 1) / grid;
      if (u0 < u1) slots = std::max<int64_t>(slots, ((u1 - 1) / upg) / a.src_div - (u0 / upg) / a.src_div + 1);
      if (smem_bytes(slots, a.k) > static_cast<size_t>(dev.smem)) return false;
    }
  }
  const size_t sm = smem_bytes(slots, a.k);
  if (sm > static_cast<size_t>(dev.smem)) return false;
  a.slot_bytes = a.k * kDigitBytes;
  a.off_sc = kRingBytes + kPartBytes + slots * a.slot_bytes;
  bool lean = lean_flag() && device<NT, true>().sms > 0;
  for (int m = 0; m < a.nm; ++m) {  // job_at<true>'s products in 32 bits
    const int64_t units = a.m[m].units, g = a.m[m].grid, per_block = (units + g - 1) / g;
    // div_k's operands (stages of a block, and the digit loop's slots x pieces) times k below 2^40
    lean = lean && units * g < (int64_t{1} << 31) && per_block * a.k * kWarps < (int64_t{1} << 31) &&
           (per_block + slots) * a.k * a.k < (int64_t{1} << 40) && (per_block + slots) * a.k < (int64_t{1} << 23);
  }
  last_lean = lean;
  if constexpr (NT == 1) {  // items (one token): a constant array's kernel where its device setup took
    if (a.mat_const && (lean ? device<1, true, true>().sms : device<1, false, true>().sms) > 0) {
      if (lean) q8_mma_stream<1, true, true><<<grid, kThreads, sm, s>>>(a);
      else q8_mma_stream<1, false, true><<<grid, kThreads, sm, s>>>(a);
      FS_CUDA_LAUNCH_CHECK();
      return true;
    }
  }
  if (lean) q8_mma_stream<NT, true><<<grid, kThreads, sm, s>>>(a);
  else q8_mma_stream<NT, false><<<grid, kThreads, sm, s>>>(a);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

Mat plain_mat(const DMat& W, int64_t row0, int64_t n, float* Y, int64_t ys) {
  Mat m{};
  m.W = W.data, m.n = n, m.row0 = row0, m.Y = Y, m.ys = ys;
  return m;
}
Args plain_args(const float* X, int64_t n_tok, int64_t xs, int64_t rb) {
  Args a{};
  a.nm = 1, a.rb = rb, a.mat = nullptr, a.src_div = 1, a.X = X, a.xs = xs, a.nt = static_cast<int>(n_tok);
  a.act = kActPlain;
  return a;
}
bool launch_plain(const Args& a, int64_t cols, cudaStream_t s) {
  return a.nt == 1 ? run<1>(a, cols, 1, s) : run<2>(a, cols, 1, s);
}

// The layout fast_matvec_q8.cu's takes() asks of a Q8_0 product (the public entries below check it here).
bool layout_ok(const DMat& W, const float* X, int64_t xs) {
  return W.type == GgmlType::Q8_0 && W.cols > 0 && W.cols % kPieceCols == 0 && W.row_bytes % 16 == 0 &&
         W.row_bytes >= static_cast<size_t>(W.cols / 32 * 34) && W.row_bytes < (size_t{1} << 27) &&
         aligned16(W.data) && aligned16(X) && xs % 4 == 0 && xs >= 0;
}
// Rows [p, p + (n - 1) s + len) and [q, ...) share no float.
bool disjoint(const float* p, int64_t ps, const float* q, int64_t qs, int64_t n, int64_t len) {
  const float *pe = p + (n - 1) * ps + len, *qe = q + (n - 1) * qs + len;
  return pe <= q || qe <= p;
}

}  // namespace
}  // namespace q8m

void q8_set_lean(bool on) { q8m::lean_flag() = on; }
bool q8_lean() { return q8m::lean_flag(); }
bool q8_last_launch_lean() { return q8m::last_lean; }
void q8_constant_items(const int32_t* mat, bool on) {
  std::lock_guard<std::mutex> lock(q8m::const_mu);
  auto& v = q8m::const_items();
  if (on) v.push_back(mat);
  else if (auto it = std::find(v.begin(), v.end(), mat); it != v.end()) v.erase(it);
}
void q8_set_const_items(bool on) { q8m::const_items_flag() = on; }
bool q8_const_items() { return q8m::const_items_flag(); }

bool q8_mma_matvec(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
                   int64_t ys, cudaStream_t s) {
  if (n_tok < 1 || n_tok > q8m::kMaxTok || n_rows <= 0) return false;
  q8m::Args a = q8m::plain_args(X, n_tok, xs, static_cast<int64_t>(W.row_bytes));
  a.m[0] = q8m::plain_mat(W, row0, n_rows, Y, ys);
  return q8m::launch_plain(a, W.cols, s);
}

bool q8_mma_items(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                  int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s) {
  if (rows_per_mat <= 0 || n_items <= 0 || src_div < 1 || !mat_of_item) return false;
  q8m::Args a = q8m::plain_args(X, 1, xs, static_cast<int64_t>(W.row_bytes));
  a.m[0] = q8m::plain_mat(W, 0, rows_per_mat, Y, ys);
  a.mat = mat_of_item, a.src_div = src_div, a.mat_const = q8m::is_const_items(mat_of_item);
  return q8m::run<1>(a, W.cols, n_items, s);
}

bool q8_decode_pair(const DMat& W0, int64_t n0, float* Y0, int64_t ys0, const DMat& W1, int64_t n1, float* Y1,
                    int64_t ys1, const float* X, int64_t n_tok, int64_t xs, cudaStream_t s) {
  if (n_tok < 1 || n_tok > q8m::kMaxTok || n0 <= 0 || n1 <= 0 || !q8m::layout_ok(W0, X, xs) ||
      !q8m::layout_ok(W1, X, xs) || W0.cols != W1.cols || W0.row_bytes != W1.row_bytes ||
      (std::min(n0, n1) < q8m::kRows && n0 != n1) || n0 > W0.rows || n1 > W1.rows)
    return false;
  q8m::Args a = q8m::plain_args(X, n_tok, xs, static_cast<int64_t>(W0.row_bytes));
  a.nm = 2;
  a.m[0] = q8m::plain_mat(W0, 0, n0, Y0, ys0);
  a.m[1] = q8m::plain_mat(W1, 0, n1, Y1, ys1);
  return q8m::launch_plain(a, W0.cols, s);
}

bool q8_decode_act(const DMat& W, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, const Q8Act& act,
                   float* Y, int64_t ys, cudaStream_t s) {
  const int64_t cols = W.cols;
  if (n_tok < 1 || n_tok > q8m::kMaxTok || n_rows <= 0 || n_rows > W.rows || !q8m::layout_ok(W, X, xs)) return false;
  q8m::Args a = q8m::plain_args(X, n_tok, xs, static_cast<int64_t>(W.row_bytes));
  a.m[0] = q8m::plain_mat(W, 0, n_rows, Y, ys);
  a.aw = act.w;
  switch (act.kind) {
    case Q8Act::Kind::RmsNorm:
      if (act.w && !aligned16(act.w)) return false;
      a.act = q8m::kActNorm, a.eps = act.eps;
      break;
    case Q8Act::Kind::Swiglu:
      if (!act.up || !aligned16(act.up) || act.up_stride % 4 || act.up_stride < 0) return false;
      a.act = q8m::kActSwiglu, a.lim = act.lim, a.up = act.up, a.ups = act.up_stride;
      break;
    default: break;
  }
  if (act.out) {  // other blocks read X (and up) while block 0 writes out
    if (!aligned16(act.out) || act.out_stride % 4 || act.out_stride < 0 ||
        !q8m::disjoint(act.out, act.out_stride, X, xs, n_tok, cols) ||
        (act.up && !q8m::disjoint(act.out, act.out_stride, act.up, act.up_stride, n_tok, cols)))
      return false;
    a.aout = act.out, a.aos = act.out_stride;
  }
  return q8m::launch_plain(a, cols, s);
}

}  // namespace flashstar::cuda::fast
