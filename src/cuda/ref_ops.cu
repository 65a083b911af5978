// Reference kernels for everything but the matrix products: norms, hyper-connections, rope, cached-row
// numerics, compressor, indexer, sink attention, router, SwiGLU. Simple and deterministic.
#include "cuda/cuda_util.h"
#include "cuda/ref_kernels.h"
#include "cuda/ref_numerics.cuh"
#include "cuda/pdl.cuh"

namespace flashstar::cuda {
namespace {

constexpr float kNegInf = -1e30f;

inline unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

// Sum of squares in double with a fixed tree; every thread gets the total.
__device__ double block_sum_sq(const float* x, int64_t n, double* red) {
  double v = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v += static_cast<double>(x[i]) * x[i];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x + 31) / 32; ++w) s += red[w];
    red[32] = s;
  }
  __syncthreads();
  const double total = red[32];
  __syncthreads();
  return total;
}

__global__ void rms_norm_kernel(const float* x, int64_t xs, const float* w, float* y, int64_t ys, int64_t dim, float eps) {
  pdl_wait();
  __shared__ double red[33];
  const float* xr = x + blockIdx.x * xs;
  float* yr = y + blockIdx.x * ys;
  const double ss = block_sum_sq(xr, dim, red);
  const float scale = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = w ? xr[i] * scale * w[i] : xr[i] * scale;
}

__global__ void hc_split_kernel(const float* mix, int64_t ms, const float* scale, const float* base, int n, int iters,
                                float eps, float* split, int64_t n_tok) {
  pdl_wait();
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n_tok) return;
  const float* m = mix + t * ms;
  float* out = split + t * (2 * n + n * n);
  for (int i = 0; i < n; ++i) {
    out[i] = d_hc_pre(m[i], scale[0], base[i], eps);
    out[n + i] = d_hc_post(m[n + i], scale[1], base[n + i]);
  }
  float* M = out + 2 * n;
  for (int a = 0; a < n; ++a) {
    float mx = -INFINITY;
    for (int b = 0; b < n; ++b) {
      M[a * n + b] = m[2 * n + a * n + b] * scale[2] + base[2 * n + a * n + b];
      mx = fmaxf(mx, M[a * n + b]);
    }
    float sum = 0;
    for (int b = 0; b < n; ++b) {
      M[a * n + b] = expf(M[a * n + b] - mx);
      sum += M[a * n + b];
    }
    for (int b = 0; b < n; ++b) M[a * n + b] = M[a * n + b] / sum + eps;
  }
  for (int it = 0; it < iters; ++it) {
    if (it > 0)
      for (int a = 0; a < n; ++a) {
        float sum = 0;
        for (int b = 0; b < n; ++b) sum += M[a * n + b];
        for (int b = 0; b < n; ++b) M[a * n + b] /= (sum + eps);
      }
    for (int b = 0; b < n; ++b) {
      float sum = 0;
      for (int a = 0; a < n; ++a) sum += M[a * n + b];
      for (int a = 0; a < n; ++a) M[a * n + b] /= (sum + eps);
    }
  }
}

__global__ void hc_sum_kernel(const float* X, const float* split, int n_hc, int64_t d, float* out, int64_t n_tok) {
  pdl_wait();
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= n_tok * d) return;
  const int64_t t = k / d, i = k % d;
  const float* pre = split + t * (2 * n_hc + n_hc * n_hc);
  float acc = 0;
  for (int s = 0; s < n_hc; ++s) acc += pre[s] * X[(t * n_hc + s) * d + i];
  out[k] = acc;
}

__global__ void hc_post_kernel(const float* f, float* X, const float* split, int n, int64_t d, int64_t n_tok) {
  pdl_wait();
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= n_tok * d) return;
  const int64_t t = k / d, i = k % d;
  d_hc_post_element(f[k], X, split + t * (2 * n + n * n), n, d, t, i);
}

__global__ void hc_head_kernel(const float* X, const float* pre_mix, const float* scale, const float* base, int n,
                               int64_t d, float eps, float* z, int64_t n_tok) {
  pdl_wait();
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= n_tok * d) return;
  const int64_t t = k / d, i = k % d;
  float acc = 0;
  for (int h = 0; h < n; ++h) {
    const float w = d_hc_pre(pre_mix[t * n + h], scale[0], base[h], eps);
    acc += w * X[(t * n + h) * d + i];
  }
  z[k] = acc;
}

