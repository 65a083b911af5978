// The routed-expert kernel's last phases (the fused swiglu, the tables, the row stores: shared by
// expert_mma_kernel and V3) and the V3 kernel. A part of fast_expert_mma.cu: included there inside
// namespace emma, after the staging and the block products.
//
// V3 (FLASHSTAR_EXPERT_V=3; fast_expert_plan.h: plan_v3): fused mode 1 with one activation row (decode),
// persistent blocks. At decode V1 runs 256 blocks of 24 warps, one an SM, two waves: each warp stages one
// chunk, waits the whole DRAM latency, computes 32 k-steps, and each block first pays the tables, the
// digits and its coordinates (~31% of the instructions). V3 runs min(virtual blocks, SMs) blocks of 16 warps;
// block b runs the virtual blocks vb = b, b + gridDim.x, ... of V1's grid shape (row group vb % gx, item
// group vb / gx), forms the tables and digits once, and gives each warp two buffers: the chunk of its next
// virtual block is in flight while the current one is computed. Same column parts (the plain plan's KS),
// same k order in a part, same combine order and swiglu element as V1: bitwise its outputs.
#pragma once

// Row-group tickets of fused mode 2 (a gate block and an up block each), zero between launches; one set
// per ticket lane (stream_lanes.h), so launches on a decode fork's two streams never share one.
constexpr int kMaxTickets = 16384;
__device__ int g_pair_tickets[kTicketLanes * kMaxTickets];

// The fused launch's swiglu over the block's G T 16 rows, after every warp's sums are stored: mode 1 reads
// both matrices' sums from res (gate rows first), mode 2 runs in the last of the row group's two blocks and
// reads both from global memory (L2, where the other block's fenced stores are). The element is
// cuda::swiglu's, times the item's weight as that kernel multiplies it.
template <int kPair>
__device__ __forceinline__ void pair_swiglu(const Params& p, const float* res, int64_t i0, int64_t i1, int64_t bx,
                                            int64_t by) {
  int* ticket = g_pair_tickets + p.lane * kMaxTickets + by * (gridDim.x >> 1) + bx;
  if constexpr (kPair == 1) __syncthreads();
  else if (!last_to_finish(ticket, 2)) return;
  const int n = p.G * p.T * kRows;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int q = i / kRows;
    const int64_t item = i0 + q / p.T, r = (bx * p.T + q % p.T) * kRows + i % kRows;
    if (item >= i1 || r >= p.rpm) continue;
    const int64_t o = item * p.ys + r;
    const float g = kPair == 1 ? res[i] : __ldcg(p.Y + o), u = kPair == 1 ? res[n + i] : __ldcg(p.Y2 + o);
    const float y = swiglu_el(g, u, p.lim);
    p.Y[o] = p.w ? __fmul_rn(y, p.w[item]) : y;  // the reference multiplies by 1 without a weight: exact
  }
  if (kPair == 2 && threadIdx.x == 0) *ticket = 0;
}

// The IQ2_XXS tables: 32 copies of each word, four per store; the grid table follows the sign table. A
// thread's first kPre words are tw (loaded early by the caller).
constexpr int kTab = (128 + 256) * 8;
template <int kPre>
__device__ __forceinline__ void fill_tables(uint8_t* smem, const uint32_t* tw) {
  uint4* st = reinterpret_cast<uint4*>(smem);
#pragma unroll
  for (int k = 0, i = threadIdx.x; k < kPre; ++k, i += blockDim.x)
    if (i < kTab) st[i] = make_uint4(tw[k], tw[k], tw[k], tw[k]);
  for (int i = threadIdx.x + kPre * blockDim.x; i < kTab; i += blockDim.x) {
    const uint32_t w = i < 128 * 8 ? g_sign[i >> 3] : g_grid[(i >> 3) - 128];
    st[i] = make_uint4(w, w, w, w);
  }
}

// V3's own phases below (v3_digits, v3_chunk): the first kernels have the same statements in their body.
// Moved into functions there, the compiler schedules and allocates those kernels differently (checked: all
// 18 instantiations' SASS changed), and their machine code must stay as it is; V3 has them as functions.

