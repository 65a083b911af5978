#include "cuda/kernel_trace.h"

#include <cstdio>
#include <cstdlib>

#if FLASHSTAR_HAVE_CUPTI
#include <cuda_runtime.h>
#include <cupti.h>
#include <dlfcn.h>

#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/kernel_trace_csv.h"
#endif

namespace flashstar::cuda {
namespace {

const char* trace_path() {
  const char* p = std::getenv("FLASHSTAR_KTRACE");
  return p && *p ? p : nullptr;
}

}  // namespace

#if !FLASHSTAR_HAVE_CUPTI

bool kernel_trace_start() {
  static const bool on = [] {
    if (trace_path())
      std::fprintf(stderr, "flashstar: FLASHSTAR_KTRACE: kernel tracing not built (no cupti.h at configure time); "
                           "running untraced\n");
    return false;
  }();
  return on;
}

void kernel_trace_flush() {}
bool kernel_trace_records_copies() { return false; }

#else

namespace {

// The few CUPTI entry points used, resolved with dlsym; their types are the header's declarations.
struct Cupti {
  decltype(&cuptiGetVersion) get_version = nullptr;
  decltype(&cuptiGetResultString) result_string = nullptr;
  decltype(&cuptiActivityRegisterCallbacks) register_callbacks = nullptr;
  decltype(&cuptiActivityEnable) enable = nullptr;
  decltype(&cuptiActivityDisable) disable = nullptr;
  decltype(&cuptiActivityFlushAll) flush_all = nullptr;
  decltype(&cuptiActivityGetNextRecord) next_record = nullptr;
};

struct State {
  Cupti api;
  std::string path;
  std::mutex mu;  // guards rows and done (CUPTI delivers buffers from its own thread)
  std::vector<KernelTraceRow> rows;
  size_t beyond = 0;  // records past kMaxRows, not kept
  bool on = false, done = false, copies = false;
};

// A trace is for a short run (43 layers x 32 decode steps: ~50 000 records); past this many records (each
// with its name: ~150-200 MB) the rest are counted, not kept.
constexpr size_t kMaxRows = 1000000;

State& state() {
  static State* s = new State;  // never destroyed: CUPTI's thread may deliver a buffer during exit
  return *s;
}

// Where libcupti may be: each name (the header's major first) on the loader's own search path, then in the
// toolkit's directories.
void* load_cupti(std::string& tried) {
  std::vector<std::string> dirs = {""};
  if (const char* home = std::getenv("CUDA_HOME"); home && *home)
    for (const char* sub : {"/extras/CUPTI/lib64/", "/lib64/"}) dirs.push_back(std::string(home) + sub);
  dirs.push_back("/usr/local/cuda/extras/CUPTI/lib64/");
  dirs.push_back("/usr/local/cuda/lib64/");
  const std::string own = "libcupti.so." + std::to_string(CUDA_VERSION / 1000);  // the header's major first
  std::vector<std::string> names = {own};
  for (const char* n : {"libcupti.so.13", "libcupti.so.12", "libcupti.so"})
    if (n != own) names.push_back(n);
  std::string first_error;
  for (const std::string& n : names)  // the header's own major in every directory before any other
    for (const std::string& d : dirs) {
      if (void* h = ::dlopen((d + n).c_str(), RTLD_NOW | RTLD_LOCAL)) {
        tried = d + n;
        return h;
      }
      if (first_error.empty())
        if (const char* e = ::dlerror()) first_error = e;
    }
  tried = first_error.empty() ? own + " not found" : first_error;
  return nullptr;
}

template <class F>
bool resolve(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(::dlsym(lib, name));
  return f != nullptr;
}

const char* result_text(CUptiResult r) {
  const char* s = nullptr;
  if (state().api.result_string && state().api.result_string(r, &s) == CUPTI_SUCCESS && s) return s;
  return "unknown CUPTI error";
}

const char* copy_kind(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "[memcpy HtoD]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "[memcpy DtoH]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "[memcpy DtoD]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH: return "[memcpy HtoH]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "[memcpy PtoP]";
    default: return "[memcpy]";
  }
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  constexpr size_t kBytes = 8u << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBytes));
  *size = *buffer ? kBytes : 0;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  State& s = state();
  std::vector<KernelTraceRow> got;
  CUpti_Activity* rec = nullptr;
  while (buffer && valid && s.api.next_record(buffer, valid, &rec) == CUPTI_SUCCESS) {
    KernelTraceRow r;
    if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      const auto* k = reinterpret_cast<const FLASHSTAR_CUPTI_KERNEL*>(rec);
      r.start_ns = k->start, r.end_ns = k->end, r.stream = k->streamId, r.correlation = k->correlationId;
      r.graph_id = k->graphId, r.graph_node_id = k->graphNodeId;
      r.grid_x = k->gridX, r.grid_y = k->gridY, r.grid_z = k->gridZ, r.block_x = k->blockX;
      r.regs = k->registersPerThread, r.smem_dyn = k->dynamicSharedMemory, r.smem_static = k->staticSharedMemory;
      r.name = k->name ? k->name : "?";
#ifdef FLASHSTAR_CUPTI_MEMCPY
    } else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const auto* m = reinterpret_cast<const FLASHSTAR_CUPTI_MEMCPY*>(rec);
      r.start_ns = m->start, r.end_ns = m->end, r.stream = m->streamId, r.correlation = m->correlationId;
      r.graph_id = m->graphId, r.graph_node_id = m->graphNodeId;
      r.name = copy_kind(m->copyKind);
