// A loaded model: the mmapped GGUF, its configuration and every tensor bound and checked by name,
// type and shape. Matrices stay in the mapping (never copied); small vectors (norm weights, HC
// scales, sinks, APE, biases) are dequantized once into float vectors.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "model/config.h"
#include "quant/types.h"

namespace flashstar {

// A view of a stored matrix: ne0 = input width (contiguous), rows = product of the other dims.
struct Matrix {
  const char* name = nullptr;
  GgmlType type = GgmlType::F32;
  const uint8_t* data = nullptr;
  int64_t cols = 0;       // ne0
  int64_t rows = 0;       // ne1 * ne2 * ...
  size_t row_bytes = 0;   // bytes of one row
  bool present() const { return data != nullptr; }
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes; }
};

// Routed experts stored as one 3-D tensor [in, out, expert].
struct ExpertMatrix {
  Matrix all;             // rows = out * n_expert
  int64_t out = 0;        // rows per expert
  Matrix expert(int64_t e) const {
    Matrix m = all;
    m.data = all.data + static_cast<size_t>(e * out) * all.row_bytes;
    m.rows = out;
    return m;
  }
};

struct LayerWeights {
  uint32_t ratio = 0;
  // attention half
  Matrix hc_attn_fn;
  std::vector<float> hc_attn_scale, hc_attn_base, attn_norm;
  Matrix q_a;
  std::vector<float> q_a_norm;
  Matrix q_b, kv;
  std::vector<float> kv_a_norm, sinks;
  Matrix out_a, out_b;
  // compressor (ratio != 0)
  std::vector<float> comp_ape;  // [ratio][width]
  Matrix comp_kv, comp_gate;
  std::vector<float> comp_norm;
  // indexer (ratio == 4)
  Matrix idx_q_b, idx_proj;
  std::vector<float> idx_comp_ape;
  Matrix idx_comp_kv, idx_comp_gate;
  std::vector<float> idx_comp_norm;
  // FFN half
  Matrix hc_ffn_fn;
  std::vector<float> hc_ffn_scale, hc_ffn_base, ffn_norm;
  Matrix gate_inp;
  std::vector<float> exp_probs_b;  // empty when absent
  ExpertMatrix gate_exps, up_exps, down_exps;
  Matrix gate_shexp, up_shexp, down_shexp;  // absent when expert_shared_count == 0
  std::vector<int32_t> tid2eid;             // [vocab][n_expert_used], hash layers only
};

class Model {
 public:
  // Opens, validates the configuration and binds every tensor. Throws Error (one line) on any defect.
  static std::unique_ptr<Model> load(const std::string& path);

  const ModelConfig& config() const { return cfg_; }
  const gguf::File& file() const { return *file_; }

  Matrix token_embd;
  std::vector<float> output_hc_base, output_hc_scale, output_norm;
  Matrix output_hc_fn, output;
  std::vector<LayerWeights> layers;

 private:
  std::unique_ptr<gguf::File> file_;
  ModelConfig cfg_;
};

}  // namespace flashstar
