// The CUDA session's sizes, computed before anything is allocated: the dimensions its buffers are cut
// from, the per-layer KV state and the scratch of one prefill chunk (what plan_memory reports and the
// session then allocates, so the two cannot disagree).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "cuda/cuda_session.h"

namespace flashstar::cuda::plan {

constexpr int64_t kHeadRows = 128;  // logits rows computed per output-head pass
// Up to this many tokens (or for matrices this short) the fast routes stream weights through the
// matrix-vector kernels; above it they run tensor-core products.
constexpr int64_t kSmallN = 8, kMinGemmRows = 64;
// Floats of partial sums for split matrix-vector products, per lane (the session plans two: the decode
// fork's side branch has its own).
constexpr int64_t kMvWork = 1 << 20;

inline size_t f32b(int64_t n) { return static_cast<size_t>(n) * sizeof(float); }

struct Dims {
  int64_t C, SWA, D, HC, MIX, SPLIT, QL, QD, HD, H, OL, E, K, FF, NIH, IHD, IDXCAP, MAXROWS, V, NHC, XB, MOE_INTS, STATE;
  int64_t TSUM;  // token sums an item of the routed down product's input (16-column groups of FF)
  // Weights (rows x k8) of the largest layer projection one product call multiplies: what the cuBLASLt
  // path (gemm_cublas.h) dequantizes per call. The output head is larger and stays on the custom kernel.
  int64_t DENSE_W;
  Dims(const ModelConfig& c, const SessionOptions& o);
  size_t scratch_floats() const;
  // Every scratch buffer starts on a 256-byte boundary: the kernels load and store float4s, and sizes
  // such as C * K (C = the context when it is below the chunk) are not multiples of 4 floats.
  static constexpr size_t kScratchAlign = 64, kScratchPieces = 40;
};

// Device bytes of the cuBLASLt path's scratch for this session (0 when the path is off: no cuBLASLt in the
// build, FLASHSTAR_GEMM_CUBLAS=0, or none of the routes that run dense products on).
size_t cublas_bytes(const Dims& d, const SessionOptions& o);

size_t layer_state_floats(const ModelConfig& c, const SessionOptions& o, uint32_t il, int64_t C);

// FLASHSTAR_GPU_MEMORY=80GiB (or bytes, KiB/MiB/GiB/GB suffixes): plan as if the card had at most this
// much memory, to leave room for other processes or to check what a smaller card would refuse.
void cap_memory(size_t& free_b, size_t& total_b);

// The shape of the decode step at position pos0, which picks its CUDA graph: bit i set where the step
// closes a compressed row of ratios[i] (the distinct ratios, at most 62), bit 62 where the indexer selects
// (more compressed rows of ratio 4 than it keeps). Steps with the same key launch the same kernels.
std::vector<uint32_t> distinct_ratios(const ModelConfig& c);  // the layers' compression ratios, first use order
uint64_t decode_graph_key(std::span<const uint32_t> ratios, uint32_t idx_top_k, int64_t pos0);

}  // namespace flashstar::cuda::plan
