// A layer of the CUDA session: its matrices and vectors on the device, and its KV state there.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "cuda/cuda_util.h"
#include "cuda/ref_kernels.h"
#include "engine/kv_state.h"
#include "engine/session.h"
#include "model/weights.h"

namespace flashstar::cuda {

struct DLayer {
  DMat hc_attn_fn, q_a, q_b, kv, out_a, out_b, comp_kv, comp_gate, idx_q_b, idx_proj, idx_comp_kv, idx_comp_gate;
  DMat hc_ffn_fn, gate_inp, gate_exps, up_exps, down_exps, gate_sh, up_sh, down_sh;
  const float *hc_attn_scale = nullptr, *hc_attn_base = nullptr, *attn_norm = nullptr, *q_a_norm = nullptr,
              *kv_a_norm = nullptr, *sinks = nullptr, *comp_ape = nullptr, *comp_norm = nullptr,
              *idx_comp_ape = nullptr, *idx_comp_norm = nullptr, *hc_ffn_scale = nullptr, *hc_ffn_base = nullptr,
              *ffn_norm = nullptr, *exp_probs_b = nullptr;
  const int32_t* tid2eid = nullptr;
  // state
  float *hist = nullptr, *comp = nullptr, *comp_kv_st = nullptr, *comp_sc_st = nullptr;
  float *idx = nullptr, *idx_kv_st = nullptr, *idx_sc_st = nullptr;
  int64_t n_raw = 0;
  uint32_t ratio = 0;  // the compression ratio (0: none)
  size_t comp_state_floats = 0, idx_state_floats = 0;
};

// The session's small vectors (norm weights, biases, RoPE tables, ...) gathered into one host blob, each
// on a 256-byte boundary, then copied to one device array: one upload and one allocation for hundreds of
// vectors. upload() points every registered pointer at its vector's device copy.
class VectorBlob {
 public:
  void add(const void* p, size_t bytes, const void** dst);
  void add(const std::vector<float>& v, const float** dst) {
    add(v.data(), v.size() * 4, reinterpret_cast<const void**>(dst));
  }
  void upload(DeviceArray<uint8_t>& device);

 private:
  std::vector<uint8_t> blob_;
  std::vector<std::pair<size_t, const void**>> fix_;
};

// L's matrices (dev: a file matrix's device view) and its vectors, registered in b for the one upload.
void bind_layer(DLayer& L, const LayerWeights& w, const std::function<DMat(const Matrix&)>& dev, VectorBlob& b);
// Points layer il's state (the raw window, compressed rows and slot states) into p, in the floats that
// plan::layer_state_floats(c, o, il, C) counts for it (session_plan.cpp); returns the end of them.
float* place_layer_state(DLayer& L, const ModelConfig& c, const SessionOptions& o, uint32_t il, int64_t C, float* p);

// Waits until the host-to-device copies made with cudaMemcpy have landed (session_layer.cpp says why).
void landed_for_nonblocking_streams();
// The layer's state from S (the raw window, compressed rows and slot states): copies that the caller
// waits for with landed_for_nonblocking_streams() before its streams read them.
void upload_layer_state(DLayer& L, const LayerState& S, int64_t head_dim);
// The layer's state into S (S initialized for the layer) after n_tokens tokens; synchronous copies.
void download_layer_state(const DLayer& L, LayerState& S, int64_t n_tokens, int64_t head_dim, int64_t idx_head_dim);

}  // namespace flashstar::cuda
