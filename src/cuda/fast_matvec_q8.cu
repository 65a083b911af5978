// Q8_0 matrix-vector products for decode as a persistent streaming kernel.
//
// Geometry. A row piece is 256 columns of one row: 8 Q8_0 blocks, 272 bytes, 16-byte aligned in every
// row when cols % 256 == 0. A stage is 32 row pieces (8704 bytes): rs rows x (32 / rs) consecutive
// pieces, rs in {32, 16, 8, 4}. A unit is rs rows x all columns (k stages). Each warp owns a ring of
// kStages stages in shared memory filled with 16-byte cp.async copies: the next stage is in flight
// while it computes one, also across unit boundaries, so the stream never drains between rows. Two
// blocks of four warps per SM keep ~70 KB per SM in flight, about twice what 4.3 TB/s at ~1 us of
// loaded latency needs, and leave ~90 KB of L1 for the activations, which are prefetched into L1 a
// stage ahead (each unit reads its columns once, and an L2 miss inside the dot products would stall
// far longer than the products take).
//
// Work split. The grid is as many blocks as are resident at once (occupancy queried once). Blocks
// take contiguous ranges of units (never part of one), and a block's (unit, stage) sequence is cut
// into kWarps equal contiguous ranges, one per warp. A unit cut between warps leaves per-row partial
// sums in shared memory, added in warp order after one __syncthreads: deterministic, no workspace,
// no atomics. rs is chosen per shape: short matrices take small rs so that every SM gets units
// (q_a, kv: rs 4), long ones rs 32 (one activation load serves more rows).
//
// Lanes. Lane pair j of a stage owns rows rp and rp + rs/2 (rp = j / C) of piece column s = j % C
// (C = 32 / rs); lane h of the pair takes 4 of the 8 blocks (136 bytes, 8-byte aligned, so 17
// conflict-free 8-byte shared loads per row and every byte position known at compile time). Each
// activation float4 serves two rows, and lanes sharing a piece column load the same address (L1
// broadcast). Per weight: a byte permute that puts the int8 (offset by 128 through one xor per four
// weights) into the mantissa of 2^23, a subtract, and one fma per token; the block scale multiplies
// the 32-term sum once.
#include "cuda/device_info.h"
#include "cuda/fast_matvec_q8.h"

#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/cuda_util.h"
#include "cuda/fast_matvec_q8_mma.h"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps, kMinBlocks = 2;
constexpr int kStages = 2;
constexpr int kPieceCols = 256, kPieceBytes = 272, kHalfBytes = kPieceBytes / 2;
constexpr int kStageBytes = 32 * kPieceBytes;
constexpr int kCopies = kStageBytes / 16 / 32;  // 16-byte copies per lane per stage (17)
constexpr int kMaxTok = 8;
static_assert(kCopies * 16 * 32 == kStageBytes);

struct Args {
  const uint8_t* W;
  int64_t rb;    // row stride in bytes
  int64_t n;     // rows per group: n_rows, or rows_per_mat for items
  int64_t row0;  // first weight row (plain products)
  const int32_t* mat;  // matrix of each item; null for plain products (one group of nt tokens)
  int32_t src_div;
  const float* X;
  int64_t xs;
  float* Y;
  int64_t ys;
  int nt;     // tokens (plain) or 1 (items)
  int rs;     // rows per unit
  int lc;     // log2 of pieces per stage row (C = 32 / rs)
  int k;      // stages per unit
  int upg;    // units per group
  int units;  // all units
  // 0x4B00 (exponent byte of 2^23), passed in: a byte permute takes one immediate, and with both the
  // selector and this operand constant the compiler keeps this one immediate and re-materializes the
  // selector from a uniform register for every byte (two more instructions per weight).
  uint32_t magic;
};