__global__ void rope_kernel(float* x, int64_t n_rows, int64_t row_stride, int n_heads, int64_t head_dim, int n_rot,
                            const double* freq, int64_t pos0, int64_t pos_step, bool inverse, const int64_t* pos_dev) {
  pdl_wait();
  if (pos_dev) pos0 = *pos_dev;
  const int half = n_rot / 2;
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= n_rows * n_heads * half) return;
  const int64_t r = k / (n_heads * half), h = (k / half) % n_heads, p = k % half;
  float* tail = x + r * row_stride + h * head_dim + head_dim - n_rot;
  d_rope_pair(tail[2 * p], tail[2 * p + 1], static_cast<double>(pos0 + r * pos_step) * freq[p], inverse);
}

__global__ void finish_rows_kernel(float* x, int64_t n_rows, int64_t row_stride, int64_t dim, int n_rot, RowKind kind) {
  pdl_wait();
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n_rows) return;
  float* row = x + r * row_stride;
  if (kind == RowKind::Attention) {
    d_fp8_blocks(row, dim - n_rot, 64);
  } else {
    d_indexer_qat(row, dim);
  }
  for (int64_t i = 0; i < dim; ++i) row[i] = f16_round(row[i]);
}

__global__ void indexer_qat_kernel(float* x, int64_t n_vec, int64_t dim) {
  pdl_wait();
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r < n_vec) d_indexer_qat(x + r * dim, dim);
}

// One block walks the chunk in token order: store into the frontier, pool when a window closes.
__global__ void compressor_kernel(CompressorArgs a) {
  pdl_wait();
  if (a.pos_dev) a.pos0 = *a.pos_dev;
  extern __shared__ float row[];  // dim floats
  __shared__ double red[33];
  const int r = a.ratio, W = a.width, dim = a.dim;
  const int n_slots = r == 4 ? 8 : r;
  const int state_rows = r == 4 ? 8 : r;
  for (int64_t t = 0; t < a.n; ++t) {
    const int64_t pos = a.pos0 + t;
    const int phase = static_cast<int>(pos % r);
    const int slot = r == 4 ? r + phase : phase;
    for (int j = threadIdx.x; j < W; j += blockDim.x) {
      a.state_kv[slot * W + j] = a.kv[t * W + j];
      a.state_score[slot * W + j] = a.gate[t * W + j] + a.ape[phase * W + j];
    }
    __syncthreads();
    if ((pos + 1) % r != 0) continue;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
      auto at = [&](int s) { return static_cast<int64_t>(s) * W + ((r == 4 && s >= 4) ? dim + j : j); };
      float mx = kNegInf;
      for (int s = 0; s < n_slots; ++s) mx = fmaxf(mx, a.state_score[at(s)]);
      float sum = 0;
      for (int s = 0; s < n_slots; ++s) sum += expf(a.state_score[at(s)] - mx);
      float acc = 0;
      for (int s = 0; s < n_slots; ++s) acc += (expf(a.state_score[at(s)] - mx) / sum) * a.state_kv[at(s)];
      row[j] = acc;
    }
    __syncthreads();
    const double ss = block_sum_sq(row, dim, red);
    const float scale = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + a.eps));
    for (int j = threadIdx.x; j < dim; j += blockDim.x) row[j] = row[j] * scale * a.norm[j];
    __syncthreads();
    if (threadIdx.x == 0) {
      float* tail = row + dim - a.n_rot;
      const int64_t rp = pos + 1 - r;
      for (int p = 0; p < a.n_rot / 2; ++p)
        d_rope_pair(tail[2 * p], tail[2 * p + 1], static_cast<double>(rp) * a.freq[p], false);
      if (a.official) {
        if (a.kind == RowKind::Attention) {
          d_fp8_blocks(row, dim - a.n_rot, 64);
        } else {
          d_indexer_qat(row, dim);
        }
        for (int j = 0; j < dim; ++j) row[j] = f16_round(row[j]);
      }
    }
    __syncthreads();
    float* out = a.out_rows + ((pos + 1) / r - 1) * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) out[j] = row[j];
    // The current window becomes the previous one (ratio 4); emptied slots score "minus infinity".
    for (int j = threadIdx.x; j < W; j += blockDim.x) {
      if (r == 4)
        for (int s = 0; s < 4; ++s) {
          a.state_kv[s * W + j] = a.state_kv[(4 + s) * W + j];
          a.state_score[s * W + j] = a.state_score[(4 + s) * W + j];
        }
      for (int s = r == 4 ? 4 : 0; s < state_rows; ++s) {
        a.state_kv[s * W + j] = 0.0f;
        a.state_score[s * W + j] = kNegInf;
      }
    }
    __syncthreads();
  }
}

