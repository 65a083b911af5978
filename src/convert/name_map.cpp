#include "convert/name_map.h"

#include <cctype>
#include <cstring>
#include <utility>

namespace flashstar::convert {
namespace {

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const char* p) {
  const size_t n = std::strlen(p);
  return s.size() >= n && s.compare(s.size() - n, n, p) == 0;
}

// Parses a non-negative decimal at s[pos..]; advances pos past it.
std::optional<int> parse_index(const std::string& s, size_t& pos) {
  size_t b = pos;
  long v = 0;
  while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos])) && pos - b < 7) v = v * 10 + (s[pos++] - '0');
  if (pos == b || (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos])))) return std::nullopt;
  return static_cast<int>(v);
}

struct Rule {
  const char* src;
  const char* dst;
};

constexpr Rule kGlobal[] = {
    {"embed.weight", "token_embd.weight"},
    {"embed_tokens.weight", "token_embd.weight"},
    {"head.weight", "output.weight"},
    {"lm_head.weight", "output.weight"},
    {"norm.weight", "output_norm.weight"},
    {"hc_head_fn", "output_hc_fn.weight"},
    {"hc_head_base", "output_hc_base.weight"},
    {"hc_head_scale", "output_hc_scale.weight"},
    {"hc_head.hc_fn", "output_hc_fn.weight"},
    {"hc_head.hc_base", "output_hc_base.weight"},
    {"hc_head.hc_scale", "output_hc_scale.weight"},
};

// Per-layer names after "layers.N.". Note `attn.norm` (fixtures) and `attn.kv_norm` (official) are the
// KV norm; `attn.q_norm` is the q_a norm; `attn_norm` / `ffn_norm` are the pre-sublayer norms.
constexpr Rule kLayer[] = {
    {"hc_attn_fn", "hc_attn_fn.weight"},
    {"hc_attn_base", "hc_attn_base.weight"},
    {"hc_attn_scale", "hc_attn_scale.weight"},
    {"hc_ffn_fn", "hc_ffn_fn.weight"},
    {"hc_ffn_base", "hc_ffn_base.weight"},
    {"hc_ffn_scale", "hc_ffn_scale.weight"},
    {"attn_norm.weight", "attn_norm.weight"},
    {"ffn_norm.weight", "ffn_norm.weight"},
    {"attn.wq_a.weight", "attn_q_a.weight"},
    {"attn.q_norm.weight", "attn_q_a_norm.weight"},
    {"attn.wq_b.weight", "attn_q_b.weight"},
    {"attn.wkv.weight", "attn_kv.weight"},
    {"attn.kv_norm.weight", "attn_kv_a_norm.weight"},
    {"attn.norm.weight", "attn_kv_a_norm.weight"},
    {"attn.attn_sink", "attn_sinks.weight"},
    {"attn.wo_a.weight", "attn_output_a.weight"},
    {"attn.wo_b.weight", "attn_output_b.weight"},
    {"attn.compressor.ape", "attn_compressor_ape.weight"},
    {"attn.compressor.wkv.weight", "attn_compressor_kv.weight"},
    {"attn.compressor.wgate.weight", "attn_compressor_gate.weight"},
    {"attn.compressor.norm.weight", "attn_compressor_norm.weight"},
    {"attn.indexer.wq_b.weight", "indexer.attn_q_b.weight"},
    {"attn.indexer.weights_proj.weight", "indexer.proj.weight"},
    {"attn.indexer.compressor.ape", "indexer_compressor_ape.weight"},
    {"attn.indexer.compressor.wkv.weight", "indexer_compressor_kv.weight"},
    {"attn.indexer.compressor.wgate.weight", "indexer_compressor_gate.weight"},
    {"attn.indexer.compressor.norm.weight", "indexer_compressor_norm.weight"},
    {"ffn.gate.weight", "ffn_gate_inp.weight"},
    {"ffn.gate.bias", "exp_probs_b.bias"},
    {"ffn.gate.tid2eid", "ffn_gate_tid2eid.weight"},
    {"ffn.shared_experts.w1.weight", "ffn_gate_shexp.weight"},
    {"ffn.shared_experts.w3.weight", "ffn_up_shexp.weight"},
    {"ffn.shared_experts.w2.weight", "ffn_down_shexp.weight"},
};

constexpr Rule kExpert[] = {
    {"w1.weight", "ffn_gate_exps.weight"},
    {"w3.weight", "ffn_up_exps.weight"},
    {"w2.weight", "ffn_down_exps.weight"},
};

NameResult map_plain(const std::string& n) {
  NameResult r;
  for (const Rule& g : kGlobal)
    if (n == g.src) {
      r.kind = NameKind::Mapped;
      r.mapped.gguf = g.dst;
      return r;
    }
  if (!starts_with(n, "layers.")) return r;
  size_t pos = 7;
  auto layer = parse_index(n, pos);
  if (!layer || pos >= n.size() || n[pos] != '.') return r;
  const std::string rest = n.substr(pos + 1);
  const std::string prefix = "blk." + std::to_string(*layer) + ".";
  r.mapped.layer = *layer;
  for (const Rule& g : kLayer)
    if (rest == g.src) {
      r.kind = NameKind::Mapped;
      r.mapped.gguf = prefix + g.dst;
      return r;
    }
  if (starts_with(rest, "ffn.experts.")) {
    size_t p = 12;
    auto e = parse_index(rest, p);
    if (e && p < rest.size() && rest[p] == '.') {
      const std::string tail = rest.substr(p + 1);
      for (const Rule& g : kExpert)
        if (tail == g.src) {
          r.kind = NameKind::Mapped;
          r.mapped.gguf = prefix + g.dst;
          r.mapped.expert = *e;
          return r;
        }
    }
  }
  return r;
}

}  // namespace

NameResult map_tensor_name(const std::string& source_name) {
  std::string n = source_name;
  if (starts_with(n, "model.")) n = n.substr(6);
  if (starts_with(n, "mtp.")) return {NameKind::Mtp, {}};
  NameResult r = map_plain(n);
  if (r.kind == NameKind::Mapped) return r;
  // Block-scale companions of FP8/FP4 weights: X.scale or X.weight_scale_inv next to X.weight.
  for (const char* suffix : {".weight_scale_inv", ".scale"}) {
    if (!ends_with(n, suffix)) continue;
    const std::string base = n.substr(0, n.size() - std::strlen(suffix)) + ".weight";
    NameResult w = map_plain(base);
    if (w.kind == NameKind::Mapped) {
      w.kind = NameKind::Companion;
      return w;
    }
  }
  return r;
}

}  // namespace flashstar::convert
