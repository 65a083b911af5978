// The prefill's small ops (prefill_small.h). Compiled with --fmad=false (src/CMakeLists.txt), like the
// files whose kernels these must equal bitwise (ref_ops.cu's swiglu and hc_post, fast_exact_ops.cu's
// split sum and slot post): their element expressions (pre[s] * x + acc, post * f + comb * old, the
// SwiGLU's products) are written here the same way and must not contract into FMAs either. The
// expressions shared with files compiled with contraction cannot change under this flag: the norm's sums
// are fp64 of exact float products, its scaling two plain products, and the mixer's dots are explicit
// fmaf chains (float_unpack.cuh, fast_matvec_float.cu).
#include "cuda/prefill_small.h"

#include <algorithm>
#include <cstdlib>

#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/fast_matvec_float.h"
#include "cuda/float_unpack.cuh"
#include "cuda/gemm_int_weights.h"
#include "cuda/hc_split.cuh"
#include "cuda/mix_tiles_v2.cuh"
#include "cuda/mma_f16.cuh"
#include "cuda/pdl.cuh"
#include "cuda/ref_numerics.cuh"
#include "cuda/row_rms.cuh"

namespace flashstar::cuda::fast {
namespace {

using mma::pack_f16;
using mma::pack_f16_lo;

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
  a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
  return a;
}
// The two-term FP16 copy of 4 values at element e of a to_f16 array whose lo terms start lo_off later
// (to_f16_kernel's pack_f16 / pack_f16_lo pairs, two at a time).
__device__ __forceinline__ void store_f16x4(uint16_t* xb, int64_t e, int64_t lo_off, float4 v) {
  const uint32_t h01 = pack_f16(v.x, v.y), h23 = pack_f16(v.z, v.w);
  *reinterpret_cast<uint2*>(xb + e) = make_uint2(h01, h23);
  *reinterpret_cast<uint2*>(xb + lo_off + e) = make_uint2(pack_f16_lo(v.x, v.y, h01), pack_f16_lo(v.z, v.w, h23));
}

// ---- post + the flattened norm's scale: a block of norm_threads(4 d) threads per token --------------

struct PostScaleArgs {
  float* X;
  const float *f, *shared, *split;
  int k;
  int64_t d;
  float eps;
  float* scale;
};

// The post of one element column for the 4 streams (d_hc_post_element on a 1-column X, as fast_hc_pre.cu).
__device__ __forceinline__ void post4(float4 f, float4 (&x)[kHc], const float* sp) {
  float c[kHc];
#define FS_POST_COMPONENT(q)                                      \
  for (int s = 0; s < kHc; ++s) c[s] = x[s].q;                    \
  d_hc_post_element(f.q, c, sp, kHc, 1, 0, 0);                    \
  for (int s = 0; s < kHc; ++s) x[s].q = c[s];
  FS_POST_COMPONENT(x)
  FS_POST_COMPONENT(y)
  FS_POST_COMPONENT(z)
  FS_POST_COMPONENT(w)
#undef FS_POST_COMPONENT
}

template <HcPost::Kind K>
__global__ void __launch_bounds__(kNormThreads, 2) post_scale_kernel(PostScaleArgs a) {
  pdl_wait();
  extern __shared__ float4 s_row[];  // the token's 4 d new values, flattened (stream-major)
  __shared__ double red[kNormThreads / 32];
  __shared__ float sp[kSplit];
  const int64_t t = blockIdx.x, d4 = a.d / 4;
  if constexpr (K != HcPost::Kind::None) {
    if (threadIdx.x < kSplit) sp[threadIdx.x] = a.split[t * kSplit + threadIdx.x];
    __syncthreads();
  }
  float4* X4 = reinterpret_cast<float4*>(a.X + t * kHc * a.d);
#pragma unroll 1
  for (int64_t c = threadIdx.x; c < d4; c += blockDim.x) {
    float4 x[kHc];
#pragma unroll
    for (int s = 0; s < kHc; ++s) x[s] = X4[s * d4 + c];
    if constexpr (K != HcPost::Kind::None) {
      float4 f;
      if constexpr (K == HcPost::Kind::Plain) {
        f = reinterpret_cast<const float4*>(a.f + t * a.d)[c];
      } else {  // d_slot_sum: the slots in order, then the shared expert
        f = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int z = 0; z < a.k; ++z) f = add4(f, reinterpret_cast<const float4*>(a.f + (t * a.k + z) * a.d)[c]);
        if (a.shared) f = add4(f, reinterpret_cast<const float4*>(a.shared + t * a.d)[c]);
      }
      post4(f, x, sp);
#pragma unroll
      for (int s = 0; s < kHc; ++s) X4[s * d4 + c] = x[s];
    }
#pragma unroll
    for (int s = 0; s < kHc; ++s) s_row[s * d4 + c] = x[s];
  }
  __syncthreads();
  const float sc = row_rms_scale(s_row, kHc * a.d, a.eps, red);
  if (threadIdx.x == 0) a.scale[t] = sc;
}