// One block per query: score the visible rows, rank them (ties: lower index first), keep the top-k.
__global__ void indexer_select_kernel(const float* iq, const float* iw, float wscale, const float* rows, int n_heads, int hd,
                                      int64_t pos0, int ratio, int top_k, float* scratch, int64_t scratch_stride,
                                      int32_t* sel) {
  pdl_wait();
  const int64_t t = blockIdx.x;
  const int64_t n_vis = (pos0 + t + 1) / ratio;
  int32_t* out = sel + t * top_k;
  if (n_vis <= top_k) {
    for (int i = threadIdx.x; i < top_k; i += blockDim.x) out[i] = i < n_vis ? i : -1;
    return;
  }
  float* sc = scratch + t * scratch_stride;
  const float* q = iq + t * static_cast<int64_t>(n_heads) * hd;
  const float* w = iw + t * n_heads;
  for (int64_t i = threadIdx.x; i < n_vis; i += blockDim.x) {
    const float* k = rows + i * hd;
    float s = 0;
    for (int h = 0; h < n_heads; ++h) {
      float dot = 0;
      for (int d = 0; d < hd; ++d) dot += q[h * hd + d] * k[d];
      s += fmaxf(0.0f, dot) * (w[h] * wscale);
    }
    sc[i] = s;
  }
  __syncthreads();
  // A row is selected when fewer than top_k rows beat it. Ranks are computed before any flag is written.
  const int per = static_cast<int>((n_vis + blockDim.x - 1) / blockDim.x);
  bool keep[64];
  for (int c = 0; c < per && c < 64; ++c) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(c) * blockDim.x;
    keep[c] = false;
    if (i >= n_vis) continue;
    const float si = sc[i];
    int64_t rank = 0;
    for (int64_t j = 0; j < n_vis && rank < top_k; ++j) rank += (sc[j] > si) || (sc[j] == si && j < i);
    keep[c] = rank < top_k;
  }
  __syncthreads();
  for (int c = 0; c < per && c < 64; ++c) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(c) * blockDim.x;
    if (i < n_vis) sc[i] = keep[c] ? 1.0f : 0.0f;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int cnt = 0;
    for (int64_t i = 0; i < n_vis && cnt < top_k; ++i)
      if (sc[i] != 0.0f) out[cnt++] = static_cast<int32_t>(i);
    for (; cnt < top_k; ++cnt) out[cnt] = -1;
  }
}

// One block per (query, head): scores by warps, softmax with the sink serially, outputs by threads.
__global__ void attention_kernel(AttentionArgs a, float* scratch, int64_t max_rows) {
  pdl_wait();
  const int64_t t = blockIdx.x / a.n_head;
  const int h = static_cast<int>(blockIdx.x % a.n_head);
  const int64_t pos = a.pos0 + t;
  const int hd = a.head_dim;
  const float* q = a.q + (t * a.n_head + h) * hd;
  const int64_t raw_lo = pos - a.n_swa + 1 > 0 ? pos - a.n_swa + 1 : 0;
  const int64_t n_raw = pos - raw_lo + 1;
  int64_t n_comp = 0;
  if (a.ratio) {
    n_comp = (pos + 1) / a.ratio;
    if (a.sel) {
      int64_t c = 0;
      while (c < a.top_k && a.sel[t * a.top_k + c] >= 0) ++c;
      n_comp = c;
    }
  }
  const int64_t n_rows = n_raw + n_comp;
  auto row_ptr = [&](int64_t r) -> const float* {
    if (r < n_raw) return a.hist + (raw_lo + r - a.hist_pos0) * hd;
    const int64_t c = r - n_raw;
    return a.comp + (a.sel ? a.sel[t * a.top_k + c] : c) * hd;
  };
  float* s = scratch + blockIdx.x * max_rows;
  const float scale = static_cast<float>(1.0 / sqrt(static_cast<double>(hd)));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  for (int64_t r = warp; r < n_rows; r += n_warps) {
    const float* k = row_ptr(r);
    float v = 0;
    for (int d = lane; d < hd; d += 32) v += q[d] * k[d];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) s[r] = v * scale;
  }
  __syncthreads();
  __shared__ float denom_sh;
  if (threadIdx.x == 0) {
    const float sink = a.sinks[h];
    float mx = sink;
    for (int64_t r = 0; r < n_rows; ++r) mx = fmaxf(mx, s[r]);
    float denom = expf(sink - mx);
    for (int64_t r = 0; r < n_rows; ++r) {
      s[r] = expf(s[r] - mx);
      denom += s[r];
    }
    denom_sh = denom;
  }
  __syncthreads();
  const float denom = denom_sh;
  float* out = a.out + (t * a.n_head + h) * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0;
    for (int64_t r = 0; r < n_rows; ++r) acc += (s[r] / denom) * row_ptr(r)[d];
    out[d] = acc;
  }
}