// The activation row (one: V3) in digits (terms), its block scales (sx) and Q2_K's 16-column sums (sums), a
// 256-column block a warp; the warp's first block is xu, xv (loaded early by the caller).
template <GgmlType T>
__device__ __forceinline__ void v3_digits(const Params& p, uint8_t* terms, float* sx, float* sums, int warp,
                                          int nwarps, int lane, float4 xu, float4 xv) {
  constexpr bool kIq2 = T == GgmlType::IQ2_XXS;
  for (int kb = warp; kb < p.nb; kb += nwarps) {
    if (kb != warp) {
      xu = __ldg(reinterpret_cast<const float4*>(p.X + kb * 256 + 8 * lane));
      xv = __ldg(reinterpret_cast<const float4*>(p.X + kb * 256 + 8 * lane + 4));
    }
    const float x[8] = {xu.x, xu.y, xu.z, xu.w, xv.x, xv.y, xv.z, xv.w};
    bool finite;
    const int E = digits::warp_exponent(x, kExpFloor, finite);
    uint32_t lo[4], hi[4];
    lane_digits(x, E, lo, hi);
    // Stores rotated by lane group (V1's): store i of group s = lane / 4 writes digit (i + s) % 4.
    uint8_t* d = terms + (kb * 8 + lane / 4) * 128 + 8 * (lane & 3);
#pragma unroll
    for (int i = 0, n = (lane >> 2) & 3; i < 4; ++i, n = (n + 1) & 3) {
      const uint32_t l = n & 2 ? (n & 1 ? lo[3] : lo[2]) : (n & 1 ? lo[1] : lo[0]);
      const uint32_t h = n & 2 ? (n & 1 ? hi[3] : hi[2]) : (n & 1 ? hi[1] : hi[0]);
      *reinterpret_cast<uint2*>(d + 32 * n) = make_uint2(l, h);
    }
    // x = s 2^-24 Y with s = 2^(E-5); IQ2_XXS folds its d / 8 in. A non-finite x makes the rows NaN.
    if (lane == 0) sx[kb] = finite ? as_f32(static_cast<uint32_t>((kIq2 ? 119 : 122) + E) << 23) : NAN;
    if constexpr (!kIq2) {  // sums of 16 columns for the mins (a lane holds half of one), V1's order
      float h = ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));
      h += __shfl_xor_sync(0xffffffffu, h, 1);
      if ((lane & 1) == 0) sums[kb * 16 + lane / 2] = h;
    }
  }
}

// Copy groups a chunk commits (stage<T, 1>): line windows (16-byte aligned rows), else Fmt's blocks.
template <GgmlType T>
__device__ __forceinline__ int v3_groups(const Params& p) {
  return p.fast ? eplan::Lines<T, 8>::kWindows : Fmt<T>::kChunk;
}
// Block b's wait count in nibble b for the warp's chunk c: ahead (the copy groups committed after the chunk's
// first) less the last group block b needs, group b (Fmt) or Lines::need(b) (line windows, chunk at delta).
template <GgmlType T>
__device__ __forceinline__ int v3_waits(const Params& p, int c, int ahead) {
  using Ln = eplan::Lines<T, 8>;
  const bool odd = p.fast && Fmt<T>::delta(c) != 0;  // chunk data 8 bytes into its buffer (IQ2_XXS)
  int waits = 0;
#pragma unroll
  for (int b = 0; b < Fmt<T>::kChunk; ++b)
    waits |= (ahead - (!p.fast ? b : odd ? Ln::need(b, Fmt<T>::kSlack) : Ln::need(b, 0))) << (4 * b);
  return waits;
}

// The warp's chunk c, staged in slot, into acc / mins, each block once its copy groups have landed (waits:
// v3_waits). V1's k order: blocks in order, in pairs (the sign words' alignment follows the parity).
template <GgmlType T>
__device__ __forceinline__ void v3_chunk(const Params& p, const uint8_t* slot, int c, int waits,
                                         const uint8_t* terms, const float* sx, const float* sums, const Lane& L,
                                         const Tabs& tabs, float (&acc)[4], float (&mins)[2]) {
  constexpr int kBytes = Fmt<T>::kBytes;
  // Copy groups in flight at most: two chunks of the larger group count.
  constexpr int kMaxAhead = 2 * (eplan::Lines<T, 8>::kWindows > Fmt<T>::kChunk ? eplan::Lines<T, 8>::kWindows
                                                                                  : Fmt<T>::kChunk) - 1;
  static_assert(kMaxAhead <= 15, "wait counts are nibbles");
  const uint8_t* pg = slot + (p.fast ? Fmt<T>::delta(c) : 0) + L.g * p.CS;
  const uint8_t* pg8 = pg + 8 * p.CS;
  const int kb0 = c * p.CB, nblk = min(p.CB, p.nb - kb0);
  for (int b = 0; b < nblk; b += 2) {
    const int kb = kb0 + b, o = b * kBytes;
    wait_count<0, kMaxAhead>(waits >> (4 * b) & 15);
    if constexpr (T == GgmlType::IQ2_XXS) iq2_block<false>(pg + o, pg8 + o, terms, kb, sx[kb], L, tabs, acc);
    else q2_block<true>(pg + o, pg8 + o, terms, sums, kb, sx[kb], L, acc, mins);
    if (b + 1 < nblk) {
      wait_count<0, kMaxAhead>(waits >> (4 * b + 4) & 15);
      const int o1 = o + kBytes;
      if constexpr (T == GgmlType::IQ2_XXS) iq2_block<true>(pg + o1, pg8 + o1, terms, kb + 1, sx[kb + 1], L, tabs, acc);
      else q2_block<true>(pg + o1, pg8 + o1, terms, sums, kb + 1, sx[kb + 1], L, acc, mins);
    }
  }
}

