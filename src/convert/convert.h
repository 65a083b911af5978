// `flashstar convert`: a safetensors checkpoint (HF or official naming) → a DeepSeek V4 GGUF.
// Tensors are streamed one at a time, rows converted/quantized in parallel and written straight to
// their place in the output; memory stays at a few MB per thread whatever the model size.
#pragma once
#include <cstdint>
#include <string>

#include "convert/type_plan.h"

namespace flashstar::convert {

struct ConvertOptions {
  std::string input;   // checkpoint directory (config.json + safetensors)
  std::string output;  // .gguf path
  std::string name;    // general.name; default: config _name_or_path, else the directory name
  OutType outtype = OutType::F16;
  ExpertRecipe experts = ExpertRecipe::FollowOutType;
  bool progress = true;
};

struct ConvertResult {
  size_t n_tensors = 0;
  uint64_t data_bytes = 0;
  size_t ignored_mtp = 0, ignored_other = 0;
  double seconds = 0;
};

ConvertResult convert_checkpoint(const ConvertOptions& o);

}  // namespace flashstar::convert
