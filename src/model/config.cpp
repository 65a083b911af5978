#include "model/config.h"

#include <cmath>

#include "common/error.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"

namespace flashstar {
namespace {

constexpr const char* kArch = "deepseek4";

std::string key(const char* k) { return std::string(kArch) + "." + k; }

uint32_t req_u32(const gguf::File& f, const char* k) {
  const std::string full = key(k);
  auto v = f.get_u64(full);
  if (!v) fail("%s: missing or non-integer metadata key %s", f.path().c_str(), full.c_str());
  if (*v > 0xffffffffull) fail("%s: metadata %s = %llu is out of range", f.path().c_str(), full.c_str(),
                               static_cast<unsigned long long>(*v));
  return static_cast<uint32_t>(*v);
}

double req_f64(const gguf::File& f, const char* k) {
  const std::string full = key(k);
  auto v = f.get_f64(full);
  if (!v || !std::isfinite(*v)) fail("%s: missing or non-numeric metadata key %s", f.path().c_str(), full.c_str());
  return *v;
}

}  // namespace

std::vector<uint32_t> ModelConfig::flash_schedule(uint32_t n_layer) {
  std::vector<uint32_t> r(n_layer);
  for (uint32_t il = 0; il < n_layer; ++il) r[il] = il < 2 ? 0 : (il % 2 == 0 ? 4 : 128);
  return r;
}

ModelConfig ModelConfig::flash(uint32_t n_layer) {
  ModelConfig c;
  c.n_layer = n_layer;
  c.compress_ratio = flash_schedule(n_layer);
  c.swiglu_clamp.assign(n_layer, 10.0f);
  return c;
}

void ModelConfig::validate() const {
  auto need = [](bool ok, const char* what) {
    if (!ok) fail("invalid model configuration: %s", what);
  };
  need(n_layer >= 1 && n_layer <= 1024, "block_count must be in 1..1024");
  need(n_embd >= 1 && n_embd <= (1u << 20), "embedding_length out of range");
  need(n_vocab >= 1 && n_vocab <= (1u << 24), "vocab_size out of range");
  need(n_head >= 1 && n_head <= 4096, "attention.head_count out of range");
  need(n_head_kv == 1, "attention.head_count_kv must be 1 (one shared KV row)");
  need(head_dim >= 2 && head_dim <= 8192, "attention.key_length out of range");
  need(n_rot >= 2 && n_rot % 2 == 0 && n_rot <= head_dim, "rope.dimension_count must be even and <= key_length");
  need(n_rot <= idx_head_dim, "rope.dimension_count must be <= attention.indexer.key_length");
  need(q_lora >= 1 && o_lora >= 1, "lora ranks must be positive");
  need(n_out_group >= 1 && n_head % n_out_group == 0, "head_count must be a multiple of output_group_count");
  need(n_expert >= 1 && n_expert <= 65536, "expert_count out of range");
  need(n_expert_used >= 1 && n_expert_used <= n_expert, "expert_used_count must be in 1..expert_count");
  need(n_ff_exp >= 1, "expert_feed_forward_length must be positive");
  need(n_expert_shared <= 1, "expert_shared_count must be 0 or 1");
  need(n_hash_layer <= n_layer, "hash_layer_count exceeds block_count");
  need(n_swa >= 1, "attention.sliding_window must be positive");
  need(n_idx_head >= 1 && idx_head_dim >= 2 && idx_top_k >= 1, "indexer sizes must be positive");
  need(n_hc >= 1 && n_hc <= 16, "hyper_connection.count out of range");
  need(hc_sinkhorn_iter >= 1 && hc_sinkhorn_iter <= 1000, "hyper_connection.sinkhorn_iterations out of range");
  need(compress_ratio.size() >= n_layer, "attention.compress_ratios has fewer entries than block_count");
  need(swiglu_clamp.size() >= n_layer, "swiglu_clamp_exp has fewer entries than block_count");
  for (uint32_t il = 0; il < n_layer; ++il) {
    const uint32_t r = compress_ratio[il];
    need(r == 0 || (r >= 2 && r <= 65536), "attention.compress_ratios entries must be 0 or in 2..65536");
    need(std::isfinite(swiglu_clamp[il]) && swiglu_clamp[il] > 0, "swiglu_clamp_exp entries must be positive");
  }
  need(rope_freq_base > 0 && compress_rope_freq_base > 0, "rope bases must be positive");
  need(rope_scaling_factor >= 1, "rope.scaling.factor must be >= 1");
  need(rope_orig_ctx >= 1, "rope.scaling.original_context_length must be positive");
  need(rms_eps > 0 && hc_eps >= 0, "epsilons must be positive");
}

ModelConfig read_config(const gguf::File& f) {
  ModelConfig c;
  if (auto n = f.get_string("general.name")) c.name = *n;
  c.n_layer = req_u32(f, "block_count");
  c.n_embd = req_u32(f, "embedding_length");
  c.n_vocab = req_u32(f, "vocab_size");
  c.n_head = req_u32(f, "attention.head_count");
  c.n_head_kv = req_u32(f, "attention.head_count_kv");
  c.head_dim = req_u32(f, "attention.key_length");
  const uint32_t vlen = req_u32(f, "attention.value_length");
  if (vlen != c.head_dim) fail("%s: attention.value_length (%u) must equal key_length (%u)", f.path().c_str(), vlen, c.head_dim);
  c.n_rot = req_u32(f, "rope.dimension_count");
  c.q_lora = req_u32(f, "attention.q_lora_rank");
  c.o_lora = req_u32(f, "attention.output_lora_rank");
  c.n_out_group = req_u32(f, "attention.output_group_count");
  c.n_expert = req_u32(f, "expert_count");
  c.n_expert_used = req_u32(f, "expert_used_count");
  c.n_ff_exp = req_u32(f, "expert_feed_forward_length");
  c.n_expert_shared = req_u32(f, "expert_shared_count");
  c.n_hash_layer = req_u32(f, "hash_layer_count");
  for (const char* k : {"expert_group_count", "expert_group_used_count"}) {
    auto v = f.get_u64(key(k));
    if (v && *v != 0) fail("%s: %s = %llu: expert groups are not supported", f.path().c_str(), key(k).c_str(),
                           static_cast<unsigned long long>(*v));
  }
  c.n_swa = req_u32(f, "attention.sliding_window");
  c.n_idx_head = req_u32(f, "attention.indexer.head_count");
  c.idx_head_dim = req_u32(f, "attention.indexer.key_length");
  c.idx_top_k = req_u32(f, "attention.indexer.top_k");
  c.n_hc = req_u32(f, "hyper_connection.count");
  c.hc_sinkhorn_iter = req_u32(f, "hyper_connection.sinkhorn_iterations");

  {
    const std::string k = key("attention.compress_ratios");
    const gguf::Value* v = f.find(k);
    if (!v || v->type != gguf::ValueType::ARRAY) fail("%s: missing array %s", f.path().c_str(), k.c_str());
    for (const auto& it : v->items) {
      auto u = it.as_u64();
      if (!u || *u > 65536) fail("%s: %s holds a non-integer or out-of-range entry", f.path().c_str(), k.c_str());
      c.compress_ratio.push_back(static_cast<uint32_t>(*u));
    }
  }
  {
    const std::string k = key("swiglu_clamp_exp");
    const gguf::Value* v = f.find(k);
    if (!v || v->type != gguf::ValueType::ARRAY) fail("%s: missing array %s", f.path().c_str(), k.c_str());
    for (const auto& it : v->items) {
      auto d = it.as_f64();
      if (!d) fail("%s: %s holds a non-numeric entry", f.path().c_str(), k.c_str());
      c.swiglu_clamp.push_back(static_cast<float>(*d));
    }
  }
  {
    const std::string k = key("rope.scaling.original_context_length");
    auto v = f.get_u64(k);
    if (!v) fail("%s: missing or non-integer metadata key %s", f.path().c_str(), k.c_str());
    c.rope_orig_ctx = *v;
  }
  c.rope_freq_base = req_f64(f, "rope.freq_base");
  c.rope_scaling_factor = req_f64(f, "rope.scaling.factor");
  c.yarn_beta_fast = req_f64(f, "rope.scaling.yarn_beta_fast");
  c.yarn_beta_slow = req_f64(f, "rope.scaling.yarn_beta_slow");
  c.compress_rope_freq_base = req_f64(f, "attention.compress_rope_freq_base");
  c.expert_weights_scale = req_f64(f, "expert_weights_scale");
  c.rms_eps = req_f64(f, "attention.layer_norm_rms_epsilon");
  c.hc_eps = req_f64(f, "hyper_connection.epsilon");
  {
    auto b = f.get_bool(key("expert_weights_norm"));
    if (!b) fail("%s: missing bool %s", f.path().c_str(), key("expert_weights_norm").c_str());
    c.expert_weights_norm = *b;
  }
  if (auto v = f.get_u64(key("context_length"))) c.context_length = *v;
  try {
    c.validate();
  } catch (const Error& e) {
    fail("%s: %s", f.path().c_str(), e.what());
  }
  return c;
}

void write_config(gguf::Writer& w, const ModelConfig& c) {
  w.add_string("general.architecture", kArch);
  w.add_string("general.name", c.name);
  w.add_u64(key("context_length"), c.context_length);
  w.add_u32(key("block_count"), c.n_layer);
  w.add_u32(key("embedding_length"), c.n_embd);
  w.add_u32(key("vocab_size"), c.n_vocab);
  w.add_u32(key("attention.head_count"), c.n_head);
  w.add_u32(key("attention.head_count_kv"), c.n_head_kv);
  w.add_u32(key("attention.key_length"), c.head_dim);
  w.add_u32(key("attention.value_length"), c.head_dim);
  w.add_u32(key("rope.dimension_count"), c.n_rot);
  w.add_u32(key("attention.q_lora_rank"), c.q_lora);
  w.add_u32(key("attention.output_lora_rank"), c.o_lora);
  w.add_u32(key("attention.output_group_count"), c.n_out_group);
  w.add_u32(key("expert_count"), c.n_expert);
  w.add_u32(key("expert_used_count"), c.n_expert_used);
  w.add_u32(key("expert_feed_forward_length"), c.n_ff_exp);
  w.add_u32(key("expert_shared_count"), c.n_expert_shared);
  w.add_u32(key("hash_layer_count"), c.n_hash_layer);
  w.add_u32(key("expert_group_count"), 0);
  w.add_u32(key("expert_group_used_count"), 0);
  w.add_u32(key("attention.sliding_window"), c.n_swa);
  w.add_u32(key("attention.indexer.head_count"), c.n_idx_head);
  w.add_u32(key("attention.indexer.key_length"), c.idx_head_dim);
  w.add_u32(key("attention.indexer.top_k"), c.idx_top_k);
  w.add_u32(key("hyper_connection.count"), c.n_hc);
  w.add_u32(key("hyper_connection.sinkhorn_iterations"), c.hc_sinkhorn_iter);
  w.add_array_u32(key("attention.compress_ratios"),
                  std::vector<uint32_t>(c.compress_ratio.begin(), c.compress_ratio.begin() + c.n_layer));
  w.add_array_f32(key("swiglu_clamp_exp"),
                  std::vector<float>(c.swiglu_clamp.begin(), c.swiglu_clamp.begin() + c.n_layer));
  w.add_u64(key("rope.scaling.original_context_length"), c.rope_orig_ctx);
  w.add_f32(key("rope.freq_base"), static_cast<float>(c.rope_freq_base));
  w.add_f32(key("rope.scaling.factor"), static_cast<float>(c.rope_scaling_factor));
  w.add_f32(key("rope.scaling.yarn_beta_fast"), static_cast<float>(c.yarn_beta_fast));
  w.add_f32(key("rope.scaling.yarn_beta_slow"), static_cast<float>(c.yarn_beta_slow));
  w.add_f32(key("attention.compress_rope_freq_base"), static_cast<float>(c.compress_rope_freq_base));
  w.add_f32(key("expert_weights_scale"), static_cast<float>(c.expert_weights_scale));
  w.add_f32(key("attention.layer_norm_rms_epsilon"), static_cast<float>(c.rms_eps));
  w.add_f32(key("hyper_connection.epsilon"), static_cast<float>(c.hc_eps));
  w.add_bool(key("expert_weights_norm"), c.expert_weights_norm);
}

}  // namespace flashstar