// The warp's row sums from acc / mins: rows g (y0) and g + 8 (y1) on lanes t = 0. V3's; the first kernels
// have the same statements in their body, where the compiler fused the products of wl acc[0] + wh acc[1]
// as spelled out here (IQ2_XXS the second, Q2_K the first: the choice followed the context, so V3 names it).
template <GgmlType T>
__device__ __forceinline__ void row_sums(const Lane& L, const float (&acc)[4], float (&mins)[2], float& y0, float& y1) {
  // Columns 2t, 2t + 1 hold digits of weight 2^(8 col - 24); lanes t = 0, 1 hold the four digits.
  const float wl = as_f32(static_cast<uint32_t>(103 + 16 * L.t) << 23), wh = wl * 256.0f;
  if constexpr (T == GgmlType::IQ2_XXS) {
    y0 = fmaf(wh, acc[1], __fmul_rn(wl, acc[0])), y1 = fmaf(wh, acc[3], __fmul_rn(wl, acc[2]));
  } else {
    y0 = fmaf(wl, acc[0], __fmul_rn(wh, acc[1])), y1 = fmaf(wl, acc[2], __fmul_rn(wh, acc[3]));
  }
  y0 += __shfl_xor_sync(0xffffffffu, y0, 1);  // t = 0: (digits 0, 1) + (digits 2, 3)
  y1 += __shfl_xor_sync(0xffffffffu, y1, 1);
  if constexpr (T == GgmlType::Q2_K) {  // the four lanes' mins, ((t0 + t1) + (t2 + t3))
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1)
      mins[0] += __shfl_xor_sync(0xffffffffu, mins[0], o), mins[1] += __shfl_xor_sync(0xffffffffu, mins[1], o);
    y0 -= mins[0], y1 -= mins[1];
  }
}

// Row sums y0 / y1 (lanes t = 0) to the warp's rows: kPair 0 / 2 to Y / Y2 (m), fused mode 1 to res (by
// slot qm); with column parts (KS > 1) through part, added in part order by the part-0 warp; then the fused
// modes' swiglu. Block-wide (__syncthreads): every warp of the block calls it.
template <int kPair>
__device__ __forceinline__ void finish(const Params& p, uint8_t* smem, float* part, const Lane& L, float y0, float y1,
                                       int lane, int warp, int kp, int qm, int m, bool live, int64_t item, int64_t r0,
                                       int64_t i0, int64_t i1, int64_t bx, int64_t by) {
  // Fused mode 1 keeps the sums in shared memory (res, by matrix, item and tile) for the swiglu.
  float* res = reinterpret_cast<float*>(smem + p.off_res);
  float* out = kPair == 1 ? res + qm * kRows : (m ? p.Y2 : p.Y) + (live ? item : 0) * p.ys + r0;
  if (p.KS == 1) {
    if (live && L.t == 0) {
      if (r0 + L.g < p.rpm) out[L.g] = y0;
      if (r0 + L.g + 8 < p.rpm) out[L.g + 8] = y1;
    }
    if constexpr (kPair == 0) return;
  } else {
    if (L.t == 0) part[warp * kRows + L.g] = y0, part[warp * kRows + L.g + 8] = y1;
    __syncthreads();
    if (live && kp == 0 && lane < kRows && r0 + lane < p.rpm) {
      float v = part[warp * kRows + lane];
      for (int k = 1; k < p.KS; ++k) v += part[(warp + k) * kRows + lane];  // parts in order
      out[lane] = v;
    }
  }
  if constexpr (kPair != 0) pair_swiglu<kPair>(p, res, i0, i1, bx, by);
}

// Virtual block v's coordinates for a warp of job wj (V3: item group v / gx of the one activation row).
struct VJob {
  int64_t bx, by, i0, i1, item, r0;
  bool live;
};
__device__ __forceinline__ VJob v_job(const Params& p, const eplan::WarpJob& wj, int gx, int v) {
  VJob j;
  const int by = v / gx, bx = v - by * gx;
  j.bx = bx, j.by = by;
  j.i0 = static_cast<int64_t>(by) * p.G;
  j.i1 = lmin(lmin(j.i0 + p.G, p.src_div), p.n_items);
  j.item = j.i0 + wj.qi, j.r0 = (static_cast<int64_t>(bx) * p.T + wj.qt) * kRows;
  j.live = j.item < j.i1 && j.r0 < p.rpm;
  return j;
}

