// Programmatic edges for a captured decode graph (see pdl.cuh for the kernels' side of the contract).
#pragma once
#include <cuda_runtime.h>

namespace flashstar::cuda {

// Makes every plain kernel-to-kernel edge of g programmatic from the upstream kernel's launch-completion
// port: the downstream kernel is launched once all upstream blocks have started, and waits in
// pdl_wait() for the upstream completion. Returns the number of edges changed; 0 when the driver refuses
// (the graph is then left as captured). FLASHSTAR_PDL=0 turns it off.
int pdl_edges(cudaGraph_t g);
bool pdl_requested();

}  // namespace flashstar::cuda
