// flashstar trace: explains the drift between a candidate backend and the CPU engine. Official numerics
// turn a last-bit difference into a whole FP8/FP4/f16 step on a cached row, or into another expert or
// indexer pick, and every later position reads the result; a plain comparison cannot tell such a flip
// from a bug. So the prompt is cut into segments of at most the raw window: before each segment the
// candidate is given the CPU's exact state (a snapshot), both run the segment, and the first thing that
// differs in it (a cached row, or logits beyond the bound) must sit on a near-tie the CPU logged at that
// position: a rounding within TieLog::kRoundingGap (of the magnitude sharing its scale) of its boundary,
// or a routing / indexer boundary within 1e-4. A first difference with no such tie is a bug: the command then fails (exit 1).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "commands.h"
#include "common/error.h"
#include "common/file_util.h"
#include "common/parallel.h"
#include "engine/drift.h"
#include "engine/kv_state.h"
#include "engine/session.h"
#include "tool_util.h"

namespace flashstar::tools {
namespace {

struct RowDiff {
  int64_t pos = -1;
  uint32_t layer = 0;
  const char* cache = "";        // raw, comp or idx
  std::vector<int32_t> elems;    // differing elements (the first 64)
  float ref = 0, cand = 0;       // values of the first of them
};

// Cached rows written in [q, end): the raw window (the segment fits in it), compressed and indexer rows.
RowDiff first_row_diff(const ModelConfig& c, const KvState& a, const KvState& b, int64_t q, int64_t end) {
  RowDiff best;
  auto scan = [&](const std::vector<float>& ra, const std::vector<float>& rb, int64_t dim, auto pos_of,
                  uint32_t il, const char* cache) {
    const int64_t n = static_cast<int64_t>(std::min(ra.size(), rb.size())) / dim;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = pos_of(i, n);
      if (pos < q || pos >= end) continue;
      if (best.pos >= 0 && (pos > best.pos || (pos == best.pos && il >= best.layer))) continue;
      const float* x = ra.data() + i * dim;
      const float* y = rb.data() + i * dim;
      if (std::memcmp(x, y, dim * sizeof(float)) == 0) continue;
      RowDiff d;
      d.pos = pos, d.layer = il, d.cache = cache;
      for (int64_t j = 0; j < dim; ++j)
        if (std::memcmp(x + j, y + j, sizeof(float)) != 0) {
          if (d.elems.empty()) d.ref = x[j], d.cand = y[j];
          if (d.elems.size() < 64) d.elems.push_back(static_cast<int32_t>(j));
        }
      best = d;
    }
  };
  for (uint32_t il = 0; il < c.n_layer; ++il) {
    const LayerState& la = a.layers[il];
    const LayerState& lb = b.layers[il];
    scan(la.raw, lb.raw, c.head_dim, [&](int64_t i, int64_t n) { return end - n + i; }, il, "raw");
    if (la.ratio)
      scan(la.comp, lb.comp, c.head_dim, [&](int64_t i, int64_t) { return (i + 1) * int64_t(la.ratio) - 1; }, il, "comp");
    if (la.idx_state.ratio)
      scan(la.idx, lb.idx, c.idx_head_dim,
           [&](int64_t i, int64_t) { return (i + 1) * int64_t(la.idx_state.ratio) - 1; }, il, "idx");
  }
  return best;
}

double rel_gap(const NearTie& t) {
  const double a = std::fabs(double(t.last_in)), b = std::fabs(double(t.first_out));
  return std::fabs(double(t.last_in) - t.first_out) / (t.scale > 0 ? double(t.scale) : std::max({a, b, 1e-30}));
}

// A tie at the first difference's position that explains it. A row that differs first (no earlier row
// of the segment, and no earlier layer at its position, differs): a rounding of one of its differing
// elements (or of their block scale), or a routing / indexer choice (or indexer query rounding) of an
// earlier layer at that position. Logits that move with no row changed: a choice at that position.
const NearTie* explain(const std::vector<NearTie>& ties, const RowDiff& d, int64_t bad_pos) {
  const NearTie* best = nullptr;
  auto take = [&](const NearTie& t) {
    if (!best || rel_gap(t) < rel_gap(*best)) best = &t;
  };
  const bool row_first = d.pos >= 0 && (bad_pos < 0 || d.pos <= bad_pos);
  const int64_t pos = row_first ? d.pos : bad_pos;
  for (const NearTie& t : ties) {
    if (t.pos != pos) continue;
    // the row kind a rounding belongs to: kv_ raw, comp_ compressed, idx_ indexer (idx_q_: a query)
    const bool idx_q = std::strncmp(t.kind, "idx_q", 5) == 0;
    const char* row_of = std::strncmp(t.kind, "kv_", 3) == 0     ? "raw"
                         : std::strncmp(t.kind, "comp_", 5) == 0 ? "comp"
                         : std::strncmp(t.kind, "idx_", 4) == 0 && !idx_q ? "idx"
                                                                         : nullptr;
    if (!row_first) {
      if (!row_of) take(t);
      continue;
    }
    if (!row_of) {
      if (t.layer < d.layer) take(t);
      continue;
    }
    if (t.layer != d.layer || std::strcmp(row_of, d.cache) != 0) continue;
    const bool idx_row = std::strcmp(d.cache, "idx") == 0;
    const bool scale = std::strstr(t.kind, "_scale") != nullptr;
    const int32_t block = idx_row ? 32 : 64;
    for (int32_t e : d.elems)
      if (scale ? (e >= t.index && e < t.index + block) : e == t.index) take(t);
  }
  return best;
}

// Top-20 sets equal (drift.h's definitions: finite values, ties to the lower token id).
bool same_top20(const drift::PositionDrift& d, size_t vocab) {
  return d.top20_overlap == static_cast<int>(std::min<size_t>(20, vocab));
}

}  // namespace

