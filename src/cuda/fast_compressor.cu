// The compressor of a prefill chunk in parallel (fused_ops route). The reference feeds tokens one by
// one through the slot state; but a compressed row depends only on the projections of the positions
// in its window (and, at ratio 4, the window before), so every row of the chunk is built by its own
// block, reading each position either from the chunk or from the state saved before it. A second
// kernel then leaves the state exactly as the sequential walk would.
#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/ref_numerics.cuh"
#include "cuda/row_sim_par.cuh"
#include "cuda/pdl.cuh"

namespace flashstar::cuda::fast {
namespace {

constexpr float kNegInf = -1e30f;
constexpr int kRowThreads = 512;

// The (kv, score) a position contributes in column `col`: from the chunk when q >= pos0, else from the
// state as it was when the chunk began; positions before the sequence are empty slots.
struct Source {
  const CompressorArgs* a;
  int64_t cur_start;  // first position of the window open at the chunk start
  __device__ void at(int64_t q, int col, float& kv, float& sc) const {
    const int r = a->ratio, W = a->width;
    if (q < 0) {
      kv = 0.0f, sc = kNegInf;
      return;
    }
    const int phase = static_cast<int>(q % r);
    if (q >= a->pos0) {
      const int64_t t = q - a->pos0;
      kv = a->kv[t * W + col];
      sc = a->gate[t * W + col] + a->ape[phase * W + col];
      return;
    }
    const int row = q >= cur_start ? (r == 4 ? 4 : 0) + phase : phase;  // else: the previous window (ratio 4)
    kv = a->state_kv[row * W + col];
    sc = a->state_score[row * W + col];
  }
};

__global__ void compress_rows_kernel(CompressorArgs a, int64_t first_row) {
  pdl_wait();
  extern __shared__ float row[];  // dim floats
  __shared__ double red[33];
  const int r = a.ratio, dim = a.dim;
  if (a.pos_dev) a.pos0 = *a.pos_dev, first_row = a.pos0 / r;
  const int64_t ci = first_row + blockIdx.x;  // compressed row index
  const int64_t end = (ci + 1) * r;           // its window is [end - r, end)
  const Source src{&a, a.pos0 / r * r};
  for (int j = threadIdx.x; j < dim; j += blockDim.x) {
    float kv[8], sc[8];
    int ns = 0;
    if (r == 4) {
      // unrolled, so that the eight positions' loads are in flight together (one after another they were
      // most of a decode step's 20 us)
#pragma unroll
      for (int p = 0; p < 4; ++p) src.at(end - 8 + p, j, kv[p], sc[p]);  // previous window, first half
#pragma unroll
      for (int p = 0; p < 4; ++p) src.at(end - 4 + p, dim + j, kv[4 + p], sc[4 + p]);
      ns = 8;
    }
    for (int p = 0; r != 4 && p < r; ++p) {
      float k, s;
      src.at(end - r + p, j, k, s);
      if (p == 0) kv[0] = k, sc[0] = s, ns = 1;
      else {
        // ratios above 8: an online softmax over the window keeps registers bounded
        kv[1] = k, sc[1] = s, ns = 2;
        const float mx = fmaxf(sc[0], sc[1]);
        const float e0 = __expf(sc[0] - mx), e1 = __expf(sc[1] - mx);
        // keep (weighted kv, log-sum) in slot 0
        const float tot = e0 + e1;
        kv[0] = (e0 * kv[0] + e1 * kv[1]) / tot;
        sc[0] = mx + __logf(tot);
        ns = 1;
      }
    }
    float out;
    if (r == 4) {
      float mx = kNegInf;
      for (int s = 0; s < ns; ++s) mx = fmaxf(mx, sc[s]);
      float sum = 0, acc = 0;
      for (int s = 0; s < ns; ++s) sum += __expf(sc[s] - mx);
      for (int s = 0; s < ns; ++s) acc += (__expf(sc[s] - mx) / sum) * kv[s];
      out = acc;
    } else {
      out = kv[0];
    }
    row[j] = out;
  }
  __syncthreads();
  double v = 0;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) v += static_cast<double>(row[j]) * row[j];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x) / 32; ++w) s += red[w];
    red[32] = s;
  }
  __syncthreads();
  const float scale = static_cast<float>(1.0 / sqrt(red[32] / static_cast<double>(dim) + a.eps));
  for (int j = threadIdx.x; j < dim; j += blockDim.x) row[j] = row[j] * scale * a.norm[j];
  __syncthreads();
  const int64_t rp = end - r;
  float* tail = row + dim - a.n_rot;
  for (int p = threadIdx.x; p < a.n_rot / 2; p += blockDim.x)
    d_rope_pair(tail[2 * p], tail[2 * p + 1], static_cast<double>(rp) * a.freq[p], false);
  __syncthreads();
  if (a.official) {
    // all threads of the block (a thread per scale block or one thread per row took 40-60 us at decode)
    if (a.kind == RowKind::Attention) fp8_blocks_par(row, dim - a.n_rot, 64);
    else indexer_qat_par(row, dim);
    for (int j = threadIdx.x; j < dim; j += blockDim.x) row[j] = f16_round(row[j]);
    __syncthreads();
  }
  float* out = a.out_rows + ci * dim;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) out[j] = row[j];
}