// Row pieces are 272 bytes at 16-byte offsets: whole 128-byte L2 lines per DRAM fetch, the rest of a
// line being the neighbouring piece that the same warp copies next (or has copied).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void prefetch_l1(const void* p) { asm volatile("prefetch.global.L1 [%0];" ::"l"(p)); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Word k of a run of weight bytes in shared memory: 8-byte loads where the run is 8-byte aligned
// (the compiler keeps one load per pair of words), 4-byte loads otherwise.
struct Words8 {
  const uint2* p;
  __device__ __forceinline__ uint32_t operator()(int k) const {
    const uint2 v = p[k >> 1];
    return (k & 1) ? v.y : v.x;
  }
};
struct Words4 {
  const uint32_t* p;
  __device__ __forceinline__ uint32_t operator()(int k) const { return p[k]; }
};
// Byte pos of w as the exact float of its int8: xor 0x80 makes it q + 128, placed in the mantissa of
// 2^23 (I2F would run at an eighth of the FMA rate). The xor of a word is shared by its four bytes.
__device__ __forceinline__ float q8(uint32_t w, int pos, uint32_t magic) {
  return __int_as_float(__byte_perm(w ^ 0x80808080u, magic, 0x5440u | pos)) - 8388736.0f;
}
__device__ __forceinline__ float f16_at(uint32_t w, bool hi) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(hi ? w >> 16 : w & 0xffffu)));
}

// Blocks 0..NB-1 of a run (block b at byte 34 b: f16 scale, then 32 int8) of rows A and B against
// the activations at x, one fp32 sum of 32 products per block and row, then one fma with the scale.
// Tokens past nt read token nt - 1 (their sums are never stored): no predicated loads, whose
// zero-filled destinations cost a move each.
template <int NT, int NB, typename Words>
__device__ __forceinline__ void blocks_dot(Words wa, Words wb, const float* x, int64_t xs, int nt, uint32_t magic,
                                           float (&acc_a)[NT], float (&acc_b)[NT]) {
  const float* xt[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) xt[t] = x + min(t, nt - 1) * xs;
#pragma unroll
  for (int blk = 0; blk < NB; ++blk) {
    float sa[NT], sb[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) sa[t] = sb[t] = 0.0f;
    // Eight tokens: quarters one at a time, or the compiler hoists every activation load and spills.
    constexpr int kUnrollQ = NT >= 8 ? 1 : 4;
#pragma unroll kUnrollQ
    for (int q = 0; q < 4; ++q) {
      float xv[NT][8];
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        const float4* p = reinterpret_cast<const float4*>(xt[t] + 32 * blk + 8 * q);
        const float4 lo = __ldg(p), hi = __ldg(p + 1);
        xv[t][0] = lo.x, xv[t][1] = lo.y, xv[t][2] = lo.z, xv[t][3] = lo.w;
        xv[t][4] = hi.x, xv[t][5] = hi.y, xv[t][6] = hi.z, xv[t][7] = hi.w;
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int byte = 34 * blk + 2 + 8 * q + i;
        const float fa = q8(wa(byte >> 2), byte & 3, magic), fb = q8(wb(byte >> 2), byte & 3, magic);
#pragma unroll
        for (int t = 0; t < NT; ++t) sa[t] = fmaf(fa, xv[t][i], sa[t]), sb[t] = fmaf(fb, xv[t][i], sb[t]);
      }
    }
    const int dbyte = 34 * blk;
    const float da = f16_at(wa(dbyte >> 2), dbyte & 2), db = f16_at(wb(dbyte >> 2), dbyte & 2);
#pragma unroll
    for (int t = 0; t < NT; ++t) acc_a[t] = fmaf(da, sa[t], acc_a[t]), acc_b[t] = fmaf(db, sb[t], acc_b[t]);
  }
}