__global__ void route_kernel(float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens,
                             int64_t n, int E, int k, bool norm, float scale, int32_t* sel, float* weights) {
  pdl_wait();
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  float* p = logits + t * E;
  for (int e = 0; e < E; ++e) p[e] = sqrtf(d_softplus(p[e]));
  int32_t* s = sel + t * k;
  if (tid2eid) {
    for (int i = 0; i < k; ++i) s[i] = tid2eid[static_cast<int64_t>(tokens[t]) * k + i];
  } else {
    for (int i = 0; i < k; ++i) {  // k passes of "best not yet taken": ties keep the lower index
      int best = -1;
      float bv = 0;
      for (int e = 0; e < E; ++e) {
        bool taken = false;
        for (int j = 0; j < i; ++j) taken |= s[j] == e;
        if (taken) continue;
        const float v = p[e] + (bias ? bias[e] : 0.0f);
        if (best < 0 || v > bv) {
          best = e;
          bv = v;
        }
      }
      s[i] = best;
    }
  }
  float sum = 0;
  for (int i = 0; i < k; ++i) sum += p[s[i]];
  const float denom = norm ? fmaxf(sum, 6.103515625e-5f) : 1.0f;
  for (int i = 0; i < k; ++i) weights[t * k + i] = p[s[i]] / denom * scale;
}

__global__ void swiglu_kernel(float* g, const float* u, int64_t n_items, int64_t ff, float lim, const float* w) {
  pdl_wait();
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k >= n_items * ff) return;
  const float gg = fminf(g[k], lim);
  const float uu = fminf(fmaxf(u[k], -lim), lim);
  g[k] = d_silu(gg) * uu * (w ? w[k / ff] : 1.0f);
}

__global__ void sum_slots_kernel(const float* slot, const float* shared, int64_t n, int k, int64_t d, float* out) {
  pdl_wait();
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n * d) return;
  out[idx] = d_slot_sum(slot, shared, k, d, idx / d, idx % d);
}

}  // namespace