// ---- the mixer product: 8 rows x 8 tokens a block, fast_matvec_float.cu's summation ----------------

constexpr int kMixRows = 8, kMixTok = 8;

// Warp w is the decode kernel's column warp c = w % WC of warp row w / WC (WC = float_geom's wc; one warp
// row when a row spans 8 column warps): each lane adds the same units in the same order (tile by tile,
// kFUnits a tile), so every partial is that kernel's, then the same xor tree and the same column-warp
// order. A unit past the row adds the +0 the decode kernel's zero loads give. A warp row takes
// kMixRows / (8 / WC) of the block's rows.
template <GgmlType T, int WC>
__global__ void __launch_bounds__(kFThreads, 1)
    mix_tiles_kernel(const uint8_t* w, size_t row_bytes, int n_rows, const float* X, int64_t xs, const float* scale,
                     int64_t n_tok, float* Y, int64_t ys, int units, FloatGeom g) {
  pdl_wait();
  constexpr int E = kElems<T>, R = kMixRows * WC / kFWarps;
  static_assert(R >= 1 && kFWarps % WC == 0, "warp rows split the block's rows");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c = warp % WC, wrow = warp / WC;
  const int row_base = static_cast<int>(blockIdx.x) * kMixRows + wrow * R;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kMixTok;
  const int nt = static_cast<int>(n_tok - t0 < kMixTok ? n_tok - t0 : kMixTok);
  const uint8_t* rowp[R];
#pragma unroll
  for (int r = 0; r < R; ++r)  // rows past the end read the last row and are never stored
    rowp[r] = w + static_cast<size_t>(row_base + r < n_rows ? row_base + r : n_rows - 1) * row_bytes;
  float sc[kMixTok];
#pragma unroll
  for (int t = 0; t < kMixTok; ++t) sc[t] = scale && t < nt ? scale[t0 + t] : 1.0f;
  const float* xb = X + t0 * xs;

  float acc[R][kMixTok] = {};
  for (int tile = 0; tile < g.tiles_per_row; ++tile) {
#pragma unroll
    for (int u = 0; u < kFUnits; ++u) {
      const int64_t unit = float_unit(g, tile, c, u, lane);
      const bool on = unit < units;
      float wf[R][E];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint4 v = on ? __ldg(reinterpret_cast<const uint4*>(rowp[r] + unit * 16)) : make_uint4(0, 0, 0, 0);
        unpack<T>(v, wf[r]);
      }
#pragma unroll
      for (int t = 0; t < kMixTok; ++t) {
        const bool live = on && t < nt;
        const float4* xp = reinterpret_cast<const float4*>(xb + t * xs + unit * E);
        float xv[E];
#pragma unroll
        for (int q = 0; q < E / 4; ++q) {
          float4 v = live ? __ldg(xp + q) : make_float4(0, 0, 0, 0);
          if (scale && live) v.x *= sc[t], v.y *= sc[t], v.z *= sc[t], v.w *= sc[t];  // the norm's x * scale
          xv[4 * q] = v.x, xv[4 * q + 1] = v.y, xv[4 * q + 2] = v.z, xv[4 * q + 3] = v.w;
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float s = wf[r][0] * xv[0];
#pragma unroll
          for (int k = 1; k < E; ++k) s = fmaf(wf[r][k], xv[k], s);
          acc[r][t] += s;
        }
      }
    }
  }

  __shared__ float red[kFWarps][R][kMixTok];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int t = 0; t < kMixTok; ++t) {
      float v = acc[r][t];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0) red[warp][r][t] = v;
    }
  __syncthreads();
  for (int o = threadIdx.x; o < kMixRows * kMixTok; o += blockDim.x) {
    const int rl = o % kMixRows, t = o / kMixRows, wr = rl / R, r = rl % R;
    const int row = static_cast<int>(blockIdx.x) * kMixRows + rl;
    if (t >= nt || row >= n_rows) continue;
    float v = red[wr * WC][r][t];
    for (int cc = 1; cc < WC; ++cc) v += red[wr * WC + cc][r][t];
    Y[(t0 + t) * ys + row] = v;
  }
}