// One stage's share of a lane: 4 blocks (128 columns, 136 bytes at an 8-byte aligned offset) of rows
// A and B. With 8 tokens the fully unrolled run spills (the compiler hoists activation loads):
// two passes over pairs of blocks (68 bytes, 4-byte aligned) with the quarters rolled instead.
template <int NT>
__device__ __forceinline__ void stage_dot(const uint8_t* pa, const uint8_t* pb, const float* x, int64_t xs, int nt,
                                          uint32_t magic, float (&acc_a)[NT], float (&acc_b)[NT]) {
  if constexpr (NT <= 4) {
    blocks_dot<NT, 4>(Words8{reinterpret_cast<const uint2*>(pa)}, Words8{reinterpret_cast<const uint2*>(pb)}, x, xs,
                      nt, magic, acc_a, acc_b);
  } else {
#pragma unroll 1
    for (int pp = 0; pp < 2; ++pp)
      blocks_dot<NT, 2>(Words4{reinterpret_cast<const uint32_t*>(pa + 68 * pp)},
                        Words4{reinterpret_cast<const uint32_t*>(pb + 68 * pp)}, x + 64 * pp, xs, nt, magic, acc_a,
                        acc_b);
  }
}

// Where unit u lies: its group (item), its own first row, and the first row of the rs-row window it
// streams. The last unit of a group slides its window back inside the group (rows before `first`
// are computed but not written) so that no row is clamped; groups shorter than rs clamp instead.
struct Unit {
  int g;
  int64_t first, base;
};
__device__ __forceinline__ Unit unit_at(const Args& a, int u) {
  Unit r;
  r.g = u / a.upg;
  r.first = static_cast<int64_t>(u - r.g * a.upg) * a.rs;
  r.base = min(r.first, max(a.n - a.rs, int64_t{0}));
  return r;
}

// The copy side of a warp's pipeline: the next stage to fetch.
struct Fetch {
  int u, k;
  const uint8_t* rows;  // the unit's window in W; null until looked up
  const float* x;       // the unit's activation row
};
__device__ __forceinline__ void fetch(const Args& a, Fetch& f, const uint32_t (&goff)[kCopies], uint8_t* dst,
                                      int lane) {
  if (!f.rows) {
    const Unit un = unit_at(a, f.u);
    const int64_t w0 = a.mat ? static_cast<int64_t>(a.mat[un.g]) * a.n : a.row0;
    f.rows = a.W + (w0 + un.base) * a.rb;
    f.x = a.X + (a.mat ? un.g / a.src_div : 0) * a.xs;
  }
  const uint8_t* src = f.rows + static_cast<int64_t>(f.k) * (kPieceBytes << a.lc);
  // Opaque to the compiler, so that each copy costs one 64-bit add: otherwise it folds the stage
  // offset into every copy's address (a wide multiply-add and two moves more per copy).
  asm("" : "+l"(src));
#pragma unroll
  for (int i = 0; i < kCopies; ++i) cp_async16(dst + i * 512, src + goff[i]);
  // The stage's activations into L1 now, a stage before they are used: a unit reads its columns
  // once, so they are rarely in L1 already, and a miss on L2 latency inside the dot products stalls
  // the warp far longer than the products take. Lines of 32 floats; the last one covers the end of
  // a slice that starts off a line boundary.
  {
    const int per_tok = (8 << a.lc) + 1, span = (kPieceCols << a.lc) - 4;
    const float* xs0 = f.x + static_cast<int64_t>(f.k) * (kPieceCols << a.lc);
    for (int t = 0; t < a.nt; ++t)
      for (int line = lane; line < per_tok; line += 32) prefetch_l1(xs0 + t * a.xs + min(32 * line, span));
  }
  if (++f.k == a.k) f.k = 0, ++f.u, f.rows = nullptr;
}

