// Disk KV cache: file format, scan, lookup, store and eviction (shared/spec/interfaces.md §4).
//
// File layout (little-endian): the spec's 52-byte header, the cache text, the engine snapshot, the
// optional tool-id map, then a 40-byte integrity trailer of our own:
//   0 "KVCT"  4 u32 trailer size (40)  8 u64 model fingerprint  16 u64 head sum  24 u64 payload sum
//   32 u64 tool-map sum
// ds4's format has no checksum and identifies the model only by the quant byte; a server that reuses a
// directory across models or survives a disk error must not feed garbage into the KV, hence the trailer
// and the low 32 bits of the fingerprint in header bytes 20..23 (reserved, 0, in ds4) so foreign files
// are rejected from the header alone. The head sum skips the hit count and last-used time, which are
// rewritten in place on every hit; a torn counter only skews eviction, never the KV.
#include "engine/kv_disk_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstdarg>
#include <cstring>
#include <ctime>
#include <map>
#include <set>

#include "common/error.h"
#include "common/file_util.h"
#include "engine/session.h"
#include "model/weights.h"

static_assert(std::endian::native == std::endian::little, "the cache file layout is written as host little-endian");

namespace flashstar {
namespace {

constexpr size_t kHeader = 52;
constexpr size_t kTrailer = 40;
constexpr uint8_t kVersion = 1;
constexpr size_t kToolMapHead = 8;  // "KTM" + version + u32 count
constexpr double kHitHalfLifeSec = 6 * 3600.0;

// ---- SHA-1 (FIPS 180-4), for the spec's file names. Copyable, so one pass over a prompt yields the
// digest of every prefix length that some file needs.
class Sha1 {
 public:
  void update(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    total_ += n;
    while (n > 0) {
      const size_t take = std::min(n, 64 - fill_);
      std::memcpy(buf_ + fill_, p, take);
      fill_ += take, p += take, n -= take;
      if (fill_ == 64) block(buf_), fill_ = 0;
    }
  }
  std::string hex() const {
    Sha1 c = *this;
    const uint64_t bits = total_ * 8;
    const uint8_t pad = 0x80, zero = 0;
    c.update(&pad, 1);
    while (c.fill_ != 56) c.update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    c.update(len, 8);
    std::string out;
    for (uint32_t v : c.h_) out += strfmt("%08x", v);
    return out;
  }

