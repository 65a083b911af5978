// Disk KV cache: restore is bit-exact, longest prefix wins, eviction follows the spec's score, and no
// damaged or foreign file is ever trusted.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "common/error.h"
#include "engine/kv_disk_cache.h"
#include "engine/session.h"
#include "test_models.h"
#include "test_random.h"

using namespace flashstar;
using test_random::random_tokens;
namespace fs = std::filesystem;

namespace {

const std::string& tiny_model_path() { return test_models::synth_tiny_model(FLASHSTAR_BINARY, 7); }


// Stand-in for the decoded token bytes: any injective per-token spelling keeps text prefixes aligned
// with token prefixes, which is all the cache relies on.
std::string text_of(std::span<const int32_t> toks) {
  std::string s;
  for (int32_t t : toks) {
    s += '<';
    s += std::to_string(t);
    s += '>';
  }
  return s;
}

class KvDiskCacheTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!tiny_model_path().empty()) model_ = Model::load(tiny_model_path()).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (!model_) GTEST_SKIP() << "flashstar synth --preset tiny failed";
    dir_ = (fs::temp_directory_path() /
            ("fs_kvcache_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    toks_ = random_tokens(160, model_->config().n_vocab, 5);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  KvDiskCacheOptions opts(uint64_t budget = 64ull << 20) {
    KvDiskCacheOptions o;
    o.dir = dir_;
    o.space_bytes = budget;
    o.ctx = 1024;
    o.identity = KvModelIdentity::of(*model_);
    o.policy.min_tokens = 16;
    o.log = [this](const std::string& l) {
      std::lock_guard<std::mutex> lk(log_mu_);
      log_.push_back(l);
    };
    o.now_unix = [this] { return clock_.load(); };
    return o;
  }
  std::unique_ptr<Session> session(const std::vector<int32_t>& toks, size_t n) {
    SessionOptions so;
    so.ctx = 1024;
    so.chunk = 64;
    auto s = make_cpu_session(*model_, so);
    if (n) s->eval(std::span<const int32_t>(toks.data(), n), nullptr);
    return s;
  }
  std::string prefix_text(size_t n) const { return text_of(std::span<const int32_t>(toks_.data(), n)); }
  bool logged(const std::string& needle) {
    std::lock_guard<std::mutex> lk(log_mu_);
    for (const auto& l : log_)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
  std::string only_file() const {
    std::string f;
    for (const auto& de : fs::directory_iterator(dir_))
      if (de.path().extension() == ".kv") f = de.path().string();
    return f;
  }

  static Model* model_;
  std::string dir_;
  std::vector<int32_t> toks_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
  std::atomic<int64_t> clock_{1'700'000'000};
};
Model* KvDiskCacheTest::model_ = nullptr;

void flip_byte(const std::string& path, uint64_t off) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(off));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x10);
  f.seekp(static_cast<std::streamoff>(off));
  f.write(&c, 1);
}

}  // namespace

TEST_F(KvDiskCacheTest, LongestPrefixRestoresBitIdentically) {
  KvDiskCache cache(opts());
  for (size_t n : {40u, 100u}) {
    auto s = session(toks_, n);
    const auto r = cache.store(*s, prefix_text(n), KvSaveReason::Continued);
    ASSERT_TRUE(r.stored) << r.reason;
    EXPECT_EQ(r.file.size(), 43u);
  }
  const std::string prompt = prefix_text(toks_.size());
  auto restored = session(toks_, 0);
  const auto hit = cache.restore(prompt, *restored);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->tokens, 100u);
  EXPECT_EQ(hit->text_bytes, prefix_text(100).size());
  EXPECT_EQ(hit->reason, KvSaveReason::Continued);
  EXPECT_EQ(hit->key, KvKeyKind::TokenText);
  ASSERT_EQ(restored->tokens().size(), 100u);
  EXPECT_TRUE(logged("kv cache hit text tokens=100"));

  // Continue from the checkpoint and from scratch: the logits must match bit for bit.
  restored->eval(std::span<const int32_t>(toks_.data() + 100, toks_.size() - 100), nullptr);
  auto full = session(toks_, toks_.size());
  ASSERT_EQ(restored->last_logits().size(), full->last_logits().size());
  EXPECT_EQ(0, std::memcmp(restored->last_logits().data(), full->last_logits().data(),
                           full->last_logits().size() * sizeof(float)));

  // A prompt that diverges after token 60 falls back to the 40-token entry; a shorter one misses.
  auto other = toks_;
  other[60] = (other[60] + 1) % static_cast<int32_t>(model_->config().n_vocab);
  std::string snap;
  auto h2 = cache.lookup(text_of(other), snap);
  ASSERT_TRUE(h2);
  EXPECT_EQ(h2->tokens, 40u);
  EXPECT_FALSE(snap.empty());
  EXPECT_FALSE(cache.lookup(prefix_text(30), snap));
  // Only the right key kind matches when the caller asks for one.
  EXPECT_FALSE(cache.lookup(prompt, snap, KvKeyKind::ThinkingVisible));

  const auto st = cache.stats();
  EXPECT_EQ(st.hits, 2u);
  EXPECT_EQ(st.misses, 2u);
  EXPECT_EQ(st.files, 2u);
  EXPECT_EQ(st.corrupt_skipped, 0u);
  EXPECT_GT(st.bytes, 0u);
}

