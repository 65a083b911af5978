// flashstar drift REF CAND: ds4-style logit drift (src/engine/drift.h has the definitions) between two
// `run --dump-logits` JSON files or two `logits` float32 row files, with optional gates for CI.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <limits>

#include "commands.h"
#include "common/error.h"
#include "common/file_util.h"
#include "engine/drift.h"
#include "gguf/gguf.h"
#include "model/config.h"

namespace flashstar::tools {
namespace {

const char* kFooter =
    "Inputs: a file named *.json, or any file when neither --vocab nor -m is given, is read as a\n"
    "`flashstar run --dump-logits` JSON (ds4's dumps work too); anything else as `flashstar logits`\n"
    "float32 rows [T][vocab], whose row length comes from --vocab or the model's n_vocab.\n"
    "Metrics per position (ds4 PR #15 definitions, ties broken by the lower token id):\n"
    "  rms            sqrt(sum (cand-ref)^2 / vocab) over tokens finite in both\n"
    "  rel_rms        rms / std of the finite reference logits\n"
    "  max_abs        max |cand-ref|; top20_max_abs: the same over the union of both top-20 lists\n"
    "  top5, top20    overlap of the top-5 / top-20 token sets; rank: max rank change within the shared top-20\n"
    "  top1           same argmax; nonfinite: tokens non-finite in ref or cand (also counted per side)\n"
    "Gates compare the --gate-stat of each metric over positions (default: the mean); fractions and\n"
    "counts are over all positions. A violated gate exits 1 with one line naming it.";

struct Opts {
  std::string ref, cand, model, json_out, positions, gate_stat = "mean", floor;
  size_t vocab = 0;
  bool per_position = false;
  double max_rms = 0, max_rel_rms = 0, max_max_abs = 0, max_top20_abs = 0, max_rank_delta = 0;
  double min_same_top1_frac = 0, min_top5_full_frac = 0, min_top20_full_frac = 0, floor_factor = 1.5;
  int64_t max_nonfinite = 0;
};

drift::Rows load_rows(const std::string& path, size_t vocab) {
  const bool json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  if (json || vocab == 0) return drift::read_dump_json(path);
  return drift::read_f32_rows(path, vocab);
}

// "A:B" (half-open), "A:" or ":B"; positions count from 0.
std::pair<size_t, size_t> parse_positions(const std::string& s, size_t n) {
  if (s.empty()) return {0, n};
  const size_t colon = s.find(':');
  if (colon == std::string::npos) fail("--positions %s: expected A:B", s.c_str());
  auto num = [&](const std::string& t, size_t dflt) -> size_t {
    if (t.empty()) return dflt;
    if (t.find_first_not_of("0123456789") != std::string::npos) fail("--positions %s: expected A:B", s.c_str());
    return static_cast<size_t>(std::stoull(t));
  };
  const size_t a = num(s.substr(0, colon), 0), b = num(s.substr(colon + 1), n);
  if (a >= b || b > n) fail("--positions %s: the files hold positions 0:%zu", s.c_str(), n);
  return {a, b};
}

nlohmann::json stat_json(const drift::Stat& s) {
  return {{"mean", s.mean}, {"median", s.median}, {"p99", s.p99}, {"max", s.max}};
}

nlohmann::json summary_json(const drift::Summary& s) {
  return {{"positions", s.positions},
          {"rms", stat_json(s.rms)},
          {"rel_rms", stat_json(s.rel_rms)},
          {"max_abs", stat_json(s.max_abs)},
          {"top20_max_abs", stat_json(s.top20_max_abs)},
          {"top5_overlap", stat_json(s.top5_overlap)},
          {"top20_overlap", stat_json(s.top20_overlap)},
          {"max_rank_delta", stat_json(s.max_rank_delta)},
          {"same_top1_frac", s.same_top1_frac},
          {"top5_full_frac", s.top5_full_frac},
          {"top20_full_frac", s.top20_full_frac},
          {"nonfinite", s.nonfinite},
          {"nonfinite_ref", s.nonfinite_ref},
          {"nonfinite_cand", s.nonfinite_cand}};
}

nlohmann::json row_json(size_t pos, const drift::PositionDrift& d) {
  return {{"pos", pos},
          {"rms", d.rms},
          {"rel_rms", d.rel_rms},
          {"max_abs", d.max_abs},
          {"top20_max_abs", d.top20_max_abs},
          {"top5_overlap", d.top5_overlap},
          {"top20_overlap", d.top20_overlap},
          {"max_rank_delta", d.max_rank_delta},
          {"same_top1", d.same_top1},
          {"ref_top1", d.ref_top1},
          {"cand_top1", d.cand_top1},
          {"nonfinite", d.nonfinite},
          {"nonfinite_ref", d.nonfinite_ref},
          {"nonfinite_cand", d.nonfinite_cand}};
}

void print_table(const std::vector<drift::PositionDrift>& rows, size_t begin, const drift::Summary& s, bool all) {
  if (all) {
    std::printf("%6s %11s %9s %11s %11s %4s %5s %4s %13s %9s\n", "pos", "rms", "rel_rms", "max_abs", "top20_abs",
                "top5", "top20", "rank", "top1 ref/cand", "nonfinite");
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& d = rows[i];
      std::printf("%6zu %11.5g %9.3g %11.5g %11.5g %2d/5 %2d/20 %4d %6d%s%-6d %4lld/%lld\n", begin + i, d.rms,
                  d.rel_rms, d.max_abs, d.top20_max_abs, d.top5_overlap, d.top20_overlap, d.max_rank_delta,
                  d.ref_top1, d.same_top1 ? "=" : "!", d.cand_top1, static_cast<long long>(d.nonfinite_cand),
                  static_cast<long long>(d.nonfinite_ref));
    }
    std::printf("\n");
  }
  std::printf("%zu positions (%zu:%zu)\n", s.positions, begin, begin + s.positions);
  std::printf("%-15s %11s %11s %11s %11s\n", "metric", "mean", "median", "p99", "max");
  auto line = [](const char* name, const drift::Stat& st) {
    std::printf("%-15s %11.5g %11.5g %11.5g %11.5g\n", name, st.mean, st.median, st.p99, st.max);
  };
  line("rms", s.rms);
  line("rel_rms", s.rel_rms);
  line("max_abs", s.max_abs);
  line("top20_max_abs", s.top20_max_abs);
  line("top5_overlap", s.top5_overlap);
  line("top20_overlap", s.top20_overlap);
  line("max_rank_delta", s.max_rank_delta);
  std::printf("same_top1 %.2f%%, top5 5/5 %.2f%%, top20 20/20 %.2f%%, non-finite cand %lld ref %lld\n",
              100 * s.same_top1_frac, 100 * s.top5_full_frac, 100 * s.top20_full_frac,
              static_cast<long long>(s.nonfinite_cand), static_cast<long long>(s.nonfinite_ref));
}

struct Gate {
  std::string name;
  double value, limit;
  bool upper;  // value must be <= limit (else >=)
  bool ok() const { return upper ? value <= limit : value >= limit; }
};

// Floors come from an earlier `drift --json` run (e.g. GPU reference path vs CPU).
double floor_value(const nlohmann::json& j, const std::string& path, const char* metric, const std::string& stat) {
  try {
    return j.at("summary").at(metric).at(stat).get<double>();
  } catch (const nlohmann::json::exception&) {
    fail("%s: not a `flashstar drift --json` file (no summary.%s.%s)", path.c_str(), metric, stat.c_str());
  }
}

std::vector<Gate> gates(const Opts& o, const CLI::App* cmd, const drift::Summary& s) {
  std::vector<Gate> g;
  const std::string& st = o.gate_stat;
  auto upper = [&](const char* flag, const std::string& name, double v, double limit) {
    if (cmd->count(flag)) g.push_back({name, v, limit, true});
  };
  auto lower = [&](const char* flag, const std::string& name, double v, double limit) {
    if (cmd->count(flag)) g.push_back({name, v, limit, false});
  };
  upper("--max-rms", st + " rms", drift::pick(s.rms, st), o.max_rms);
  upper("--max-rel-rms", st + " rel_rms", drift::pick(s.rel_rms, st), o.max_rel_rms);
  upper("--max-max-abs", st + " max_abs", drift::pick(s.max_abs, st), o.max_max_abs);
  upper("--max-top20-abs", st + " top20_max_abs", drift::pick(s.top20_max_abs, st), o.max_top20_abs);
  upper("--max-rank-delta", st + " max_rank_delta", drift::pick(s.max_rank_delta, st), o.max_rank_delta);
  lower("--min-same-top1-frac", "same_top1 fraction", s.same_top1_frac, o.min_same_top1_frac);
  lower("--min-top5-full-frac", "top5 5/5 fraction", s.top5_full_frac, o.min_top5_full_frac);
  lower("--min-top20-full-frac", "top20 20/20 fraction", s.top20_full_frac, o.min_top20_full_frac);
  upper("--max-nonfinite", "non-finite candidate logits", static_cast<double>(s.nonfinite_cand),
        static_cast<double>(o.max_nonfinite));
  if (!o.floor.empty()) {
    nlohmann::json f;
    try {
      f = nlohmann::json::parse(read_file(o.floor));
    } catch (const nlohmann::json::exception& e) {
      fail("%s: invalid JSON: %s", o.floor.c_str(), e.what());
    }
    const double fr = floor_value(f, o.floor, "rms", st), ft = floor_value(f, o.floor, "top20_max_abs", st);
    g.push_back({st + " rms vs floor", drift::pick(s.rms, st), o.floor_factor * fr, true});
    g.push_back({st + " top20_max_abs vs floor", drift::pick(s.top20_max_abs, st), o.floor_factor * ft, true});
  }
  return g;
}

void run(const Opts& o, const CLI::App* cmd) {
  if (o.vocab && !o.model.empty()) fail("give either --vocab or -m, not both");
  (void)drift::pick(drift::Stat{}, o.gate_stat);  // a bad --gate-stat fails before the files are read
  size_t vocab = o.vocab;
  if (!o.model.empty()) vocab = read_config(*gguf::File::open(o.model)).n_vocab;
  const drift::Rows ref = load_rows(o.ref, vocab), cand = load_rows(o.cand, vocab);
  if (ref.vocab != cand.vocab)
    fail("%s has rows of %zu logits but %s of %zu", o.ref.c_str(), ref.vocab, o.cand.c_str(), cand.vocab);
  if (ref.n_rows != cand.n_rows)
    fail("%s has %zu positions but %s has %zu", o.ref.c_str(), ref.n_rows, o.cand.c_str(), cand.n_rows);
  const auto [begin, end] = parse_positions(o.positions, ref.n_rows);
  const std::vector<drift::PositionDrift> rows = drift::compare_rows(ref, cand, begin, end);
  const drift::Summary s = drift::summarize(rows);
  const std::vector<Gate> g = gates(o, cmd, s);

  print_table(rows, begin, s, o.per_position || rows.size() <= 16);
  std::string failed;
  for (const Gate& x : g) {
    std::printf("gate %-32s %11.5g %s %-11.5g %s\n", x.name.c_str(), x.value, x.upper ? "<=" : ">=", x.limit,
                x.ok() ? "ok" : "FAIL");
    if (!x.ok())
      failed += strfmt("%s%s %.5g %s %.5g", failed.empty() ? "" : "; ", x.name.c_str(), x.value,
                       x.upper ? ">" : "<", x.limit);
  }
  std::fflush(stdout);
  if (!o.json_out.empty()) {
    nlohmann::json j = {{"ref", o.ref}, {"cand", o.cand}, {"vocab", ref.vocab}, {"begin", begin}, {"end", end},
                        {"summary", summary_json(s)}};
    nlohmann::json pr = nlohmann::json::array();
    for (size_t i = 0; i < rows.size(); ++i) pr.push_back(row_json(begin + i, rows[i]));
    j["per_position"] = std::move(pr);
    nlohmann::json gj = nlohmann::json::array();
    for (const Gate& x : g) gj.push_back({{"name", x.name}, {"value", x.value}, {"limit", x.limit}, {"ok", x.ok()}});
    j["gates"] = std::move(gj);
    j["pass"] = failed.empty();
    write_file_atomic(o.json_out, j.dump(1) + "\n");
  }
  if (!failed.empty()) fail("drift gate failed: %s", failed.c_str());
}

}  // namespace

