// Small helpers shared by the subcommands.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <memory>
#include <vector>

#include "engine/session.h"
#include "text/tokenizer.h"

namespace CLI {
class App;
}

namespace flashstar::tools {

// "auto" picks cuda when this build has it and a GPU is present, else cpu.
std::string resolve_backend(const std::string& requested);
std::unique_ptr<Session> make_session(const Model& model, const SessionOptions& opts, const std::string& backend);

// The model file's tokenizer (pre-tokenizer by name), refused when it has more tokens than the model
// has logits.
text::Tokenizer load_tokenizer(const Model& model, const std::string& path, const std::string& pretokenizer);

// --route NAME=on|off (repeatable) and --quality; resolve() applies FLASHSTAR_ROUTE_* first, then these.
struct RouteOptions {
  std::vector<std::string> routes;
  bool quality = false;
  RouteSet resolve() const;
};
void add_route_options(CLI::App* cmd, RouteOptions& o);

// The session settings that run, serve, logits and bench share, declared once so that the tools cannot
// drift apart (bench once lacked -v, and a GPU run that passed it failed). The context size is left to each
// tool because each means something else by it: run/serve -c, logits "enough for the tokens", bench
// --ctx-alloc. Numerics and the near-tie log are logits' alone.
struct SessionCli {
  std::string backend = "auto";
  int threads = 0;
  uint32_t chunk = SessionOptions{}.chunk;
  bool verbose = false;
  RouteOptions routes;

  // Call before anything slow (reading the model) so that an unusable backend fails at once; also sets
  // the CPU thread count. Returns the backend make_session will pick.
  std::string prepare() const;
  SessionOptions options(uint32_t ctx) const;
};
// A tool passes its own --chunk help where the chunk size matters more there (serve notices a hang-up
// between chunks; logits is what shows that results do not depend on it).
constexpr const char* kChunkHelp = "prefill chunk size in tokens (default 4096)";
// --backend, -t/--threads, --chunk, -v/--verbose and the route options.
void add_session_options(CLI::App* cmd, SessionCli& s, const char* chunk_help = kChunkHelp);

// Reads {"tokens": [...]} or a bare JSON array of non-negative integers.
std::vector<int32_t> read_tokens_json(const std::string& path);
// Reads a float32 little-endian file whose size must be a multiple of `row` floats (row > 0).
std::vector<float> read_f32_rows(const std::string& path, size_t row);

class Stopwatch {
 public:
  Stopwatch() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

 private:
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace flashstar::tools
