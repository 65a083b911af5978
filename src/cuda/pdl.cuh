// Programmatic dependent launch. The decode graph's kernel-to-kernel edges let a kernel start as soon as
// its predecessor's blocks have all started (cuda_session.cpp: pdl_edges), so its launch and ramp overlap
// the predecessor's tail instead of following it. A kernel launched that way must not touch memory the
// predecessors write or read before pdl_wait() returns, which waits for their completion and memory
// flush; every kernel of the library calls it first (tests/python/test_pdl_lint.py checks it). A kernel
// whose leading comment says PDL-PROLOGUE may fetch constants (its weights) before the wait.
// Launched the ordinary way, the wait returns at once.
#pragma once

namespace flashstar::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace flashstar::cuda
