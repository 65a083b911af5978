#include "common/env_switches.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "common/error.h"

extern char** environ;

namespace flashstar {
namespace {

// A switch: its values, or (lo <= hi) an integer range, or its own check (with the message's "expected").
struct Switch {
  const char* name;
  std::vector<std::string_view> values;
  long long lo = 1, hi = 0;
  bool (*check)(std::string_view) = nullptr;
  const char* expect = nullptr;
};

bool is_int(std::string_view v, long long lo, long long hi) {
  if (v.empty() || v.size() > 18) return false;
  long long x = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
    x = 10 * x + (c - '0');
  }
  return x >= lo && x <= hi;
}

// FLASHSTAR_DECODE_FORK (decode_fork.cpp): 0, 1, all, or a comma list of attn, idx and ffn.
bool fork_list(std::string_view v) {
  if (v == "0" || v == "1" || v == "all") return true;
  for (size_t b = 0; b <= v.size();) {
    const size_t e = std::min(v.find(',', b), v.size());
    const std::string_view part = v.substr(b, e - b);
    if (part != "attn" && part != "idx" && part != "ffn") return false;
    b = e + 1;
  }
  return true;
}

const std::vector<Switch>& switches() {
  static const std::vector<Switch> s = {
      {"FLASHSTAR_ATTN_DECODE_SPLITS", {}, 1, 24},
      {"FLASHSTAR_ATTN_DECODE_V2", {"0", "1", "topk", "flash"}},
      {"FLASHSTAR_ATTN_PREFILL_3MMA", {"0", "1"}},
      {"FLASHSTAR_ATTN_PREFILL_V2", {"0", "1"}},
      {"FLASHSTAR_CUDA_GRAPH", {"0", "1"}},
      {"FLASHSTAR_DECODE_FORK", {}, 1, 0, fork_list, "0, 1, all or a comma list of attn, idx and ffn"},
      {"FLASHSTAR_DECODE_FORK_PRIO", {"0", "1"}},
      {"FLASHSTAR_EXPERT_FUSED", {"0", "1", "2"}},
      {"FLASHSTAR_EXPERT_V", {"0", "1", "2"}},
      {"FLASHSTAR_GEMM_CUBLAS", {"0", "1"}},
      {"FLASHSTAR_GEMM_CUBLAS_KSLICE", {}, 0, 1ll << 31},
      {"FLASHSTAR_GEMM_CUBLAS_LOG", {"0", "1"}},
      {"FLASHSTAR_GEMM_DENSE_V2", {"0", "1", "128", "256"}},
      {"FLASHSTAR_GEMM_GROUP_DECODE", {"0", "1", "2"}},
      {"FLASHSTAR_GEMM_GROUP_Q2K_SUMS", {"0", "1"}},
      {"FLASHSTAR_GEMM_GROUP_V2", {"0", "1"}},
      {"FLASHSTAR_GEMM_GROUP_WGMMA", {"0", "1"}},
      {"FLASHSTAR_GEMM_GROUP_WGMMA_VARIANT", {"0", "1", "2"}},
      {"FLASHSTAR_GEMM_INT", {"0", "1"}},
      {"FLASHSTAR_GEMM_WGMMA", {"0", "1"}},
      {"FLASHSTAR_GEMM_WGMMA_F16", {"0", "1", "2", "3"}},
      // a size: session_plan.cpp checks it when it plans
      {"FLASHSTAR_GPU_MEMORY", {}, 1, 0, [](std::string_view) { return true; }, "a size"},
      {"FLASHSTAR_HC_PRE_LEAN", {"0", "1"}},
      {"FLASHSTAR_HC_SPLIT_SIDE", {"0", "1"}},
      {"FLASHSTAR_IDX_FUSED", {"0", "1"}},
      {"FLASHSTAR_INDEXER_PREFILL_V2", {"0", "1"}},
      // a path: cuda/kernel_trace.cpp writes the kernel timeline's CSV there
      {"FLASHSTAR_KTRACE", {}, 1, 0, [](std::string_view) { return true; }, "a file path"},
      {"FLASHSTAR_MIX_V2", {"0", "1"}},
      {"FLASHSTAR_MV_EARLY", {"0", "1"}},
      {"FLASHSTAR_PDL", {"0", "1", "v"}},
      {"FLASHSTAR_PDL_FAN", {"0", "1"}},
      {"FLASHSTAR_PREFILL_SMALL", {"0", "1"}},
      {"FLASHSTAR_PROFILE", {"0", "1"}},
      {"FLASHSTAR_Q8_CONST_ITEMS", {"0", "1"}},
      {"FLASHSTAR_Q8_LEAN", {"0", "1"}},
      {"FLASHSTAR_ROUTER_FUSED", {"0", "1"}},
      {"FLASHSTAR_THREADS", {}, 1, 65536},
      {"FLASHSTAR_WINDOW_SIDE", {"0", "1"}},
  };
  return s;
}

bool takes(const Switch& s, std::string_view v) {
  if (v.empty()) return true;  // set but empty: the default, as every reader takes it
  if (s.check) return s.check(v);
  if (s.lo <= s.hi) return is_int(v, s.lo, s.hi);
  return std::find(s.values.begin(), s.values.end(), v) != s.values.end();
}

std::string expected(const Switch& s) {
  if (s.expect) return s.expect;
  if (s.lo <= s.hi) return strfmt("an integer from %lld to %lld", s.lo, s.hi);
  std::string out;
  for (size_t i = 0; i < s.values.size(); ++i)
    out += std::string(i ? (i + 1 == s.values.size() ? " or " : ", ") : "") + std::string(s.values[i]);
  return out;
}

size_t edits(std::string_view a, std::string_view b) {  // Levenshtein distance
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::vector<std::string> check_env_switches(const std::vector<std::string>& environment) {
  std::vector<std::string> warnings;
  for (const std::string& kv : environment) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || kv.rfind("FLASHSTAR_", 0) != 0) continue;
    const std::string_view name(kv.data(), eq), value(kv.data() + eq + 1, kv.size() - eq - 1);
    if (name.rfind("FLASHSTAR_ROUTE_", 0) == 0) continue;  // engine/routes.cpp checks those
    const Switch* known = nullptr;
    const Switch* near = nullptr;
    for (const Switch& s : switches()) {
      if (name == s.name) known = &s;
      else if (!near && edits(name, s.name) <= 2) near = &s;
    }
    if (known) {
      if (!takes(*known, value))
        fail("%.*s=%.*s: expected %s", static_cast<int>(name.size()), name.data(), static_cast<int>(value.size()),
             value.data(), expected(*known).c_str());
    } else if (near) {
      warnings.push_back(strfmt("%.*s is not a flashstar switch (ignored); did you mean %s?",
                                static_cast<int>(name.size()), name.data(), near->name));
    }
  }
  return warnings;
}

void check_env_switches() {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  for (const std::string& w : check_env_switches(env)) std::fprintf(stderr, "flashstar: warning: %s\n", w.c_str());
}

}  // namespace flashstar
