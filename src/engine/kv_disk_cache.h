// Disk KV cache (shared/spec/interfaces.md §4): session snapshots keyed by the text they cover, so a
// later request whose rendered prompt starts with that text skips its prefill. One file per checkpoint,
// `<sha1(cache text)>.kv`, written atomically; files from another model, another layout version, or
// damaged in any way are ignored with a log line and never trusted.
//
// Thread safety: every public member takes an internal mutex, so the server's worker thread and a
// shutdown flush (or the client threads' tool-id scans) may call in concurrently. Several processes
// sharing one directory never tear a file (atomic rename); their hit counters may race (last wins).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flashstar {

class Model;
class Session;

// Why a checkpoint was written (header byte 5). The numbers are the on-disk values.
enum class KvSaveReason : uint8_t {
  Unknown = 0,
  Cold = 1,       // first prefill of a new prompt, stopped at the cold anchor (KvCachePolicy::cold_target)
  Continued = 2,  // periodic checkpoint during a long prefill/decode (KvCachePolicy::continued_due)
  Evict = 3,      // the live session is about to be replaced by a non-live request
  Shutdown = 4,   // clean exit
  AgentSystem = 5,
  AgentSession = 6,
};
const char* kv_save_reason_name(KvSaveReason r);  // "cold", "continued", ...

// What the cache text is (header byte 6, bits 1/2). Normally the decoded bytes of the checkpoint's
// tokens; for Responses / thinking live state it is the client-visible transcript while the payload
// holds the real KV including hidden reasoning.
enum class KvKeyKind : uint8_t { TokenText = 0, ResponsesVisible = 1, ThinkingVisible = 2 };
const char* kv_key_kind_name(KvKeyKind k);  // "token-text", "responses-visible", "thinking-visible"

// Tool-call id -> exact sampled DSML block (§3.15). Several ids may share one block.
struct ToolIdEntry {
  std::string id;
  std::string dsml;
};
using ToolIdMap = std::vector<ToolIdEntry>;

// The server's store thresholds (§3.1 flags, §4.1 policy). Pure arithmetic; no I/O.
struct KvCachePolicy {
  uint32_t min_tokens = 512;                  // --kv-cache-min-tokens: shorter checkpoints are neither stored nor loaded
  uint32_t cold_max_tokens = 30000;           // --kv-cache-cold-max-tokens: 0 = no cold saves; else must be >= min
  uint32_t continued_interval_tokens = 10000; // --kv-cache-continued-interval-tokens: 0 = off
  uint32_t boundary_trim_tokens = 32;         // --kv-cache-boundary-trim-tokens
  uint32_t boundary_align_tokens = 2048;      // --kv-cache-boundary-align-tokens: 0 = off
  bool reject_different_quant = false;        // --kv-cache-reject-different-quant

  // Throws Error (one line) on an inconsistent combination (cold_max neither 0 nor >= min).
  void validate() const;

  // Where a cold prefill should stop to write a `cold` checkpoint, or nullopt for no cold store.
  // Only when nothing was cached (cached_tokens == 0) and prompt length is in [min, cold_max]. Target:
  // the index of the last `user_token` before the first `assistant_token` (the checkpoint covers the
  // tokens before that user marker: system prompt + tools, shared by every conversation that starts
  // the same way) if that is >= min; else len - trim aligned down to align, if >= min; else len.
  std::optional<uint32_t> cold_target(std::span<const int32_t> prompt, uint32_t cached_tokens,
                                      int32_t user_token, int32_t assistant_token) const;

  // The `continued` period: interval rounded up to a multiple of align (10000 -> 10240); 0 = off.
  uint32_t continued_step() const;
  // True when a `continued` checkpoint is due at live length `live_tokens`: a multiple of the step,
  // beyond the last stored frontier, and not inside a tool call (DSML block being sampled).
  bool continued_due(uint32_t live_tokens, uint32_t last_stored_frontier, bool inside_tool_call) const;
};

// What makes a file belong to this model. Files whose fingerprint differs are foreign.
struct KvModelIdentity {
  // 64-bit hash of the architecture (every ModelConfig field), the tokenizer vocabulary and the
  // per-layer norm weights: a fine-tune or another model with the same shapes gets another value,
  // while the same model in another quantization keeps it (cross-quant reuse is allowed by default).
  uint64_t fingerprint = 0;
  // Routed-expert bits per weight, rounded down (2 for q2_K/iq2_*, 4 for q4_K/iq4_*, 8 for q8_0...).
  // Compared only when KvCachePolicy::reject_different_quant is set.
  uint8_t quant_bits = 0;

  static KvModelIdentity of(const Model& model);
};

struct KvDiskCacheOptions {
  std::string dir;                     // created if missing
  uint64_t space_bytes = 4096ull << 20;  // --kv-disk-space-mb * 2^20
  uint32_t ctx = 32768;                // context of the serving session: larger-ctx entries are skipped
  KvModelIdentity identity;
  KvCachePolicy policy;
  // Receives one line per notable event: "kv cache: ignored file <name>: <why>", "kv cache hit text
  // tokens=N ... key=<kind>", "kv cache stored ...", "kv cache evicted ...", "kv cache: not stored ...".
  // Called with the cache's mutex held: do not call back into the cache. Null = silent.
  std::function<void(const std::string&)> log;
  // Clock for created/last-used times and hit ageing (unix seconds). Null = the system clock; tests
  // inject one to age entries without sleeping.
  std::function<int64_t()> now_unix;
};

