// Programmatic edges for a captured decode graph (see pdl.cuh for the kernels' side of the contract).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>

namespace flashstar::cuda {

// Makes every plain kernel-to-kernel edge of g programmatic from the upstream kernel's launch-completion
// port: the downstream kernel is launched once all upstream blocks have started, and waits in
// pdl_wait() for the upstream completion. With fan, also the fork and join edges (those of a node with
// several successors or predecessors; pdl_graph.cpp says why that is sound), else those stay full.
// Returns the number of edges changed; a refused chain edge leaves it and the rest as captured, a
// refused fork / join edge leaves it and the later fork / join edges full (those converted before it stay
// programmatic) while the chain edges go on being converted. FLASHSTAR_PDL=v reports the counts.
int pdl_edges(cudaGraph_t g, bool fan);
// FLASHSTAR_PDL=0 turns the conversion off; FLASHSTAR_PDL_FAN=0 keeps the fork / join edges full.
bool pdl_requested();
bool pdl_fan_requested();
bool cuda_graphs_requested();  // FLASHSTAR_CUDA_GRAPH=0: decode steps as plain launches
// Instantiates a captured decode graph and destroys g: with pdl, its edges made programmatic first. A
// driver that takes each programmatic edge but refuses the graph as a whole gets the fork / join edges
// full, then the graph as captured (a line on stderr each time). Throws only when that fails too.
// node_priority: the kernels keep the priorities of the streams they were captured on.
cudaGraphExec_t instantiate_decode_graph(cudaGraph_t g, bool pdl, bool node_priority = false);

// The session's decode graphs, one per step shape (a key the caller forms), captured on first use.
class DecodeGraphs {
 public:
  DecodeGraphs() = default;
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;
  ~DecodeGraphs() { clear(); }
  void clear();  // destroys every graph
  // The graph of key: captured from what enqueue() puts on s (relaxed capture mode) and instantiated
  // with instantiate_decode_graph(pdl, node_priority) when there is none yet. If enqueue throws,
  // unwind() runs first (it must join every stream forked from s), the capture is ended and dropped,
  // and the exception goes on.
  cudaGraphExec_t get(uint64_t key, cudaStream_t s, bool pdl, bool node_priority, const std::function<void()>& enqueue,
                      const std::function<void()>& unwind);

 private:
  std::map<uint64_t, cudaGraphExec_t> execs_;
};

}  // namespace flashstar::cuda
