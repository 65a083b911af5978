// Programmatic edges for a captured decode graph (see pdl.cuh for the kernels' side of the contract).
#pragma once
#include <cuda_runtime.h>

namespace flashstar::cuda {

// Makes every plain kernel-to-kernel edge of g programmatic from the upstream kernel's launch-completion
// port: the downstream kernel is launched once all upstream blocks have started, and waits in
// pdl_wait() for the upstream completion; fork and join edges too (pdl_graph.cpp says why that is sound;
// FLASHSTAR_PDL_FAN=0 keeps them full). Returns the number of edges changed; where the driver refuses an
// edge, that edge and the rest stay as captured. FLASHSTAR_PDL=0 turns it off, =v reports the counts.
int pdl_edges(cudaGraph_t g);
// Instantiates a captured decode graph and destroys g: with pdl, its edges made programmatic first; a
// driver that takes every programmatic edge but refuses the graph as a whole (fork / join nodes) gets
// the graph as captured instead (one line on stderr). Fails (throws) only when that fails too.
cudaGraphExec_t instantiate_decode_graph(cudaGraph_t g, bool pdl);
bool pdl_requested();

}  // namespace flashstar::cuda