void add_drift_command(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("drift", "ds4-style logit drift between a reference and a candidate run");
  cmd->add_option("ref", o->ref, "reference: --dump-logits JSON or logits float32 rows")->required();
  cmd->add_option("cand", o->cand, "candidate, same kind and shape as the reference")->required();
  cmd->add_option("--vocab", o->vocab, "row length of float32 row files")->check(CLI::PositiveNumber);
  cmd->add_option("-m,--model", o->model, "GGUF model whose n_vocab gives the row length");
  cmd->add_option("--positions", o->positions, "A:B: only positions A (inclusive) to B (exclusive)");
  cmd->add_flag("--per-position", o->per_position, "print every position (default when there are <= 16)");
  cmd->add_option("--json", o->json_out, "write per-position metrics, the summary and the gates as JSON");
  cmd->add_option("--gate-stat", o->gate_stat, "statistic the per-position gates use: mean, median, p99 or max")
      ->check(CLI::IsMember({"mean", "median", "p99", "max"}));
  cmd->add_option("--max-rms", o->max_rms, "gate: rms <= X");
  cmd->add_option("--max-rel-rms", o->max_rel_rms, "gate: rel_rms <= X (e.g. 0.02)");
  cmd->add_option("--max-max-abs", o->max_max_abs, "gate: max_abs <= X");
  cmd->add_option("--max-top20-abs", o->max_top20_abs, "gate: top20_max_abs <= X");
  cmd->add_option("--max-rank-delta", o->max_rank_delta, "gate: max_rank_delta <= X");
  cmd->add_option("--min-same-top1-frac", o->min_same_top1_frac, "gate: fraction of positions with the same top-1 >= F");
  cmd->add_option("--min-top5-full-frac", o->min_top5_full_frac, "gate: fraction with top-5 overlap 5/5 >= F");
  cmd->add_option("--min-top20-full-frac", o->min_top20_full_frac, "gate: fraction with top-20 overlap 20/20 >= F");
  cmd->add_option("--max-nonfinite", o->max_nonfinite, "gate: non-finite candidate logits in total <= N (e.g. 0)");
  cmd->add_option("--floor", o->floor,
                  "gate: rms and top20_max_abs <= --floor-factor x those of this earlier `drift --json` output");
  cmd->add_option("--floor-factor", o->floor_factor, "multiplier for --floor (default 1.5)");
  cmd->footer(kFooter);
  cmd->callback([o, cmd] { run(*o, cmd); });
}

}  // namespace flashstar::tools
