#include "convert/hf_config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_util.h"

namespace flashstar::convert {
namespace {

using json = nlohmann::json;

// Looks a value up under any of several spellings (HF first, then official).
const json* find_any(const json& j, std::initializer_list<const char*> keys, const char** found = nullptr) {
  for (const char* k : keys) {
    auto it = j.find(k);
    if (it != j.end() && !it->is_null()) {
      if (found) *found = k;
      return &*it;
    }
  }
  return nullptr;
}

std::string key_list(std::initializer_list<const char*> keys) {
  std::string s;
  for (const char* k : keys) s += (s.empty() ? "" : " / ") + std::string(k);
  return s;
}

uint32_t to_u32(const json& v, const char* key) {
  if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= 0xffffffffll)
    return static_cast<uint32_t>(v.get<int64_t>());
  if (v.is_number_float() && v.get<double>() >= 0 && v.get<double>() == std::floor(v.get<double>()) &&
      v.get<double>() <= 4294967295.0)
    return static_cast<uint32_t>(v.get<double>());
  fail("config.json: %s must be a non-negative integer", key);
}

double to_f64(const json& v, const char* key) {
  if (!v.is_number()) fail("config.json: %s must be a number", key);
  return v.get<double>();
}

struct Reader {
  const json& j;
  std::vector<std::string>* defaulted;

  uint32_t req_u32(std::initializer_list<const char*> keys) const {
    const char* k = nullptr;
    const json* v = find_any(j, keys, &k);
    if (!v) fail("config.json: missing %s", key_list(keys).c_str());
    return to_u32(*v, k);
  }
  uint32_t opt_u32(std::initializer_list<const char*> keys, uint32_t def) const {
    const char* k = nullptr;
    const json* v = find_any(j, keys, &k);
    if (!v) {
      if (defaulted) defaulted->push_back(*keys.begin());
      return def;
    }
    return to_u32(*v, k);
  }
  double opt_f64(const json& obj, std::initializer_list<const char*> keys, double def) const {
    const char* k = nullptr;
    const json* v = obj.is_object() ? find_any(obj, keys, &k) : nullptr;
    if (!v) {
      if (defaulted) defaulted->push_back(*keys.begin());
      return def;
    }
    return to_f64(*v, k);
  }
};

}  // namespace

