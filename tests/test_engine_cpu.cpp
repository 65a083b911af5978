// CPU reference engine: chunk-size invariance, decode == prefill, snapshot round trips, bad input.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "common/error.h"
#include "engine/session.h"
#include "test_models.h"
#include "test_random.h"

using namespace flashstar;
using test_random::random_tokens;

namespace {

const std::string& tiny_model_path() { return test_models::synth_tiny_model(FLASHSTAR_BINARY, 7); }


std::vector<float> run(const Model& m, const std::vector<int32_t>& toks, uint32_t chunk, size_t decode_from,
                       Numerics num) {
  SessionOptions so;
  so.ctx = 4096;
  so.chunk = chunk;
  so.numerics = num;
  auto s = make_cpu_session(m, so);
  const size_t V = m.config().n_vocab;
  std::vector<float> out(toks.size() * V, std::nanf(""));
  const size_t P = std::min(decode_from, toks.size());
  if (P) s->eval(std::span<const int32_t>(toks.data(), P), out.data());
  for (size_t t = P; t < toks.size(); ++t) s->eval(std::span<const int32_t>(toks.data() + t, 1), out.data() + t * V);
  return out;
}

class EngineCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (tiny_model_path().empty()) GTEST_SKIP() << "flashstar synth --preset tiny failed";
    model_ = Model::load(tiny_model_path());
  }
  std::unique_ptr<Model> model_;
};

}  // namespace

TEST_F(EngineCpu, ChunkSizesAndDecodeGiveIdenticalLogits) {
  // 301 tokens: past the 128-token window, several ratio-4 windows, beyond the indexer's top-k, and a
  // length that is not a multiple of 4.
  const auto toks = random_tokens(301, model_->config().n_vocab, 11);
  for (Numerics num : {Numerics::Official, Numerics::Clean}) {
    const auto whole = run(*model_, toks, 4096, toks.size(), num);
    for (float v : whole) ASSERT_TRUE(std::isfinite(v));
    for (uint32_t chunk : {64u, 7u, 129u}) {
      const auto chunked = run(*model_, toks, chunk, toks.size(), num);
      ASSERT_EQ(0, std::memcmp(whole.data(), chunked.data(), whole.size() * 4)) << "chunk " << chunk;
    }
    const auto decoded = run(*model_, toks, 4096, 150, num);
    ASSERT_EQ(0, std::memcmp(whole.data(), decoded.data(), whole.size() * 4)) << "decode from 150";
  }
}

TEST_F(EngineCpu, OfficialNumericsChangeLogits) {
  const auto toks = random_tokens(200, model_->config().n_vocab, 5);
  const auto a = run(*model_, toks, 4096, toks.size(), Numerics::Official);
  const auto b = run(*model_, toks, 4096, toks.size(), Numerics::Clean);
  EXPECT_NE(0, std::memcmp(a.data(), b.data(), a.size() * 4));
}

TEST_F(EngineCpu, SnapshotRestoresAndContinuesBitIdentically) {
  const auto toks = random_tokens(290, model_->config().n_vocab, 3);
  SessionOptions so;
  so.ctx = 1024;
  so.chunk = 50;
  auto full = make_cpu_session(*model_, so);
  full->eval(toks, nullptr);

  auto first = make_cpu_session(*model_, so);
  first->eval(std::span<const int32_t>(toks.data(), 173), nullptr);
  const std::string snap = first->save();

  // The same state reached one token at a time serializes to the same bytes.
  auto stepped = make_cpu_session(*model_, so);
  for (size_t i = 0; i < 173; ++i) stepped->decode(toks[i]);
  EXPECT_EQ(snap, stepped->save());

  auto restored = make_cpu_session(*model_, so);
  restored->load(snap);
  EXPECT_EQ(restored->tokens(), first->tokens());
  EXPECT_EQ(restored->last_logits(), first->last_logits());
  restored->eval(std::span<const int32_t>(toks.data() + 173, toks.size() - 173), nullptr);
  ASSERT_EQ(full->last_logits(), restored->last_logits());
  EXPECT_EQ(full->save(), restored->save());
}

TEST_F(EngineCpu, CorruptSnapshotsAreRejected) {
  SessionOptions so;
  so.ctx = 512;
  auto s = make_cpu_session(*model_, so);
  s->eval(random_tokens(40, model_->config().n_vocab, 1), nullptr);
  const std::string snap = s->save();
  auto t = make_cpu_session(*model_, so);
  for (size_t cut : {size_t(0), size_t(10), snap.size() / 2, snap.size() - 1})
    EXPECT_THROW(t->load(snap.substr(0, cut)), Error) << cut;
  std::string bad = snap;
  bad[0] ^= 1;
  EXPECT_THROW(t->load(bad), Error);
  EXPECT_THROW(t->load(snap + "x"), Error);
}

TEST_F(EngineCpu, BadTokensAndContextOverflowAreErrors) {
  SessionOptions so;
  so.ctx = 16;
  auto s = make_cpu_session(*model_, so);
  const int32_t bad = static_cast<int32_t>(model_->config().n_vocab);
  EXPECT_THROW(s->decode(bad), Error);
  EXPECT_THROW(s->decode(-1), Error);
  EXPECT_THROW(s->eval(random_tokens(16, model_->config().n_vocab, 2), nullptr), Error);
}
