// `flashstar bench` core (src/engine/bench.h): frontier walk, option rules, greedy pick, and a CPU run on
// the tiny synthetic model whose final state must equal a plain prefill of the same tokens.
#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "engine/bench.h"
#include "engine/session.h"
#include "test_models.h"

using namespace flashstar;

namespace {

bench::BenchOptions opts(uint32_t start, uint32_t max, uint32_t incr, double mul = 1.0, uint32_t gen = 4) {
  bench::BenchOptions o;
  o.ctx_start = start;
  o.ctx_max = max;
  o.step_incr = incr;
  o.step_mul = mul;
  o.gen_tokens = gen;
  return o;
}

}  // namespace

TEST(Bench, FrontiersFollowDs4Bench) {
  using V = std::vector<uint32_t>;
  EXPECT_EQ(bench::frontiers(opts(32, 96, 32)), (V{32, 64, 96}));
  EXPECT_EQ(bench::frontiers(opts(10, 25, 10)), (V{10, 20, 25}));  // the last row is always ctx-max
  EXPECT_EQ(bench::frontiers(opts(10, 40, 0, 1.5)), (V{10, 15, 23, 35, 40}));
  EXPECT_EQ(bench::frontiers(opts(3, 6, 0, 1.01)), (V{3, 4, 5, 6}));  // at least +1
  EXPECT_EQ(bench::frontiers(opts(8, 8, 4)), (V{8}));
}

TEST(Bench, OptionRules) {
  auto o = opts(32, 96, 32, 1.0, 4);
  bench::validate(o);
  EXPECT_EQ(o.ctx_alloc, 96u + 4 + 1);
  auto tight = opts(32, 96, 32);
  tight.ctx_alloc = 100;  // must exceed 96 + 4
  EXPECT_THROW(bench::validate(tight), Error);
  auto backwards = opts(128, 96, 32);
  EXPECT_THROW(bench::validate(backwards), Error);
  auto shrink = opts(32, 96, 32, 0.5);
  EXPECT_THROW(bench::validate(shrink), Error);
  auto no_step = opts(32, 96, 0);
  EXPECT_THROW(bench::validate(no_step), Error);
}

TEST(Bench, GreedyPickSkipsEos) {
  const std::vector<float> l = {1, 5, 5, 2};
  EXPECT_EQ(bench::argmax_excluding(l, -1), 1);
  EXPECT_EQ(bench::argmax_excluding(l, 1), 2);
  EXPECT_EQ(bench::argmax_excluding(std::vector<float>{7}, 0), -1);
  EXPECT_EQ(bench::argmax_excluding(std::vector<float>{NAN, -INFINITY, 5, -INFINITY}, 2), 1);  // all -inf: the first
  EXPECT_EQ(bench::argmax_excluding(std::vector<float>{NAN, NAN}, -1), -1);
  std::vector<float> big(300, 0.5f);
  big[40] = 9, big[250] = 9;
  EXPECT_EQ(bench::argmax_excluding(big, 40), 250);
  EXPECT_EQ(bench::argmax_excluding(big, 250), 40);
}

TEST(Bench, RandomTokensAreSeededAndInRange) {
  const auto a = bench::random_tokens(5, 1000, 10, 20), b = bench::random_tokens(5, 1000, 10, 20);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, bench::random_tokens(6, 1000, 10, 20));
  for (int32_t t : a) EXPECT_TRUE(t >= 10 && t < 20);
}

TEST(Bench, CsvRowQuotesListFields) {
  bench::BenchRow r;
  r.ctx_tokens = 64;
  r.prefill_tokens = 32;
  r.prefill_seconds = 0.5;
  r.gen_tokens = 4;
  r.gen_seconds = 2;
  r.kvcache_bytes = 1234;
  EXPECT_EQ(bench::csv_row(r, "cuda", "NVIDIA H200", "a=on,b=off"), "64,32,64.00,4,2.00,1234,cuda,NVIDIA H200,\"a=on,b=off\"");
  EXPECT_EQ(bench::csv_header(), "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,backend,card,routes");
}

TEST(Bench, CpuWalkRestoresStateAfterEachFrontier) {
  const std::string& path = test_models::synth_tiny_model(FLASHSTAR_BINARY, 7);
  if (path.empty()) GTEST_SKIP() << "flashstar synth --preset tiny failed";
  auto model = Model::load(path);
  const uint32_t V = model->config().n_vocab;
  const auto toks = bench::random_tokens(3, 96, 0, static_cast<int32_t>(V));
  auto o = opts(32, 96, 32, 1.0, 4);
  bench::validate(o);
  SessionOptions so;
  so.ctx = o.ctx_alloc;
  so.chunk = 16;
  auto s = make_cpu_session(*model, so);
  std::vector<uint32_t> seen;
  const auto rows = bench::run(*s, toks, o, /*eos=*/0, [&](const bench::BenchRow& r) { seen.push_back(r.ctx_tokens); });
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(seen, (std::vector<uint32_t>{32, 64, 96}));
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].prefill_tokens, 32u);
    EXPECT_EQ(rows[i].gen_tokens, 4u);
    EXPECT_GT(rows[i].prefill_tps(), 0);
    EXPECT_GT(rows[i].gen_tps(), 0);
    if (i) {
      EXPECT_GE(rows[i].kvcache_bytes, rows[i - 1].kvcache_bytes);
    }
  }
  // Generated tokens were rolled back each time: the state equals one prefill of the 96 prompt tokens.
  auto plain = make_cpu_session(*model, so);
  plain->eval(toks, nullptr);
  EXPECT_EQ(s->tokens(), plain->tokens());
  EXPECT_EQ(s->last_logits(), plain->last_logits());
  EXPECT_EQ(s->save(), plain->save());
}
