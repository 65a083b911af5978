// CUDA sessions against CPU sessions on a small synthetic model: same logits up to summation order,
// snapshots that move between backends, bit-identical chunking and repeat runs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "common/error.h"
#include "cuda/cuda_session.h"
#include "cuda/prefill_small.h"
#include "engine/session.h"
#include "../test_models.h"

using namespace flashstar;

namespace {

const std::string& tiny_model() {
  const char* bin = std::getenv("FLASHSTAR_BIN");
  return test_models::synth_tiny_model(bin ? bin : "./flashstar", 3);
}

std::vector<int32_t> tokens(size_t n, uint32_t vocab) {
  std::mt19937 rng(17);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

double max_abs(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, static_cast<double>(std::fabs(a[i] - b[i])));
  return m;
}

class CudaSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
    if (tiny_model().empty()) GTEST_SKIP() << "could not make the tiny model (set FLASHSTAR_BIN)";
    model_ = Model::load(tiny_model());
    opts_.ctx = 1024;
    opts_.chunk = 64;
    opts_.numerics = Numerics::Clean;  // official numerics amplify summation-order noise through FP8/FP4 rounding
  }
  std::unique_ptr<Model> model_;
  SessionOptions opts_;
};

}  // namespace

TEST_F(CudaSessionTest, MatchesCpuAndMovesSnapshotsBothWays) {
  const auto toks = tokens(260, model_->config().n_vocab);
  const std::span<const int32_t> head(toks.data(), 150), tail(toks.data() + 150, toks.size() - 150);

  auto cpu = make_cpu_session(*model_, opts_);
  auto gpu = cuda::make_cuda_session(*model_, opts_);
  cpu->eval(head, nullptr);
  gpu->eval(head, nullptr);
  EXPECT_LT(max_abs(cpu->last_logits(), gpu->last_logits()), 1e-3);

  // CPU state continued on the GPU and GPU state continued on the CPU.
  auto gpu2 = cuda::make_cuda_session(*model_, opts_);
  gpu2->load(cpu->save());
  EXPECT_EQ(gpu2->tokens(), cpu->tokens());
  auto cpu2 = make_cpu_session(*model_, opts_);
  cpu2->load(gpu->save());
  cpu->eval(tail, nullptr);
  gpu2->eval(tail, nullptr);
  cpu2->eval(tail, nullptr);
  EXPECT_LT(max_abs(cpu->last_logits(), gpu2->last_logits()), 1e-3);
  EXPECT_LT(max_abs(cpu->last_logits(), cpu2->last_logits()), 1e-3);

  // A GPU snapshot restored on the GPU continues bit-identically.
  gpu->eval(tail, nullptr);
  auto gpu3 = cuda::make_cuda_session(*model_, opts_);
  auto gpu4 = cuda::make_cuda_session(*model_, opts_);
  gpu3->eval(head, nullptr);
  gpu4->load(gpu3->save());
  gpu4->eval(tail, nullptr);
  EXPECT_EQ(gpu->last_logits(), gpu4->last_logits());
}

// The prefill's small ops (prefill_small.h) against the kernels they replace, through whole sessions:
// every logit of a chunked prefill and of the decode steps after it bitwise equal (both numerics). The
// tiny model takes every new kernel but the query heads' warp norm (its heads are 128 wide).
TEST_F(CudaSessionTest, PrefillSmallOpsBitwiseEqualTheOldKernels) {
  const bool was = cuda::fast::prefill_small_requested();
  const auto toks = tokens(200, model_->config().n_vocab);
  const size_t V = model_->config().n_vocab;
  for (Numerics nm : {Numerics::Clean, Numerics::Official}) {
    SessionOptions o = opts_;
    o.numerics = nm;
    std::vector<float> logits[2], last[2];
    for (int on = 0; on < 2; ++on) {
      cuda::fast::prefill_small_set(on == 1);  // read by the session at its start, by to_f16 at each call
      auto s = cuda::make_cuda_session(*model_, o);
      logits[on].assign(190 * V, NAN);
      s->eval(std::span<const int32_t>(toks.data(), 190), logits[on].data());
      for (size_t i = 190; i < toks.size(); ++i) {
        s->eval(std::span<const int32_t>(toks.data() + i, 1), nullptr);
        last[on].insert(last[on].end(), s->last_logits().begin(), s->last_logits().end());
      }
    }
    EXPECT_EQ(std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * 4), 0) << "prefill, numerics " << int(nm);
    EXPECT_EQ(std::memcmp(last[0].data(), last[1].data(), last[0].size() * 4), 0) << "decode, numerics " << int(nm);
  }
  cuda::fast::prefill_small_set(was);
}

TEST_F(CudaSessionTest, RefusesWhatDoesNotFitWithOneLine) {
  SessionOptions huge = opts_;
  huge.ctx = 1u << 31;
  try {
    cuda::make_cuda_session(*model_, huge);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("does not fit"), std::string::npos) << e.what();
  }
}
