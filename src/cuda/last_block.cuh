// Split work summed by the last block to finish, instead of a separate reduction launch. Every block of
// a split calls last_to_finish() after storing its part (all threads); it returns true, in every thread,
// in the one block that completes the ticket's count. That block reads the parts (from L2: __ldcg),
// adds them in a fixed order and sets the ticket back to zero for the next product.
#pragma once

namespace flashstar::cuda {

__device__ __forceinline__ bool last_to_finish(int* ticket, int parts) {
  __shared__ int s_last;
  __threadfence();  // this block's part is visible before its ticket is taken
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(ticket, 1) == parts - 1;
  __syncthreads();
  if (!s_last) return false;
  __threadfence();  // and the other blocks' parts before the last one reads them
  return true;
}

// The same contract with one thread's fences instead of every thread's: the barrier orders the block's
// stores before thread 0's fence and atomic (a release that covers them), and thread 0's second fence
// before the barrier that lets the block read the other parts (an acquire); CUTLASS's semaphore releases
// so. The acquire fence invalidates the SM's L1 (CCTL.IVALL in the SASS), so the last block's loads see the
// parts; only read-only-path loads (__ldg, .nc) of data written during the launch would not.
__device__ __forceinline__ bool last_to_finish_lean(int* ticket, int parts) {
  __shared__ int s_last_lean;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const bool last = atomicAdd(ticket, 1) == parts - 1;
    if (last) __threadfence();
    s_last_lean = last;
  }
  __syncthreads();
  return s_last_lean;
}

}  // namespace flashstar::cuda
