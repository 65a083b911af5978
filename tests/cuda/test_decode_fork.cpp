// The decode fork (FLASHSTAR_DECODE_FORK, decode_fork.h): the same logits, bit for bit, with the step's
// independent chains on a second stream as in the serial order, in plain launches and in the decode
// graph; and the ticket lanes that keep the branches' split kernels apart.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "common/error.h"
#include "cuda/cuda_session.h"
#include "cuda/stream_lanes.h"
#include "engine/session.h"
#include "../test_models.h"

using namespace flashstar;

namespace {

// Sets an environment variable for a scope, then puts the old value back (sessions read their
// switches when made).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

std::vector<int32_t> tokens(size_t n, uint32_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

// Prefill of toks[0, prompt), then one token a step: every decode step's logits, concatenated.
std::vector<float> decode_logits(const Model& m, const SessionOptions& o, const std::vector<int32_t>& toks,
                                 size_t prompt, const char* fork, const char* graph) {
  ScopedEnv f("FLASHSTAR_DECODE_FORK", fork), g("FLASHSTAR_CUDA_GRAPH", graph);
  auto s = cuda::make_cuda_session(m, o);
  s->eval(std::span<const int32_t>(toks.data(), prompt), nullptr);
  std::vector<float> all;
  for (size_t i = prompt; i < toks.size(); ++i) {
    s->eval(std::span<const int32_t>(toks.data() + i, 1), nullptr);
    all.insert(all.end(), s->last_logits().begin(), s->last_logits().end());
  }
  return all;
}

size_t first_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return i;
  return a.size();
}

}  // namespace

// Host-side lane bookkeeping: no device needed.
TEST(TicketLanes, SideStreamTakesItsOwnLaneAndStrangersFail) {
  auto* main = reinterpret_cast<cudaStream_t>(uintptr_t{0x1000});
  auto* side = reinterpret_cast<cudaStream_t>(uintptr_t{0x2000});
  auto* other = reinterpret_cast<cudaStream_t>(uintptr_t{0x3000});
  EXPECT_EQ(cuda::ticket_lane(main), 0);
  EXPECT_EQ(cuda::ticket_lane(other), 0);  // no fork open: one stream at a time
  {
    cuda::TicketFork f(main, side);
    EXPECT_EQ(cuda::ticket_lane(main), 0);
    EXPECT_EQ(cuda::ticket_lane(side), 1);
    EXPECT_THROW(cuda::ticket_lane(other), Error);
    EXPECT_THROW(cuda::TicketFork(main, side), Error);  // forks do not nest
  }
  EXPECT_EQ(cuda::ticket_lane(side), 0);
  EXPECT_THROW(cuda::TicketFork(main, main), Error);
}

// The tiny model takes the plain launches (its 8 heads are not the decode graph's kernels): fork on,
// each chain alone and off, over 110 decode steps that cross compressed-row boundaries of both ratios
// and the indexer's start.
TEST(DecodeFork, PlainLaunchesBitwiseEqualToSerial) {
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  const char* bin = std::getenv("FLASHSTAR_BIN");
  const std::string& path = test_models::synth_tiny_model(bin ? bin : "./flashstar", 3);
  if (path.empty()) GTEST_SKIP() << "could not make the tiny model (set FLASHSTAR_BIN)";
  auto model = Model::load(path);
  SessionOptions o;
  o.ctx = 1024, o.chunk = 64, o.numerics = Numerics::Official;  // FP8 / FP4 rounding: any drift shows
  const auto toks = tokens(150, model->config().n_vocab, 23);
  const auto serial = decode_logits(*model, o, toks, 40, "0", nullptr);
  ASSERT_EQ(serial.size(), 110u * model->config().n_vocab);
  for (const char* f : {"1", "attn", "ffn"}) {
    const auto forked = decode_logits(*model, o, toks, 40, f, nullptr);
    EXPECT_EQ(first_difference(serial, forked), serial.size()) << "FLASHSTAR_DECODE_FORK=" << f;
  }
}

// The decode graph needs the full-dimension kernels: a model from `flashstar synth --preset flash
// --layers 4 --recipe q2` (scripts/gpu-check.sh makes one) named by FLASHSTAR_FLASH_MODEL. 120 decode
// steps from position 1980 (the window full, so every step is a graph) across compressed-row boundaries
// of both ratios and the indexer's start (2052): fork on in the graph and in plain launches against the
// serial plain launches.
TEST(DecodeFork, GraphAndPlainBitwiseEqualToSerialOnFlashShapes) {
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  const char* path = std::getenv("FLASHSTAR_FLASH_MODEL");
  if (!path || !*path) GTEST_SKIP() << "set FLASHSTAR_FLASH_MODEL to a flash-shaped synthetic model";
  auto model = Model::load(path);
  SessionOptions o;
  o.ctx = 4096, o.chunk = 1000;
  const auto toks = tokens(2100, model->config().n_vocab, 11);
  const auto serial = decode_logits(*model, o, toks, 1980, "0", "0");
  ASSERT_EQ(serial.size(), 120u * model->config().n_vocab);
  EXPECT_EQ(first_difference(serial, decode_logits(*model, o, toks, 1980, "0", "1")), serial.size()) << "serial graph";
  EXPECT_EQ(first_difference(serial, decode_logits(*model, o, toks, 1980, "1", "0")), serial.size()) << "forked plain";
  EXPECT_EQ(first_difference(serial, decode_logits(*model, o, toks, 1980, "1", "1")), serial.size()) << "forked graph";
  // the fork and join edges kept full dependencies (FLASHSTAR_PDL_FAN=0)
  ScopedEnv fan("FLASHSTAR_PDL_FAN", "0");
  EXPECT_EQ(first_difference(serial, decode_logits(*model, o, toks, 1980, "1", "1")), serial.size()) << "fan edges full";
}
