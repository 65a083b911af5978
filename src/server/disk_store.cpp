#include "server/disk_store.h"

#include <CLI/CLI.hpp>

#include "common/error.h"
#include "engine/kv_disk_cache.h"

namespace flashstar::server {

namespace {

KvSaveReason reason_of(const char* r) {
  const std::string s = r;
  if (s == "cold") return KvSaveReason::Cold;
  if (s == "continued") return KvSaveReason::Continued;
  if (s == "evict") return KvSaveReason::Evict;
  if (s == "shutdown") return KvSaveReason::Shutdown;
  return KvSaveReason::Unknown;
}

class KvDiskStore : public DiskStore {
 public:
  KvDiskStore(KvDiskCacheOptions opts, const text::Tokenizer& tok)
      : cache_(std::move(opts)), user_(tok.special().user), assistant_(tok.special().assistant) {}

  uint32_t min_tokens() const override { return cache_.options().policy.min_tokens; }
  std::optional<uint32_t> cold_target(std::span<const int32_t> prompt, uint32_t cached) const override {
    return cache_.options().policy.cold_target(prompt, cached, user_, assistant_);
  }
  bool continued_due(uint32_t live, uint32_t last, bool in_tool) const override {
    return cache_.options().policy.continued_due(live, last, in_tool);
  }
  std::optional<DiskRestore> restore(std::string_view text, Session& s) override {
    auto hit = cache_.restore(text, s);
    if (!hit) return std::nullopt;
    DiskRestore r;
    r.tokens = hit->tokens;
    r.text_bytes = hit->text_bytes;
    r.file = hit->file;
    for (auto& e : hit->tool_ids) r.tool_ids.emplace_back(std::move(e.id), std::move(e.dsml));
    return r;
  }
  void store(const Session& s, std::string_view text, const char* reason,
             const std::vector<std::pair<std::string, std::string>>& tool_ids) override {
    ToolIdMap m;
    for (const auto& [id, dsml] : tool_ids) m.push_back({id, dsml});
    cache_.store(s, text, reason_of(reason), KvKeyKind::TokenText, m);
  }
  std::vector<std::pair<std::string, std::string>> find_tool_ids(const std::vector<std::string>& ids) override {
    std::vector<std::pair<std::string, std::string>> out;
    for (auto& e : cache_.find_tool_ids(ids)) out.emplace_back(std::move(e.id), std::move(e.dsml));
    return out;
  }
  std::string metrics() override {
    const KvDiskCacheStats st = cache_.stats();
    std::string s;
    auto metric = [&](const char* name, const char* type, const char* help, uint64_t v) {
      s += prom_metric(name, type, help, static_cast<double>(v));
    };
    metric("flashstar_kv_disk_lookups_total", "counter", "Disk KV cache lookups.", st.lookups);
    metric("flashstar_kv_disk_hits_total", "counter", "Disk KV cache hits.", st.hits);
    metric("flashstar_kv_disk_misses_total", "counter", "Disk KV cache misses.", st.misses);
    metric("flashstar_kv_disk_hit_tokens_total", "counter", "Tokens restored from disk.", st.hit_tokens);
    metric("flashstar_kv_disk_stores_total", "counter", "Checkpoints written.", st.stores);
    metric("flashstar_kv_disk_store_skipped_total", "counter", "Checkpoints not written.", st.store_skipped);
    metric("flashstar_kv_disk_evictions_total", "counter", "Checkpoints deleted to fit the budget.", st.evictions);
    metric("flashstar_kv_disk_corrupt_skipped_total", "counter", "Corrupt or foreign files ignored.", st.corrupt_skipped);
    metric("flashstar_kv_disk_files", "gauge", "Valid checkpoint files.", st.files);
    metric("flashstar_kv_disk_bytes", "gauge", "Bytes of valid checkpoint files.", st.bytes);
    return s;
  }

 private:
  mutable KvDiskCache cache_;
  int32_t user_, assistant_;
};

}  // namespace

void add_disk_policy_options(CLI::App* cmd, DiskPolicyOptions& o) {
  auto opt = [&](const char* name, uint32_t& v, const char* help) {
    cmd->add_option(name, v, help)->each([&o](const std::string&) { o.any_set = true; });
  };
  opt("--kv-cache-min-tokens", o.min_tokens, "shortest checkpoint stored or loaded (default 512)");
  opt("--kv-cache-cold-max-tokens", o.cold_max_tokens, "longest prompt that gets a cold checkpoint; 0 = none (default 30000)");
  opt("--kv-cache-continued-interval-tokens", o.continued_interval_tokens, "tokens between continued checkpoints; 0 = off (default 10000)");
  opt("--kv-cache-boundary-trim-tokens", o.boundary_trim_tokens, "cold checkpoint trim (default 32)");
  opt("--kv-cache-boundary-align-tokens", o.boundary_align_tokens, "checkpoint alignment; 0 = off (default 2048)");
  cmd->add_flag("--kv-cache-reject-different-quant", o.reject_different_quant, "do not load checkpoints of another quantization")
      ->each([&o](const std::string&) { o.any_set = true; });
}

std::unique_ptr<DiskStore> make_disk_store(const Model& model, const text::Tokenizer& tok, const std::string& dir,
                                           uint64_t space_mb, uint32_t ctx, const DiskPolicyOptions& p,
                                           std::function<void(const std::string&)> log) {
  KvDiskCacheOptions o;
  o.dir = dir;
  o.space_bytes = space_mb << 20;
  o.ctx = ctx;
  o.identity = KvModelIdentity::of(model);
  o.policy.min_tokens = p.min_tokens;
  o.policy.cold_max_tokens = p.cold_max_tokens;
  o.policy.continued_interval_tokens = p.continued_interval_tokens;
  o.policy.boundary_trim_tokens = p.boundary_trim_tokens;
  o.policy.boundary_align_tokens = p.boundary_align_tokens;
  o.policy.reject_different_quant = p.reject_different_quant;
  o.policy.validate();
  o.log = std::move(log);
  return std::make_unique<KvDiskStore>(std::move(o), tok);
}

}  // namespace flashstar::server