void rms_norm_rows(const float* x, int64_t xs, const float* w, float* y, int64_t ys, int64_t n_rows, int64_t dim,
                   float eps, cudaStream_t s) {
  if (n_rows <= 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(n_rows), 256, 0, s>>>(x, xs, w, y, ys, dim, eps);
  FS_CUDA_LAUNCH_CHECK();
}

void hc_split(const float* mix, int64_t ms, const float* scale, const float* base, int n_hc, int iters, float eps,
              float* split, int64_t n, cudaStream_t s) {
  if (n_hc > 16) fail("CUDA backend supports at most 16 hyper-connection streams");
  hc_split_kernel<<<blocks_for(n, 64), 64, 0, s>>>(mix, ms, scale, base, n_hc, iters, eps, split, n);
  FS_CUDA_LAUNCH_CHECK();
}

void hc_weighted_sum(const float* X, const float* split, int n_hc, int64_t d, float* out, int64_t n, cudaStream_t s) {
  hc_sum_kernel<<<blocks_for(n * d, 256), 256, 0, s>>>(X, split, n_hc, d, out, n);
  FS_CUDA_LAUNCH_CHECK();
}

void hc_post(const float* f, float* X, const float* split, int n_hc, int64_t d, int64_t n, cudaStream_t s) {
  hc_post_kernel<<<blocks_for(n * d, 256), 256, 0, s>>>(f, X, split, n_hc, d, n);
  FS_CUDA_LAUNCH_CHECK();
}

void hc_head(const float* X, const float* pre_mix, const float* scale, const float* base, int n_hc, int64_t d,
             float eps, float* z, int64_t n, cudaStream_t s) {
  hc_head_kernel<<<blocks_for(n * d, 256), 256, 0, s>>>(X, pre_mix, scale, base, n_hc, d, eps, z, n);
  FS_CUDA_LAUNCH_CHECK();
}

void rope(float* x, int64_t n_rows, int64_t row_stride, int n_heads, int64_t head_dim, int n_rot, const double* freq,
          int64_t pos0, int64_t pos_step, bool inverse, cudaStream_t s, const int64_t* pos_dev) {
  const int64_t total = n_rows * n_heads * (n_rot / 2);
  if (total <= 0) return;
  rope_kernel<<<blocks_for(total, 256), 256, 0, s>>>(x, n_rows, row_stride, n_heads, head_dim, n_rot, freq, pos0,
                                                      pos_step, inverse, pos_dev);
  FS_CUDA_LAUNCH_CHECK();
}

void finish_rows(float* x, int64_t n_rows, int64_t row_stride, int64_t dim, int n_rot, RowKind kind, bool official,
                 cudaStream_t s) {
  if (!official || n_rows <= 0) return;
  finish_rows_kernel<<<blocks_for(n_rows, 64), 64, 0, s>>>(x, n_rows, row_stride, dim, n_rot, kind);
  FS_CUDA_LAUNCH_CHECK();
}

void indexer_qat(float* x, int64_t n_vec, int64_t dim, cudaStream_t s) {
  if (n_vec <= 0) return;
  indexer_qat_kernel<<<blocks_for(n_vec, 64), 64, 0, s>>>(x, n_vec, dim);
  FS_CUDA_LAUNCH_CHECK();
}

void compressor_chunk(const CompressorArgs& a, cudaStream_t s) {
  if (a.n <= 0) return;
  const int threads = a.width < 1024 ? ((a.width + 31) / 32) * 32 : 1024;
  compressor_kernel<<<1, threads, a.dim * sizeof(float), s>>>(a);
  FS_CUDA_LAUNCH_CHECK();
}

void indexer_select(const float* iq, const float* iw, float wscale, const float* idx_rows, int n_heads, int head_dim,
                    int64_t pos0, int64_t n, int ratio, int top_k, float* scratch, int64_t scratch_stride, int32_t* sel,
                    cudaStream_t s) {
  if (n <= 0) return;
  if ((pos0 + n) / ratio > 64 * 256) fail("CUDA reference indexer supports at most %d compressed rows", 64 * 256);
  indexer_select_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(iq, iw, wscale, idx_rows, n_heads, head_dim, pos0, ratio,
                                                                  top_k, scratch, scratch_stride, sel);
  FS_CUDA_LAUNCH_CHECK();
}

void sink_attention(const AttentionArgs& a, float* scratch, int64_t max_rows, cudaStream_t s) {
  if (a.n <= 0) return;
  attention_kernel<<<static_cast<unsigned>(a.n * a.n_head), 128, 0, s>>>(a, scratch, max_rows);
  FS_CUDA_LAUNCH_CHECK();
}

void route(float* logits, const float* bias, const int32_t* tid2eid, const int32_t* tokens, int64_t n, int n_expert,
           int k, bool norm, float scale, int32_t* sel, float* weights, cudaStream_t s) {
  if (n <= 0) return;
  route_kernel<<<blocks_for(n, 64), 64, 0, s>>>(logits, bias, tid2eid, tokens, n, n_expert, k, norm, scale, sel, weights);
  FS_CUDA_LAUNCH_CHECK();
}

void swiglu(float* g, const float* u, int64_t n_items, int64_t ff, float lim, const float* w, cudaStream_t s) {
  if (n_items <= 0) return;
  swiglu_kernel<<<blocks_for(n_items * ff, 256), 256, 0, s>>>(g, u, n_items, ff, lim, w);
  FS_CUDA_LAUNCH_CHECK();
}

void sum_slots(const float* slot, const float* shared, int64_t n, int k, int64_t d, float* out, cudaStream_t s) {
  if (n <= 0) return;
  sum_slots_kernel<<<blocks_for(n * d, 256), 256, 0, s>>>(slot, shared, n, k, d, out);
  FS_CUDA_LAUNCH_CHECK();
}

}  // namespace flashstar::cuda
