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
// Deterministic: integer sums are exact, float sums in a fixed order, no atomics, no workspace.
#include "cuda/fast_matvec_q8_mma.h"

#include <algorithm>

#include "cuda/cuda_util.h"

namespace flashstar::cuda::fast {
namespace q8m {
namespace {

constexpr int kWarps = 16, kThreads = 32 * kWarps, kStages = 2;
constexpr int kCopiesFull = kStageBytes / 16 / 32;  // 8 copies every lane makes per stage ...
constexpr int kCopies = kCopiesFull + 1;            // ... and a ninth for lanes 0-15 (272 in all)
static_assert(kCopiesFull * 32 + 16 == kStageBytes / 16);
constexpr int kRingBytes = kWarps * kStages * kStageBytes;
constexpr int kPartBytes = kWarps * 2 * 2 * kRows * 4;  // [warp][first / last unit][token][row]
constexpr int kMaxTok = 2;

struct Args {
  const uint8_t* W;
  int64_t rb;          // row stride in bytes
  int64_t n;           // rows per group: n_rows, or rows_per_mat for items
  int64_t row0;        // first weight row (plain products)
  const int32_t* mat;  // matrix of each item; null for plain products (one group of nt tokens)
  int32_t src_div;
  const float* X;
  int64_t xs;
  float* Y;
  int64_t ys;
  int nt;          // tokens (plain) or 1 (items)
  int k;           // pieces per row: stages per unit
  int upg;         // units per group
  int units;       // all units
  int slot_bytes;  // digits of one activation row: k * kDigitBytes
  int off_sc;      // shared-memory offset of the scales [slot][piece][half]
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

// Where unit u lies: its group (item), its own first row, and the first row of the 16-row window it
// streams. The last unit of a group slides its window back inside the group (rows before `first` are
// computed but not written) so that no row is clamped; groups shorter than 16 rows clamp instead.
struct Unit {
  int g;
  int64_t first, base;
};
__device__ __forceinline__ Unit unit_at(const Args& a, int u) {
  Unit r;
  r.g = u / a.upg;
  r.first = static_cast<int64_t>(u - r.g * a.upg) * kRows;
  r.base = min(r.first, max(a.n - kRows, int64_t{0}));
  return r;
}

// The copy side of a warp's pipeline: the next stage to fetch.
struct Fetch {
  int u, k;
  const uint8_t* rows;  // the unit's window in W; null until looked up
};
__device__ __forceinline__ void fetch(const Args& a, Fetch& f, const uint32_t (&goff)[kCopies], uint8_t* dst,
                                      int lane) {
  if (!f.rows) {
    const Unit un = unit_at(a, f.u);
    const int64_t w0 = a.mat ? static_cast<int64_t>(a.mat[un.g]) * a.n : a.row0;
    f.rows = a.W + (w0 + un.base) * a.rb;
  }
  const uint8_t* src = f.rows + static_cast<int64_t>(f.k) * kPieceBytes;
  asm("" : "+l"(src));  // one 64-bit add per copy, not the stage offset folded into each
#pragma unroll
  for (int i = 0; i < kCopiesFull; ++i) cp_async16(dst + i * 512, src + goff[i]);
  if (lane < 16) cp_async16(dst + kCopiesFull * 512, src + goff[kCopiesFull]);
  if (++f.k == a.k) f.k = 0, ++f.u, f.rows = nullptr;
}

template <int NT>
__global__ void __launch_bounds__(kThreads, 1) q8_mma_stream(const Args a) {
  const int u0 = static_cast<int>(static_cast<int64_t>(a.units) * blockIdx.x / gridDim.x);
  const int u1 = static_cast<int>(static_cast<int64_t>(a.units) * (blockIdx.x + 1) / gridDim.x);
  if (u0 >= u1) return;
  extern __shared__ __align__(16) uint8_t smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int K = a.k, L = (u1 - u0) * K;
  const int pa = static_cast<int>(static_cast<int64_t>(L) * warp / kWarps);
  const int pb = static_cast<int>(static_cast<int64_t>(L) * (warp + 1) / kWarps);
  const uint8_t* ring = smem + warp * (kStages * kStageBytes);
  uint8_t* ring_dst = smem + warp * (kStages * kStageBytes) + lane * 16;
  float* part = reinterpret_cast<float*>(smem + kRingBytes);
  uint8_t* dig = smem + kRingBytes + kPartBytes;
  float* scl = reinterpret_cast<float*>(smem + a.off_sc);

  // Copy i of this lane moves stage bytes 16 (32 i + lane): row r, 16-byte word w of its piece. Rows past
  // a short group repeat its last row (never written back).
  uint32_t goff[kCopies];
#pragma unroll
  for (int i = 0; i < kCopies; ++i) {
    const int idx = min(32 * i + lane, kStageBytes / 16 - 1), r = idx / 17, w = idx - 17 * r;
    goff[i] = static_cast<uint32_t>(min(static_cast<int64_t>(r), a.n - 1) * a.rb + 16 * w);
  }
  const int ufirst = u0 + pa / K;
  Fetch f{ufirst, pa % K, nullptr};
#pragma unroll
  for (int i = 0; i < kStages; ++i) {
    if (pa + i < pb) fetch(a, f, goff, ring_dst + i * kStageBytes, lane);
    cp_async_commit();
  }

  // While those are in flight: the activation rows [x0, x0 + nsl) as digits, one warp per (row, piece).
  int x0 = 0, nsl = NT;
  if (a.mat) {
    x0 = (u0 / a.upg) / a.src_div;
    nsl = ((u1 - 1) / a.upg) / a.src_div - x0 + 1;
  }
  {
    const int j = lane >> 2, t = lane & 3;
    const XCols xc = x_cols(j, t);
    for (int w = warp; w < nsl * K; w += kWarps) {
      const int sl = w / K, pc = w - sl * K;
      const float* xr = a.X + static_cast<int64_t>(x0 + sl) * a.xs + pc * kPieceCols + 32 * j;
      const float2 p = __ldg(reinterpret_cast<const float2*>(xr + xc.lo));
      const float2 q = __ldg(reinterpret_cast<const float2*>(xr + xc.lo + 2));
      const float2 r = __ldg(reinterpret_cast<const float2*>(xr + xc.hi_a));
      const float2 s = __ldg(reinterpret_cast<const float2*>(xr + xc.hi_b));
      const float x[8] = {p.x, p.y, q.x, q.y, r.x, r.y, s.x, s.y};
      float amax = 0.0f;
      bool finite = true;
#pragma unroll
      for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(x[i])), finite &= fabsf(x[i]) <= 3.4028235e38f;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      finite = __all_sync(0xffffffffu, finite);
      const int E = finite ? piece_exponent(amax) : 0;
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
  float acc0 = 0.0f, acc1 = 0.0f;  // rows g, g + 8 of this lane's token and digit half
  int cu = ufirst, ck = pa % K;
  Unit un = unit_at(a, cu);
  // This unit's digits (B registers of lane g, t) and scales (C columns of lane t).
  auto unit_slot = [&](const Unit& v) { return a.mat ? v.g / a.src_div - x0 : 0; };
  int us = unit_slot(un);
  const uint8_t* bl = dig + (us + bslot) * a.slot_bytes + b_offset(g, t);
  const float* sl = scl + (us + cslot) * K * 2 + h;
  float* yu = a.Y + (a.mat ? un.g : 0) * a.ys;
  for (int p = pa; p < pb; ++p) {
    const int it = p - pa;
    cp_async_wait<kStages - 1>();  // this lane's copies of stage p have landed ...
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
    if (p + kStages < pb) fetch(a, f, goff, ring_dst + (it % kStages) * kStageBytes, lane);  // ... refill it
    cp_async_commit();
    if (ck == K - 1 || p == pb - 1) {  // this warp's part of unit cu is done
      // Digit halves h = 0, 1 are lanes t, t ^ 1: their sum is the row's value for token t / 2.
      const float v0 = acc0 + __shfl_xor_sync(0xffffffffu, acc0, 1);
      const float v1 = acc1 + __shfl_xor_sync(0xffffffffu, acc1, 1);
      const int st0 = (cu - u0) * K;
      const bool whole = st0 >= pa && st0 + K <= pb;
      const int ps = cu == ufirst ? 0 : 1;  // a cut unit is the warp's first or its last
      if (h == 0 && tok < a.nt) {
        if (whole) {
          const int64_t r = un.base + g;
          if (r >= un.first && r < a.n) yu[tok * a.ys + r] = v0;
          if (r + 8 >= un.first && r + 8 < a.n) yu[tok * a.ys + r + 8] = v1;
        } else {
          float* pp = part + ((warp * 2 + ps) * 2 + tok) * kRows;
          pp[g] = v0, pp[g + 8] = v1;
        }
      }
      acc0 = acc1 = 0.0f;
      if (ck == K - 1 && p + 1 < pb) {
        ck = 0;
        un = unit_at(a, ++cu);
        us = unit_slot(un);
        bl = dig + (us + bslot) * a.slot_bytes + b_offset(g, t);
        sl = scl + (us + cslot) * K * 2 + h;
        yu = a.Y + (a.mat ? un.g : 0) * a.ys;
      }
    } else {
      ++ck;
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  // A unit that starts in this warp's range and ends past it: add the parts of the following warps (each
  // holds it as its first unit, slot 0) in warp order, and write the rows.
  if (pa >= pb) return;
  const int ul = u0 + (pb - 1) / K, s0 = (ul - u0) * K, s1 = s0 + K;
  if (s0 < pa || s1 <= pb) return;
  const int ps = ul == ufirst ? 0 : 1;
  const Unit ue = unit_at(a, ul);
  float* ye = a.Y + (a.mat ? ue.g : 0) * a.ys;
  for (int o = lane; o < kRows * a.nt; o += 32) {
    const int row = o % kRows, tk = o / kRows;
    float v = part[((warp * 2 + ps) * 2 + tk) * kRows + row];
    for (int w = warp + 1; w < kWarps; ++w) {
      const int qa = static_cast<int>(static_cast<int64_t>(L) * w / kWarps);
      const int qb = static_cast<int>(static_cast<int64_t>(L) * (w + 1) / kWarps);
      if (qa >= s1) break;
      if (qb > qa) v += part[((w * 2) * 2 + tk) * kRows + row];
    }
    const int64_t r = ue.base + row;
    if (r >= ue.first && r < a.n) ye[tk * a.ys + r] = v;
  }
}

struct Device {
  int sms = 0, smem = 0;  // multiprocessors; dynamic shared memory a block may opt into
};
// Asked once; the kernels' shared-memory limit raised to the device's. sms = 0: cannot run here.
template <int NT>
const Device& device() {
  static const Device d = [] {
    Device r;
    int dev = 0, per_sm = 0;
    auto ok = [](cudaError_t e) { return e == cudaSuccess; };
    if (!ok(cudaGetDevice(&dev)) || !ok(cudaDeviceGetAttribute(&r.sms, cudaDevAttrMultiProcessorCount, dev)) ||
        !ok(cudaDeviceGetAttribute(&r.smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) ||
        !ok(cudaFuncSetAttribute(q8_mma_stream<NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, r.smem)) ||
        !ok(cudaFuncSetAttribute(q8_mma_stream<NT>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 static_cast<int>(cudaSharedmemCarveoutMaxShared))) ||
        !ok(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, q8_mma_stream<NT>, kThreads,
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

// Units, grid, and the activation rows a block converts; false where the kernel does not take the shape.
template <int NT>
bool run(Args a, int64_t cols, int64_t groups, cudaStream_t s) {
  const Device& dev = device<NT>();
  if (dev.sms <= 0) return false;
  const int64_t k = cols / kPieceCols, upg = (a.n + kRows - 1) / kRows, units = groups * upg;
  if (a.n >= (int64_t{1} << 31) || units >= (int64_t{1} << 30) || k * units >= (int64_t{1} << 30)) return false;
  a.k = static_cast<int>(k), a.upg = static_cast<int>(upg), a.units = static_cast<int>(units);
  const int grid = static_cast<int>(std::min<int64_t>(units, dev.sms));
  int slots = NT;
  if (a.mat) {  // distinct activation rows of each block's units (as the kernel cuts them)
    slots = 1;
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
  q8_mma_stream<NT><<<grid, kThreads, sm, s>>>(a);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

}  // namespace
}  // namespace q8m

bool q8_mma_matvec(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n_tok, int64_t xs, float* Y,
                   int64_t ys, cudaStream_t s) {
  if (n_tok < 1 || n_tok > q8m::kMaxTok || n_rows <= 0) return false;
  q8m::Args a{};
  a.W = W.data, a.rb = static_cast<int64_t>(W.row_bytes), a.n = n_rows, a.row0 = row0, a.mat = nullptr, a.src_div = 1;
  a.X = X, a.xs = xs, a.Y = Y, a.ys = ys, a.nt = static_cast<int>(n_tok);
  return n_tok == 1 ? q8m::run<1>(a, W.cols, 1, s) : q8m::run<2>(a, W.cols, 1, s);
}

bool q8_mma_items(const DMat& W, int64_t rows_per_mat, const int32_t* mat_of_item, int32_t src_div, const float* X,
                  int64_t xs, int64_t n_items, float* Y, int64_t ys, cudaStream_t s) {
  if (rows_per_mat <= 0 || n_items <= 0 || src_div < 1 || !mat_of_item) return false;
  q8m::Args a{};
  a.W = W.data, a.rb = static_cast<int64_t>(W.row_bytes), a.n = rows_per_mat, a.row0 = 0, a.mat = mat_of_item;
  a.src_div = src_div, a.X = X, a.xs = xs, a.Y = Y, a.ys = ys, a.nt = 1;
  return q8m::run<1>(a, W.cols, n_items, s);
}

}  // namespace flashstar::cuda::fast
