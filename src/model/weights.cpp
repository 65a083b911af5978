#include "model/weights.h"

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "common/error.h"
#include "model/tensor_specs.h"
#include "quant/quant.h"

namespace flashstar {
namespace {

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

class Binder {
 public:
  Binder(const gguf::File& f, const ModelConfig& c) : f_(f) {
    for (auto& s : model_tensor_specs(c)) specs_.emplace(s.name, std::move(s));
  }

  // Checks presence, type class and shape against the spec table; returns nullptr for an absent
  // optional tensor.
  const gguf::TensorInfo* find(const std::string& name) {
    auto it = specs_.find(name);
    if (it == specs_.end()) fail("internal: no spec for tensor %s", name.c_str());
    const TensorSpec& spec = it->second;
    const gguf::TensorInfo* t = f_.find_tensor(name);
    if (!t) {
      if (spec.optional) return nullptr;
      fail("%s: missing tensor %s (expected %s %s)", f_.path().c_str(), name.c_str(), type_class_name(spec.cls),
           shape_str(spec.ne).c_str());
    }
    if (!type_allowed(spec.cls, t->type) || (t->type != GgmlType::I32 && !quant::can_dequantize(t->type)))
      fail("%s: tensor %s has type %s, expected %s", f_.path().c_str(), name.c_str(), type_name(t->type),
           type_class_name(spec.cls));
    if (t->ne != spec.ne)
      fail("%s: tensor %s has shape %s, expected %s", f_.path().c_str(), name.c_str(), shape_str(t->ne).c_str(),
           shape_str(spec.ne).c_str());
    return t;
  }

  Matrix matrix(const std::string& name) {
    const gguf::TensorInfo* t = find(name);
    if (!t) return {};
    Matrix m;
    m.name = t->name.c_str();
    m.type = t->type;
    m.data = f_.tensor_data(*t);
    m.cols = t->ne[0];
    m.rows = t->nelements() / t->ne[0];
    m.row_bytes = row_bytes(t->type, m.cols);
    return m;
  }

  std::vector<float> vec(const std::string& name) {
    const gguf::TensorInfo* t = find(name);
    if (!t) return {};
    std::vector<float> v(static_cast<size_t>(t->nelements()));
    quant::dequantize_row(t->type, f_.tensor_data(*t), v.data(), t->nelements());
    for (float x : v)
      if (!std::isfinite(x)) fail("%s: tensor %s holds a non-finite value", f_.path().c_str(), name.c_str());
    return v;
  }

  ExpertMatrix experts(const std::string& name) {
    ExpertMatrix e;
    e.all = matrix(name);
    const gguf::TensorInfo* t = f_.find_tensor(name);
    e.out = t->ne[1];
    return e;
  }

 private:
  const gguf::File& f_;
  std::unordered_map<std::string, TensorSpec> specs_;
};

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path) {
  auto m = std::unique_ptr<Model>(new Model());
  m->file_ = gguf::File::open(path);
  m->cfg_ = read_config(*m->file_);
  const ModelConfig& c = m->cfg_;
  Binder b(*m->file_, c);

  m->token_embd = b.matrix("token_embd.weight");
  m->output_hc_base = b.vec("output_hc_base.weight");
  m->output_hc_fn = b.matrix("output_hc_fn.weight");
  m->output_hc_scale = b.vec("output_hc_scale.weight");
  m->output_norm = b.vec("output_norm.weight");
  m->output = b.matrix("output.weight");

  m->layers.resize(c.n_layer);
  for (uint32_t il = 0; il < c.n_layer; ++il) {
    LayerWeights& L = m->layers[il];
    const std::string p = "blk." + std::to_string(il) + ".";
    L.ratio = c.ratio(il);
    L.hc_attn_fn = b.matrix(p + "hc_attn_fn.weight");
    L.hc_attn_scale = b.vec(p + "hc_attn_scale.weight");
    L.hc_attn_base = b.vec(p + "hc_attn_base.weight");
    L.attn_norm = b.vec(p + "attn_norm.weight");
    L.q_a = b.matrix(p + "attn_q_a.weight");
    L.q_a_norm = b.vec(p + "attn_q_a_norm.weight");
    L.q_b = b.matrix(p + "attn_q_b.weight");
    L.kv = b.matrix(p + "attn_kv.weight");
    L.kv_a_norm = b.vec(p + "attn_kv_a_norm.weight");
    L.sinks = b.vec(p + "attn_sinks.weight");
    L.out_a = b.matrix(p + "attn_output_a.weight");
    L.out_b = b.matrix(p + "attn_output_b.weight");
    if (L.ratio != 0) {
      L.comp_ape = b.vec(p + "attn_compressor_ape.weight");
      L.comp_kv = b.matrix(p + "attn_compressor_kv.weight");
      L.comp_gate = b.matrix(p + "attn_compressor_gate.weight");
      L.comp_norm = b.vec(p + "attn_compressor_norm.weight");
    }
    if (L.ratio == 4) {
      L.idx_q_b = b.matrix(p + "indexer.attn_q_b.weight");
      L.idx_proj = b.matrix(p + "indexer.proj.weight");
      L.idx_comp_ape = b.vec(p + "indexer_compressor_ape.weight");
      L.idx_comp_kv = b.matrix(p + "indexer_compressor_kv.weight");
      L.idx_comp_gate = b.matrix(p + "indexer_compressor_gate.weight");
      L.idx_comp_norm = b.vec(p + "indexer_compressor_norm.weight");
    }
    L.hc_ffn_fn = b.matrix(p + "hc_ffn_fn.weight");
    L.hc_ffn_scale = b.vec(p + "hc_ffn_scale.weight");
    L.hc_ffn_base = b.vec(p + "hc_ffn_base.weight");
    L.ffn_norm = b.vec(p + "ffn_norm.weight");
    L.gate_inp = b.matrix(p + "ffn_gate_inp.weight");
    if (!c.is_hash_layer(il)) L.exp_probs_b = b.vec(p + "exp_probs_b.bias");
    L.gate_exps = b.experts(p + "ffn_gate_exps.weight");
    L.up_exps = b.experts(p + "ffn_up_exps.weight");
    L.down_exps = b.experts(p + "ffn_down_exps.weight");
    if (c.n_expert_shared) {
      L.gate_shexp = b.matrix(p + "ffn_gate_shexp.weight");
      L.up_shexp = b.matrix(p + "ffn_up_shexp.weight");
      L.down_shexp = b.matrix(p + "ffn_down_shexp.weight");
    }
    if (c.is_hash_layer(il)) {
      const std::string name = p + "ffn_gate_tid2eid.weight";
      const gguf::TensorInfo* t = b.find(name);
      const auto* ids = reinterpret_cast<const uint8_t*>(m->file_->tensor_data(*t));
      L.tid2eid.resize(static_cast<size_t>(t->nelements()));
      std::memcpy(L.tid2eid.data(), ids, L.tid2eid.size() * sizeof(int32_t));
      for (int32_t e : L.tid2eid)
        if (e < 0 || static_cast<uint32_t>(e) >= c.n_expert)
          fail("%s: tensor %s holds expert id %d outside [0, %u)", path.c_str(), name.c_str(), e, c.n_expert);
    }
  }
  return m;
}

}  // namespace flashstar