// The state after the chunk, as the sequential walk leaves it. Reads the old state, so it writes a
// fresh copy (new_kv/new_sc) that the caller copies back.
__global__ void compress_state_kernel(CompressorArgs a, float* new_kv, float* new_sc) {
  pdl_wait();
  if (a.pos_dev) a.pos0 = *a.pos_dev;
  const int r = a.ratio, W = a.width;
  const int rows = r == 4 ? 8 : r;
  const int64_t end = a.pos0 + a.n, cur_end = end / r * r;
  const Source src{&a, a.pos0 / r * r};
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < static_cast<int64_t>(rows) * W;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int row = static_cast<int>(i / W), col = static_cast<int>(i % W);
    int64_t q;
    if (r == 4) q = row >= 4 ? cur_end + (row - 4) : cur_end - 4 + row;
    else q = cur_end + row;
    float kv = 0.0f, sc = kNegInf;
    if (q < end) src.at(q, col, kv, sc);
    new_kv[i] = kv, new_sc[i] = sc;
  }
}

}  // namespace

bool compressor_supported(const CompressorArgs& a) { return a.ratio >= 1 && a.dim <= 8192 && a.n <= (1ll << 31); }

void compressor_chunk(const CompressorArgs& a, float* tmp, cudaStream_t s) {
  if (a.n <= 0) return;
  const int64_t first = a.pos0 / a.ratio, last = (a.pos0 + a.n) / a.ratio;  // rows [first, last) complete here
  if (last > first) {
    // a thread per column of the model's widths (512); the same count for every row, since the norm's
    // sum order follows it (a row built at decode equals the one a prefill chunk builds)
    compress_rows_kernel<<<static_cast<unsigned>(last - first), kRowThreads, a.dim * sizeof(float), s>>>(a, first);
    FS_CUDA_LAUNCH_CHECK();
  }
  const int rows = a.ratio == 4 ? 8 : a.ratio;
  const int64_t total = static_cast<int64_t>(rows) * a.width;
  compress_state_kernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, s>>>(a, tmp, tmp + total);
  FS_CUDA_LAUNCH_CHECK();
  FS_CUDA_CHECK(cudaMemcpyAsync(a.state_kv, tmp, total * sizeof(float), cudaMemcpyDeviceToDevice, s));
  FS_CUDA_CHECK(cudaMemcpyAsync(a.state_score, tmp + total, total * sizeof(float), cudaMemcpyDeviceToDevice, s));
}

}  // namespace flashstar::cuda::fast