TEST_F(KvDiskCacheTest, HitsPersistAndShortOrLargerContextEntriesAreSkipped) {
  {
    KvDiskCache cache(opts());
    auto s = session(toks_, 50);
    ASSERT_TRUE(cache.store(*s, prefix_text(50), KvSaveReason::Cold).stored);
    auto tiny = session(toks_, 8);
    EXPECT_FALSE(cache.store(*tiny, prefix_text(8), KvSaveReason::Cold).stored);  // below min tokens
    auto fresh = session(toks_, 0);
    ASSERT_TRUE(cache.restore(prefix_text(80), *fresh));
  }
  // A new process (new cache object) sees the stored hit count in the header.
  KvDiskCache again(opts());
  std::string snap;
  ASSERT_TRUE(again.lookup(prefix_text(80), snap));
  EXPECT_TRUE(logged("hits=2"));
  // Entries written for a larger context than ours are not candidates.
  auto o = opts();
  o.ctx = 512;
  KvDiskCache smaller(o);
  EXPECT_FALSE(smaller.lookup(prefix_text(80), snap));
}

TEST_F(KvDiskCacheTest, EvictionDropsLowestScoreAndProtectsNewFile) {
  auto s = session(toks_, 60);
  const std::string snap = s->save();
  KvDiskCache probe(opts());
  ASSERT_TRUE(probe.store_snapshot(snap, 60, "A" + prefix_text(60), KvSaveReason::Evict).stored);
  const uint64_t one = fs::file_size(only_file());
  fs::remove_all(dir_);

  // Room for two files of this size (plus the 1% slack), not three.
  KvDiskCache cache(opts(one * 2 + one / 2));
  ASSERT_TRUE(cache.store_snapshot(snap, 60, "A" + prefix_text(60), KvSaveReason::Evict).stored);
  clock_ += 100;
  ASSERT_TRUE(cache.store_snapshot(snap, 60, "B" + prefix_text(60), KvSaveReason::Evict).stored);
  clock_ += 100;
  std::string out;
  ASSERT_TRUE(cache.lookup("A" + prefix_text(70), out));  // A: one recent hit, newer last_used
  clock_ += 100;
  ASSERT_TRUE(cache.store_snapshot(snap, 60, "C" + prefix_text(60), KvSaveReason::Evict).stored);
  EXPECT_TRUE(cache.lookup("A" + prefix_text(70), out));
  EXPECT_FALSE(cache.lookup("B" + prefix_text(70), out));
  EXPECT_TRUE(cache.lookup("C" + prefix_text(70), out));  // new file protected
  EXPECT_EQ(cache.stats().evictions, 1u);

  // Hits fade with a 6 h half-life: long after, score ties break toward the older last_used (C).
  clock_ += 30 * 24 * 3600;
  ASSERT_TRUE(cache.lookup("A" + prefix_text(70), out));  // A refreshed now, so C is older
  clock_ += 30 * 24 * 3600;
  ASSERT_TRUE(cache.store_snapshot(snap, 60, "D" + prefix_text(60), KvSaveReason::Evict).stored);
  EXPECT_FALSE(cache.lookup("C" + prefix_text(70), out));
  EXPECT_TRUE(cache.lookup("A" + prefix_text(70), out));
  EXPECT_TRUE(cache.lookup("D" + prefix_text(70), out));

  // A file that alone exceeds the budget is refused without touching the others.
  KvDiskCache small(opts(one / 2));
  const auto r = small.store_snapshot(snap, 60, "E" + prefix_text(60), KvSaveReason::Evict);
  EXPECT_FALSE(r.stored);
  EXPECT_NE(r.reason.find("budget"), std::string::npos);
}