template <GgmlType T>
void mix_launch(dim3 grid, const uint8_t* w, size_t rb, int nr, const float* X, int64_t xs, const float* scale,
                int64_t n_tok, float* Y, int64_t ys, int units, const FloatGeom& g, cudaStream_t s) {
  switch (g.wc) {
    case 1: mix_tiles_kernel<T, 1><<<grid, kFThreads, 0, s>>>(w, rb, nr, X, xs, scale, n_tok, Y, ys, units, g); break;
    case 2: mix_tiles_kernel<T, 2><<<grid, kFThreads, 0, s>>>(w, rb, nr, X, xs, scale, n_tok, Y, ys, units, g); break;
    case 4: mix_tiles_kernel<T, 4><<<grid, kFThreads, 0, s>>>(w, rb, nr, X, xs, scale, n_tok, Y, ys, units, g); break;
    default: mix_tiles_kernel<T, 8><<<grid, kFThreads, 0, s>>>(w, rb, nr, X, xs, scale, n_tok, Y, ys, units, g); break;
  }
}

// ---- weighted sum of the streams + weighted norm + FP16 copy: a block of norm_threads(d) per token ---

__global__ void __launch_bounds__(kNormThreads, 2) sum_norm_kernel(const float* X, const float* split, int64_t d,
                                                                const float* w, float eps, int64_t n, float* xin,
                                                                float* normed, uint16_t* xb) {
  pdl_wait();
  extern __shared__ float4 s_row[];  // the token's xin
  __shared__ double red[kNormThreads / 32];
  const int64_t t = blockIdx.x, d4 = d / 4;
  float pre[kHc];
#pragma unroll
  for (int s = 0; s < kHc; ++s) pre[s] = split[t * kSplit + s];
  const float4* X4 = reinterpret_cast<const float4*>(X + t * kHc * d);
  for (int64_t c = threadIdx.x; c < d4; c += blockDim.x) {
    float4 x[kHc];
#pragma unroll
    for (int s = 0; s < kHc; ++s) x[s] = X4[s * d4 + c];
    // hc_sum_kernel's sum, stream by stream from 0
    float4 u = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int s = 0; s < kHc; ++s) {
      u.x += pre[s] * x[s].x;
      u.y += pre[s] * x[s].y;
      u.z += pre[s] * x[s].z;
      u.w += pre[s] * x[s].w;
    }
    reinterpret_cast<float4*>(xin + t * d)[c] = u;
    s_row[c] = u;
  }
  __syncthreads();
  const float sc = row_rms_scale(s_row, d, eps, red);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  for (int64_t c = threadIdx.x; c < d4; c += blockDim.x) {
    const float4 v = scaled(s_row[c], sc, w4, c);
    reinterpret_cast<float4*>(normed + t * d)[c] = v;
    if (xb) store_f16x4(xb, t * d + 4 * c, n * d, v);
  }
}

// ---- SwiGLU + FP16 copy ------------------------------------------------------------------------------

// kSums: also the 16-column token sums of the copy (tsums[i / 4] for the four threads of a group): each
// thread sum4 of its 4 columns from the stored FP16 words, then sum8 = its pair's two added and the group's
// sum = the two sum8 added, by shuffles within the aligned 4 lanes (ff % 16 == 0 and the grid stride a
// multiple of 4 keep a group's lanes together): gemm_v2::tok_sum's operands and order (fp32 addition is
// commutative bit for bit, so each lane of a pair forms the same sum).
template <bool kSums>
__global__ void swiglu_f16_kernel(const float* g, const float* u, int64_t n_items, int64_t ff, float lim,
                                  const float* w, float* out, uint16_t* xb, float* tsums) {
  pdl_wait();
  const int64_t n4 = n_items * ff / 4;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 gv = reinterpret_cast<const float4*>(g)[i], uv = reinterpret_cast<const float4*>(u)[i];
    const float wv = w ? w[4 * i / ff] : 1.0f;
    // swiglu_kernel's expression for each value
    auto one = [&](float gx, float ux) {
      const float gg = fminf(gx, lim);
      const float uu = fminf(fmaxf(ux, -lim), lim);
      return d_silu(gg) * uu * wv;
    };
    const float4 r = make_float4(one(gv.x, uv.x), one(gv.y, uv.y), one(gv.z, uv.z), one(gv.w, uv.w));
    if (out) reinterpret_cast<float4*>(out)[i] = r;
    if constexpr (kSums) {
      const uint32_t hi[2] = {pack_f16(r.x, r.y), pack_f16(r.z, r.w)};
      const uint32_t lo[2] = {pack_f16_lo(r.x, r.y, hi[0]), pack_f16_lo(r.z, r.w, hi[1])};
      *reinterpret_cast<uint2*>(xb + 4 * i) = make_uint2(hi[0], hi[1]);  // store_f16x4's stores
      *reinterpret_cast<uint2*>(xb + n_items * ff + 4 * i) = make_uint2(lo[0], lo[1]);
      const unsigned grp = 0xFu << (threadIdx.x & 28u);  // the group's 4 lanes (all active together)
      const float q = gemm_int::sum4(hi, lo);
      const float s8 = q + __shfl_xor_sync(grp, q, 1);
      const float s16 = s8 + __shfl_xor_sync(grp, s8, 2);
      if ((i & 3) == 0) tsums[i / 4] = s16;
    } else {
      store_f16x4(xb, 4 * i, n_items * ff, r);
    }
  }
}

