// The tensors a DeepSeek V4 GGUF holds (names, GGML-order shapes, accepted and ds4-default types),
// derived from a ModelConfig. One table serves the weight binder, the converter and the synthesizer.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "quant/types.h"

namespace flashstar {

enum class TypeClass {
  Dense,   // F32, F16, BF16, Q8_0
  Expert,  // Dense plus Q2_K, Q4_K, IQ2_XXS
  Index,   // I32 (expert ids)
};

enum class ExpertPart { None, Gate, Up, Down };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> ne;  // GGML order
  TypeClass cls = TypeClass::Dense;
  GgmlType ds4_type = GgmlType::F32;  // the type in the published files (experts: see recipe)
  bool optional = false;
  int layer = -1;  // -1 for global tensors
  ExpertPart expert = ExpertPart::None;
};

bool type_allowed(TypeClass cls, GgmlType t);
const char* type_class_name(TypeClass cls);

// Every tensor of the model in ds4's order: globals, then blk.0 .. blk.N-1.
// include_optional adds exp_probs_b.bias for non-hash layers (present in the published files).
std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c, bool include_optional = true);

}  // namespace flashstar
