// Drift metrics (src/engine/drift.h) on hand-made rows whose answers are worked out in the comments.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "engine/drift.h"

using namespace flashstar;

namespace {

// ref[i] = 25 - i: strictly decreasing, so the reference top-20 is tokens 0..19 in order.
std::vector<float> ramp() {
  std::vector<float> r(25);
  for (int i = 0; i < 25; ++i) r[i] = static_cast<float>(25 - i);
  return r;
}

std::string temp_file(const std::string& name, const std::string& body) {
  const auto p = std::filesystem::temp_directory_path() / ("fs_drift_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(p, std::ios::binary) << body;
  return p.string();
}

}  // namespace

TEST(Drift, TopKBreaksTiesByLowerIdAndSkipsNonFinite) {
  const std::vector<float> row = {1, 3, 3, 2, 3};
  EXPECT_EQ(drift::top_k(row, 3), (std::vector<int32_t>{1, 2, 4}));
  EXPECT_EQ(drift::top_k(row, 4), (std::vector<int32_t>{1, 2, 4, 3}));
  const std::vector<float> odd = {NAN, 1, INFINITY, 1, -INFINITY, 0};
  EXPECT_EQ(drift::top_k(odd, 10), (std::vector<int32_t>{1, 3, 5}));  // only finite entries
  EXPECT_TRUE(drift::top_k(odd, 0).empty());
}

TEST(Drift, IdenticalRowsHaveZeroDrift) {
  const auto r = ramp();
  const auto d = drift::compare_row(r, r);
  EXPECT_EQ(d.rms, 0);
  EXPECT_EQ(d.rel_rms, 0);
  EXPECT_EQ(d.max_abs, 0);
  EXPECT_EQ(d.top20_max_abs, 0);
  EXPECT_EQ(d.top5_overlap, 5);
  EXPECT_EQ(d.top20_overlap, 20);
  EXPECT_EQ(d.max_rank_delta, 0);
  EXPECT_TRUE(d.same_top1);
  EXPECT_EQ(d.nonfinite, 0);
}

TEST(Drift, SwapInsideTopAndMoveOutsideIt) {
  // Swap tokens 0 and 2 (deltas -2, +2) and lift token 24 from 1 to 4, where it ties token 21 and
  // loses the tie (higher id), staying outside the top-20.
  const auto ref = ramp();
  auto cand = ref;
  std::swap(cand[0], cand[2]);
  cand[24] = 4;
  const auto d = drift::compare_row(ref, cand);
  EXPECT_DOUBLE_EQ(d.rms, std::sqrt(17.0 / 25.0));  // (4 + 4 + 9) / vocab
  EXPECT_DOUBLE_EQ(d.rel_rms, std::sqrt(17.0 / 25.0) / std::sqrt(52.0));  // std of 1..25 = sqrt((25^2-1)/12)
  EXPECT_DOUBLE_EQ(d.max_abs, 3);
  EXPECT_DOUBLE_EQ(d.top20_max_abs, 2);  // token 24 is in neither top-20
  EXPECT_EQ(d.top5_overlap, 5);
  EXPECT_EQ(d.top20_overlap, 20);
  EXPECT_EQ(d.max_rank_delta, 2);  // token 0: rank 0 -> 2
  EXPECT_FALSE(d.same_top1);
  EXPECT_EQ(d.ref_top1, 0);
  EXPECT_EQ(d.cand_top1, 2);
}

TEST(Drift, NewTopTokenShiftsRanks) {
  // Token 24 jumps to 30: cand top-20 = [24, 0..18], so token 19 drops out and every shared token
  // moves down one rank.
  const auto ref = ramp();
  auto cand = ref;
  cand[24] = 30;
  const auto d = drift::compare_row(ref, cand);
  EXPECT_EQ(d.top5_overlap, 4);
  EXPECT_EQ(d.top20_overlap, 19);
  EXPECT_EQ(d.max_rank_delta, 1);
  EXPECT_DOUBLE_EQ(d.top20_max_abs, 29);  // the union includes token 24
  EXPECT_DOUBLE_EQ(d.max_abs, 29);
  EXPECT_EQ(d.cand_top1, 24);
  EXPECT_FALSE(d.same_top1);
}

TEST(Drift, NonFiniteTokensAreCountedAndSkipped) {
  auto ref = ramp();
  auto cand = ref;
  ref[5] = NAN;
  cand[5] = NAN;
  cand[7] = INFINITY;
  cand[9] += 10;  // the only finite difference: 16 -> 26, the new leader
  const auto d = drift::compare_row(ref, cand);
  EXPECT_EQ(d.nonfinite_ref, 1);
  EXPECT_EQ(d.nonfinite_cand, 2);
  EXPECT_EQ(d.nonfinite, 2);                       // tokens 5 and 7
  EXPECT_DOUBLE_EQ(d.rms, std::sqrt(100.0 / 25.0));  // denominator: the full vocabulary
  EXPECT_DOUBLE_EQ(d.max_abs, 10);
  // ref top-20 skips token 5; cand's skips 5 and 7, and token 9 leads.
  EXPECT_EQ(d.cand_top1, 9);
  EXPECT_EQ(d.top20_overlap, 19);  // 7 only in ref's list, 21 only in cand's
  EXPECT_DOUBLE_EQ(d.top20_max_abs, 10);
}

TEST(Drift, SummaryStatistics) {
  const auto s = drift::stat_of({4, 1, 3, 2});
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_DOUBLE_EQ(s.median, 2.5);
  EXPECT_DOUBLE_EQ(s.p99, 3.97);  // 3 + 0.97 * (4 - 3)
  EXPECT_DOUBLE_EQ(s.max, 4);

  const auto ref = ramp();
  auto swapped = ref;
  std::swap(swapped[0], swapped[2]);
  std::vector<drift::PositionDrift> rows = {drift::compare_row(ref, ref), drift::compare_row(ref, swapped)};
  const auto sum = drift::summarize(rows);
  EXPECT_EQ(sum.positions, 2u);
  EXPECT_DOUBLE_EQ(sum.same_top1_frac, 0.5);
  EXPECT_DOUBLE_EQ(sum.top5_full_frac, 1.0);
  EXPECT_DOUBLE_EQ(sum.max_rank_delta.max, 2);
  EXPECT_DOUBLE_EQ(sum.rms.mean, std::sqrt(8.0 / 25.0) / 2);
}

TEST(Drift, ReadsDumpJsonWithNonFiniteSpellings) {
  // flashstar's dump prints bare nan/inf; ds4 writes null. Words inside strings stay untouched.
  const auto p = temp_file("a.json", R"({"model":"nan inf.gguf","vocab":5,"logits":[1.5,nan,-inf,null,-2e-3]})");
  const auto r = drift::read_dump_json(p);
  ASSERT_EQ(r.n_rows, 1u);
  ASSERT_EQ(r.vocab, 5u);
  EXPECT_EQ(r.data[0], 1.5f);
  EXPECT_TRUE(std::isnan(r.data[1]));
  EXPECT_FALSE(std::isfinite(r.data[2]));
  EXPECT_TRUE(std::isnan(r.data[3]));
  EXPECT_EQ(r.data[4], -2e-3f);
  const auto bad = temp_file("b.json", R"({"vocab":3,"logits":[1,2]})");
  EXPECT_THROW(drift::read_dump_json(bad), Error);
  const auto none = temp_file("c.json", R"({"tokens":[1,2]})");
  EXPECT_THROW(drift::read_dump_json(none), Error);
  const auto junk = temp_file("d.json", "{not json");
  EXPECT_THROW(drift::read_dump_json(junk), Error);
}

TEST(Drift, RowFilesAndShapeChecks) {
  std::string bytes(2 * 4 * sizeof(float), '\0');
  const auto p = temp_file("rows.f32", bytes);
  const auto r = drift::read_f32_rows(p, 4);
  EXPECT_EQ(r.n_rows, 2u);
  EXPECT_THROW(drift::read_f32_rows(p, 3), Error);
  const auto q = drift::read_f32_rows(temp_file("rows2.f32", bytes), 8);
  EXPECT_THROW(drift::compare_rows(r, q, 0, 1), Error);
  EXPECT_THROW(drift::compare_rows(r, r, 1, 3), Error);
  EXPECT_EQ(drift::compare_rows(r, r, 1, 2).size(), 1u);
}
