// Model hyper-parameters, read from GGUF metadata (keys: shared/spec/model.md §1.2). Dimensions are
// data, not constants: the 6-layer tiny fixtures and the 43-layer Flash go through the same code.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flashstar {
namespace gguf {
class File;
class Writer;
}  // namespace gguf

struct ModelConfig {
  std::string name = "DeepSeek-V4-Flash";
  uint32_t n_layer = 43;
  uint32_t n_embd = 4096;
  uint32_t n_vocab = 129280;
  uint32_t n_head = 64;
  uint32_t n_head_kv = 1;
  uint32_t head_dim = 512;   // key_length == value_length
  uint32_t n_rot = 64;       // rope dims: the last n_rot of each head
  uint32_t q_lora = 1024;
  uint32_t o_lora = 1024;    // rank per output group
  uint32_t n_out_group = 8;
  uint32_t n_expert = 256;
  uint32_t n_expert_used = 6;
  uint32_t n_ff_exp = 2048;
  uint32_t n_expert_shared = 1;
  uint32_t n_hash_layer = 3;
  uint32_t n_swa = 128;      // raw window, including the current token
  uint32_t n_idx_head = 64;
  uint32_t idx_head_dim = 128;
  uint32_t idx_top_k = 512;
  uint32_t n_hc = 4;
  uint32_t hc_sinkhorn_iter = 20;
  std::vector<uint32_t> compress_ratio;  // per layer: 0 (sliding only), 4 (CSA) or 128 (HCA)
  std::vector<float> swiglu_clamp;       // per layer
  uint64_t rope_orig_ctx = 65536;
  double rope_freq_base = 10000.0;
  double rope_scaling_factor = 16.0;
  double yarn_beta_fast = 32.0;
  double yarn_beta_slow = 1.0;
  double compress_rope_freq_base = 160000.0;
  double expert_weights_scale = 1.5;
  double rms_eps = 1e-6;
  double hc_eps = 1e-6;
  bool expert_weights_norm = true;
  uint64_t context_length = 1048576;

  // The published DeepSeek V4 Flash configuration, optionally with fewer layers (same schedule).
  static ModelConfig flash(uint32_t n_layer = 43);
  // ds4's schedule: 0 for il < 2, then 4 on even layers and 128 on odd layers.
  static std::vector<uint32_t> flash_schedule(uint32_t n_layer);

  // Internal consistency (divisibility, ranges, schedule values); throws Error naming the field.
  void validate() const;

  uint32_t ratio(uint32_t il) const { return compress_ratio[il]; }
  bool is_hash_layer(uint32_t il) const { return il < n_hash_layer; }
  uint32_t hc_dim() const { return n_hc * n_embd; }
  uint32_t hc_mix() const { return 2 * n_hc + n_hc * n_hc; }
  uint32_t q_dim() const { return n_head * head_dim; }
  uint32_t heads_per_group() const { return n_head / n_out_group; }
  uint32_t group_dim() const { return heads_per_group() * head_dim; }
  uint32_t out_low_dim() const { return n_out_group * o_lora; }
  uint32_t nope_dim() const { return head_dim - n_rot; }
  // Compressor width: coff * head_dim with coff = 2 for ratio 4 (overlapping windows), 1 otherwise.
  uint32_t compressor_width(uint32_t ratio_, uint32_t dim) const { return (ratio_ == 4 ? 2 : 1) * dim; }
};

// Reads and validates the configuration. Throws Error naming the first missing or malformed key.
ModelConfig read_config(const gguf::File& f);
// Writes every key read_config needs, with ds4's key names and value types.
void write_config(gguf::Writer& w, const ModelConfig& c);

}  // namespace flashstar
