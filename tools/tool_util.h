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
// Help text for --backend.
constexpr const char* kBackendHelp = "auto (cuda when a GPU is present), cpu or cuda";

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
