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

// The pieces of attention_half, exposed so that the GPU kernels can be tested against them.
enum class RowKind { Attention, Indexer };
void compressor_push(CompressorState& st, const float* kv_cur, const float* sc_cur, const std::vector<float>& ape,
                     int64_t pos, int64_t dim, const std::vector<float>& norm, const LayerContext& L, RowKind kind,
                     std::vector<float>& rows);
// Ascending ids of the compressed rows a query at `pos` reads (all visible rows, or the indexer's top-k).
void select_compressed(const LayerContext& L, int64_t pos, int64_t n_vis, const float* iq, const float* iw,
                       std::vector<int64_t>& sel, std::vector<std::pair<float, int64_t>>& scored);
void sink_attention_head(const float* q, const std::vector<const float*>& rows, float sink, int64_t hd,
                         std::vector<float>& s, float* out);
void ffn_half(const LayerContext& L, const Chunk& ch, float* X);

// HC pre for every token of the chunk: returns the splits and writes the sublayer inputs [n][n_embd].
std::vector<HcSplit> hc_pre_batch(const ModelConfig& c, const Matrix& fn, const std::vector<float>& scale,
                                  const std::vector<float>& base, const float* X, int64_t n, float* out);
void hc_post_batch(const ModelConfig& c, const std::vector<HcSplit>& splits, const float* f, float* X, int64_t n);

}  // namespace flashstar::cpu
