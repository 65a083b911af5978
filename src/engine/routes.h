// Fast GPU routes and their switches. Every route is on by default; each can be switched off alone
// (`--route NAME=off`, or FLASHSTAR_ROUTE_<NAME>=0), which puts its reference kernels back, and
// `--quality` switches all of them off. The CPU backend is the reference itself and ignores the set.
#pragma once
#include <array>
#include <string>
#include <string_view>

namespace flashstar {

enum class Route : int {
  DenseQ8,    // Q8_0 dense projections: attn_q_a, attn_q_b, attn_kv, attn_output_b, shared expert, head
  OutA,       // the grouped attention-output low projection (attn_output_a)
  F16Proj,    // F16/BF16/F32 small projections: compressors, indexer, HC mixers, router
  Moe,        // routed experts as grouped GEMMs over the experts a chunk routes to
  Attention,  // flash-style sink attention and GPU indexer scoring
  FusedOps,   // the compressor of a prefill chunk in parallel (with its norm, RoPE, FP8/FP4 simulation)
  kCount
};
constexpr int kRouteCount = static_cast<int>(Route::kCount);

const char* route_name(Route r);         // lower case, e.g. "dense_q8"
const char* route_description(Route r);  // one line

struct RouteSet {
  std::array<bool, kRouteCount> on;
  RouteSet() { on.fill(true); }
  static RouteSet quality() {
    RouteSet s;
    s.on.fill(false);
    return s;
  }
  bool operator[](Route r) const { return on[static_cast<int>(r)]; }
  void set(Route r, bool v) { on[static_cast<int>(r)] = v; }
  bool all_off() const;
  bool operator==(const RouteSet&) const = default;
};

// Applies FLASHSTAR_ROUTE_<NAME>=0|1 (upper-case names) found in the environment; a bad value fails.
void apply_route_env(RouteSet& s);
// Applies one "name=on|off" (also 1|0, true|false); "all=off" is --quality. Unknown names fail.
void apply_route_arg(RouteSet& s, std::string_view arg);
// "dense_q8=on,out_a=on,..." in enum order; "quality" when every route is off.
std::string describe_routes(const RouteSet& s);
// Multi-line help text listing every route (for --help).
std::string routes_help();

}  // namespace flashstar
