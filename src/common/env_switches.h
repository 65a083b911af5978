// The FLASHSTAR_* environment switches of the kernels (README, "GPU routes and kernel switches"): every
// known name with the values it takes. Each kernel reads its own switch once, and most read an unknown
// value as some other setting (FLASHSTAR_GEMM_WGMMA=off would leave it on), so the tools check them all
// up front.
#pragma once
#include <string>
#include <vector>

namespace flashstar {

// Fails (flashstar::Error, one line) on a known switch set to a value it does not take. Returns a warning
// line for each FLASHSTAR_* name that is not known but within two edits of one that is (a likely typo,
// which would otherwise be ignored without a word). FLASHSTAR_ROUTE_* are the routes' (engine/routes.h);
// other FLASHSTAR_* names (test and tool settings) are left alone.
std::vector<std::string> check_env_switches(const std::vector<std::string>& environment);
// The same over the process environment; the warnings go to stderr.
void check_env_switches();

}  // namespace flashstar
