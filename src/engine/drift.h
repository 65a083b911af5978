// Logit drift between a reference and a candidate run, per position and summarised, with the metric
// definitions of ds4 PR #15 (speed-bench/compare_logit_drift.py at f0bab5d) so that numbers can be
// compared with ds4's published ones:
//   rms            sqrt(sum over tokens where both are finite of (cand-ref)^2 / vocab): the full vocabulary
//                  is the denominator even when some tokens were skipped as non-finite
//   max_abs        max |cand-ref| over tokens where both are finite
//   top-k lists    finite tokens only, higher logit first, ties broken by the lower token id
//   topN_overlap   |top-N(ref) ∩ top-N(cand)| for N = 5, 20
//   top20_max_abs  max |cand-ref| over the union of both top-20 lists (both finite)
//   max_rank_delta max |rank_cand - rank_ref| over tokens in both top-20 lists
//   same_top1      both top-1 exist and are the same token
//   nonfinite      tokens where ref or cand is non-finite (ds4's count); also per side
// Added here: rel_rms = rms / population std of the finite ref logits (scale-free across models).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace flashstar::drift {

struct PositionDrift {
  double rms = 0, rel_rms = 0, max_abs = 0, top20_max_abs = 0;
  int top5_overlap = 0, top20_overlap = 0, max_rank_delta = 0;
  bool same_top1 = false;
  int32_t ref_top1 = -1, cand_top1 = -1;  // -1 when the row has no finite value
  int64_t nonfinite = 0, nonfinite_ref = 0, nonfinite_cand = 0;
};

// Indices of the k largest finite values, best first; equal values keep the lower index first.
std::vector<int32_t> top_k(std::span<const float> row, size_t k);

PositionDrift compare_row(std::span<const float> ref, std::span<const float> cand);

// mean / median / 99th percentile / max over positions (median and p99 interpolate linearly between
// order statistics, as numpy's default does).
struct Stat {
  double mean = 0, median = 0, p99 = 0, max = 0;
};
Stat stat_of(std::vector<double> v);

struct Summary {
  size_t positions = 0;
  Stat rms, rel_rms, max_abs, top20_max_abs, top5_overlap, top20_overlap, max_rank_delta;
  double same_top1_frac = 0, top5_full_frac = 0, top20_full_frac = 0;  // 5/5 and 20/20 overlap
  int64_t nonfinite = 0, nonfinite_ref = 0, nonfinite_cand = 0;
};
Summary summarize(std::span<const PositionDrift> rows);

// Logit rows read from a file: a `run --dump-logits` JSON (one row; ds4's null and flashstar's bare
// nan/inf entries read as non-finite) or a `logits` float32 file [T][vocab].
struct Rows {
  size_t n_rows = 0, vocab = 0;
  std::vector<float> data;  // n_rows * vocab
  std::span<const float> row(size_t t) const { return {data.data() + t * vocab, vocab}; }
};
Rows read_dump_json(const std::string& path);
Rows read_f32_rows(const std::string& path, size_t vocab);

// Per-position drift over positions [begin, end) of two row sets of the same shape.
std::vector<PositionDrift> compare_rows(const Rows& ref, const Rows& cand, size_t begin, size_t end);

// A Stat picked by name: "mean", "median", "p99" or "max".
double pick(const Stat& s, const std::string& which);

}  // namespace flashstar::drift
