// `flashstar synth`: random-weight DeepSeek V4 GGUFs with ds4's exact tensor layout, metadata and
// types, for loader/kernel/throughput work without the 80 GB download. Generation is chunked,
// parallel and streamed: the full 43-layer q2 file never sits in memory, and a given seed gives the
// same bytes whatever the thread count.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "convert/type_plan.h"
#include "model/config.h"
#include "model/tensor_specs.h"

namespace flashstar::synth {

enum class Preset { Tiny, Flash };
enum class Recipe { Q2, Q4 };

struct SynthOptions {
  Preset preset = Preset::Tiny;
  int layers = 0;  // 0: the preset's own (tiny 6, flash 43)
  Recipe recipe = Recipe::Q2;
  uint64_t seed = 1;
  // Well-conditioned models (`synth --well-conditioned`), for drift gates between implementations. On a
  // plain random model rounding-level differences now and then flip routing and indexer picks and the
  // logits then jump far beyond rounding, so drift measures luck, not kernels. residual_scale multiplies the std of every
  // residual-branch output projection (attn_output_b, ffn_down_exps, ffn_down_shexp), which bounds what
  // any flip can change; router_bias_step > 0 ranks each layer's experts with biases this far apart (in
  // a seeded random order), so the biased top-k never sits near a tie.
  float residual_scale = 1.0f;
  float router_bias_step = 0.0f;
  std::string output;
  bool progress = true;
};

struct PlannedTensor {
  TensorSpec spec;
  GgmlType type;
  uint64_t nbytes;
};

struct SynthPlan {
  ModelConfig cfg;
  std::vector<PlannedTensor> tensors;
  std::vector<std::string> notes;  // type fallbacks (tiny shapes that a block type cannot tile)
  uint64_t data_bytes = 0;         // sum of tensor sizes, each padded to 32 bytes
  uint64_t header_bytes = 0;       // header + metadata + tensor table (metadata estimated to ~1 KB)
};

// The tiny preset: tiny-a's dimensions (hidden 256, 8 experts, ...), ds4's types where shapes allow.
ModelConfig tiny_config(uint32_t n_layer = 6);
ModelConfig preset_config(Preset p, int layers);

SynthPlan plan_synth(const SynthOptions& o);

struct SynthResult {
  uint64_t bytes_written = 0;
  size_t n_tensors = 0;
  double seconds = 0;
};
SynthResult synthesize(const SynthOptions& o);

}  // namespace flashstar::synth