ModelConfig config_from_json(const json& j, std::vector<std::string>* defaulted) {
  if (!j.is_object()) fail("config.json: not a JSON object");
  Reader r{j, defaulted};
  ModelConfig c;  // Flash defaults for everything optional
  if (auto it = j.find("_name_or_path"); it != j.end() && it->is_string() && !it->get<std::string>().empty())
    c.name = it->get<std::string>();
  c.n_embd = r.req_u32({"hidden_size", "dim"});
  c.n_layer = r.req_u32({"num_hidden_layers", "n_layers"});
  c.n_vocab = r.req_u32({"vocab_size"});
  c.n_head = r.req_u32({"num_attention_heads", "n_heads"});
  c.n_head_kv = r.opt_u32({"num_key_value_heads"}, 1);
  c.head_dim = r.req_u32({"head_dim"});
  c.q_lora = r.req_u32({"q_lora_rank"});
  c.o_lora = r.req_u32({"o_lora_rank"});
  c.n_out_group = r.req_u32({"o_groups"});
  c.n_expert = r.req_u32({"n_routed_experts"});
  c.n_expert_used = r.req_u32({"num_experts_per_tok", "n_activated_experts"});
  c.n_ff_exp = r.req_u32({"moe_intermediate_size", "moe_inter_dim"});
  c.n_expert_shared = r.opt_u32({"n_shared_experts"}, 1);
  c.n_swa = r.req_u32({"sliding_window", "window_size"});
  c.n_idx_head = r.req_u32({"index_n_heads"});
  c.idx_head_dim = r.req_u32({"index_head_dim"});
  c.idx_top_k = r.req_u32({"index_topk"});
  c.n_hc = r.opt_u32({"hc_mult"}, c.n_hc);
  c.hc_sinkhorn_iter = r.opt_u32({"hc_sinkhorn_iters"}, c.hc_sinkhorn_iter);
  c.hc_eps = r.opt_f64(j, {"hc_eps"}, c.hc_eps);
  c.rms_eps = r.opt_f64(j, {"rms_norm_eps", "norm_eps"}, c.rms_eps);

  // Rope dims: explicit, else head_dim × partial_rotary_factor (top level or rope_parameters.main).
  const json empty = json::object();
  const json* rp = find_any(j, {"rope_parameters", "rope_scaling"});
  const bool nested = rp && rp->is_object() && rp->contains("main");
  const json& main_rp = nested ? (*rp)["main"] : empty;
  const json& comp_rp = nested ? (rp->contains("compress") ? (*rp)["compress"] : empty) : (rp && rp->is_object() ? *rp : empty);
  if (const json* v = find_any(j, {"qk_rope_head_dim", "rope_head_dim"})) {
    c.n_rot = to_u32(*v, "qk_rope_head_dim");
  } else {
    const json* f = find_any(j, {"partial_rotary_factor"});
    if (!f && main_rp.is_object()) f = find_any(main_rp, {"partial_rotary_factor"});
    if (!f) fail("config.json: missing qk_rope_head_dim / rope_head_dim / partial_rotary_factor");
    const double rot = c.head_dim * to_f64(*f, "partial_rotary_factor");
    if (rot != std::floor(rot) || rot < 0) fail("config.json: head_dim × partial_rotary_factor = %g is not an integer", rot);
    c.n_rot = static_cast<uint32_t>(rot);
  }

  // Hash-routed layers: the leading "hash_moe" entries of mlp_layer_types, or an explicit count.
  if (auto it = j.find("mlp_layer_types"); it != j.end() && it->is_array()) {
    uint32_t n = 0;
    bool seen_other = false;
    for (const auto& t : *it) {
      if (!t.is_string()) fail("config.json: mlp_layer_types holds a non-string entry");
      if (t.get<std::string>() == "hash_moe") {
        if (seen_other) fail("config.json: mlp_layer_types has hash_moe after a non-hash layer (hash layers must lead)");
        ++n;
      } else {
        seen_other = true;
      }
    }
    c.n_hash_layer = n;
  } else {
    c.n_hash_layer = r.opt_u32({"num_hash_layers", "n_hash_layers"}, c.n_hash_layer);
  }

  // Compression schedule: an explicit list (official; may carry an extra MTP entry), or layer_types
  // with compress_rates.
  c.compress_ratio.clear();
  if (auto it = j.find("compress_ratios"); it != j.end() && it->is_array()) {
    for (const auto& v : *it) c.compress_ratio.push_back(to_u32(v, "compress_ratios[]"));
  } else if (auto lt = j.find("layer_types"); lt != j.end() && lt->is_array()) {
    const json* rates = find_any(j, {"compress_rates"});
    for (const auto& t : *lt) {
      if (!t.is_string()) fail("config.json: layer_types holds a non-string entry");
      const std::string s = t.get<std::string>();
      if (s == "sliding_attention" || s == "full_attention") {
        c.compress_ratio.push_back(0);
      } else {
        if (!rates || !rates->is_object() || !rates->contains(s))
          fail("config.json: layer type %s has no entry in compress_rates", s.c_str());
        c.compress_ratio.push_back(to_u32((*rates)[s], "compress_rates"));
      }
    }
  } else {
    fail("config.json: missing compress_ratios or layer_types");
  }
  if (c.compress_ratio.size() < c.n_layer)
    fail("config.json: the compression schedule has %zu entries for %u layers", c.compress_ratio.size(), c.n_layer);
  c.compress_ratio.resize(c.n_layer);

  // SwiGLU clamp: a scalar for every layer, or a list.
  c.swiglu_clamp.clear();
  if (const json* s = find_any(j, {"swiglu_limit"})) {
    if (s->is_array()) {
      for (const auto& v : *s) c.swiglu_clamp.push_back(static_cast<float>(to_f64(v, "swiglu_limit[]")));
    } else {
      c.swiglu_clamp.assign(c.n_layer, static_cast<float>(to_f64(*s, "swiglu_limit")));
    }
  } else {
    if (defaulted) defaulted->push_back("swiglu_limit");
    c.swiglu_clamp.assign(c.n_layer, 10.0f);
  }
  if (c.swiglu_clamp.size() < c.n_layer) fail("config.json: swiglu_limit has fewer entries than layers");
  c.swiglu_clamp.resize(c.n_layer);
  for (float v : c.swiglu_clamp)
    if (!(v > 0)) fail("config.json: swiglu_limit %g (no clamp) is not supported", static_cast<double>(v));

  // Rope bases and YaRN parameters: flat keys, rope_parameters (nested main/compress or flat), or the
  // official rope_factor / original_seq_len.
  if (const json* v = find_any(j, {"rope_theta"})) c.rope_freq_base = to_f64(*v, "rope_theta");
  else c.rope_freq_base = r.opt_f64(main_rp, {"rope_theta"}, c.rope_freq_base);
  if (const json* v = find_any(j, {"compress_rope_theta"})) c.compress_rope_freq_base = to_f64(*v, "compress_rope_theta");
  else c.compress_rope_freq_base = r.opt_f64(comp_rp, {"rope_theta"}, c.compress_rope_freq_base);
  const json& scal = comp_rp.is_object() && !comp_rp.empty() ? comp_rp : j;
  auto scaled = [&](std::initializer_list<const char*> rp_keys, std::initializer_list<const char*> flat_keys, double def) {
    if (const json* v = scal.is_object() ? find_any(scal, rp_keys) : nullptr) return to_f64(*v, *rp_keys.begin());
    return r.opt_f64(j, flat_keys, def);
  };
  c.rope_scaling_factor = scaled({"factor"}, {"rope_factor"}, c.rope_scaling_factor);
  const double orig = scaled({"original_max_position_embeddings"}, {"original_seq_len"}, static_cast<double>(c.rope_orig_ctx));
  if (!(orig >= 1) || orig != std::floor(orig)) fail("config.json: original_max_position_embeddings must be a positive integer");
  c.rope_orig_ctx = static_cast<uint64_t>(orig);
  c.yarn_beta_fast = scaled({"beta_fast"}, {"beta_fast"}, c.yarn_beta_fast);
  c.yarn_beta_slow = scaled({"beta_slow"}, {"beta_slow"}, c.yarn_beta_slow);

  c.expert_weights_scale = r.opt_f64(j, {"routed_scaling_factor", "route_scale"}, c.expert_weights_scale);
  if (auto it = j.find("norm_topk_prob"); it != j.end() && it->is_boolean()) c.expert_weights_norm = it->get<bool>();
  if (const json* v = find_any(j, {"max_position_embeddings"})) {
    c.context_length = static_cast<uint64_t>(to_f64(*v, "max_position_embeddings"));
  } else {
    c.context_length = static_cast<uint64_t>(c.rope_scaling_factor * static_cast<double>(c.rope_orig_ctx));
  }

  try {
    c.validate();
  } catch (const Error& e) {
    fail("config.json: %s", e.what());
  }
  return c;
}

ModelConfig read_hf_config(const std::string& path, std::vector<std::string>* defaulted) {
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail("%s: not valid JSON (%s)", path.c_str(), e.what());
  }
  try {
    return config_from_json(j, defaulted);
  } catch (const Error& e) {
    std::string m = e.what();
    if (m.rfind("config.json: ", 0) == 0) m = m.substr(13);
    fail("%s: %s", path.c_str(), m.c_str());
  }
}

}  // namespace flashstar::convert
