#include "cuda/pdl_graph.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "cuda/cuda_util.h"

namespace flashstar::cuda {

bool pdl_requested() {
  const char* v = std::getenv("FLASHSTAR_PDL");
  return !v || *v != '0';
}

// Fork and join edges (decode_fork.h) are converted too unless FLASHSTAR_PDL_FAN=0 (an A/B switch).
// Why that is sound: a kernel with several programmatic predecessors is launched once every block of
// each of them has started, and its griddepcontrol.wait (pdl_wait, before any memory access) waits for
// all of its prerequisite grids to complete and flush, so a join sees both branches' results; each
// predecessor itself waited for its own predecessors before finishing, so completion is transitive
// along every path. Kernels with a programmatic fork edge each wait for the fork node the same way.
// Launching only after all upstream blocks have started (the launch-completion port) means a waiting
// kernel's blocks never keep an upstream block from being scheduled, on either branch. Edges from or to
// other node types (copies, event nodes) stay full dependencies.
static bool fan_requested() {
  const char* v = std::getenv("FLASHSTAR_PDL_FAN");
  return !v || *v != '0';
}

int pdl_edges(cudaGraph_t g) {
  size_t n = 0;
  if (cudaGraphGetEdges(g, nullptr, nullptr, nullptr, &n) != cudaSuccess) return cudaGetLastError(), 0;
  std::vector<cudaGraphNode_t> from(n), to(n);
  std::vector<cudaGraphEdgeData> data(n);
  if (cudaGraphGetEdges(g, from.data(), to.data(), data.data(), &n) != cudaSuccess) return cudaGetLastError(), 0;
  std::unordered_map<cudaGraphNode_t, int> outs, ins;
  for (size_t i = 0; i < n; ++i) ++outs[from[i]], ++ins[to[i]];
  const bool fan = fan_requested();
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
      // Not supported here: put the plain edge back and leave the rest as captured.
      cudaGetLastError();
      FS_CUDA_CHECK(cudaGraphAddDependencies(g, &from[i], &to[i], &data[i], 1));
      break;
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

cudaGraphExec_t instantiate_decode_graph(cudaGraph_t g, bool pdl) {
  cudaGraph_t captured = nullptr;  // kept until the programmatic graph has instantiated
  if (pdl) {
    if (cudaGraphClone(&captured, g) != cudaSuccess) cudaGetLastError(), captured = nullptr;
    if (pdl_edges(g) == 0 && captured) cudaGraphDestroy(captured), captured = nullptr;
  }
  cudaGraphExec_t e = nullptr;
  cudaError_t err = cudaGraphInstantiate(&e, g, 0);
  cudaGraphDestroy(g);
  if (err != cudaSuccess && captured) {
    cudaGetLastError();
    std::fprintf(stderr, "decode graph: the programmatic edges were refused (%s); running it as captured\n",
                 cudaGetErrorString(err));
    e = nullptr;
    err = cudaGraphInstantiate(&e, captured, 0);
  }
  if (captured) cudaGraphDestroy(captured);
  FS_CUDA_CHECK(err);
  return e;
}

}  // namespace flashstar::cuda
