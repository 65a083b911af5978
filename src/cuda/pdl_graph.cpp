#include "cuda/pdl_graph.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/cuda_util.h"

namespace flashstar::cuda {

bool pdl_requested() {
  const char* v = std::getenv("FLASHSTAR_PDL");
  return !v || *v != '0';
}

int pdl_edges(cudaGraph_t g) {
  size_t n = 0;
  if (cudaGraphGetEdges(g, nullptr, nullptr, nullptr, &n) != cudaSuccess) return cudaGetLastError(), 0;
  std::vector<cudaGraphNode_t> from(n), to(n);
  std::vector<cudaGraphEdgeData> data(n);
  if (cudaGraphGetEdges(g, from.data(), to.data(), data.data(), &n) != cudaSuccess) return cudaGetLastError(), 0;
  int changed = 0;
  for (size_t i = 0; i < n; ++i) {
    cudaGraphNodeType a{}, b{};
    FS_CUDA_CHECK(cudaGraphNodeGetType(from[i], &a));
    FS_CUDA_CHECK(cudaGraphNodeGetType(to[i], &b));
    if (a != cudaGraphNodeTypeKernel || b != cudaGraphNodeTypeKernel || data[i].type != cudaGraphDependencyTypeDefault ||
        data[i].from_port != 0)
      continue;
    cudaGraphEdgeData e{};
    e.from_port = cudaGraphKernelNodePortLaunchCompletion;
    e.type = cudaGraphDependencyTypeProgrammatic;
    FS_CUDA_CHECK(cudaGraphRemoveDependencies(g, &from[i], &to[i], &data[i], 1));
    if (cudaGraphAddDependencies(g, &from[i], &to[i], &e, 1) != cudaSuccess) {
      // Not supported here: put the plain edge back and leave the rest as captured.
      cudaGetLastError();
      FS_CUDA_CHECK(cudaGraphAddDependencies(g, &from[i], &to[i], &data[i], 1));
      return changed;
    }
    ++changed;
  }
  const char* v = std::getenv("FLASHSTAR_PDL");
  if (v && std::strcmp(v, "v") == 0) std::fprintf(stderr, "decode graph: %d of %zu edges programmatic\n", changed, n);
  return changed;
}

}  // namespace flashstar::cuda