// Stages the warp's chunk c of virtual block v (when it has rows there) into slot.
template <GgmlType T>
__device__ __forceinline__ void v_stage(const Params& p, const eplan::WarpJob& wj, int gx, int v, int c,
                                        uint8_t* slot, int lane) {
  const VJob j = v_job(p, wj, gx, v);
  if (!j.live) return;
  const uint8_t* W = wj.m ? p.W2 : p.W;
  stage<T, 1>(p, W + static_cast<size_t>(p.mat[j.item]) * p.rpm * p.row_bytes, j.r0, c, slot, lane);
}

// V3: fused mode 1, one activation row, blocks running the nvb virtual blocks of a gx x cpg grid.
template <GgmlType T>
__global__ void __launch_bounds__(eplan::kV3Warps * 32, 1) expert_v3_kernel(const Params p, int gx, int nvb) {
  // PDL-PROLOGUE: the IQ2_XXS tables are constants (init_expert_tables), filled before the wait.
  extern __shared__ __align__(16) uint8_t smem[];
  if constexpr (T == GgmlType::IQ2_XXS) fill_tables<0>(smem, nullptr);
  pdl_wait();
  uint8_t* terms = smem + p.off_terms;
  float* sx = reinterpret_cast<float*>(smem + p.off_sx);
  float* sums = reinterpret_cast<float*>(smem + p.off_sum);
  float* part = reinterpret_cast<float*>(smem + p.off_part);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const eplan::WarpJob wj = eplan::warp_job(p.wmap[warp]);
  const int c = wj.kp;  // the warp's chunk in every virtual block (cpp 1)
  const int step = static_cast<int>(gridDim.x);
  uint8_t* ring = smem + p.off_ring + static_cast<size_t>(warp) * 2 * kRows * p.CS;
  float4 xu = make_float4(0.0f, 0.0f, 0.0f, 0.0f), xv = xu;
  if (warp < p.nb) {
    const float* x0 = p.X + warp * 256 + 8 * lane;
    xu = __ldg(reinterpret_cast<const float4*>(x0)), xv = __ldg(reinterpret_cast<const float4*>(x0 + 4));
  }
  // The first two virtual blocks' chunks land while the activation row is converted.
  int v = static_cast<int>(blockIdx.x);
  v_stage<T>(p, wj, gx, v, c, ring, lane);
  if (v + step < nvb) v_stage<T>(p, wj, gx, v + step, c, ring + kRows * p.CS, lane);
  v3_digits<T>(p, terms, sx, sums, warp, nwarps, lane, xu, xv);
  __syncthreads();

  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const Lane L = lane_consts(lane, p.one);
  const Tabs tabs{base + p.off_grid + 4 * lane, 4u * lane, base, nullptr, nullptr};
  // Wait counts: in flight when a virtual block's chunk is computed are its copy groups, then those of the
  // next virtual block's chunk (staged one virtual block earlier, into the other slot) when the warp has rows
  // there; nothing after them (the one after is staged once this chunk is done). So ahead = 2 groups - 1 or
  // groups - 1, and block b waits until at most ahead - need(b) groups are pending.
  const int groups = v3_groups<T>(p);
  const int waits2 = v3_waits<T>(p, c, 2 * groups - 1), waits1 = v3_waits<T>(p, c, groups - 1);
  for (int k = 0; v < nvb; v += step, ++k) {
    const VJob j = v_job(p, wj, gx, v);
    const bool next = v + step < nvb && v_job(p, wj, gx, v + step).live;
    uint8_t* slot = ring + (k & 1) * kRows * p.CS;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, mins[2] = {0.0f, 0.0f};
    if (j.live) v3_chunk<T>(p, slot, c, next ? waits2 : waits1, terms, sx, sums, L, tabs, acc, mins);
    __syncwarp();  // this slot is refilled next
    if (v + 2 * step < nvb) v_stage<T>(p, wj, gx, v + 2 * step, c, slot, lane);
    float y0, y1;
    row_sums<T>(L, acc, mins, y0, y1);
    finish<1>(p, smem, part, L, y0, y1, lane, warp, wj.kp, wj.qm, wj.m, j.live, j.item, j.r0, j.i0, j.i1, j.bx, j.by);
    __syncthreads();  // part and res are refilled by the next virtual block
  }
}
