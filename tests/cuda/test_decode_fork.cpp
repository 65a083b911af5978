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
#include "cuda/cuda_util.h"
#include "cuda/decode_fork.h"
#include "cuda/pdl_graph.h"
#include "cuda/session_plan.h"
#include "cuda/ref_kernels.h"
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

// The tiny model (plain launches: its 8 heads are not the decode graph's kernels), official numerics so
// that any drift shows; empty path: skip (no device or no binary to make it).
std::string tiny_model_path() {
  if (!cuda::device_available()) return {};
  const char* bin = std::getenv("FLASHSTAR_BIN");
  return test_models::synth_tiny_model(bin ? bin : "./flashstar", 3);
}
SessionOptions tiny_options() {
  SessionOptions o;
  o.ctx = 1024, o.chunk = 64, o.numerics = Numerics::Official;  // FP8 / FP4 rounding: any drift shows
  return o;
}

size_t first_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return i;
  return a.size();
}

}  // namespace

// Host-side lane bookkeeping: no device needed.
// The switch (no device needed): unset is the measured default (the attention half's chains), 0 none, 1 or
// all every part, a comma list those parts; anything else is refused, not read as some other set.
TEST(DecodeForkSwitch, ParsesTheListAndRefusesUnknownParts) {
  using F = cuda::DecodeFork;
  const struct {
    const char* v;
    unsigned want;
  } ok[] = {{nullptr, F::kAttn | F::kIdx}, {"0", 0u}, {"1", F::kAttn | F::kIdx | F::kFfn},
            {"all", F::kAttn | F::kIdx | F::kFfn}, {"attn,idx", F::kAttn | F::kIdx}, {"idx", F::kIdx},
            {"ffn,attn", F::kAttn | F::kFfn}};
  for (const auto& c : ok) {
    ScopedEnv e("FLASHSTAR_DECODE_FORK", c.v);
    EXPECT_EQ(F::requested(), c.want) << (c.v ? c.v : "(unset)");
  }
  for (const char* bad : {"off", "ATTN", "attn idx", "attn,", "2"}) {
    ScopedEnv e("FLASHSTAR_DECODE_FORK", bad);
    EXPECT_THROW(F::requested(), Error) << bad;
  }
}

// The decode graph's key (one graph a step shape): a bit for each ratio whose row the step closes, and the
// indexer's bit once more compressed rows of ratio 4 exist than it keeps.
TEST(DecodeGraphKey, MarksClosingRatiosAndTheIndexer) {
  const std::vector<uint32_t> r = {4, 128};
  using cuda::plan::decode_graph_key;
  EXPECT_EQ(decode_graph_key(r, 512, 0), 0u);
  EXPECT_EQ(decode_graph_key(r, 512, 3), 1u);               // position 3 closes a row of 4
  EXPECT_EQ(decode_graph_key(r, 512, 127), 3u);             // and of 128
  EXPECT_EQ(decode_graph_key(r, 512, 2047), 3u);            // 2048 / 4 = 512 rows: the indexer keeps them all
  EXPECT_EQ(decode_graph_key(r, 512, 2051), 1u | 1ull << 62);
  EXPECT_EQ(decode_graph_key({}, 512, 4095), 1ull << 62);
  EXPECT_EQ(decode_graph_key(r, 512, 4094), decode_graph_key(r, 512, 8190));  // the same shape, one graph
}

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

// A side-branch switch at 1 (its default) against 0 (that work back on the main stream): the same logits,
// alone and with every decode fork open beside it (plain launches: the tiny model; n tokens, 40 a prompt).
static void expect_branch_bitwise(const char* var, size_t n, unsigned seed) {
  const std::string path = tiny_model_path();
  if (path.empty()) GTEST_SKIP() << "no CUDA device, or could not make the tiny model (set FLASHSTAR_BIN)";
  auto model = Model::load(path);
  const SessionOptions o = tiny_options();
  const auto toks = tokens(n, model->config().n_vocab, seed);
  std::vector<float> serial;
  {
    ScopedEnv main_stream(var, "0");
    serial = decode_logits(*model, o, toks, 40, "0", nullptr);
  }
  ScopedEnv side(var, "1");
  for (const char* f : {"0", "1"})
    EXPECT_EQ(first_difference(serial, decode_logits(*model, o, toks, 40, f, nullptr)), serial.size())
        << var << "=1, FLASHSTAR_DECODE_FORK=" << f;
}

// FLASHSTAR_HC_SPLIT_SIDE: the hyper-connection split on its own branch against the split inside hc_pre.
TEST(SplitBranch, PlainLaunchesBitwiseEqualToSerial) { expect_branch_bitwise("FLASHSTAR_HC_SPLIT_SIDE", 150, 29); }

// FLASHSTAR_WINDOW_SIDE: the window buffers' shifts on a branch joined at the end of the pass against the
// shifts on the main stream (the tiny model's 128-row window is full from the 128th token on, so 72 of the
// 160 decoded steps shift).
TEST(WindowBranch, PlainLaunchesBitwiseEqualToSerial) { expect_branch_bitwise("FLASHSTAR_WINDOW_SIDE", 200, 31); }