void add_trace_command(CLI::App& app) {
  struct Opts {
    std::string model, tokens, out, ref_logits, candidate = "cuda", numerics = "official";
    uint32_t segment = 0, chunk = 4096;
    double rel_bound = 1e-3;
    int threads = 0;
    bool verbose = false;
    RouteOptions routes;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "trace", "Trace the drift of a backend against the CPU engine to near-ties (fails if a difference has none)");
  cmd->add_option("-m,--model", o->model, "GGUF model file")->required();
  cmd->add_option("--tokens", o->tokens, "JSON file: {\"tokens\": [...]} or a plain array")->required();
  cmd->add_option("-o,--output", o->out, "JSON report (per segment: first difference and the tie behind it)");
  cmd->add_option("--ref-logits", o->ref_logits,
                  "also write the CPU engine's logits [T][vocab] (float32), for a free-running comparison");
  cmd->add_option("--candidate", o->candidate, "backend compared with the CPU engine")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--segment", o->segment, "tokens per segment (default and maximum: the raw window)");
  cmd->add_option("--chunk", o->chunk, "prefill chunk size")->check(CLI::PositiveNumber);
  cmd->add_option("--numerics", o->numerics, "official (FP8 KV, FP4 indexer, f16 cache rows) or clean")
      ->check(CLI::IsMember({"official", "clean"}));
  cmd->add_option("--rel-bound", o->rel_bound, "per-position relative rms counted as beyond the bound");
  cmd->add_option("-t,--threads", o->threads, "CPU threads (default: all cores)");
  cmd->add_flag("-v,--verbose", o->verbose, "print the memory plan and one line per segment");
  add_route_options(cmd, o->routes);
  cmd->callback([o] {
    if (o->threads > 0) set_num_threads(o->threads);
    const std::vector<int32_t> toks = read_tokens_json(o->tokens);
    if (toks.empty()) fail("%s: no tokens", o->tokens.c_str());
    auto model = Model::load(o->model);
    const ModelConfig& c = model->config();
    const int64_t S = o->segment ? o->segment : c.n_swa;
    if (S < 1 || S > int64_t(c.n_swa)) fail("--segment must be 1..%u (the raw window)", c.n_swa);
    SessionOptions so;
    so.chunk = o->chunk;
    so.ctx = static_cast<uint32_t>(toks.size() + 1);
    so.numerics = o->numerics == "clean" ? Numerics::Clean : Numerics::Official;
    so.verbose = o->verbose;
    so.routes = o->routes.resolve();
    auto cand = make_session(*model, so, o->candidate);
    TieLog ties;
    so.ties = &ties;
    auto ref = make_session(*model, so, "cpu");

    const size_t V = c.n_vocab, T = toks.size();
    std::vector<float> lr(S * V), lc(S * V), all_ref;
    if (!o->ref_logits.empty()) all_ref.reserve(T * V);
    nlohmann::json segs = nlohmann::json::array();
    size_t beyond = 0, same20 = 0, diverged = 0, untraced = 0;
    double sum_r = 0, sum_r2 = 0, sum_d2 = 0, pre_event_max = 0;
    Stopwatch sw;
    for (int64_t q = 0; q < int64_t(T); q += S) {
      const int64_t n = std::min<int64_t>(S, int64_t(T) - q), end = q + n;
      if (q > 0) cand->load(ref->save());
      const std::span<const int32_t> seg(toks.data() + q, n);
      ref->eval(seg, lr.data());
      if (!o->ref_logits.empty()) all_ref.insert(all_ref.end(), lr.begin(), lr.begin() + n * V);
      cand->eval(seg, lc.data());
      std::vector<drift::PositionDrift> pd(n);
      parallel_for(n, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) pd[t] = drift::compare_row({lr.data() + t * V, V}, {lc.data() + t * V, V});
      });
      int64_t first_bad = -1, seg_beyond = 0;
      for (int64_t t = 0; t < n; ++t) {
        const bool same = same_top20(pd[t], V), bad = pd[t].rel_rms > o->rel_bound || !same;
        seg_beyond += bad, same20 += same;
        if (bad && first_bad < 0) first_bad = q + t;
      }
      beyond += seg_beyond;
      KvState a, b;
      load_snapshot(c, ref->save(), so.ctx, a);
      load_snapshot(c, cand->save(), so.ctx, b);
      const RowDiff d = first_row_diff(c, a, b, q, end);
      nlohmann::json js = {{"start", q}, {"tokens", n}};
      const int64_t event = d.pos >= 0 && (first_bad < 0 || d.pos <= first_bad) ? d.pos : first_bad;
      double pre = 0;
      for (int64_t t = 0; t < n && (event < 0 || q + t < event); ++t) pre = std::max(pre, pd[t].rel_rms);
      pre_event_max = std::max(pre_event_max, pre);
      js["pre_event_max_rel_rms"] = pre;
      js["beyond_bound"] = seg_beyond;
      if (event >= 0) {
        ++diverged;
        if (d.pos >= 0)
          js["first_row_diff"] = {{"pos", d.pos}, {"layer", d.layer}, {"cache", d.cache}, {"elements", d.elems.size()},
                                  {"element", d.elems.front()}, {"ref", d.ref}, {"cand", d.cand}};
        if (first_bad >= 0) js["first_beyond_bound"] = first_bad;
        const std::vector<NearTie> all = ties.sorted();
        if (const NearTie* t = explain(all, d, first_bad)) {
          js["tie"] = {{"pos", t->pos}, {"layer", t->layer}, {"kind", t->kind}, {"index", t->index}, {"rel_gap", rel_gap(*t)}};
        } else {
          ++untraced;
          js["tie"] = nullptr;
        }
      }
      if (o->verbose) std::fprintf(stderr, "trace: %s\n", js.dump().c_str());
      segs.push_back(js);
      for (size_t i = 0; i < size_t(n) * V; ++i) {
        const double r = lr[i], d = double(lc[i]) - r;
        sum_r += r, sum_r2 += r * r, sum_d2 += d * d;
      }
    }
    nlohmann::json rep = {{"candidate", o->candidate}, {"positions", T}, {"segment", S},
                          {"rel_rms", std::sqrt(sum_d2 / std::max(sum_r2 - sum_r * sum_r / (T * V), 1e-60))},
                          {"top20_same_frac", double(same20) / T}, {"beyond_bound", beyond},
                          {"segments_diverged", diverged}, {"untraced", untraced},
                          {"pre_event_max_rel_rms", pre_event_max}, {"segments", segs}};
    if (!o->out.empty()) write_file_atomic(o->out, rep.dump(1) + "\n");
    if (!o->ref_logits.empty())
      write_file_atomic(o->ref_logits,
                        std::string_view(reinterpret_cast<const char*>(all_ref.data()), all_ref.size() * sizeof(float)));
    std::fprintf(stderr,
                 "trace: %zu positions in %zu segments of %lld (CPU state given to the %s backend before each), "
                 "%.1f s: rel_rms %.3g, top-20 same %.2f%%, beyond the bound %zu; %zu segments diverged, %zu "
                 "untraced; largest rel_rms before a segment's first difference %.3g\n",
                 T, segs.size(), static_cast<long long>(S), o->candidate.c_str(), sw.seconds(),
                 rep["rel_rms"].get<double>(), 100.0 * same20 / T, beyond, diverged, untraced, pre_event_max);
    if (untraced) fail("%zu segments diverged with no near-tie at their first difference: a bug", untraced);
  });
}

}  // namespace flashstar::tools
