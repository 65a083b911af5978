// The disk KV cache (engine/kv_disk_cache.h) behind the engine's DiskStore interface, plus the
// --kv-cache-* command-line options.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "server/engine.h"

namespace CLI {
class App;
}

namespace flashstar {
class Model;
}

namespace flashstar::server {

struct DiskPolicyOptions {
  uint32_t min_tokens = 512, cold_max_tokens = 30000, continued_interval_tokens = 10000;
  uint32_t boundary_trim_tokens = 32, boundary_align_tokens = 2048;
  bool reject_different_quant = false;
  bool any_set = false;  // some --kv-cache-* option was given
};
void add_disk_policy_options(CLI::App* cmd, DiskPolicyOptions& o);

std::unique_ptr<DiskStore> make_disk_store(const Model& model, const text::Tokenizer& tok, const std::string& dir,
                                           uint64_t space_mb, uint32_t ctx, const DiskPolicyOptions& policy,
                                           std::function<void(const std::string&)> log);

}  // namespace flashstar::server
