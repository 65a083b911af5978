// Which GGML type each tensor gets, for `convert --outtype/--experts` and for `synth --recipe`.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/tensor_specs.h"

namespace flashstar::convert {

enum class OutType { F32, F16, BF16, Q8_0, DS4 };
enum class ExpertRecipe {
  FollowOutType,  // the outtype's choice (ds4: IQ2_XXS gate/up + Q2_K down)
  F32, F16, BF16,
  Q8_0,
  Q4_K,          // gate, up and down
  IQ2_XXS_Q2_K,  // gate/up IQ2_XXS, down Q2_K (ds4's q2 recipe)
};

std::optional<OutType> parse_outtype(std::string_view s);
std::optional<ExpertRecipe> parse_expert_recipe(std::string_view s);

struct TypeChoice {
  GgmlType type = GgmlType::F32;
  std::string note;  // non-empty when the wanted type could not be used (row length not a block multiple)
};

// Rules: index tensors I32; 1-D tensors (norms, sinks, hc base/scale, exp_probs_b) F32; compressor APE
// F32 (F16 under ds4, as ds4 stores it); every other (matrix) tensor gets the outtype, except that q8_0
// keeps the router (ffn_gate_inp) and the hyper-connection fn matrices in F32 because routing top-k and
// Sinkhorn mixing are sensitive to rounding; ds4 uses TensorSpec::ds4_type. Routed experts follow the
// recipe. A type whose block does not divide the row length falls back to Q8_0, then F32 (see note).
TypeChoice choose_type(const TensorSpec& s, OutType out, ExpertRecipe experts);

// Folds per-layer notes into one line per distinct message ("blk.*.ffn_down_exps.weight (6 tensors): ...").
std::vector<std::string> summarize_notes(const std::vector<std::string>& notes);

bool is_hc_fn(const TensorSpec& s);
bool is_router(const TensorSpec& s);
bool is_ape(const TensorSpec& s);

}  // namespace flashstar::convert
