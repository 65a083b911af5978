#include "engine/bench.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <limits>

#include "common/error.h"
#include "engine/sampling.h"

namespace flashstar::bench {

void validate(BenchOptions& o) {
  if (o.ctx_start < 1) fail("--ctx-start must be >= 1");
  if (o.ctx_start > o.ctx_max) fail("--ctx-start (%u) must be <= --ctx-max (%u)", o.ctx_start, o.ctx_max);
  if (!(o.step_mul >= 1.0)) fail("--step-mul must be >= 1");
  if (o.step_mul == 1.0 && o.step_incr == 0) fail("--step-incr must be positive when --step-mul is 1");
  if (static_cast<uint64_t>(o.ctx_max) + o.gen_tokens + 1 > INT32_MAX) fail("the requested context is too large");
  if (o.ctx_alloc == 0) o.ctx_alloc = o.ctx_max + o.gen_tokens + 1;
  // Generation from the last frontier must fit, with one slot to spare as in ds4-bench.
  if (o.ctx_alloc <= o.ctx_max + o.gen_tokens)
    fail("--ctx-alloc (%u) must be greater than --ctx-max + --gen-tokens (%u)", o.ctx_alloc, o.ctx_max + o.gen_tokens);
}

std::vector<uint32_t> frontiers(const BenchOptions& o) {
  std::vector<uint32_t> out;
  uint64_t f = o.ctx_start;
  for (;;) {
    out.push_back(static_cast<uint32_t>(f));
    if (f >= o.ctx_max) break;
    uint64_t next;
    if (o.step_mul == 1.0) {
      next = f + o.step_incr;
    } else {
      const double v = std::ceil(static_cast<double>(f) * o.step_mul);
      next = v >= static_cast<double>(o.ctx_max) ? o.ctx_max : static_cast<uint64_t>(v);
      if (next <= f) next = f + 1;
    }
    f = std::min<uint64_t>(next, o.ctx_max);
  }
  return out;
}

int32_t argmax_excluding(std::span<const float> logits, int32_t exclude) {
  // The largest value (two scans without a data-dependent index: this runs between every two decode
  // steps of the bench), then its first position; all -inf: the first usable id.
  const size_t n = logits.size();
  const size_t ex = exclude >= 0 && static_cast<size_t>(exclude) < n ? static_cast<size_t>(exclude) : n;
  float m = max_above(logits.first(ex), -std::numeric_limits<float>::infinity());
  if (ex < n) m = max_above(logits.subspan(ex + 1), m);
  size_t i = first_equal(logits, m, 0);
  if (i == ex) i = first_equal(logits, m, ex + 1);
  return i < n ? static_cast<int32_t>(i) : -1;  // none: nothing but NaN and the excluded id
}

std::vector<int32_t> random_tokens(uint64_t seed, size_t n, int32_t lo, int32_t hi) {
  if (hi <= lo) fail("random tokens: empty id range [%d, %d)", lo, hi);
  // splitmix64: tiny, fixed and platform-independent, unlike std:: distributions.
  std::vector<int32_t> out(n);
  uint64_t s = seed;
  const uint64_t span = static_cast<uint64_t>(hi - lo);
  for (size_t i = 0; i < n; ++i) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    out[i] = lo + static_cast<int32_t>(((z >> 32) * span) >> 32);
  }
  return out;
}

std::vector<BenchRow> run(Session& s, std::span<const int32_t> tokens, const BenchOptions& o, int32_t eos,
                          const std::function<void(const BenchRow&)>& on_row) {
  BenchOptions opt = o;
  validate(opt);
  if (tokens.size() < opt.ctx_max)
    fail("the benchmark sequence has %zu tokens but --ctx-max needs %u", tokens.size(), opt.ctx_max);
  if (s.options().ctx < opt.ctx_alloc)
    fail("the session holds %u tokens but the benchmark needs %u", s.options().ctx, opt.ctx_alloc);
  if (!s.tokens().empty()) fail("the benchmark needs a fresh session");
  using clock = std::chrono::steady_clock;
  auto secs = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  std::vector<BenchRow> rows;
  uint32_t previous = 0;
  for (uint32_t f : frontiers(opt)) {
    BenchRow r;
    r.ctx_tokens = f;
    r.prefill_tokens = f - previous;
    // Session::eval returns once the logits are on the host, so the clock sees finished work.
    const auto t0 = clock::now();
    s.eval(tokens.subspan(previous, f - previous), nullptr);
    const auto t1 = clock::now();
    r.prefill_seconds = secs(t0, t1);
    const std::string snapshot = s.save();
    r.kvcache_bytes = snapshot.size();
    const auto g0 = clock::now();
    for (uint32_t i = 0; i < opt.gen_tokens; ++i) {
      const int32_t id = argmax_excluding(s.last_logits(), eos);
      if (id < 0) fail("no non-EOS token to generate at frontier %u", f);
      s.decode(id);
    }
    const auto g1 = clock::now();
    r.gen_tokens = opt.gen_tokens;
    r.gen_seconds = secs(g0, g1);
    s.load(snapshot);
    if (s.tokens().size() != f) fail("restoring the snapshot at frontier %u left %zu tokens", f, s.tokens().size());
    rows.push_back(r);
    if (on_row) on_row(r);
    previous = f;
  }
  return rows;
}

namespace {

std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\n") == std::string::npos) return v;
  std::string q = "\"";
  for (char c : v) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

}  // namespace

std::string csv_header() {
  return "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,backend,card,routes";
}

std::string csv_row(const BenchRow& r, const std::string& backend, const std::string& card, const std::string& routes) {
  return strfmt("%u,%u,%.2f,%u,%.2f,%llu,", r.ctx_tokens, r.prefill_tokens, r.prefill_tps(), r.gen_tokens, r.gen_tps(),
                static_cast<unsigned long long>(r.kvcache_bytes)) +
         csv_field(backend) + "," + csv_field(card) + "," + csv_field(routes);
}

}  // namespace flashstar::bench
