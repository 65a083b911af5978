// Checkpoint tensor names → GGUF tensor names (shared/spec/math.md §4). Accepts DeepSeek's official
// naming (embed.weight, layers.N.attn.wq_a.weight, ...), the same names under a `model.` prefix (the
// fixtures'), and the few Hugging Face aliases found next to them (embed_tokens, lm_head,
// hc_head.hc_fn, ...).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace flashstar::convert {

struct MappedName {
  std::string gguf;  // e.g. "blk.3.ffn_gate_exps.weight"
  int layer = -1;    // -1 for globals
  int expert = -1;   // >= 0 for one routed expert's slice of a stacked 3-D tensor
};

enum class NameKind {
  Mapped,     // a tensor the GGUF needs
  Companion,  // a block-scale companion (`.scale`, `weight_scale_inv`) of a mapped weight
  Mtp,        // multi-token-prediction weights (not used for logits)
  Unknown,
};

struct NameResult {
  NameKind kind = NameKind::Unknown;
  MappedName mapped;
};

NameResult map_tensor_name(const std::string& source_name);

}  // namespace flashstar::convert
