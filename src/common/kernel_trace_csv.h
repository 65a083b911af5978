// The kernel timeline's CSV (FLASHSTAR_KTRACE, cuda/kernel_trace.cpp): one row per kernel (or copy) the
// device ran, as CUPTI's activity records give it. CPU code, so that the format is tested without a GPU.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace flashstar {

struct KernelTraceRow {
  uint64_t start_ns = 0, end_ns = 0;  // device timestamps (CUPTI's clock, nanoseconds)
  uint32_t stream = 0, correlation = 0;
  uint32_t graph_id = 0;        // 0: launched outside a graph
  uint64_t graph_node_id = 0;
  int32_t grid_x = 0, grid_y = 0, grid_z = 0, block_x = 0;
  uint32_t regs = 0;            // registers per thread
  int32_t smem_dyn = 0, smem_static = 0;
  std::string name;             // as recorded (mangled); copies are named "[memcpy HtoD]" and so on
};

// The header line, without the newline.
extern const char* const kKernelTraceColumns;

// `name` demangled (abi::__cxa_demangle), or unchanged when it is not a mangled C++ name.
std::string demangle_kernel_name(const std::string& name);

// `s` as one CSV field: in double quotes, inner quotes doubled.
std::string csv_quoted(std::string_view s);

// The CSV text: the header, then the rows sorted by start (then end), names demangled and quoted.
std::string kernel_trace_csv(std::vector<KernelTraceRow> rows);

// kernel_trace_csv written to `path` atomically (temp file, rename). Throws Error on failure.
void write_kernel_trace_csv(const std::string& path, std::vector<KernelTraceRow> rows);

}  // namespace flashstar
