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

void bind_layer(DLayer& L, const LayerWeights& w, const std::function<DMat(const Matrix&)>& dev, VectorBlob& b) {
  L.hc_attn_fn = dev(w.hc_attn_fn), L.q_a = dev(w.q_a), L.q_b = dev(w.q_b), L.kv = dev(w.kv);
  L.out_a = dev(w.out_a), L.out_b = dev(w.out_b), L.comp_kv = dev(w.comp_kv), L.comp_gate = dev(w.comp_gate);
  L.idx_q_b = dev(w.idx_q_b), L.idx_proj = dev(w.idx_proj), L.idx_comp_kv = dev(w.idx_comp_kv);
  L.idx_comp_gate = dev(w.idx_comp_gate), L.hc_ffn_fn = dev(w.hc_ffn_fn), L.gate_inp = dev(w.gate_inp);
  L.gate_exps = dev(w.gate_exps.all), L.up_exps = dev(w.up_exps.all), L.down_exps = dev(w.down_exps.all);
  L.gate_sh = dev(w.gate_shexp), L.up_sh = dev(w.up_shexp), L.down_sh = dev(w.down_shexp);
  auto addf = [&](const std::vector<float>& v, const float** dst) { b.add(v, dst); };
  addf(w.hc_attn_scale, &L.hc_attn_scale), addf(w.hc_attn_base, &L.hc_attn_base), addf(w.attn_norm, &L.attn_norm);
  addf(w.q_a_norm, &L.q_a_norm), addf(w.kv_a_norm, &L.kv_a_norm), addf(w.sinks, &L.sinks);
  addf(w.comp_ape, &L.comp_ape), addf(w.comp_norm, &L.comp_norm), addf(w.idx_comp_ape, &L.idx_comp_ape);
  addf(w.idx_comp_norm, &L.idx_comp_norm), addf(w.hc_ffn_scale, &L.hc_ffn_scale);
  addf(w.hc_ffn_base, &L.hc_ffn_base), addf(w.ffn_norm, &L.ffn_norm), addf(w.exp_probs_b, &L.exp_probs_b);
  b.add(w.tid2eid.data(), w.tid2eid.size() * 4, reinterpret_cast<const void**>(&L.tid2eid));
}

float* place_layer_state(DLayer& L, const ModelConfig& c, const SessionOptions& o, uint32_t il, int64_t C, float* p) {
  const uint32_t r = c.ratio(il);
  const int64_t hd = c.head_dim, ihd = c.idx_head_dim;
  L.ratio = r;
  L.hist = p, p += (c.n_swa + C) * hd;
  if (r) {
    const size_t w = c.compressor_width(r, c.head_dim), rows = (r == 4 ? 2 : 1) * r;
    L.comp = p, p += static_cast<size_t>(o.ctx / r + 2) * hd;
    L.comp_state_floats = rows * w;
    L.comp_kv_st = p, p += rows * w;
    L.comp_sc_st = p, p += rows * w;
  }
  if (r == 4) {
    const size_t w = c.compressor_width(4, c.idx_head_dim);
    L.idx = p, p += static_cast<size_t>(o.ctx / 4 + 2) * ihd;
    L.idx_state_floats = 8 * w;
    L.idx_kv_st = p, p += 8 * w;
    L.idx_sc_st = p, p += 8 * w;
  }
  return p;
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
