// flashstar compare: per-position agreement of two logits files ([T][vocab] float32) against bounds.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "commands.h"
#include "common/error.h"
#include "tool_util.h"

namespace flashstar::tools {
namespace {

size_t argmax(const float* x, size_t n) {  // ties: lower token id
  size_t best = 0;
  for (size_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

}  // namespace

void add_compare_command(CLI::App& app) {
  struct Opts {
    std::string ref, cand;
    size_t vocab = 0;
    double tol = 1e-3, tol_frac = 0.995, tol_all = 0.05, argmax_frac = 0.995;
    bool verbose = false, json = false, per_position = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("compare", "Compare two logits files position by position; exit 1 when out of bounds");
  cmd->add_option("ref", o->ref, "reference logits (float32 [T][vocab])")->required();
  cmd->add_option("cand", o->cand, "candidate logits (float32 [T][vocab])")->required();
  cmd->add_option("--vocab", o->vocab, "vocabulary size (row length)")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--tol", o->tol, "max-abs bound that most positions must meet");
  cmd->add_option("--tol-frac", o->tol_frac, "fraction of positions that must meet --tol");
  cmd->add_option("--tol-all", o->tol_all, "max-abs bound every position must meet");
  cmd->add_option("--argmax-frac", o->argmax_frac, "fraction of positions whose argmax must agree");
  cmd->add_flag("-v,--verbose", o->verbose, "print every position");
  cmd->add_flag("--json", o->json, "print the summary as JSON");
  cmd->add_flag("--per-position", o->per_position, "with --json: include every position's max-abs difference");
  cmd->callback([o] {
    const auto a = read_f32_rows(o->ref, o->vocab), b = read_f32_rows(o->cand, o->vocab);
    if (a.size() != b.size())
      fail("%s has %zu rows but %s has %zu", o->ref.c_str(), a.size() / o->vocab, o->cand.c_str(), b.size() / o->vocab);
    const size_t V = o->vocab, T = a.size() / V;
    size_t within = 0, agree = 0, nonfinite = 0;
    double worst = 0;
    long first_bad = -1, worst_pos = -1;
    std::vector<double> per(T);
    for (size_t t = 0; t < T; ++t) {
      const float* x = a.data() + t * V;
      const float* y = b.data() + t * V;
      double m = 0;
      for (size_t i = 0; i < V; ++i) {
        if (!std::isfinite(x[i]) || !std::isfinite(y[i])) {
          ++nonfinite;
          m = INFINITY;
          continue;
        }
        m = std::max(m, static_cast<double>(std::fabs(x[i] - y[i])));
      }
      per[t] = m;
      const bool same = argmax(x, V) == argmax(y, V);
      within += m <= o->tol;
      agree += same;
      if (m > o->tol && first_bad < 0) first_bad = static_cast<long>(t);
      if (m > worst) {
        worst = m;
        worst_pos = static_cast<long>(t);
      }
      if (o->verbose) std::printf("pos %zu max_abs %.6g argmax %s\n", t, m, same ? "same" : "DIFF");
    }
    const double frac_within = double(within) / T, frac_agree = double(agree) / T;
    const bool pass = nonfinite == 0 && frac_within >= o->tol_frac && worst <= o->tol_all && frac_agree >= o->argmax_frac;
    if (o->json) {
      nlohmann::json j = {{"positions", T}, {"vocab", V},          {"max_abs", worst},         {"worst_position", worst_pos},
                          {"within_tol", within}, {"tol", o->tol}, {"frac_within_tol", frac_within},
                          {"argmax_agree", agree}, {"frac_argmax_agree", frac_agree}, {"first_over_tol", first_bad},
                          {"nonfinite", nonfinite}, {"pass", pass}};
      if (o->per_position) j["per_position"] = per;
      std::printf("%s\n", j.dump(1).c_str());
    } else {
      std::printf("positions %zu, max_abs %.6g (pos %ld), <= %.3g at %.2f%% (first over: %ld), argmax agree %.2f%%, "
                  "non-finite %zu: %s\n",
                  T, worst, worst_pos, o->tol, 100 * frac_within, first_bad, 100 * frac_agree, nonfinite,
                  pass ? "PASS" : "FAIL");
    }
    if (!pass)
      fail("logits differ beyond bounds (need <= %g at %.2f%%, <= %g everywhere, argmax at %.2f%%)", o->tol,
           100 * o->tol_frac, o->tol_all, 100 * o->argmax_frac);
  });
}

}  // namespace flashstar::tools
