// A small persistent thread pool. Work is split into fixed contiguous ranges so every element is
// always computed by the same code path in the same order: results never depend on thread timing.
#pragma once
#include <cstdint>
#include <functional>

namespace flashstar {

// Number of worker threads used by parallel_for (default: hardware concurrency; FLASHSTAR_THREADS or
// set_num_threads override).
int num_threads();
void set_num_threads(int n);

// Calls fn(begin, end) over disjoint ranges covering [0, n). Blocks until all ranges are done.
// Ranges smaller than min_chunk are not split further. Exceptions thrown by fn are rethrown here.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk = 1);

}  // namespace flashstar