#endif
    } else {
      continue;
    }
    got.push_back(std::move(r));
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.rows.empty()) s.rows.reserve(1 << 16);
  for (KernelTraceRow& r : got)
    if (s.rows.size() < kMaxRows) s.rows.push_back(std::move(r));
    else ++s.beyond;
}

bool start_tracing(const char* path) {
  State& s = state();
  std::string where;
  void* lib = load_cupti(where);
  if (!lib) {
    std::fprintf(stderr, "flashstar: FLASHSTAR_KTRACE: cannot load CUPTI (%s); running untraced\n", where.c_str());
    return false;
  }
  Cupti& a = s.api;
  if (!resolve(lib, "cuptiGetVersion", a.get_version) || !resolve(lib, "cuptiGetResultString", a.result_string) ||
      !resolve(lib, "cuptiActivityRegisterCallbacks", a.register_callbacks) ||
      !resolve(lib, "cuptiActivityEnable", a.enable) || !resolve(lib, "cuptiActivityDisable", a.disable) ||
      !resolve(lib, "cuptiActivityFlushAll", a.flush_all) ||
      !resolve(lib, "cuptiActivityGetNextRecord", a.next_record)) {
    std::fprintf(stderr, "flashstar: FLASHSTAR_KTRACE: %s lacks a CUPTI activity function; running untraced\n",
                 where.c_str());
    return false;
  }
  uint32_t version = 0;
  a.get_version(&version);
  if (version < CUPTI_API_VERSION) {  // an older library writes older records than the ones read here
    std::fprintf(stderr, "flashstar: FLASHSTAR_KTRACE: %s is CUPTI API %u, older than the %u built for; "
                 "running untraced\n", where.c_str(), version, unsigned(CUPTI_API_VERSION));
    return false;
  }
  // CUPTI's device buffers keep their defaults: 3 MB, ~100 000 timestamps each, up to 250 a context.
  int devices = 0;  // the runtime first, so that its exit hooks run after this one's flush
  cudaGetDeviceCount(&devices);
  cudaGetLastError();
  CUptiResult r = a.register_callbacks(buffer_requested, buffer_completed);
  if (r == CUPTI_SUCCESS) r = a.enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  if (r != CUPTI_SUCCESS) {
    std::fprintf(stderr, "flashstar: FLASHSTAR_KTRACE: %s: %s; running untraced\n", where.c_str(), result_text(r));
    return false;
  }
  bool copies = false;
#ifdef FLASHSTAR_CUPTI_MEMCPY
  copies = a.enable(CUPTI_ACTIVITY_KIND_MEMCPY) == CUPTI_SUCCESS;  // optional: copies on the timeline too
#endif
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.path = path;
    s.on = true;
    s.copies = copies;
  }
  std::atexit(kernel_trace_flush);
  std::fprintf(stderr, "flashstar: kernel trace on (%s, CUPTI API %u): %s\n", where.c_str(), version, path);
  return true;
}

}  // namespace

bool kernel_trace_start() {
  static const bool on = [] {
    const char* path = trace_path();
    return path && start_tracing(path);
  }();
  return on;
}

void kernel_trace_flush() {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.on || s.done) return;
    s.done = true;
  }
  // Recording stops first; then, outside the lock, a forced flush hands every buffer, incomplete ones too,
  // to buffer_completed here.
  s.api.disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
#ifdef FLASHSTAR_CUPTI_MEMCPY
  s.api.disable(CUPTI_ACTIVITY_KIND_MEMCPY);
#endif
  const CUptiResult r = s.api.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  if (r != CUPTI_SUCCESS) std::fprintf(stderr, "flashstar: FLASHSTAR_KTRACE: flush: %s\n", result_text(r));
  std::vector<KernelTraceRow> rows;
  size_t beyond = 0;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    rows.swap(s.rows);
    beyond = s.beyond;
  }
  if (beyond)
    std::fprintf(stderr, "flashstar: FLASHSTAR_KTRACE: %zu records past the first %zu not kept\n", beyond, kMaxRows);
  const size_t n = rows.size();
  try {
    write_kernel_trace_csv(s.path, std::move(rows));
    std::fprintf(stderr, "flashstar: kernel trace: %zu records written to %s\n", n, s.path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "flashstar: FLASHSTAR_KTRACE: %s\n", e.what());
  }
}

bool kernel_trace_records_copies() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.on && s.copies;
}

#endif  // FLASHSTAR_HAVE_CUPTI

}  // namespace flashstar::cuda