template <int NT>
__global__ void __launch_bounds__(kThreads, kMinBlocks) q8_stream(const Args a) {
  pdl_wait();
  const int u0 = static_cast<int>(static_cast<int64_t>(a.units) * blockIdx.x / gridDim.x);
  const int u1 = static_cast<int>(static_cast<int64_t>(a.units) * (blockIdx.x + 1) / gridDim.x);
  if (u0 >= u1) return;
  extern __shared__ __align__(16) uint8_t smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int K = a.k, C = 1 << a.lc, L = (u1 - u0) * K;
  const int pa = static_cast<int>(static_cast<int64_t>(L) * warp / kWarps);
  const int pb = static_cast<int>(static_cast<int64_t>(L) * (warp + 1) / kWarps);
  const uint8_t* ring = smem + warp * (kStages * kStageBytes);
  uint8_t* ring_dst = smem + warp * (kStages * kStageBytes) + lane * 16;
  float* part = reinterpret_cast<float*>(smem + kWarps * kStages * kStageBytes);  // [warp][slot][NT][32]

  const int j = lane >> 1, h = lane & 1, s = j & (C - 1), rp = j >> a.lc;
  const int off_a = (rp * C + s) * kPieceBytes + h * kHalfBytes;
  const int off_b = off_a + 16 * kPieceBytes;  // row rp + rs/2: (rs/2) * C pieces further on
  const int xcol = s * kPieceCols + h * (kPieceCols / 2);
  // Copy i of this lane moves 16 bytes: stage byte 16 * (32 i + lane), i.e. row r, byte w of the
  // row's C pieces. Rows past a short group repeat its last row (never written back).
  uint32_t goff[kCopies];
#pragma unroll
  for (int i = 0; i < kCopies; ++i) {
    const int idx = 32 * i + lane, per_row = 17 << a.lc;
    const int r = idx / per_row, w = idx - r * per_row;
    goff[i] = static_cast<uint32_t>(min(static_cast<int64_t>(r), a.n - 1) * a.rb + 16 * w);
  }

  const int ufirst = u0 + pa / K;
  Fetch f{ufirst, pa % K, nullptr, nullptr};
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (pa + i < pb) fetch(a, f, goff, ring_dst + i * kStageBytes, lane);
    cp_async_commit();
  }

  float acc_a[NT], acc_b[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) acc_a[t] = acc_b[t] = 0.0f;
  int cu = ufirst, ck = pa % K;
  Unit un = unit_at(a, cu);
  const float* xu = a.X + (a.mat ? un.g / a.src_div : 0) * a.xs;
  float* yu = a.Y + (a.mat ? un.g : 0) * a.ys;
  for (int p = pa; p < pb; ++p) {
    const int it = p - pa;
    // Refill the slot computed last iteration (the __syncwarp below ended its reads).
    if (p + kStages - 1 < pb) fetch(a, f, goff, ring_dst + ((it + kStages - 1) % kStages) * kStageBytes, lane);
    cp_async_commit();
    cp_async_wait<kStages - 1>();  // this lane's copies of stage p have landed ...
    __syncwarp();                  // ... and every other lane's
    const uint8_t* st = ring + (it % kStages) * kStageBytes;
    stage_dot<NT>(st + off_a, st + off_b, xu + static_cast<int64_t>(ck) * (kPieceCols << a.lc) + xcol, a.xs, a.nt,
                  a.magic, acc_a, acc_b);
    __syncwarp();
    if (ck == K - 1 || p == pb - 1) {  // this warp's part of unit cu is done
      // Lanes 2C apart in the lane index hold the same rows: a fixed butterfly adds them up.
#pragma unroll
      for (int t = 0; t < NT; ++t)
        for (int o = 1; o <= C; o <<= 1) {
          acc_a[t] += __shfl_xor_sync(0xffffffffu, acc_a[t], o);
          acc_b[t] += __shfl_xor_sync(0xffffffffu, acc_b[t], o);
        }
      const int st0 = (cu - u0) * K;
      const bool whole = st0 >= pa && st0 + K <= pb;
      const int slot = cu == ufirst ? 0 : 1;  // a cut unit is the warp's first or its last
      if ((lane & (2 * C - 1)) == 0) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = rp + half * (a.rs >> 1);
          const float* v = half ? acc_b : acc_a;
          const int64_t r = un.base + row;
          if (whole) {
            if (r >= un.first && r < a.n) {
#pragma unroll
              for (int t = 0; t < NT; ++t)
                if (t < a.nt) yu[t * a.ys + r] = v[t];
            }
          } else {
#pragma unroll
            for (int t = 0; t < NT; ++t) part[((warp * 2 + slot) * NT + t) * 32 + row] = v[t];
          }
        }
      }
