// The CUDA backend: the whole model resident on one GPU, the same session contract as the CPU engine.
#pragma once
#include <memory>
#include <string>

#include "engine/session.h"

namespace flashstar::cuda {

// True when a CUDA device and driver are usable.
bool device_available();

// What a session will allocate on the device, computed before any allocation.
struct MemoryPlan {
  size_t weights = 0;        // model tensors (the GGUF data section)
  size_t vectors = 0;        // small dequantized vectors (norms, HC, sinks, APE)
  size_t kv_per_token = 0;   // compressed + indexer rows per context token
  size_t kv_total = 0;       // all session state at the chosen context (incl. raw windows, frontiers)
  size_t scratch = 0;        // activations for one prefill chunk, and the cuBLAS path's part:
  size_t cublas = 0;         //   dequantized weight terms, concatenated activations, workspace
  size_t total() const { return weights + vectors + kv_total + scratch; }
  std::string describe(size_t free_bytes, size_t total_bytes) const;
};
MemoryPlan plan_memory(const Model& m, const SessionOptions& opts);

std::unique_ptr<Session> make_cuda_session(const Model& model, const SessionOptions& opts);

}  // namespace flashstar::cuda