// ---- RoPE of many heads a row: the angles once a row -------------------------------------------------

// rope_kernel of ref_ops.cu computes cos and sin in double for every (row, head, pair): 64 times over for
// the same angles at 64 heads (8.4 M double sincos a 4 096-token chunk). Here a block per row forms the
// row's n_rot / 2 rotations once (d_rope_cs of the same angle expression) and every (head, pair) applies
// its own with d_rotate: rope_kernel's d_rope_pair is exactly these two steps, so the bits are its
// (and this file is compiled as ref_ops.cu is, for the double cos / sin).
constexpr int kRopeThreads = 256, kMaxRopePairs = 256;
__global__ void __launch_bounds__(kRopeThreads) rope_rows_kernel(float* x, int64_t row_stride, int n_heads,
                                                                  int64_t head_dim, int n_rot, const double* freq,
                                                                  int64_t pos0, int64_t pos_step, bool inverse) {
  pdl_wait();
  __shared__ float2 cs[kMaxRopePairs];
  const int64_t r = blockIdx.x;
  const int half = n_rot / 2;
  for (int p = threadIdx.x; p < half; p += blockDim.x)
    cs[p] = d_rope_cs(static_cast<double>(pos0 + r * pos_step) * freq[p], inverse);
  __syncthreads();
  for (int k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
    const int h = k / half, p = k % half;
    float* tail = x + r * row_stride + h * head_dim + head_dim - n_rot;
    d_rotate(tail[2 * p], tail[2 * p + 1], cs[p]);
  }
}

bool al16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Dynamic shared memory beyond the default 48 KiB, set once per kernel (bytes only grow).
template <typename Kernel>
bool smem_ok(Kernel k, size_t bytes, size_t& granted) {
  if (bytes <= 48 * 1024 || bytes <= granted) return true;
  if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  granted = bytes;
  return true;
}

}  // namespace

namespace {
bool& prefill_small_flag() {
  static bool on = env_on("FLASHSTAR_PREFILL_SMALL");
  return on;
}
}  // namespace

bool prefill_small_requested() { return prefill_small_flag(); }
void prefill_small_set(bool on) { prefill_small_flag() = on; }

namespace {
bool& mix_v2_flag() {
  static bool on = env_on("FLASHSTAR_MIX_V2");
  return on;
}
// The second mixer kernel takes every shape the first does; false when its shared memory is refused.
template <GgmlType T>
bool mix_v2_launch(const Mix2Args& a, cudaStream_t s) {
  static size_t granted = 0;
  if (!smem_ok(mix_tiles_v2_kernel<T>, kMix2Smem, granted)) return false;
  const dim3 grid(static_cast<unsigned>((a.n_rows + mix2::kRows - 1) / mix2::kRows),
                  static_cast<unsigned>((a.n_tok + mix2::kTok - 1) / mix2::kTok));
  mix_tiles_v2_kernel<T><<<grid, kFThreads, kMix2Smem, s>>>(a);
  return true;
}
}  // namespace

bool mix_v2_requested() { return mix_v2_flag(); }
void mix_v2_set(bool on) { mix_v2_flag() = on; }

