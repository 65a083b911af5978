// The two halves of a DeepSeek V4 layer on the CPU, over a chunk of consecutive tokens (layer-major).
// X holds the chunk's hyper-connection states, [n_tok][n_hc * n_embd], and is updated in place.
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/ops.h"
#include "engine/kv_state.h"
#include "engine/session.h"

namespace flashstar::cpu {

struct Chunk {
  const int32_t* tokens;
  int64_t n;     // tokens in the chunk
  int64_t pos0;  // absolute position of tokens[0]
};

struct LayerContext {
  const ModelConfig& cfg;
  const LayerWeights& w;
  LayerState& state;
  const Rope& rope;
  Numerics numerics;
  uint32_t il;
  TieLog* ties;
};

void attention_half(const LayerContext& L, const Chunk& ch, float* X);
void ffn_half(const LayerContext& L, const Chunk& ch, float* X);

// HC pre for every token of the chunk: returns the splits and writes the sublayer inputs [n][n_embd].
std::vector<HcSplit> hc_pre_batch(const ModelConfig& c, const Matrix& fn, const std::vector<float>& scale,
                                  const std::vector<float>& base, const float* X, int64_t n, float* out);
void hc_post_batch(const ModelConfig& c, const std::vector<HcSplit>& splits, const float* f, float* X, int64_t n);

}  // namespace flashstar::cpu