struct KvDiskCacheStats {
  uint64_t lookups = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t hit_tokens = 0;      // tokens restored from disk, summed over hits
  uint64_t stores = 0;          // files written
  uint64_t store_skipped = 0;   // stores refused (too short, larger than the budget, write error)
  uint64_t evictions = 0;       // files deleted to fit the budget
  uint64_t corrupt_skipped = 0; // truncated/corrupt/foreign files ignored (counted once per file version)
  uint64_t files = 0;           // valid entries as of the last directory scan
  uint64_t bytes = 0;           // their total size
};

// One restored checkpoint.
struct KvDiskHit {
  uint32_t tokens = 0;         // checkpoint token count (the loaded session's tokens() are authoritative)
  uint32_t text_bytes = 0;     // length of the prompt-text prefix it covers: tokenize only text[text_bytes:]
  KvKeyKind key = KvKeyKind::TokenText;
  KvSaveReason reason = KvSaveReason::Unknown;
  std::string file;            // file name (no directory), for logs/trace `disk_cache_file`
  ToolIdMap tool_ids;          // the file's tool-id map (empty when it has none)
};

struct KvStoreResult {
  bool stored = false;
  std::string file;    // file name when stored
  std::string reason;  // why not, when !stored (one line)
};

class KvDiskCache {
 public:
  // Creates the directory when missing and scans it once. Files that fail the header/trailer checks
  // (truncated, corrupt, foreign model or version) are logged and left alone: they may belong to another
  // server sharing the directory, and they do not count against the budget. A file carrying our
  // fingerprint whose checksums fail when read for a hit (or whose snapshot Session::load rejects) is
  // deleted, since it would otherwise hold budget forever.
  // Throws Error when the directory cannot be created or the policy is invalid.
  explicit KvDiskCache(KvDiskCacheOptions opts);
  ~KvDiskCache();
  KvDiskCache(const KvDiskCache&) = delete;
  KvDiskCache& operator=(const KvDiskCache&) = delete;

  const KvDiskCacheOptions& options() const { return opts_; }

  // §4.5: the longest stored entry whose cache text is a byte prefix of `prompt_text` (ties: more
  // tokens), with tokens >= min, ctx <= ours, quant matching when strict, and matching `key` kind
  // when given. Loads it into `session` (Session::load) and returns the hit; on a miss returns nullopt
  // and leaves `session` untouched unless a candidate failed to load, in which case the session is
  // reset() and the next-best candidate is tried. Candidates are chosen from headers only (the
  // payload is read just for the winner); every length and checksum is verified before use. A hit
  // bumps the file's hit count and last-used time in place.
  std::optional<KvDiskHit> restore(std::string_view prompt_text, Session& session,
                                   std::optional<KvKeyKind> key = std::nullopt);

  // Same selection, without a session: returns the verified engine snapshot in `snapshot` for the
  // caller to Session::load (which may still throw Error: treat that as a miss and call forget()).
  std::optional<KvDiskHit> lookup(std::string_view prompt_text, std::string& snapshot,
                                  std::optional<KvKeyKind> key = std::nullopt);

  // Writes a checkpoint of `session` (its save() snapshot, tokens().size() tokens) under `cache_text`.
  // Refused (stored=false, with a reason) when tokens < min, or the file (+1% slack) exceeds the whole
  // budget. Tool-id entries whose DSML does not occur in cache_text are dropped (§4.3). Replacing an
  // existing entry for the same text keeps its hit count. Evicts afterwards to the budget, protecting
  // the new file. Never throws for I/O problems (reported in the result and the log).
  KvStoreResult store(const Session& session, std::string_view cache_text, KvSaveReason reason,
                      KvKeyKind key = KvKeyKind::TokenText, const ToolIdMap& tool_ids = {});
  // Same from an already-saved snapshot (e.g. taken earlier on the worker thread).
  KvStoreResult store_snapshot(const std::string& snapshot, uint32_t tokens, std::string_view cache_text,
                               KvSaveReason reason, KvKeyKind key = KvKeyKind::TokenText,
                               const ToolIdMap& tool_ids = {});

  // §3.15: scans every valid file's tool-id map (reading only that trailer) for the given ids and
  // returns the mappings found (each id at most once; newest file wins).
  ToolIdMap find_tool_ids(std::span<const std::string> ids);

  // §4.6: deletes the lowest-scoring entries until the total fits the budget. `protect` (a file name)
  // is kept unless it alone exceeds the budget. Returns the number of files deleted.
  size_t evict_to_budget(const std::string& protect = {});

  // Drops a file that turned out to be unusable (e.g. Session::load rejected its snapshot).
  void forget(const std::string& file);

  // Rescans the directory and returns the counters.
  KvDiskCacheStats stats();

 private:
  struct Entry;
  struct Impl;
  int64_t now() const;
  void log(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  std::string path_of(const std::string& name) const;
  std::string parse_locked(const std::string& name, Entry& e) const;
  void scan_locked();
  void invalidate_locked(const std::string& name, const std::string& why, bool remove);
  bool read_entry_locked(const std::string& name, std::string_view prompt_text, std::string& snapshot,
                         ToolIdMap& tools);
  void touch_locked(const std::string& name);
  std::vector<std::string> candidates_locked(std::string_view prompt_text, std::optional<KvKeyKind> key);
  KvDiskHit make_hit_locked(const std::string& name, ToolIdMap tools);
  KvStoreResult store_impl(const std::string& snap, uint32_t tokens, uint32_t ctx, std::string_view cache_text,
                           KvSaveReason reason, KvKeyKind key, const ToolIdMap& tool_ids);
  size_t evict_locked(const std::string& protect);

  KvDiskCacheOptions opts_;
  std::mutex mu_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flashstar