// A graph of 16 fork / join diamonds of library kernels (each reads what the one before wrote, the
// fork's two branches read the same rows, the join reads both and the next diamond overwrites what both
// branches read) with every kernel edge programmatic, fork and join edges included: the same bits as
// the kernels one by one on one stream. Prints how many edges the driver took.
TEST(DecodeFork, ProgrammaticForkJoinEdgesKeepTheOrder) {
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  constexpr int64_t kRows = 64, kDim = 4096, kN = kRows * kDim;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> hx(kN), hw(2 * kDim);
  for (auto& v : hx) v = nd(rng);
  for (auto& v : hw) v = 1.0f + 0.1f * nd(rng);
  cuda::DeviceArray<float> x(kN), a(kN), h(kN), b(kN), b2(kN), c(kN), out(kN), w(2 * kDim);
  FS_CUDA_CHECK(cudaMemcpy(w.get(), hw.data(), hw.size() * 4, cudaMemcpyHostToDevice));
  cudaStream_t s = nullptr;
  FS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cuda::DecodeFork fork(cuda::DecodeFork::kAttn | cuda::DecodeFork::kFfn);
  auto norm = [&](const float* in, const float* wt, float* o, cudaStream_t st) {
    cuda::rms_norm_rows(in, kDim, wt, o, kDim, kRows, kDim, 1e-6f, st);
  };
  // forked: the branches on two streams (fork / join edges under capture); else all on s
  auto pass = [&](bool forked) {
    FS_CUDA_CHECK(cudaMemcpyAsync(a.get(), x.get(), kN * 4, cudaMemcpyDeviceToDevice, s));
    for (int i = 0; i < 16; ++i) {
      norm(a.get(), nullptr, h.get(), s);  // overwrites what both branches of the diamond before read
      if (forked) fork.open(s);
      const cudaStream_t side = forked ? fork.side() : s;
      norm(h.get(), w.get(), b.get(), side);  // the longer branch: h -> b -> b2 -> b -> b2
      for (int k = 0; k < 3; ++k) norm(k % 2 ? b2.get() : b.get(), w.get(), k % 2 ? b.get() : b2.get(), side);
      norm(h.get(), w.get() + kDim, c.get(), s);
      if (forked) fork.join(s);
      cuda::sum_slots(b2.get(), c.get(), kRows, 1, kDim, out.get(), s);
      norm(out.get(), nullptr, a.get(), s);
    }
  };
  auto result = [&] {
    std::vector<float> host(kN);
    FS_CUDA_CHECK(cudaStreamSynchronize(s));
    FS_CUDA_CHECK(cudaMemcpy(host.data(), a.get(), kN * 4, cudaMemcpyDeviceToHost));
    return host;
  };
  FS_CUDA_CHECK(cudaMemcpy(x.get(), hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
  // A pageable copy returns before it has landed and s does not wait for the legacy stream: without this
  // the serial pass read x's last row before it arrived (seen on the H200).
  FS_CUDA_CHECK(cudaDeviceSynchronize());
  pass(false);
  const auto serial = result();
  for (bool fan : {true, false}) {
    cudaGraph_t g = nullptr;
    FS_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    pass(true);
    FS_CUDA_CHECK(cudaStreamEndCapture(s, &g));
    const int changed = cuda::pdl_edges(g, fan);
    std::printf("fan %d: %d of 143 kernel edges programmatic (64 of them fork / join edges)\n", int(fan), changed);
    cudaGraphExec_t e = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&e, g, 0);
    cudaGraphDestroy(g);
    ASSERT_EQ(err, cudaSuccess) << "the driver refused the programmatic graph (the session then falls back): "
                                << cudaGetErrorString(err);
    for (int rep = 0; rep < 3; ++rep) {
      FS_CUDA_CHECK(cudaMemsetAsync(a.get(), 0, kN * 4, s));
      FS_CUDA_CHECK(cudaGraphLaunch(e, s));
      EXPECT_EQ(first_difference(serial, result()), serial.size()) << "fan " << fan << ", run " << rep;
    }
    cudaGraphExecDestroy(e);
  }
  cudaStreamDestroy(s);
}

// The tiny model takes the plain launches (its 8 heads are not the decode graph's kernels): fork on,
// each chain alone, two of them and off, over 110 decode steps that cross compressed-row boundaries of both ratios
// and the indexer's start.
TEST(DecodeFork, PlainLaunchesBitwiseEqualToSerial) {
  const std::string path = tiny_model_path();
  if (path.empty()) GTEST_SKIP() << "no CUDA device, or could not make the tiny model (set FLASHSTAR_BIN)";
  auto model = Model::load(path);
  const SessionOptions o = tiny_options();
  const auto toks = tokens(150, model->config().n_vocab, 23);
  const auto serial = decode_logits(*model, o, toks, 40, "0", nullptr);
  ASSERT_EQ(serial.size(), 110u * model->config().n_vocab);
  for (const char* f : {"1", "attn", "idx", "ffn", "attn,ffn"}) {
    const auto forked = decode_logits(*model, o, toks, 40, f, nullptr);
    EXPECT_EQ(first_difference(serial, forked), serial.size()) << "FLASHSTAR_DECODE_FORK=" << f;
  }
  ScopedEnv prio("FLASHSTAR_DECODE_FORK_PRIO", "1");
  EXPECT_EQ(first_difference(serial, decode_logits(*model, o, toks, 40, "1", nullptr)), serial.size()) << "prio";
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
  {  // the main stream at the greatest priority, kept per graph node
    ScopedEnv prio("FLASHSTAR_DECODE_FORK_PRIO", "1");
    EXPECT_EQ(first_difference(serial, decode_logits(*model, o, toks, 1980, "1", "1")), serial.size()) << "prio";
  }
  // the fork and join edges kept full dependencies (FLASHSTAR_PDL_FAN=0)
  ScopedEnv fan("FLASHSTAR_PDL_FAN", "0");
  EXPECT_EQ(first_difference(serial, decode_logits(*model, o, toks, 1980, "1", "1")), serial.size())
      << "fan edges full";
}
