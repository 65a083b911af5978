#include "tool_util.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstring>

#include "common/error.h"
#include "common/file_util.h"
#include "common/parallel.h"
#ifdef FLASHSTAR_HAVE_CUDA
#include "cuda/cuda_session.h"
#endif

namespace flashstar::tools {

std::vector<int32_t> read_tokens_json(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("%s: invalid JSON: %s", path.c_str(), e.what());
  }
  const nlohmann::json* arr = &j;
  if (j.is_object()) {
    if (!j.contains("tokens")) fail("%s: JSON object has no \"tokens\" array", path.c_str());
    arr = &j["tokens"];
  }
  if (!arr->is_array()) fail("%s: expected an array of token ids", path.c_str());
  std::vector<int32_t> out;
  out.reserve(arr->size());
  for (const auto& v : *arr) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
      fail("%s: token list holds a non-integer or negative entry", path.c_str());
    out.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return out;
}

std::string resolve_backend(const std::string& requested) {
  if (requested == "cpu") return requested;
#ifdef FLASHSTAR_HAVE_CUDA
  if (requested == "cuda" || (requested == "auto" && cuda::device_available())) return "cuda";
#else
  if (requested == "cuda") fail("this build has no CUDA backend (nvcc was not found at configure time)");
#endif
  if (requested == "auto") return "cpu";
  fail("unknown backend '%s' (expected auto, cpu or cuda)", requested.c_str());
}

std::unique_ptr<Session> make_session(const Model& model, const SessionOptions& opts, const std::string& backend) {
  const std::string b = resolve_backend(backend);
#ifdef FLASHSTAR_HAVE_CUDA
  if (b == "cuda") return cuda::make_cuda_session(model, opts);
#endif
  return make_cpu_session(model, opts);
}

text::Tokenizer load_tokenizer(const Model& model, const std::string& path, const std::string& pretokenizer) {
  text::Tokenizer tok = text::Tokenizer::from_gguf(model.file(), text::parse_pretokenizer(pretokenizer));
  if (tok.n_vocab() > model.config().n_vocab)
    fail("%s: the tokenizer has %zu tokens but the model only %u logits", path.c_str(), tok.n_vocab(),
         model.config().n_vocab);
  return tok;
}

RouteSet RouteOptions::resolve() const {
  RouteSet s;
  apply_route_env(s);
  if (quality) s = RouteSet::quality();
  for (const std::string& r : routes) apply_route_arg(s, r);
  return s;
}

void add_route_options(CLI::App* cmd, RouteOptions& o) {
  cmd->add_option("--route", o.routes, "NAME=on|off: switch one GPU fast route (repeatable; see the list below)")
      ->allow_extra_args(false);
  cmd->add_flag("--quality", o.quality, "GPU reference kernels only (every fast route off)");
  cmd->footer(routes_help());
}

std::string SessionCli::prepare() const {
  const std::string b = resolve_backend(backend);
  if (threads > 0) set_num_threads(threads);
  return b;
}

SessionOptions SessionCli::options(uint32_t ctx) const {
  SessionOptions so;
  so.ctx = ctx;
  so.chunk = chunk;
  so.verbose = verbose;
  so.routes = routes.resolve();
  return so;
}

void add_session_options(CLI::App* cmd, SessionCli& s, const char* chunk_help) {
  cmd->add_option("--backend", s.backend, "auto (cuda when a GPU is present), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_option("-t,--threads", s.threads, "CPU threads (default: all cores)");
  cmd->add_option("--chunk", s.chunk, chunk_help)->check(CLI::PositiveNumber);
  cmd->add_flag("-v,--verbose", s.verbose, "print the memory plan, load progress and the GPU route set");
  add_route_options(cmd, s.routes);
}

std::vector<float> read_f32_rows(const std::string& path, size_t row) {
  const std::string bytes = read_file(path);
  if (row == 0 || bytes.size() % (row * sizeof(float)) != 0)
    fail("%s: size %zu is not a whole number of rows of %zu float32 values", path.c_str(), bytes.size(), row);
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

}  // namespace flashstar::tools
