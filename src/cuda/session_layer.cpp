#include "cuda/session_layer.h"

#include <cstring>

#include "cuda/cuda_util.h"

namespace flashstar::cuda {

void VectorBlob::add(const void* p, size_t bytes, const void** dst) {
  if (!bytes) return;
  const size_t off = (blob_.size() + 255) & ~size_t(255);
  blob_.resize(off + bytes);
  std::memcpy(blob_.data() + off, p, bytes);
  fix_.push_back({off, dst});
}

void VectorBlob::upload(DeviceArray<uint8_t>& device) {
  device.resize(blob_.size());
  FS_CUDA_CHECK(cudaMemcpy(device.get(), blob_.data(), blob_.size(), cudaMemcpyHostToDevice));
  landed_for_nonblocking_streams();
  for (auto& [off, dst] : fix_) *dst = device.get() + off;
}

// A cudaMemcpy from pageable memory returns once its last piece is staged for DMA, not once it has
// landed, and the sessions' streams are non-blocking: they do not wait for the legacy stream. Seen on the
// H200: a kernel on such a stream read the last 16 KiB of a 1 MiB copy before it arrived.
void landed_for_nonblocking_streams() { FS_CUDA_CHECK(cudaDeviceSynchronize()); }

void upload_layer_state(DLayer& L, const LayerState& S, int64_t head_dim) {
  constexpr auto h2d = cudaMemcpyHostToDevice;
  L.n_raw = static_cast<int64_t>(S.raw.size()) / head_dim;
  FS_CUDA_CHECK(cudaMemcpy(L.hist, S.raw.data(), S.raw.size() * 4, h2d));
  if (L.comp) {
    FS_CUDA_CHECK(cudaMemcpy(L.comp, S.comp.data(), S.comp.size() * 4, h2d));
    FS_CUDA_CHECK(cudaMemcpy(L.comp_kv_st, S.comp_state.kv.data(), L.comp_state_floats * 4, h2d));
    FS_CUDA_CHECK(cudaMemcpy(L.comp_sc_st, S.comp_state.score.data(), L.comp_state_floats * 4, h2d));
  }
  if (L.idx) {
    FS_CUDA_CHECK(cudaMemcpy(L.idx, S.idx.data(), S.idx.size() * 4, h2d));
    FS_CUDA_CHECK(cudaMemcpy(L.idx_kv_st, S.idx_state.kv.data(), L.idx_state_floats * 4, h2d));
    FS_CUDA_CHECK(cudaMemcpy(L.idx_sc_st, S.idx_state.score.data(), L.idx_state_floats * 4, h2d));
  }
}

void download_layer_state(const DLayer& L, LayerState& S, int64_t n_tokens, int64_t head_dim, int64_t idx_head_dim) {
  constexpr auto d2h = cudaMemcpyDeviceToHost;
  S.raw.resize(static_cast<size_t>(L.n_raw * head_dim));
  FS_CUDA_CHECK(cudaMemcpy(S.raw.data(), L.hist, S.raw.size() * 4, d2h));
  if (L.comp) {
    S.comp.resize(static_cast<size_t>(n_tokens / S.ratio * head_dim));
    FS_CUDA_CHECK(cudaMemcpy(S.comp.data(), L.comp, S.comp.size() * 4, d2h));
    FS_CUDA_CHECK(cudaMemcpy(S.comp_state.kv.data(), L.comp_kv_st, L.comp_state_floats * 4, d2h));
    FS_CUDA_CHECK(cudaMemcpy(S.comp_state.score.data(), L.comp_sc_st, L.comp_state_floats * 4, d2h));
  }
  if (L.idx) {
    S.idx.resize(static_cast<size_t>(n_tokens / 4 * idx_head_dim));
    FS_CUDA_CHECK(cudaMemcpy(S.idx.data(), L.idx, S.idx.size() * 4, d2h));
    FS_CUDA_CHECK(cudaMemcpy(S.idx_state.kv.data(), L.idx_kv_st, L.idx_state_floats * 4, d2h));
    FS_CUDA_CHECK(cudaMemcpy(S.idx_state.score.data(), L.idx_sc_st, L.idx_state_floats * 4, d2h));
  }
}

}  // namespace flashstar::cuda
