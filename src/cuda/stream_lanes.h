// Ticket lanes: which copy of a process-wide ticket array (last_block.cuh) a launch uses.
//
// The split kernels (fast_matvec.cu, fast_matvec_float.cu, fast_expert_mma.cu fused mode 2,
// fast_hc_pre.cu, fast_attention_decode.cu) count finished blocks in integer tickets that live in
// __device__ arrays and return to zero after each product. Two such launches running at once would
// count into the same tickets and sum each other's parts. A decode step forks branches onto a second
// stream (cuda_session.cpp), so every ticket array has kTicketLanes copies and each launcher takes the
// copy of its stream's lane: lane 0 outside a fork and on the fork's main stream, lane 1 on its side
// stream. Concurrent branches thus never share a ticket by construction, and a ticket kernel launched
// inside a fork on a stream that is neither of the fork's fails at once instead of racing silently.
// The state is per host thread (a session enqueues a step from one thread).
#pragma once
#include <cuda_runtime.h>

namespace flashstar::cuda {

constexpr int kTicketLanes = 2;

// The lane of a ticket launch on stream s (host side, before the launch).
int ticket_lane(cudaStream_t s);

// While alive, launches on `side` take lane 1 and launches on `main` lane 0; any other stream fails.
// Not nestable (a second fork on the same thread while one is open fails).
class TicketFork {
 public:
  TicketFork(cudaStream_t main, cudaStream_t side);
  ~TicketFork();
  TicketFork(const TicketFork&) = delete;
  TicketFork& operator=(const TicketFork&) = delete;
};

}  // namespace flashstar::cuda
