#include "common/kernel_trace_csv.h"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <unordered_map>

#include "common/error.h"
#include "common/file_util.h"

namespace flashstar {

const char* const kKernelTraceColumns =
    "start_ns,end_ns,duration_ns,stream,correlation,graph_id,graph_node_id,grid_x,grid_y,grid_z,block_x,regs,"
    "smem_dyn,smem_static,name";

std::string demangle_kernel_name(const std::string& name) {
  if (name.rfind("_Z", 0) != 0) return name;
  int status = 0;
  char* d = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  if (status != 0 || !d) return name;
  std::string out(d);
  std::free(d);
  return out;
}

std::string csv_quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += (c == '\n' || c == '\r') ? ' ' : c;
  }
  return out + "\"";
}

std::string kernel_trace_csv(std::vector<KernelTraceRow> rows) {
  std::stable_sort(rows.begin(), rows.end(), [](const KernelTraceRow& a, const KernelTraceRow& b) {
    return a.start_ns != b.start_ns ? a.start_ns < b.start_ns : a.end_ns < b.end_ns;
  });
  std::unordered_map<std::string, std::string> shown;  // mangled name -> quoted demangled name
  std::string out = std::string(kKernelTraceColumns) + "\n";
  out.reserve(out.size() + rows.size() * 160);
  for (const KernelTraceRow& r : rows) {
    auto it = shown.find(r.name);
    if (it == shown.end()) it = shown.emplace(r.name, csv_quoted(demangle_kernel_name(r.name))).first;
    const uint64_t dur = r.end_ns >= r.start_ns ? r.end_ns - r.start_ns : 0;
    out += strfmt("%llu,%llu,%llu,%u,%u,%u,%llu,%d,%d,%d,%d,%u,%d,%d,", (unsigned long long)r.start_ns,
                  (unsigned long long)r.end_ns, (unsigned long long)dur, r.stream, r.correlation, r.graph_id,
                  (unsigned long long)r.graph_node_id, r.grid_x, r.grid_y, r.grid_z, r.block_x, r.regs,
                  r.smem_dyn, r.smem_static);
    out += it->second;
    out += '\n';
  }
  return out;
}

void write_kernel_trace_csv(const std::string& path, std::vector<KernelTraceRow> rows) {
  write_file_atomic(path, kernel_trace_csv(std::move(rows)));
}

}  // namespace flashstar