TEST_F(KvDiskCacheTest, TruncatedFilesAreIgnored) {
  KvDiskCache cache(opts());
  auto s = session(toks_, 50);
  ASSERT_TRUE(cache.store(*s, prefix_text(50), KvSaveReason::Shutdown).stored);
  const std::string f = only_file();
  const uint64_t size = fs::file_size(f);
  for (uint64_t cut : {size - 1, size / 2, uint64_t{30}, uint64_t{0}}) {
    fs::resize_file(f, cut);
    std::string snap;
    EXPECT_FALSE(cache.lookup(prefix_text(80), snap)) << cut;
    EXPECT_TRUE(snap.empty());
  }
  EXPECT_TRUE(logged("ignored file"));
  EXPECT_GE(cache.stats().corrupt_skipped, 3u);
  EXPECT_EQ(cache.stats().files, 0u);
}

TEST_F(KvDiskCacheTest, FlippedBytesAreIgnoredAndRemoved) {
  auto s = session(toks_, 50);
  const std::string text = prefix_text(50);
  const ToolIdMap tools = {{"call_1", text.substr(10, 20)}};
  KvDiskCache cache(opts());
  // Every region: token count, text, payload start/middle, tool map, trailer sums, trailer fingerprint.
  std::vector<int64_t> offsets = {9, 52 + 3, 52 + static_cast<int64_t>(text.size()) + 1, -1, -50, -30, -12, -37};
  for (int64_t where : offsets) {
    ASSERT_TRUE(cache.store(*s, text, KvSaveReason::Cold, KvKeyKind::TokenText, tools).stored);
    const std::string f = only_file();
    const uint64_t size = fs::file_size(f);
    const uint64_t off = where == -1 ? size / 2 : where < 0 ? size + where : static_cast<uint64_t>(where);
    flip_byte(f, off);
    auto fresh = session(toks_, 0);
    EXPECT_FALSE(cache.restore(prefix_text(80), *fresh)) << "offset " << off;
    EXPECT_TRUE(fresh->tokens().empty());
    EXPECT_TRUE(cache.find_tool_ids(std::vector<std::string>{"call_1"}).empty()) << "offset " << off;
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  EXPECT_GE(cache.stats().corrupt_skipped, offsets.size());
  EXPECT_TRUE(logged("checksum mismatch"));
}

TEST_F(KvDiskCacheTest, ForeignFilesAreIgnored) {
  {
    KvDiskCache cache(opts());
    auto s = session(toks_, 50);
    ASSERT_TRUE(cache.store(*s, prefix_text(50), KvSaveReason::Cold).stored);
  }
  // Another model: the fingerprint of a different synthetic model differs from ours.
  const std::string& other_path = test_models::synth_tiny_model(FLASHSTAR_BINARY, 8);
  ASSERT_FALSE(other_path.empty());
  const auto other = KvModelIdentity::of(*Model::load(other_path));
  const auto mine = KvModelIdentity::of(*model_);
  EXPECT_NE(other.fingerprint, mine.fingerprint);
  EXPECT_EQ(mine.fingerprint, KvModelIdentity::of(*Model::load(tiny_model_path())).fingerprint);
  auto o = opts();
  o.identity = other;
  std::string snap;
  {
    KvDiskCache foreign(o);
    EXPECT_FALSE(foreign.lookup(prefix_text(80), snap));
    EXPECT_EQ(foreign.stats().corrupt_skipped, 1u);
    EXPECT_TRUE(logged("foreign model"));
  }
  ASSERT_FALSE(only_file().empty());  // someone else's file is left alone

  // Strict quant: a file from another quantization of the same model is skipped only when asked.
  o = opts();
  o.identity.quant_bits = static_cast<uint8_t>(mine.quant_bits + 1);
  EXPECT_TRUE(KvDiskCache(o).lookup(prefix_text(80), snap));
  o.policy.reject_different_quant = true;
  EXPECT_FALSE(KvDiskCache(o).lookup(prefix_text(80), snap));

  // Another format version.
  flip_byte(only_file(), 3);
  KvDiskCache cache(opts());
  EXPECT_FALSE(cache.lookup(prefix_text(80), snap));
  EXPECT_TRUE(logged("foreign format version"));
}

TEST_F(KvDiskCacheTest, SnapshotRejectedBySessionIsAMiss) {
  KvDiskCache cache(opts());
  ASSERT_TRUE(cache.store_snapshot("not a snapshot at all", 40, prefix_text(40), KvSaveReason::Unknown).stored);
  auto s = session(toks_, 10);
  EXPECT_FALSE(cache.restore(prefix_text(80), *s));
  EXPECT_TRUE(s->tokens().empty());  // reset after the failed load
  EXPECT_TRUE(logged("snapshot rejected"));
  EXPECT_TRUE(only_file().empty());
}

TEST_F(KvDiskCacheTest, ToolIdMapKeepsOnlyBlocksInTheText) {
  KvDiskCache cache(opts());
  auto s = session(toks_, 50);
  const std::string text = prefix_text(50);
  const std::string block = text.substr(20, 30);
  const ToolIdMap tools = {{"call_a", block}, {"call_b", block}, {"call_gone", "<|DSML|>not in text"}};
  ASSERT_TRUE(cache.store(*s, text, KvSaveReason::Continued, KvKeyKind::ThinkingVisible, tools).stored);
  auto fresh = session(toks_, 0);
  const auto hit = cache.restore(prefix_text(60), *fresh, KvKeyKind::ThinkingVisible);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->key, KvKeyKind::ThinkingVisible);
  ASSERT_EQ(hit->tool_ids.size(), 2u);
  EXPECT_EQ(hit->tool_ids[0].id, "call_a");
  EXPECT_EQ(hit->tool_ids[1].dsml, block);
  const auto found = cache.find_tool_ids(std::vector<std::string>{"call_b", "call_gone", "call_x"});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].id, "call_b");
  EXPECT_EQ(found[0].dsml, block);
}