 private:
  void block(const uint8_t* b) {
    uint32_t w[80];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t{b[4 * i]} << 24 | uint32_t{b[4 * i + 1]} << 16 | uint32_t{b[4 * i + 2]} << 8 | b[4 * i + 3];
    for (int i = 16; i < 80; ++i) w[i] = std::rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4];
    for (int i = 0; i < 80; ++i) {
      uint32_t f, k;
      if (i < 20) f = (bb & c) | (~bb & d), k = 0x5A827999;
      else if (i < 40) f = bb ^ c ^ d, k = 0x6ED9EBA1;
      else if (i < 60) f = (bb & c) | (bb & d) | (c & d), k = 0x8F1BBCDC;
      else f = bb ^ c ^ d, k = 0xCA62C1D6;
      const uint32_t t = std::rotl(a, 5) + f + e + k + w[i];
      e = d, d = c, c = std::rotl(bb, 30), bb = a, a = t;
    }
    h_[0] += a, h_[1] += bb, h_[2] += c, h_[3] += d, h_[4] += e;
  }
  uint32_t h_[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  uint8_t buf_[64] = {};
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

std::string sha1_hex(std::string_view s) {
  Sha1 h;
  h.update(s.data(), s.size());
  return h.hex();
}

// ---- 64-bit integrity sum. Not cryptographic: it catches disk/copy damage at memory speed (files reach
// hundreds of MB). Each lane step is a bijection of the input word, so any single changed word changes
// the lane state.
constexpr uint64_t kM1 = 0x9E3779B185EBCA87ull, kM2 = 0xC2B2AE3D27D4EB4Full, kM3 = 0x165667B19E3779F9ull;

uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

uint64_t sum64(const void* data, size_t n, uint64_t seed) {
  const auto* p = static_cast<const uint8_t*>(data);
  const uint64_t len = n;
  uint64_t v[4] = {seed + kM1, seed ^ kM2, seed + kM3, seed - kM1};
  for (; n >= 32; p += 32, n -= 32)
    for (int i = 0; i < 4; ++i) v[i] = std::rotl(v[i] ^ (load64(p + 8 * i) * kM2), 29) * kM1;
  uint64_t h = std::rotl(v[0], 1) + std::rotl(v[1], 7) + std::rotl(v[2], 12) + std::rotl(v[3], 18) + len;
  for (; n >= 8; p += 8, n -= 8) h = std::rotl(h ^ (load64(p) * kM2), 27) * kM1 + kM3;
  for (; n > 0; ++p, --n) h = std::rotl(h ^ (*p * kM3), 11) * kM1;
  h ^= h >> 33, h *= kM2, h ^= h >> 29, h *= kM3, h ^= h >> 32;
  return h;
}

uint32_t get32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t get64(const uint8_t* p) { return load64(p); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
void app32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void app64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }

// Sum of header + text with the in-place mutable fields (hit count, last-used) zeroed.
uint64_t head_sum(const uint8_t* header, std::string_view text) {
  uint8_t h[kHeader];
  std::memcpy(h, header, kHeader);
  put32(h + 12, 0);
  put64(h + 32, 0);
  std::string buf(reinterpret_cast<const char*>(h), kHeader);
  buf.append(text);
  return sum64(buf.data(), buf.size(), 1);
}

bool is_entry_name(const std::string& n) {
  if (n.size() != 43 || n.compare(40, 3, ".kv") != 0) return false;
  return std::all_of(n.begin(), n.begin() + 40, [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// pread exactly n bytes or fail.
bool pread_all(int fd, void* dst, size_t n, uint64_t off) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r, n -= static_cast<size_t>(r), off += static_cast<uint64_t>(r);
  }
  return true;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { if (fd_ >= 0) ::close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Parses "KTM" + v1 + count + entries, requiring every byte to be accounted for.
bool parse_tool_map(const std::string& b, ToolIdMap& out) {
  if (b.size() < kToolMapHead || b.compare(0, 3, "KTM") != 0 || static_cast<uint8_t>(b[3]) != 1) return false;
  const auto* p = reinterpret_cast<const uint8_t*>(b.data());
  const uint32_t count = get32(p + 4);
  if (count > (b.size() - kToolMapHead) / 8) return false;
  size_t off = kToolMapHead;
  out.clear();
  out.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (b.size() - off < 8) return false;
    const uint64_t il = get32(p + off), dl = get32(p + off + 4);
    off += 8;
    if (il + dl > b.size() - off) return false;
    out.push_back({b.substr(off, il), b.substr(off + il, dl)});
    off += il + dl;
  }
  return off == b.size();
}

std::string build_tool_map(const ToolIdMap& m) {
  std::string s = "KTM";
  s.push_back(1);
  app32(s, static_cast<uint32_t>(m.size()));
  for (const auto& e : m) {
    app32(s, static_cast<uint32_t>(e.id.size()));
    app32(s, static_cast<uint32_t>(e.dsml.size()));
    s += e.id;
    s += e.dsml;
  }
  return s;
}

void hash_value(std::string& acc, const gguf::Value& v) {
  app32(acc, static_cast<uint32_t>(v.type));
  switch (v.type) {
    case gguf::ValueType::STRING: app64(acc, v.s.size()); acc += v.s; break;
    case gguf::ValueType::ARRAY:
      app32(acc, static_cast<uint32_t>(v.item_type));
      app64(acc, v.items.size());
      for (const auto& it : v.items) hash_value(acc, it);
      break;
    case gguf::ValueType::F32:
    case gguf::ValueType::F64: app64(acc, std::bit_cast<uint64_t>(v.f)); break;
    default: app64(acc, v.u); app64(acc, static_cast<uint64_t>(v.i)); break;
  }
}

}  // namespace

const char* kv_save_reason_name(KvSaveReason r) {
  switch (r) {
    case KvSaveReason::Cold: return "cold";
    case KvSaveReason::Continued: return "continued";
    case KvSaveReason::Evict: return "evict";
    case KvSaveReason::Shutdown: return "shutdown";
    case KvSaveReason::AgentSystem: return "agent-system";
    case KvSaveReason::AgentSession: return "agent-session";
    default: return "unknown";
  }
}

const char* kv_key_kind_name(KvKeyKind k) {
  switch (k) {
    case KvKeyKind::ResponsesVisible: return "responses-visible";
    case KvKeyKind::ThinkingVisible: return "thinking-visible";
    default: return "token-text";
  }
}

// ---- policy

void KvCachePolicy::validate() const {
  if (cold_max_tokens != 0 && cold_max_tokens < min_tokens)
    fail("--kv-cache-cold-max-tokens must be 0 or at least --kv-cache-min-tokens (%u < %u)", cold_max_tokens, min_tokens);
}

std::optional<uint32_t> KvCachePolicy::cold_target(std::span<const int32_t> prompt, uint32_t cached_tokens,
                                                   int32_t user_token, int32_t assistant_token) const {
  const uint64_t n = prompt.size();
  if (cold_max_tokens == 0 || cached_tokens != 0 || n < min_tokens || n > cold_max_tokens) return std::nullopt;
  size_t first_a = n;
  for (size_t i = 0; i < n; ++i)
    if (prompt[i] == assistant_token) { first_a = i; break; }
  for (size_t i = first_a; i-- > 0;)
    if (prompt[i] == user_token) {
      if (i >= min_tokens) return static_cast<uint32_t>(i);
      break;
    }
  uint64_t t = n > boundary_trim_tokens ? n - boundary_trim_tokens : 0;
  if (boundary_align_tokens) t = t / boundary_align_tokens * boundary_align_tokens;
  return static_cast<uint32_t>(t >= min_tokens ? t : n);
}

uint32_t KvCachePolicy::continued_step() const {
  if (continued_interval_tokens == 0) return 0;
  if (boundary_align_tokens == 0) return continued_interval_tokens;
  const uint64_t a = boundary_align_tokens;
  return static_cast<uint32_t>(std::min<uint64_t>((continued_interval_tokens + a - 1) / a * a, UINT32_MAX));
}

bool KvCachePolicy::continued_due(uint32_t live_tokens, uint32_t last_stored_frontier, bool inside_tool_call) const {
  const uint32_t step = continued_step();
  return step != 0 && !inside_tool_call && live_tokens >= min_tokens && live_tokens % step == 0 &&
         live_tokens > last_stored_frontier;
}

// ---- identity

KvModelIdentity KvModelIdentity::of(const Model& model) {
  KvModelIdentity id;
  for (const auto& L : model.layers)
    if (L.gate_exps.all.present()) {
      const TypeInfo& ti = type_info(L.gate_exps.all.type);
      const uint64_t bpw = uint64_t{ti.block_bytes} * 8 / ti.block_elems;
      id.quant_bits = static_cast<uint8_t>(std::clamp<uint64_t>(bpw, 1, 255));
      break;
    }
  if (id.quant_bits == 0) id.quant_bits = 16;
  // Metadata in key order, minus what a re-quantization or a rename changes (general.*, file type,
  // quantization version), so the same weights in q2 and q4 share a fingerprint.
  std::vector<const gguf::KeyValue*> kvs;
  for (const auto& kv : model.file().metadata()) {
    if (kv.key.rfind("general.", 0) == 0 || kv.key.find("quantiz") != std::string::npos ||
        kv.key.find("file_type") != std::string::npos)
      continue;
    kvs.push_back(&kv);
  }
  std::sort(kvs.begin(), kvs.end(), [](auto* a, auto* b) { return a->key < b->key; });
  std::string acc;
  for (auto* kv : kvs) {
    app64(acc, kv->key.size());
    acc += kv->key;
    hash_value(acc, kv->value);
  }
  // Norm weights tell fine-tunes of one architecture apart. Quantizers keep them in f32; one that did not
  // would only cost cross-quant hits, never admit a foreign file.
  auto add = [&](const std::vector<float>& v) { app64(acc, v.size()); acc.append(reinterpret_cast<const char*>(v.data()), v.size() * 4); };
  add(model.output_norm);
  for (const auto& L : model.layers) add(L.attn_norm), add(L.ffn_norm);
  id.fingerprint = sum64(acc.data(), acc.size(), 0x4b5643);
  return id;
}

// ---- cache

struct KvDiskCache::Entry {
  // stat identity: a changed file is parsed again
  uint64_t size = 0, ino = 0;
  int64_t mtime_ns = 0;
  bool valid = false;
  // header
  uint8_t quant = 0, reason = 0, ext = 0;
  uint32_t tokens = 0, hits = 0, ctx = 0, text_len = 0;
  int64_t created = 0, last_used = 0;
  uint64_t payload = 0, tools_len = 0;
  // trailer
  uint64_t head_sum = 0, payload_sum = 0, tools_sum = 0;

  uint64_t payload_off() const { return kHeader + text_len; }
  uint64_t tools_off() const { return kHeader + text_len + payload; }
  KvKeyKind key() const {
    return (ext & 2) ? KvKeyKind::ResponsesVisible : (ext & 4) ? KvKeyKind::ThinkingVisible : KvKeyKind::TokenText;
  }
};


struct KvDiskCache::Impl {
  std::map<std::string, Entry> entries;
  KvDiskCacheStats st;
};

namespace {

struct StatId {
  uint64_t size, ino;
  int64_t mtime_ns;
};

std::optional<StatId> stat_file(const std::string& path) {
  struct stat sb;
  if (::stat(path.c_str(), &sb) != 0 || !S_ISREG(sb.st_mode)) return std::nullopt;
  return StatId{static_cast<uint64_t>(sb.st_size), static_cast<uint64_t>(sb.st_ino),
                static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec};
}

}  // namespace

KvDiskCache::KvDiskCache(KvDiskCacheOptions opts) : opts_(std::move(opts)), impl_(std::make_unique<Impl>()) {
  opts_.policy.validate();
  if (opts_.dir.empty()) fail("--kv-disk-dir is empty");
  if (opts_.identity.quant_bits == 0) fail("kv disk cache: model identity is not set");
  if (::mkdir(opts_.dir.c_str(), 0755) != 0 && errno != EEXIST)
    fail("%s: cannot create the kv cache directory: %s", opts_.dir.c_str(), std::strerror(errno));
  struct stat sb;
  if (::stat(opts_.dir.c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode)) fail("%s: not a directory", opts_.dir.c_str());
  // Temp files of writers that died mid-write (name.kv.tmp.<pid>, pid gone) would hold disk forever.
  if (DIR* d = ::opendir(opts_.dir.c_str())) {
    while (const dirent* de = ::readdir(d)) {
      const std::string n = de->d_name;
      if (n.size() < 48 || !is_entry_name(n.substr(0, 43)) || n.compare(43, 5, ".tmp.") != 0) continue;
      const long pid = std::strtol(n.c_str() + 48, nullptr, 10);
      if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) ::unlink((opts_.dir + "/" + n).c_str());
    }
    ::closedir(d);
  }
  std::lock_guard<std::mutex> lk(mu_);
  scan_locked();
}

KvDiskCache::~KvDiskCache() = default;

int64_t KvDiskCache::now() const { return opts_.now_unix ? opts_.now_unix() : static_cast<int64_t>(::time(nullptr)); }

void KvDiskCache::log(const char* fmt, ...) const {
  if (!opts_.log) return;
  va_list ap;
  va_start(ap, fmt);
  std::string s = vstrfmt(fmt, ap);
  va_end(ap);
  opts_.log(s);
}

std::string KvDiskCache::path_of(const std::string& name) const { return opts_.dir + "/" + name; }

// Reads and checks the header and trailer of one file; returns "" when usable, else why not.
std::string KvDiskCache::parse_locked(const std::string& name, Entry& e) const {
  Fd fd(::open(path_of(name).c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return strfmt("cannot open: %s", std::strerror(errno));
  if (e.size < kHeader + kTrailer) return strfmt("truncated (%llu bytes)", static_cast<unsigned long long>(e.size));
  uint8_t h[kHeader], t[kTrailer];
  if (!pread_all(fd.get(), h, kHeader, 0) || !pread_all(fd.get(), t, kTrailer, e.size - kTrailer))
    return "truncated (short read)";
  if (std::memcmp(h, "KVC", 3) != 0) return "bad magic";
  if (h[3] != kVersion) return strfmt("foreign format version %u", h[3]);
  if (get32(h + 20) != static_cast<uint32_t>(opts_.identity.fingerprint)) return "foreign model (fingerprint differs)";
  e.quant = h[4], e.reason = h[5], e.ext = h[6];
  e.tokens = get32(h + 8), e.hits = get32(h + 12), e.ctx = get32(h + 16);
  e.created = static_cast<int64_t>(get64(h + 24)), e.last_used = static_cast<int64_t>(get64(h + 32));
  e.payload = get64(h + 40), e.text_len = get32(h + 48);
  if (e.quant == 0 || e.reason > 6 || (e.ext & ~7u) || (e.ext & 6) == 6 || h[7] != 0 || e.tokens == 0)
    return "corrupt header";
  const uint64_t fixed = kHeader + uint64_t{e.text_len} + kTrailer;
  if (fixed > e.size || e.payload > e.size - fixed) return "truncated (lengths exceed the file)";
  e.tools_len = e.size - fixed - e.payload;
  if ((e.ext & 1) ? e.tools_len < kToolMapHead : e.tools_len != 0) return "corrupt (tool-id map size)";
  if (std::memcmp(t, "KVCT", 4) != 0 || get32(t + 4) != kTrailer) return "corrupt trailer";
  if (get64(t + 8) != opts_.identity.fingerprint) return "foreign model (fingerprint differs)";
  e.head_sum = get64(t + 16), e.payload_sum = get64(t + 24), e.tools_sum = get64(t + 32);
  return "";
}

void KvDiskCache::scan_locked() {
  auto& ents = impl_->entries;
  std::set<std::string> seen;
  DIR* d = ::opendir(opts_.dir.c_str());
  if (!d) {
    log("kv cache: cannot list %s: %s", opts_.dir.c_str(), std::strerror(errno));
    return;
  }
  while (const dirent* de = ::readdir(d)) {
    const std::string n = de->d_name;
    if (!is_entry_name(n)) continue;
    const auto sid = stat_file(path_of(n));
    if (!sid) continue;
    seen.insert(n);
    auto it = ents.find(n);
    if (it != ents.end() && it->second.size == sid->size && it->second.ino == sid->ino &&
        it->second.mtime_ns == sid->mtime_ns)
      continue;
    Entry e;
    e.size = sid->size, e.ino = sid->ino, e.mtime_ns = sid->mtime_ns;
    const std::string why = parse_locked(n, e);
    e.valid = why.empty();
    if (!e.valid) {
      ++impl_->st.corrupt_skipped;
      log("kv cache: ignored file %s: %s", n.c_str(), why.c_str());
    }
    ents[n] = e;
  }
  ::closedir(d);
  for (auto it = ents.begin(); it != ents.end();) it = seen.count(it->first) ? std::next(it) : ents.erase(it);
  impl_->st.files = impl_->st.bytes = 0;
  for (const auto& [n, e] : ents)
    if (e.valid) ++impl_->st.files, impl_->st.bytes += e.size;
}

void KvDiskCache::invalidate_locked(const std::string& name, const std::string& why, bool remove) {
  ++impl_->st.corrupt_skipped;
  log("kv cache: ignored file %s: %s%s", name.c_str(), why.c_str(), remove ? "; removed" : "");
  auto it = impl_->entries.find(name);
  if (it != impl_->entries.end()) it->second.valid = false;
  if (remove) {
    ::unlink(path_of(name).c_str());
    if (it != impl_->entries.end()) impl_->entries.erase(it);
  }
}

// Reads the whole entry and checks every sum, the text against the prompt, and the tool map. The file
// is ours (fingerprint), so damage found here is deleted: it would otherwise sit in the budget forever.
bool KvDiskCache::read_entry_locked(const std::string& name, std::string_view prompt_text, std::string& snapshot,
                                    ToolIdMap& tools) {
  auto it = impl_->entries.find(name);
  if (it == impl_->entries.end()) return false;
  const Entry e = it->second;
  Fd fd(::open(path_of(name).c_str(), O_RDONLY | O_CLOEXEC));
  struct stat sb;
  if (fd.get() < 0 || ::fstat(fd.get(), &sb) != 0 || static_cast<uint64_t>(sb.st_size) != e.size ||
      static_cast<uint64_t>(sb.st_ino) != e.ino) {
    it->second.valid = false;  // replaced or removed since the scan; the next scan picks it up again
    return false;
  }
  std::string head(kHeader + e.text_len, '\0');
  if (!pread_all(fd.get(), head.data(), head.size(), 0)) return invalidate_locked(name, "short read", false), false;
  const auto* h = reinterpret_cast<const uint8_t*>(head.data());
  if (get32(h + 8) != e.tokens || get64(h + 40) != e.payload || get32(h + 48) != e.text_len || h[6] != e.ext)
    return invalidate_locked(name, "header changed under us", false), false;
  const std::string_view text(head.data() + kHeader, e.text_len);
  if (head_sum(h, text) != e.head_sum) return invalidate_locked(name, "header/text checksum mismatch", true), false;
  if (prompt_text.substr(0, e.text_len) != text) return false;  // a sha1 collision, not damage
  snapshot.assign(e.payload, '\0');
  if (!pread_all(fd.get(), snapshot.data(), e.payload, e.payload_off()))
    return invalidate_locked(name, "short read", false), false;
  if (sum64(snapshot.data(), snapshot.size(), 2) != e.payload_sum)
    return invalidate_locked(name, "payload checksum mismatch", true), false;
  tools.clear();
  if (e.ext & 1) {
    std::string tb(e.tools_len, '\0');
    if (!pread_all(fd.get(), tb.data(), tb.size(), e.tools_off())) return invalidate_locked(name, "short read", false), false;
    if (sum64(tb.data(), tb.size(), 3) != e.tools_sum || !parse_tool_map(tb, tools))
      return invalidate_locked(name, "corrupt tool-id map", true), false;
  }
  return true;
}

void KvDiskCache::touch_locked(const std::string& name) {
  auto it = impl_->entries.find(name);
  if (it == impl_->entries.end()) return;
  auto& e = it->second;
  e.hits = e.hits == UINT32_MAX ? e.hits : e.hits + 1;
  e.last_used = now();
  Fd fd(::open(path_of(name).c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.get() < 0) return;
  uint8_t b[8];
  put32(b, e.hits);
  bool ok = ::pwrite(fd.get(), b, 4, 12) == 4;
  put64(b, static_cast<uint64_t>(e.last_used));
  ok = ::pwrite(fd.get(), b, 8, 32) == 8 && ok;
  if (!ok) log("kv cache: cannot update hit count of %s: %s", name.c_str(), std::strerror(errno));
  if (const auto sid = stat_file(path_of(name))) e.size = sid->size, e.ino = sid->ino, e.mtime_ns = sid->mtime_ns;
}

std::vector<std::string> KvDiskCache::candidates_locked(std::string_view prompt_text, std::optional<KvKeyKind> key) {
  scan_locked();
  const auto& pol = opts_.policy;
  std::vector<std::pair<std::string, const Entry*>> cands;
  for (const auto& [n, e] : impl_->entries) {
    if (!e.valid || e.text_len > prompt_text.size() || e.tokens < pol.min_tokens || e.ctx > opts_.ctx) continue;
    if (pol.reject_different_quant && e.quant != opts_.identity.quant_bits) continue;
    if (key && e.key() != *key) continue;
    cands.emplace_back(n, &e);
  }
  // One SHA-1 pass over the prompt, snapshotting the state at every length some candidate needs.
  std::sort(cands.begin(), cands.end(), [](const auto& a, const auto& b) { return a.second->text_len < b.second->text_len; });
  Sha1 sh;
  size_t done = 0;
  std::string digest;
  size_t digest_len = SIZE_MAX;
  std::vector<std::pair<std::string, const Entry*>> hits;
  for (const auto& c : cands) {
    const size_t L = c.second->text_len;
    if (L != digest_len) {
      sh.update(prompt_text.data() + done, L - done);
      done = L, digest_len = L, digest = sh.hex();
    }
    if (c.first.compare(0, 40, digest) == 0) hits.push_back(c);
  }
  std::sort(hits.begin(), hits.end(), [](const auto& a, const auto& b) {
    if (a.second->text_len != b.second->text_len) return a.second->text_len > b.second->text_len;
    if (a.second->tokens != b.second->tokens) return a.second->tokens > b.second->tokens;
    return a.second->last_used > b.second->last_used;
  });
  std::vector<std::string> out;
  for (const auto& h : hits) out.push_back(h.first);
  return out;
}

KvDiskHit KvDiskCache::make_hit_locked(const std::string& name, ToolIdMap tools) {
  const auto& e = impl_->entries.at(name);
  KvDiskHit hit;
  hit.tokens = e.tokens, hit.text_bytes = e.text_len, hit.key = e.key();
  hit.reason = static_cast<KvSaveReason>(e.reason), hit.file = name, hit.tool_ids = std::move(tools);
  ++impl_->st.hits;
  impl_->st.hit_tokens += e.tokens;
  log("kv cache hit text tokens=%u bytes=%u reason=%s hits=%u file=%s key=%s", e.tokens, e.text_len,
      kv_save_reason_name(hit.reason), e.hits + 1, name.c_str(), kv_key_kind_name(hit.key));
  touch_locked(name);
  return hit;
}

std::optional<KvDiskHit> KvDiskCache::restore(std::string_view prompt_text, Session& session,
                                              std::optional<KvKeyKind> key) {
  std::lock_guard<std::mutex> lk(mu_);
  ++impl_->st.lookups;
  for (const auto& name : candidates_locked(prompt_text, key)) {
    std::string snap;
    ToolIdMap tools;
    if (!read_entry_locked(name, prompt_text, snap, tools)) continue;
    try {
      session.load(snap);
    } catch (const Error& err) {
      session.reset();
      invalidate_locked(name, strfmt("snapshot rejected: %s", err.what()), true);
      continue;
    }
    return make_hit_locked(name, std::move(tools));
  }
  ++impl_->st.misses;
  return std::nullopt;
}

std::optional<KvDiskHit> KvDiskCache::lookup(std::string_view prompt_text, std::string& snapshot,
                                             std::optional<KvKeyKind> key) {
  std::lock_guard<std::mutex> lk(mu_);
  ++impl_->st.lookups;
  for (const auto& name : candidates_locked(prompt_text, key)) {
    ToolIdMap tools;
    if (read_entry_locked(name, prompt_text, snapshot, tools)) return make_hit_locked(name, std::move(tools));
  }
  snapshot.clear();
  ++impl_->st.misses;
  return std::nullopt;
}

KvStoreResult KvDiskCache::store(const Session& session, std::string_view cache_text, KvSaveReason reason,
                                 KvKeyKind key, const ToolIdMap& tool_ids) {
  const size_t n = session.tokens().size();
  if (n < opts_.policy.min_tokens || n > UINT32_MAX) {
    std::lock_guard<std::mutex> lk(mu_);
    ++impl_->st.store_skipped;
    return {false, "", strfmt("%zu tokens is below --kv-cache-min-tokens %u", n, opts_.policy.min_tokens)};
  }
  // save() runs outside the lock: it is the slow part and touches only the session.
  const std::string snap = session.save();
  return store_impl(snap, static_cast<uint32_t>(n), session.options().ctx, cache_text, reason, key, tool_ids);
}

KvStoreResult KvDiskCache::store_snapshot(const std::string& snapshot, uint32_t tokens, std::string_view cache_text,
                                          KvSaveReason reason, KvKeyKind key, const ToolIdMap& tool_ids) {
  return store_impl(snapshot, tokens, opts_.ctx, cache_text, reason, key, tool_ids);
}

KvStoreResult KvDiskCache::store_impl(const std::string& snap, uint32_t tokens, uint32_t ctx,
                                      std::string_view cache_text, KvSaveReason reason, KvKeyKind key,
                                      const ToolIdMap& tool_ids) {
  std::lock_guard<std::mutex> lk(mu_);
  auto refuse = [&](std::string why) {
    ++impl_->st.store_skipped;
    log("kv cache: not stored (%s): %s", kv_save_reason_name(reason), why.c_str());
    return KvStoreResult{false, "", std::move(why)};
  };
  if (tokens < opts_.policy.min_tokens || tokens == 0)
    return refuse(strfmt("%u tokens is below --kv-cache-min-tokens %u", tokens, opts_.policy.min_tokens));
  if (cache_text.size() > UINT32_MAX) return refuse("cache text over 4 GiB");
  // Only mappings whose block occurs in the text: the others belong to turns this checkpoint never saw.
  ToolIdMap kept;
  std::set<std::string> ids;
  for (const auto& t : tool_ids)
    if (!t.dsml.empty() && t.id.size() <= UINT32_MAX && cache_text.find(t.dsml) != std::string_view::npos &&
        ids.insert(t.id).second)
      kept.push_back(t);
  const std::string tools = kept.empty() ? std::string() : build_tool_map(kept);
  const uint64_t size = kHeader + cache_text.size() + snap.size() + tools.size() + kTrailer;
  if (size + size / 100 > opts_.space_bytes)
    return refuse(strfmt("%llu bytes do not fit the %llu-byte budget", static_cast<unsigned long long>(size),
                         static_cast<unsigned long long>(opts_.space_bytes)));
  const std::string name = sha1_hex(cache_text) + ".kv";
  uint32_t hits = 0;
  if (auto it = impl_->entries.find(name); it != impl_->entries.end() && it->second.valid) hits = it->second.hits;

  uint8_t h[kHeader] = {};
  std::memcpy(h, "KVC", 3);
  h[3] = kVersion, h[4] = opts_.identity.quant_bits, h[5] = static_cast<uint8_t>(reason);
  h[6] = static_cast<uint8_t>((kept.empty() ? 0 : 1) | (key == KvKeyKind::ResponsesVisible ? 2 : 0) |
                              (key == KvKeyKind::ThinkingVisible ? 4 : 0));
  put32(h + 8, tokens), put32(h + 12, hits), put32(h + 16, ctx);
  put32(h + 20, static_cast<uint32_t>(opts_.identity.fingerprint));
  const int64_t t = now();
  put64(h + 24, static_cast<uint64_t>(t)), put64(h + 32, static_cast<uint64_t>(t));
  put64(h + 40, snap.size()), put32(h + 48, static_cast<uint32_t>(cache_text.size()));
  std::string trailer = "KVCT";
  app32(trailer, kTrailer);
  app64(trailer, opts_.identity.fingerprint);
  app64(trailer, head_sum(h, cache_text));
  app64(trailer, sum64(snap.data(), snap.size(), 2));
  app64(trailer, sum64(tools.data(), tools.size(), 3));
  try {
    AtomicFileWriter w(path_of(name));
    w.write(h, kHeader);
    w.write(cache_text.data(), cache_text.size());
    w.write(snap.data(), snap.size());
    w.write(tools.data(), tools.size());
    w.write(trailer.data(), trailer.size());
    w.commit();
  } catch (const Error& err) {
    return refuse(err.what());
  }
  ++impl_->st.stores;
  log("kv cache stored %s tokens=%u bytes=%llu file=%s key=%s", kv_save_reason_name(reason), tokens,
      static_cast<unsigned long long>(size), name.c_str(), kv_key_kind_name(key));
  evict_locked(name);  // rescans, picking up the new file
  return {true, name, ""};
}

size_t KvDiskCache::evict_locked(const std::string& protect) {
  scan_locked();
  auto& ents = impl_->entries;
  uint64_t total = 0;
  for (const auto& [n, e] : ents)
    if (e.valid) total += e.size;
  const int64_t t = now();
  size_t removed = 0;
  while (total > opts_.space_bytes) {
    const std::string* worst = nullptr;
    double worst_score = 0;
    int64_t worst_used = 0;
    for (const auto& [n, e] : ents) {
      if (!e.valid || (n == protect && e.size <= opts_.space_bytes)) continue;
      const double age = static_cast<double>(std::max<int64_t>(0, t - e.last_used));
      double eff = e.hits * std::exp2(-age / kHitHalfLifeSec);
      if (eff < 0.01) eff = 0;
      const double score = (eff + 1) * e.tokens / static_cast<double>(e.size);
      if (!worst || score < worst_score || (score == worst_score && e.last_used < worst_used))
        worst = &n, worst_score = score, worst_used = e.last_used;
    }
    if (!worst) break;
    const std::string n = *worst;
    const uint64_t sz = ents[n].size;
    if (::unlink(path_of(n).c_str()) != 0 && errno != ENOENT) {
      log("kv cache: cannot evict %s: %s", n.c_str(), std::strerror(errno));
      ents[n].valid = false;  // unusable for the budget; stop counting it
    } else {
      log("kv cache evicted %s tokens=%u bytes=%llu score=%.6g", n.c_str(), ents[n].tokens,
          static_cast<unsigned long long>(sz), worst_score);
      ents.erase(n);
      ++removed, ++impl_->st.evictions;
    }
    total -= sz;
  }
  impl_->st.files = impl_->st.bytes = 0;
  for (const auto& [n, e] : ents)
    if (e.valid) ++impl_->st.files, impl_->st.bytes += e.size;
  return removed;
}

size_t KvDiskCache::evict_to_budget(const std::string& protect) {
  std::lock_guard<std::mutex> lk(mu_);
  return evict_locked(protect);
}

ToolIdMap KvDiskCache::find_tool_ids(std::span<const std::string> ids) {
  std::lock_guard<std::mutex> lk(mu_);
  scan_locked();
  std::set<std::string> want(ids.begin(), ids.end());
  std::vector<std::pair<int64_t, std::string>> files;
  for (const auto& [n, e] : impl_->entries)
    if (e.valid && (e.ext & 1)) files.emplace_back(e.created, n);
  std::sort(files.rbegin(), files.rend());  // newest first
  ToolIdMap out;
  for (const auto& [created, n] : files) {
    if (want.empty()) break;
    const auto& e = impl_->entries.at(n);
    Fd fd(::open(path_of(n).c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) continue;
    std::string tb(e.tools_len, '\0');
    ToolIdMap m;
    if (!pread_all(fd.get(), tb.data(), tb.size(), e.tools_off()) || sum64(tb.data(), tb.size(), 3) != e.tools_sum ||
        !parse_tool_map(tb, m)) {
      invalidate_locked(n, "corrupt tool-id map", false);
      continue;
    }
    for (auto& t : m)
      if (want.erase(t.id)) out.push_back(std::move(t));
  }
  return out;
}

void KvDiskCache::forget(const std::string& file) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!is_entry_name(file)) return;
  invalidate_locked(file, "rejected by the caller", true);
}

KvDiskCacheStats KvDiskCache::stats() {
  std::lock_guard<std::mutex> lk(mu_);
  scan_locked();
  return impl_->st;
}

}  // namespace flashstar
