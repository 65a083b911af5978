// `flashstar bench` core, with ds4-bench semantics (shared/spec/interfaces.md §5): one session walks one
// token sequence to growing context frontiers. Each row times only the newly added prefill interval,
// then times gen_tokens greedy decode steps (argmax excluding EOS) from a snapshot that is restored
// afterwards, so the next frontier continues from the prompt and not from generated tokens.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "engine/session.h"

namespace flashstar::bench {

struct BenchOptions {
  uint32_t ctx_start = 2048, ctx_max = 32768;
  uint32_t ctx_alloc = 0;  // 0: ctx_max + gen_tokens + 1
  double step_mul = 1.0;   // > 1: next = ceil(f * step_mul) (at least f + 1); 1: next = f + step_incr
  uint32_t step_incr = 2048;
  uint32_t gen_tokens = 128;
};

// Checks the options (ds4-bench's rules) and fills ctx_alloc when 0. Throws Error naming the flag.
void validate(BenchOptions& o);
// The frontiers walked: ctx_start, then stepped, capped at ctx_max, the last one always ctx_max.
std::vector<uint32_t> frontiers(const BenchOptions& o);

struct BenchRow {
  uint32_t ctx_tokens = 0, prefill_tokens = 0, gen_tokens = 0;
  double prefill_seconds = 0, gen_seconds = 0;
  uint64_t kvcache_bytes = 0;  // snapshot size at the frontier
  double prefill_tps() const { return prefill_seconds > 0 ? prefill_tokens / prefill_seconds : 0.0; }
  double gen_tps() const { return gen_seconds > 0 ? gen_tokens / gen_seconds : 0.0; }
};

// Index of the largest logit other than `exclude` (-1: none excluded); ties take the lower id.
int32_t argmax_excluding(std::span<const float> logits, int32_t exclude);

// n ids drawn uniformly from [lo, hi) by a fixed generator: the same seed gives the same ids everywhere.
std::vector<int32_t> random_tokens(uint64_t seed, size_t n, int32_t lo, int32_t hi);

// Runs the walk on a fresh session (its ctx must be >= ctx_alloc); `tokens` must hold >= ctx_max ids.
// on_row is called as each row completes. The session ends holding tokens[0..ctx_max).
std::vector<BenchRow> run(Session& s, std::span<const int32_t> tokens, const BenchOptions& o, int32_t eos,
                          const std::function<void(const BenchRow&)>& on_row = nullptr);

// CSV: ds4-bench's six columns plus backend, card and route set (fields quoted when they hold commas).
std::string csv_header();
std::string csv_row(const BenchRow& r, const std::string& backend, const std::string& card, const std::string& routes);

}  // namespace flashstar::bench