TEST_F(KvDiskCacheTest, PolicyThresholds) {
  KvCachePolicy p;
  EXPECT_EQ(p.continued_step(), 10240u);
  EXPECT_TRUE(p.continued_due(20480, 10240, false));
  EXPECT_FALSE(p.continued_due(20480, 20480, false));
  EXPECT_FALSE(p.continued_due(20480, 0, true));
  EXPECT_FALSE(p.continued_due(20481, 0, false));
  p.boundary_align_tokens = 0;
  EXPECT_EQ(p.continued_step(), 10000u);
  p.continued_interval_tokens = 0;
  EXPECT_EQ(p.continued_step(), 0u);
  EXPECT_FALSE(p.continued_due(0, 0, false));

  KvCachePolicy c;
  const int32_t U = 7, A = 9;
  std::vector<int32_t> prompt(5000, 1);
  prompt[600] = U, prompt[3000] = U, prompt[4000] = A, prompt[4500] = U;
  EXPECT_EQ(c.cold_target(prompt, 0, U, A), std::optional<uint32_t>(3000));  // last U before first A
  EXPECT_EQ(c.cold_target(prompt, 5, U, A), std::nullopt);                     // something was cached
  prompt[3000] = 1;
  prompt[600] = 1, prompt[100] = U;  // U too early: len - trim aligned down
  EXPECT_EQ(c.cold_target(prompt, 0, U, A), std::optional<uint32_t>(4096));
  EXPECT_EQ(c.cold_target(std::vector<int32_t>(600, 1), 0, U, A), std::optional<uint32_t>(600));  // aligned < min
  EXPECT_EQ(c.cold_target(std::vector<int32_t>(100, 1), 0, U, A), std::nullopt);     // below min
  EXPECT_EQ(c.cold_target(std::vector<int32_t>(40000, 1), 0, U, A), std::nullopt);   // above cold max
  c.cold_max_tokens = 0;
  EXPECT_EQ(c.cold_target(prompt, 0, U, A), std::nullopt);
  c.cold_max_tokens = 100;
  EXPECT_THROW(c.validate(), Error);
}

TEST_F(KvDiskCacheTest, WorkerAndShutdownFlushConcurrently) {
  KvDiskCache cache(opts());
  auto s1 = session(toks_, 40);
  auto s2 = session(toks_, 70);
  const std::string snap2 = s2->save();
  std::atomic<bool> stop{false};
  std::thread flusher([&] {
    for (int i = 0; !stop; ++i) {
      cache.store_snapshot(snap2, 70, prefix_text(70), KvSaveReason::Shutdown);
      cache.stats();
      cache.find_tool_ids(std::vector<std::string>{"call_x"});
    }
  });
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(cache.store(*s1, prefix_text(40), KvSaveReason::Evict).stored);
    auto fresh = session(toks_, 0);
    const auto hit = cache.restore(prefix_text(toks_.size()), *fresh);
    ASSERT_TRUE(hit);
    EXPECT_TRUE(hit->tokens == 40 || hit->tokens == 70);
  }
  stop = true;
  flusher.join();
  const auto st = cache.stats();
  EXPECT_EQ(st.corrupt_skipped, 0u);
  EXPECT_EQ(st.files, 2u);
  for (const auto& de : fs::directory_iterator(dir_)) EXPECT_EQ(de.path().extension(), ".kv") << de.path();
}