#pragma unroll
      for (int t = 0; t < NT; ++t) acc_a[t] = acc_b[t] = 0.0f;
      if (ck == K - 1 && p + 1 < pb) {
        ck = 0;
        un = unit_at(a, ++cu);
        xu = a.X + (a.mat ? un.g / a.src_div : 0) * a.xs;
        yu = a.Y + (a.mat ? un.g : 0) * a.ys;
      }
    } else {
      ++ck;
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  // A unit that starts in this warp's range and ends past it: add the parts of the following warps
  // (each holds it as its first unit, slot 0) in warp order, and write the rows.
  if (pa >= pb) return;
  const int ul = u0 + (pb - 1) / K, s0 = (ul - u0) * K, s1 = s0 + K;
  if (s0 < pa || s1 <= pb) return;
  const int slot = ul == ufirst ? 0 : 1;
  const Unit ue = unit_at(a, ul);
  float* ye = a.Y + (a.mat ? ue.g : 0) * a.ys;
  for (int o = lane; o < a.rs * a.nt; o += 32) {
    const int row = o % a.rs, t = o / a.rs;
    float v = part[((warp * 2 + slot) * NT + t) * 32 + row];
    for (int w = warp + 1; w < kWarps; ++w) {
      const int qa = static_cast<int>(static_cast<int64_t>(L) * w / kWarps);
      const int qb = static_cast<int>(static_cast<int64_t>(L) * (w + 1) / kWarps);
      if (qa >= s1) break;
      if (qb > qa) v += part[((w * 2) * NT + t) * 32 + row];
    }
    const int64_t r = ue.base + row;
    if (r >= ue.first && r < a.n) ye[t * a.ys + r] = v;
  }
}

template <int NT>
constexpr size_t smem_bytes() {
  return static_cast<size_t>(kWarps) * kStages * kStageBytes +
         static_cast<size_t>(kWarps) * 2 * NT * 32 * sizeof(float);  // the ring, then the partial sums
}

// Resident blocks of the whole device, asked once per instantiation (0: the kernel cannot run here).
// The shared memory carveout asks for kMinBlocks blocks' worth: left to itself the driver sizes it for
// as many blocks as the registers allow, which leaves L1 too small to hold the prefetched activations.
template <int NT>
int64_t resident_blocks() {
  static const int64_t n = [] {
    int dev = 0, sms = 0, per_sm = 0, sm_max = 0;
    const int sm = static_cast<int>(smem_bytes<NT>());
    auto ok = [](cudaError_t e) { return e == cudaSuccess; };
    if (!ok(cudaGetDevice(&dev)) || !ok(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) ||
        !ok(cudaDeviceGetAttribute(&sm_max, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev)) || sm_max <= 0 ||
        !ok(cudaFuncSetAttribute(q8_stream<NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, sm))) {
      (void)cudaGetLastError();
      return int64_t{0};
    }
    const int64_t want = int64_t{kMinBlocks} * (sm + 1024);  // 1 KB per block is reserved by the system
    const int pct = static_cast<int>(std::min<int64_t>(100, (100 * want + sm_max - 1) / sm_max));
    for (int carve : {pct, static_cast<int>(cudaSharedmemCarveoutMaxShared)}) {
      per_sm = 0;
      if (ok(cudaFuncSetAttribute(q8_stream<NT>, cudaFuncAttributePreferredSharedMemoryCarveout, carve)) &&
          ok(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, q8_stream<NT>, kThreads, sm)) &&
          per_sm >= kMinBlocks)
        break;
    }
    (void)cudaGetLastError();
    return static_cast<int64_t>(sms) * std::min(per_sm, kMinBlocks);  // the grid L1 was sized for
  }();
  return n;
}