bool hc_post_scale(const HcPost& post, float* X, int64_t d, int64_t n, float eps, float* scale, cudaStream_t s) {
  if (d <= 0 || d % 4 || !al16(X) || n > 0x7fffffff || !scale) return false;
  const size_t smem = static_cast<size_t>(kHc * d) * sizeof(float);
  if (smem > 200 * 1024) return false;
  if (post.kind != HcPost::Kind::None) {
    if (!post.split || !al16(post.f) || (post.shared && !al16(post.shared))) return false;
    if (post.kind == HcPost::Kind::Slots && (post.k < 0 || (post.k > 0 && !post.f) || (post.k == 0 && !post.shared)))
      return false;
    if (post.kind == HcPost::Kind::Plain && !post.f) return false;
  }
  PostScaleArgs a{X, post.f, post.shared, post.split, post.k, d, eps, scale};
  const int threads = norm_threads(kHc * d);
  static size_t g_none = 0, g_plain = 0, g_slots = 0;
  switch (post.kind) {
    case HcPost::Kind::None:
      if (!smem_ok(post_scale_kernel<HcPost::Kind::None>, smem, g_none)) return false;
      if (n > 0) post_scale_kernel<HcPost::Kind::None><<<static_cast<unsigned>(n), threads, smem, s>>>(a);
      break;
    case HcPost::Kind::Plain:
      if (!smem_ok(post_scale_kernel<HcPost::Kind::Plain>, smem, g_plain)) return false;
      if (n > 0) post_scale_kernel<HcPost::Kind::Plain><<<static_cast<unsigned>(n), threads, smem, s>>>(a);
      break;
    case HcPost::Kind::Slots:
      if (!smem_ok(post_scale_kernel<HcPost::Kind::Slots>, smem, g_slots)) return false;
      if (n > 0) post_scale_kernel<HcPost::Kind::Slots><<<static_cast<unsigned>(n), threads, smem, s>>>(a);
      break;
  }
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool hc_mix_tiles_supported(const DMat& W, int64_t xs) {
  int64_t e = 0;
  switch (W.type) {
    case GgmlType::F32: e = 4; break;
    case GgmlType::F16:
    case GgmlType::BF16: e = 8; break;
    default: return false;
  }
  if (!W.data || W.cols <= 0 || W.cols % e || W.cols / e >= (1ll << 30) || W.row_bytes % 16 || !al16(W.data) ||
      xs % 4 || xs < W.cols)
    return false;
  return true;
}

bool hc_mix_tiles(const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t xs, const float* scale,
                  int64_t n_tok, float* Y, int64_t ys, cudaStream_t s) {
  if (!hc_mix_tiles_supported(W, xs) || !al16(X) || row0 < 0 || n_rows >= (1 << 30) ||
      (W.rows > 0 && W.rows < row0 + n_rows))
    return false;
  const int64_t groups = (n_tok + kMixTok - 1) / kMixTok, row_blocks = (n_rows + kMixRows - 1) / kMixRows;
  if (groups > 65535 || row_blocks > 65535) return false;
  if (n_rows <= 0 || n_tok <= 0) return true;
  const int units = static_cast<int>(W.cols / (W.type == GgmlType::F32 ? 4 : 8));
  const FloatGeom g = float_geom(units);
  const uint8_t* w = W.data + static_cast<size_t>(row0) * W.row_bytes;
  const int nr = static_cast<int>(n_rows);
  if (mix_v2_flag()) {
    const Mix2Args a{w, W.row_bytes, nr, X, xs, scale, n_tok, Y, ys, units, g};
    const bool ok = W.type == GgmlType::F32   ? mix_v2_launch<GgmlType::F32>(a, s)
                    : W.type == GgmlType::F16 ? mix_v2_launch<GgmlType::F16>(a, s)
                                              : mix_v2_launch<GgmlType::BF16>(a, s);
    if (ok) {
      FS_CUDA_LAUNCH_CHECK();
      return true;
    }
  }
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(groups));  // row blocks of a tile adjacent
  switch (W.type) {
    case GgmlType::F32: mix_launch<GgmlType::F32>(grid, w, W.row_bytes, nr, X, xs, scale, n_tok, Y, ys, units, g, s); break;
    case GgmlType::F16: mix_launch<GgmlType::F16>(grid, w, W.row_bytes, nr, X, xs, scale, n_tok, Y, ys, units, g, s); break;
    default: mix_launch<GgmlType::BF16>(grid, w, W.row_bytes, nr, X, xs, scale, n_tok, Y, ys, units, g, s); break;
  }
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool hc_sum_norm(const float* X, const float* split, int64_t d, const float* w, float eps, int64_t n, float* xin,
                 float* normed, uint16_t* xb, cudaStream_t s) {
  if (d <= 0 || d % 8 || !al16(X) || !al16(xin) || !al16(normed) || (w && !al16(w)) || (xb && !al16(xb)) ||
      n > 0x7fffffff || !split)
    return false;
  const size_t smem = static_cast<size_t>(d) * sizeof(float);
  static size_t granted = 0;
  if (smem > 200 * 1024 || !smem_ok(sum_norm_kernel, smem, granted)) return false;
  if (n <= 0) return true;
  sum_norm_kernel<<<static_cast<unsigned>(n), norm_threads(d), smem, s>>>(X, split, d, w, eps, n, xin, normed, xb);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool swiglu_f16(const float* g, const float* u, int64_t n_items, int64_t ff, float lim, const float* w, float* out,
                uint16_t* xb, cudaStream_t s, float* tsums) {
  if (ff <= 0 || ff % 8 || !al16(g) || !al16(u) || (out && !al16(out)) || !xb || !al16(xb)) return false;
  if (tsums && ff % 16) return false;
  if (n_items <= 0) return true;
  const int64_t n4 = n_items * ff / 4;
  const int64_t blocks = std::min<int64_t>((n4 + 255) / 256, 132 * 16);
  if (tsums)  // row r's group c at r * ff / 16 + c: thread i's group i / 4 (gr::tsum_index)
    swiglu_f16_kernel<true><<<static_cast<unsigned>(blocks), 256, 0, s>>>(g, u, n_items, ff, lim, w, out, xb, tsums);
  else
    swiglu_f16_kernel<false><<<static_cast<unsigned>(blocks), 256, 0, s>>>(g, u, n_items, ff, lim, w, out, xb, nullptr);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool rope_prefill(float* x, int64_t n_rows, int64_t row_stride, int n_heads, int64_t head_dim, int n_rot,
                  const double* freq, int64_t pos0, int64_t pos_step, bool inverse, cudaStream_t s) {
  if (n_rot < 0 || n_rot % 2 || n_rot / 2 > kMaxRopePairs || n_rot > head_dim || n_heads < 0 || n_rows > 0x7fffffff)
    return false;
  if (n_rows <= 0 || n_heads == 0 || n_rot == 0) return true;
  rope_rows_kernel<<<static_cast<unsigned>(n_rows), kRopeThreads, 0, s>>>(x, row_stride, n_heads, head_dim, n_rot, freq,
                                                                          pos0, pos_step, inverse);
  FS_CUDA_LAUNCH_CHECK();
  return true;
}

bool hc_pre_prefill(const HcPrefillArgs& a, cudaStream_t s) {
  const int64_t d = a.d, n = a.n;
  const HcPost& q = a.post;
  // every piece's conditions first: nothing is launched unless all of them run
  // (d up to 12 288: hc_sum_norm's row then fits the default 48 KiB of shared memory and cannot refuse)
  if (n <= 0 || (n + 7) / 8 > 65535 || d <= 0 || d % 8 || d > 12288) return false;
  if (!a.X || !al16(a.X) || !a.scale || !a.base || !a.mix || !a.split || !a.row_scale || !a.xin || !a.normed) return false;
  if (!al16(a.xin) || !al16(a.normed) || (a.norm_w && !al16(a.norm_w)) || (a.xb && !al16(a.xb))) return false;
  if (a.fn.rows != kSplit || a.fn.cols != kHc * d || !hc_mix_tiles_supported(a.fn, kHc * d)) return false;
  if (q.kind != HcPost::Kind::None && (!q.split || !al16(q.f) || !al16(q.shared))) return false;
  if (q.kind == HcPost::Kind::Plain && !q.f) return false;
  if (q.kind == HcPost::Kind::Slots && (q.k < 0 || (q.k > 0 && !q.f) || (q.k == 0 && !q.shared))) return false;
  if (!hc_post_scale(q, a.X, d, n, a.norm_eps, a.row_scale, s)) return false;  // launches only when it takes it
  // (from here every call takes its arguments: the checks above are theirs)
  hc_mix_tiles(a.fn, 0, kSplit, a.X, kHc * d, a.row_scale, n, a.mix, kSplit, s);
  hc_split(a.mix, kSplit, a.scale, a.base, kHc, a.iters, a.hc_eps, a.split, n, s);
  hc_sum_norm(a.X, a.split, d, a.norm_w, a.norm_eps, n, a.xin, a.normed, a.xb, s);
  return true;
}

}  // namespace flashstar::cuda::fast
