// Per-session KV state (spec/model.md §5): raw window, compressed rows, compressor frontiers and indexer
// rows per layer, plus the token history and the logits for the next token. Backends keep their own
// working copies; this host form is what snapshots serialize, so a snapshot saved by one backend
// restores on another.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace flashstar {

struct CompressorState {
  uint32_t ratio = 0;
  uint32_t width = 0;  // coff * dim
  uint32_t rows = 0;   // coff * ratio
  std::vector<float> kv, score;  // rows x width
  void init(uint32_t ratio_, uint32_t dim);
  void reset_rows(uint32_t from, uint32_t to);  // kv 0, score "empty"
};

struct LayerState {
  uint32_t ratio = 0;
  std::vector<float> raw;  // the last <= n_swa raw rows in position order, head_dim each
  std::vector<float> comp;  // compressed rows, head_dim each
  CompressorState comp_state;
  std::vector<float> idx;  // indexer compressed rows, idx_head_dim each
  CompressorState idx_state;
};

struct KvState {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // next-token logits after `tokens` (empty before the first token)
  std::vector<LayerState> layers;

  void init(const ModelConfig& c);
  size_t n_comp(const ModelConfig& c, uint32_t il) const { return layers[il].comp.size() / c.head_dim; }
  size_t n_idx(const ModelConfig& c, uint32_t il) const { return layers[il].idx.size() / c.idx_head_dim; }
};

struct SnapshotInfo {
  uint32_t ctx = 0;
  uint32_t chunk = 0;
  uint32_t raw_cap = 0;
};

// Serialized session payload (spec/model.md §5.3, dimensions taken from the model).
std::string save_snapshot(const ModelConfig& c, const KvState& s, const SnapshotInfo& info);
// Restores a payload; throws Error (one line) when it is truncated, corrupt or for another model/ctx.
void load_snapshot(const ModelConfig& c, const std::string& bytes, uint32_t ctx, KvState& s);

}  // namespace flashstar
