// Kernel timeline (FLASHSTAR_KTRACE=<path.csv>): every kernel the device runs, with its in-situ start and
// end, kernels inside CUDA graphs included, from CUPTI's activity API (concurrent-kernel records, which do not
// serialise kernels); written as CSV (common/kernel_trace_csv.h) at the end; scripts/ktrace_summary.py reads it.
// CUPTI is loaded with dlopen at run time: the binary does not link it, and starts where it is missing (one
// line on stderr, then untraced). Built as a stub that says so when cupti.h was not found at configure time.
#pragma once

namespace flashstar::cuda {

// Turns tracing on when FLASHSTAR_KTRACE names a file: the first call decides, later calls return its
// answer. Call it before the kernels of interest are launched and their graphs instantiated.
bool kernel_trace_start();

// Flushes CUPTI's records and writes the CSV; tracing ends there. Runs at exit too (later calls do nothing).
void kernel_trace_flush();

// Whether the trace also records host-device copies (CUPTI's copy records built and enabled).
bool kernel_trace_records_copies();

}  // namespace flashstar::cuda
