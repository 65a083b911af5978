#include "cuda/pdl_graph.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "cuda/cuda_util.h"

namespace flashstar::cuda {

bool pdl_requested() { return env_on("FLASHSTAR_PDL"); }
bool cuda_graphs_requested() { return env_on("FLASHSTAR_CUDA_GRAPH"); }

// Fork and join edges (decode_fork.h) are converted too unless FLASHSTAR_PDL_FAN=0 (an A/B switch).
// Why that is sound. A join kernel with several programmatic predecessors is launched once every block
// of each of them has started, and its griddepcontrol.wait (pdl_wait(), which every block of every
// kernel calls before touching memory: tests/python/test_pdl_lint.py) waits until all of its
// prerequisite grids have completed and their writes are visible, so it sees both branches' results and
// neither branch can still read what it overwrites. Each of the kernels of a fork waits for the fork
// kernel the same way. Completion is transitive along every path: a kernel finishes only after its own
// wait returned, i.e. after its predecessors finished. No deadlock: a kernel is launched only once all
// blocks of its programmatic predecessors are resident (the launch-completion port), so its waiting
// blocks never keep a predecessor's block from being scheduled, and nothing spins on another branch.
// Edges from or to other node types (copies) stay full dependencies.
bool pdl_fan_requested() { return env_on("FLASHSTAR_PDL_FAN"); }

int pdl_edges(cudaGraph_t g, bool fan) {
  size_t n = 0;
  if (cudaGraphGetEdges(g, nullptr, nullptr, nullptr, &n) != cudaSuccess) return cudaGetLastError(), 0;
  std::vector<cudaGraphNode_t> from(n), to(n);
  std::vector<cudaGraphEdgeData> data(n);
  if (cudaGraphGetEdges(g, from.data(), to.data(), data.data(), &n) != cudaSuccess) return cudaGetLastError(), 0;
  std::unordered_map<cudaGraphNode_t, int> outs, ins;
  for (size_t i = 0; i < n; ++i) ++outs[from[i]], ++ins[to[i]];
  int changed = 0, fan_changed = 0, fan_kept = 0;
  for (size_t i = 0; i < n; ++i) {
    cudaGraphNodeType a{}, b{};
    FS_CUDA_CHECK(cudaGraphNodeGetType(from[i], &a));
    FS_CUDA_CHECK(cudaGraphNodeGetType(to[i], &b));
    if (a != cudaGraphNodeTypeKernel || b != cudaGraphNodeTypeKernel || data[i].type != cudaGraphDependencyTypeDefault ||
        data[i].from_port != 0)
      continue;
    const bool fan_edge = outs[from[i]] > 1 || ins[to[i]] > 1;
    if (fan_edge && !fan) {
      ++fan_kept;
      continue;
    }
    cudaGraphEdgeData e{};
    e.from_port = cudaGraphKernelNodePortLaunchCompletion;
    e.type = cudaGraphDependencyTypeProgrammatic;
    FS_CUDA_CHECK(cudaGraphRemoveDependencies(g, &from[i], &to[i], &data[i], 1));
    if (cudaGraphAddDependencies(g, &from[i], &to[i], &e, 1) != cudaSuccess) {
      // Not supported here: put the plain edge back. A refused fork / join edge leaves the other fork /
      // join edges full and goes on with the chain; a refused chain edge leaves the rest as captured.
      cudaGetLastError();
      FS_CUDA_CHECK(cudaGraphAddDependencies(g, &from[i], &to[i], &data[i], 1));
      if (!fan_edge) break;
      fan = false;
      ++fan_kept;
      continue;
    }
    ++changed;
    fan_changed += fan_edge;
  }
  const char* v = std::getenv("FLASHSTAR_PDL");
  if (v && std::strcmp(v, "v") == 0)
    std::fprintf(stderr, "decode graph: %d of %zu edges programmatic (%d of them fork / join edges, %d kept full)\n",
                 changed, n, fan_changed, fan_kept);
  return changed;
}

cudaGraphExec_t instantiate_decode_graph(cudaGraph_t g, bool pdl, bool node_priority) {
  const unsigned long long flags = node_priority ? cudaGraphInstantiateFlagUseNodePriority : 0;
  // The captured graph is kept until a programmatic one has instantiated. A driver that takes each
  // programmatic edge but refuses the graph as a whole gets the fork / join edges full, then no
  // programmatic edges at all (a line on stderr each time).
  cudaGraph_t captured = nullptr;
  bool fan = pdl && pdl_fan_requested();
  if (pdl) {
    if (cudaGraphClone(&captured, g) != cudaSuccess) cudaGetLastError(), captured = nullptr;
    if (pdl_edges(g, fan) == 0 && captured) cudaGraphDestroy(captured), captured = nullptr;
  }
  cudaGraphExec_t e = nullptr;
  cudaError_t err = cudaGraphInstantiate(&e, g, flags);
  cudaGraphDestroy(g);
  while (err != cudaSuccess && captured) {
    cudaGetLastError();
    std::fprintf(stderr, "decode graph: programmatic edges refused (%s); %s\n", cudaGetErrorString(err),
                 fan ? "trying the fork / join edges full" : "running it as captured");
    cudaGraph_t next = captured;
    captured = nullptr;
    if (fan) {
      fan = false;
      if (cudaGraphClone(&captured, next) != cudaSuccess) cudaGetLastError(), captured = nullptr;
      pdl_edges(next, false);
    }
    e = nullptr;
    err = cudaGraphInstantiate(&e, next, flags);
    cudaGraphDestroy(next);
  }
  if (captured) cudaGraphDestroy(captured);
  FS_CUDA_CHECK(err);
  return e;
}

void DecodeGraphs::clear() {
  for (auto& [k, e] : execs_) cudaGraphExecDestroy(e);
  execs_.clear();
}

cudaGraphExec_t DecodeGraphs::get(uint64_t key, cudaStream_t s, bool pdl, bool node_priority,
                                  const std::function<void()>& enqueue, const std::function<void()>& unwind) {
  if (auto it = execs_.find(key); it != execs_.end()) return it->second;
  cudaGraph_t g = nullptr;
  FS_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  try {
    enqueue();
  } catch (...) {
    unwind();
    cudaStreamEndCapture(s, &g);
    if (g) cudaGraphDestroy(g);
    throw;
  }
  FS_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  return execs_.emplace(key, instantiate_decode_graph(g, pdl, node_priority)).first->second;
}

}  // namespace flashstar::cuda