// Rows per unit: the block count the card holds bounds the time by ceil(units / blocks) units of k
// stages each. Take the largest rs within 5% of the best such bound (more rows share each
// activation load; fewer distinct activation addresses per load).
bool plan(Args& a, int64_t cols, int64_t groups, int64_t blocks) {
  // Unit and stage indices are 32-bit in the kernel (the most units come with rs = 4).
  if (a.n >= (int64_t{1} << 32) || groups >= (int64_t{1} << 30) || groups * ((a.n + 3) / 4) >= (int64_t{1} << 30))
    return false;
  const int64_t pieces = cols / kPieceCols;
  int64_t cost[4], best = INT64_MAX;
  for (int lc = 0; lc < 4; ++lc) {
    cost[lc] = INT64_MAX;
    if (pieces % (1 << lc)) continue;
    const int64_t rs = 32 >> lc, units = groups * ((a.n + rs - 1) / rs);
    cost[lc] = (units + blocks - 1) / blocks * (pieces >> lc);
    best = std::min(best, cost[lc]);
  }
  int lc = 0;
  while (cost[lc] == INT64_MAX || cost[lc] * 20 > best * 21) ++lc;
  a.lc = lc, a.rs = 32 >> lc, a.k = static_cast<int>(pieces >> lc);
  const int64_t upg = (a.n + a.rs - 1) / a.rs, units = groups * upg;
  if ((units / std::min(units, blocks) + 1) * a.k >= (int64_t{1} << 30)) return false;
  a.upg = static_cast<int>(upg), a.units = static_cast<int>(units);
  return true;
}

template <int NT>
bool run(Args a, int64_t cols, int64_t groups, cudaStream_t s) {
  const int64_t blocks = resident_blocks<NT>();
  if (blocks <= 0 || !plan(a, cols, groups, blocks)) return false;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(blocks, a.units));
  q8_stream<NT><<<grid, kThreads, smem_bytes<NT>(), s>>>(a);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}


// Shapes the kernel takes: 256-column pieces 16-byte aligned in every row, float4 activation loads,
// and copy offsets (31 rows of stride) within 32 bits.
bool takes(const DMat& W, const float* X, int64_t xs) {
  return W.type == GgmlType::Q8_0 && W.cols > 0 && W.cols % kPieceCols == 0 && W.row_bytes % 16 == 0 &&
         W.row_bytes >= static_cast<size_t>(W.cols / 32 * 34) && W.row_bytes < (size_t{1} << 27) && aligned16(W.data) &&
         aligned16(X) && xs % 4 == 0 && xs >= 0;
}

}  // namespace

bool q8_matvec(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
               int64_t ys, cudaStream_t s) {
  if (!takes(W, X, xs) || n_tok > kMaxTok) return false;
  if (n_rows <= 0 || n_tok <= 0) return true;
  // One or two tokens: the INT8 tensor-core kernel (fast_matvec_q8_mma.cu) where it takes the shape.
  if (n_tok <= 2 && q8_mma_matvec(W, row0, n_rows, X, n_tok, xs, Y, ys, s)) return true;
  Args a{};
  a.magic = 0x4B00u;
  a.W = W.data, a.rb = static_cast<int64_t>(W.row_bytes), a.n = n_rows, a.row0 = row0, a.mat = nullptr, a.src_div = 1;
  a.X = X, a.xs = xs, a.Y = Y, a.ys = ys, a.nt = static_cast<int>(n_tok);
  if (n_tok == 1) return run<1>(a, W.cols, 1, s);
  if (n_tok == 2) return run<2>(a, W.cols, 1, s);
  if (n_tok <= 4) return run<4>(a, W.cols, 1, s);
  return run<8>(a, W.cols, 1, s);
}

bool q8_matvec_items(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                     int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s) {
  if (!takes(W, X, xs) || src_div < 1 || mat_of_item == nullptr) return false;
  if (rows_per_mat <= 0 || n_items <= 0) return true;
  if (q8_mma_items(W, rows_per_mat, mat_of_item, src_div, X, xs, n_items, Y, ys, s)) return true;
  Args a{};
  a.magic = 0x4B00u;
  a.W = W.data, a.rb = static_cast<int64_t>(W.row_bytes), a.n = rows_per_mat, a.row0 = 0, a.mat = mat_of_item;
  a.src_div = src_div, a.X = X, a.xs = xs, a.Y = Y, a.ys = ys, a.nt = 1;
  return run<1>(a, W.cols, n_items, s);
}

}  // namespace flashstar::cuda::fast
