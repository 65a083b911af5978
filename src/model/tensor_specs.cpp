#include "model/tensor_specs.h"

namespace flashstar {

bool type_allowed(TypeClass cls, GgmlType t) {
  const bool dense = t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16 || t == GgmlType::Q8_0;
  switch (cls) {
    case TypeClass::Dense:
      return dense;
    case TypeClass::Expert:
      return dense || t == GgmlType::Q2_K || t == GgmlType::Q4_K || t == GgmlType::IQ2_XXS;
    case TypeClass::Index:
      return t == GgmlType::I32;
  }
  return false;
}

const char* type_class_name(TypeClass cls) {
  switch (cls) {
    case TypeClass::Dense:
      return "f32, f16, bf16 or q8_0";
    case TypeClass::Expert:
      return "f32, f16, bf16, q8_0, q2_K, q4_K or iq2_xxs";
    case TypeClass::Index:
      return "i32";
  }
  return "?";
}

std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c, bool include_optional) {
  std::vector<TensorSpec> out;
  const int64_t D = c.n_embd, V = c.n_vocab, HC = c.hc_dim(), MIX = c.hc_mix();
  auto add = [&](std::string name, std::vector<int64_t> ne, TypeClass cls, GgmlType t, int layer = -1,
                 bool optional = false, ExpertPart part = ExpertPart::None) {
    out.push_back({std::move(name), std::move(ne), cls, t, optional, layer, part});
  };
  using G = GgmlType;
  add("token_embd.weight", {D, V}, TypeClass::Dense, G::F16);
  add("output_hc_base.weight", {c.n_hc}, TypeClass::Dense, G::F32);
  add("output_hc_fn.weight", {HC, c.n_hc}, TypeClass::Dense, G::F16);
  add("output_hc_scale.weight", {1}, TypeClass::Dense, G::F32);
  add("output_norm.weight", {D}, TypeClass::Dense, G::F32);
  add("output.weight", {D, V}, TypeClass::Dense, G::Q8_0);

  for (uint32_t il = 0; il < c.n_layer; ++il) {
    const int L = static_cast<int>(il);
    const std::string p = "blk." + std::to_string(il) + ".";
    const uint32_t r = c.ratio(il);
    add(p + "hc_attn_fn.weight", {HC, MIX}, TypeClass::Dense, G::F16, L);
    add(p + "hc_attn_scale.weight", {3}, TypeClass::Dense, G::F32, L);
    add(p + "hc_attn_base.weight", {MIX}, TypeClass::Dense, G::F32, L);
    add(p + "attn_norm.weight", {D}, TypeClass::Dense, G::F32, L);
    add(p + "attn_q_a.weight", {D, c.q_lora}, TypeClass::Dense, G::Q8_0, L);
    add(p + "attn_q_a_norm.weight", {c.q_lora}, TypeClass::Dense, G::F32, L);
    add(p + "attn_q_b.weight", {c.q_lora, c.q_dim()}, TypeClass::Dense, G::Q8_0, L);
    add(p + "attn_kv.weight", {D, c.head_dim}, TypeClass::Dense, G::Q8_0, L);
    add(p + "attn_kv_a_norm.weight", {c.head_dim}, TypeClass::Dense, G::F32, L);
    add(p + "attn_sinks.weight", {c.n_head}, TypeClass::Dense, G::F32, L);
    add(p + "attn_output_a.weight", {c.group_dim(), c.out_low_dim()}, TypeClass::Dense, G::Q8_0, L);
    add(p + "attn_output_b.weight", {c.out_low_dim(), D}, TypeClass::Dense, G::Q8_0, L);
    if (r != 0) {
      const int64_t w = c.compressor_width(r, c.head_dim);
      add(p + "attn_compressor_ape.weight", {w, r}, TypeClass::Dense, G::F16, L);
      add(p + "attn_compressor_kv.weight", {D, w}, TypeClass::Dense, G::F16, L);
      add(p + "attn_compressor_gate.weight", {D, w}, TypeClass::Dense, G::F16, L);
      add(p + "attn_compressor_norm.weight", {c.head_dim}, TypeClass::Dense, G::F32, L);
    }
    if (r == 4) {
      const int64_t iw = c.compressor_width(r, c.idx_head_dim);
      add(p + "indexer.attn_q_b.weight", {c.q_lora, int64_t(c.n_idx_head) * c.idx_head_dim}, TypeClass::Dense,
          G::F16, L);
      add(p + "indexer.proj.weight", {D, c.n_idx_head}, TypeClass::Dense, G::F16, L);
      add(p + "indexer_compressor_ape.weight", {iw, r}, TypeClass::Dense, G::F16, L);
      add(p + "indexer_compressor_kv.weight", {D, iw}, TypeClass::Dense, G::F16, L);
      add(p + "indexer_compressor_gate.weight", {D, iw}, TypeClass::Dense, G::F16, L);
      add(p + "indexer_compressor_norm.weight", {c.idx_head_dim}, TypeClass::Dense, G::F32, L);
    }
    add(p + "hc_ffn_fn.weight", {HC, MIX}, TypeClass::Dense, G::F16, L);
    add(p + "hc_ffn_scale.weight", {3}, TypeClass::Dense, G::F32, L);
    add(p + "hc_ffn_base.weight", {MIX}, TypeClass::Dense, G::F32, L);
    add(p + "ffn_norm.weight", {D}, TypeClass::Dense, G::F32, L);
    add(p + "ffn_gate_inp.weight", {D, c.n_expert}, TypeClass::Dense, G::F16, L);
    if (!c.is_hash_layer(il) && include_optional)
      add(p + "exp_probs_b.bias", {c.n_expert}, TypeClass::Dense, G::F32, L, true);
    add(p + "ffn_gate_exps.weight", {D, c.n_ff_exp, c.n_expert}, TypeClass::Expert, G::IQ2_XXS, L, false,
        ExpertPart::Gate);
    add(p + "ffn_up_exps.weight", {D, c.n_ff_exp, c.n_expert}, TypeClass::Expert, G::IQ2_XXS, L, false,
        ExpertPart::Up);
    add(p + "ffn_down_exps.weight", {c.n_ff_exp, D, c.n_expert}, TypeClass::Expert, G::Q2_K, L, false,
        ExpertPart::Down);
    if (c.n_expert_shared) {
      add(p + "ffn_gate_shexp.weight", {D, c.n_ff_exp}, TypeClass::Dense, G::Q8_0, L);
      add(p + "ffn_up_shexp.weight", {D, c.n_ff_exp}, TypeClass::Dense, G::Q8_0, L);
      add(p + "ffn_down_shexp.weight", {c.n_ff_exp, D}, TypeClass::Dense, G::Q8_0, L);
    }
    if (c.is_hash_layer(il)) add(p + "ffn_gate_tid2eid.weight", {c.n_expert_used, V}, TypeClass::Index, G::I32, L);
  }
  return out;
}

}  // namespace flashstar
