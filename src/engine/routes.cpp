#include "engine/routes.h"

#include <cctype>
#include <cstdlib>

#include "common/error.h"

namespace flashstar {
namespace {

struct RouteInfo {
  const char* name;
  const char* description;
};
constexpr RouteInfo kRoutes[kRouteCount] = {
    {"dense_q8", "Q8_0 dense projections (q_a, q_b, kv, output_b, shared expert, output head) on tensor cores"},
    {"out_a", "grouped attention-output low projection (attn_output_a) on tensor cores"},
    {"f16_proj", "F16/BF16 compressor, indexer, HC and router projections on tensor cores"},
    {"moe", "routed experts as grouped tensor-core GEMMs, dequantized in shared memory"},
    {"attention", "sink attention (scores and P.V) and indexer scoring on tensor cores; radix-select top-k"},
    {"fused_ops", "the compressor of a prefill chunk in parallel (norm, RoPE, FP8/FP4 fused per row); router, a warp per token"},
};

bool parse_bool(std::string_view v, bool& out) {
  if (v == "on" || v == "1" || v == "true") return out = true, true;
  if (v == "off" || v == "0" || v == "false") return out = false, true;
  return false;
}

}  // namespace

const char* route_name(Route r) { return kRoutes[static_cast<int>(r)].name; }
const char* route_description(Route r) { return kRoutes[static_cast<int>(r)].description; }

bool RouteSet::all_off() const {
  for (bool b : on)
    if (b) return false;
  return true;
}

void apply_route_env(RouteSet& s) {
  for (int i = 0; i < kRouteCount; ++i) {
    std::string var = "FLASHSTAR_ROUTE_";
    for (const char* p = kRoutes[i].name; *p; ++p) var += static_cast<char>(std::toupper(static_cast<unsigned char>(*p)));
    const char* v = std::getenv(var.c_str());
    if (!v) continue;
    bool b = false;
    if (!parse_bool(v, b)) fail("%s=%s: expected 0 or 1", var.c_str(), v);
    s.on[i] = b;
  }
}

void apply_route_arg(RouteSet& s, std::string_view arg) {
  const size_t eq = arg.find('=');
  if (eq == std::string_view::npos) fail("--route %.*s: expected NAME=on|off", int(arg.size()), arg.data());
  const std::string_view name = arg.substr(0, eq), val = arg.substr(eq + 1);
  bool b = false;
  if (!parse_bool(val, b)) fail("--route %.*s: value must be on or off", int(arg.size()), arg.data());
  if (name == "all") {
    s.on.fill(b);
    return;
  }
  for (int i = 0; i < kRouteCount; ++i)
    if (name == kRoutes[i].name) {
      s.on[i] = b;
      return;
    }
  fail("--route: unknown route '%.*s' (see --help for the list)", int(name.size()), name.data());
}

std::string describe_routes(const RouteSet& s) {
  if (s.all_off()) return "quality";
  std::string out;
  for (int i = 0; i < kRouteCount; ++i) {
    if (i) out += ',';
    out += kRoutes[i].name;
    out += s.on[i] ? "=on" : "=off";
  }
  return out;
}

std::string routes_help() {
  std::string out = "GPU fast routes (all on by default; --route NAME=off or FLASHSTAR_ROUTE_NAME=0 puts the "
                    "reference kernels back, --quality turns all off):\n";
  for (const RouteInfo& r : kRoutes) out += std::string("  ") + r.name + ": " + r.description + "\n";
  return out;
}

}  // namespace flashstar
