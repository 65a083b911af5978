#include "convert/type_plan.h"

#include <cctype>

#include "common/error.h"

namespace flashstar::convert {
namespace {

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

bool contains(const std::string& s, const char* p) { return s.find(p) != std::string::npos; }

GgmlType outtype_ggml(OutType o) {
  switch (o) {
    case OutType::F32: return GgmlType::F32;
    case OutType::F16: return GgmlType::F16;
    case OutType::BF16: return GgmlType::BF16;
    case OutType::Q8_0: return GgmlType::Q8_0;
    case OutType::DS4: break;
  }
  return GgmlType::F32;
}

GgmlType expert_type(ExpertPart part, ExpertRecipe r, OutType out) {
  switch (r) {
    case ExpertRecipe::F32: return GgmlType::F32;
    case ExpertRecipe::F16: return GgmlType::F16;
    case ExpertRecipe::BF16: return GgmlType::BF16;
    case ExpertRecipe::Q8_0: return GgmlType::Q8_0;
    case ExpertRecipe::Q4_K: return GgmlType::Q4_K;
    case ExpertRecipe::IQ2_XXS_Q2_K: return part == ExpertPart::Down ? GgmlType::Q2_K : GgmlType::IQ2_XXS;
    case ExpertRecipe::FollowOutType:
      return out == OutType::DS4 ? expert_type(part, ExpertRecipe::IQ2_XXS_Q2_K, out) : outtype_ggml(out);
  }
  return GgmlType::F32;
}

}  // namespace

std::optional<OutType> parse_outtype(std::string_view s) {
  const std::string l = lower(s);
  if (l == "f32") return OutType::F32;
  if (l == "f16") return OutType::F16;
  if (l == "bf16") return OutType::BF16;
  if (l == "q8_0") return OutType::Q8_0;
  if (l == "ds4") return OutType::DS4;
  return std::nullopt;
}

std::optional<ExpertRecipe> parse_expert_recipe(std::string_view s) {
  const std::string l = lower(s);
  if (l == "f32") return ExpertRecipe::F32;
  if (l == "f16") return ExpertRecipe::F16;
  if (l == "bf16") return ExpertRecipe::BF16;
  if (l == "q8_0") return ExpertRecipe::Q8_0;
  if (l == "q4_k") return ExpertRecipe::Q4_K;
  if (l == "iq2_xxs-q2_k" || l == "q2") return ExpertRecipe::IQ2_XXS_Q2_K;
  return std::nullopt;
}

std::vector<std::string> summarize_notes(const std::vector<std::string>& notes) {
  struct Group {
    std::string key, first;
    int count;
  };
  std::vector<Group> groups;
  for (const std::string& n : notes) {
    std::string key = n;
    if (key.rfind("blk.", 0) == 0) {
      const size_t dot = key.find('.', 4);
      if (dot != std::string::npos) key = "blk.*" + key.substr(dot);
    }
    bool found = false;
    for (auto& g : groups)
      if (g.key == key) ++g.count, found = true;
    if (!found) groups.push_back({key, n, 1});
  }
  std::vector<std::string> r;
  for (const auto& g : groups) {
    const size_t colon = g.key.find(':');
    r.push_back(g.count == 1 || colon == std::string::npos
                    ? g.first
                    : g.key.substr(0, colon) + strfmt(" (%d tensors)", g.count) + g.key.substr(colon));
  }
  return r;
}

bool is_hc_fn(const TensorSpec& s) { return contains(s.name, "hc_") && contains(s.name, "_fn.weight"); }
bool is_router(const TensorSpec& s) { return contains(s.name, "ffn_gate_inp.weight"); }
bool is_ape(const TensorSpec& s) { return contains(s.name, "compressor_ape.weight"); }

TypeChoice choose_type(const TensorSpec& s, OutType out, ExpertRecipe experts) {
  if (s.cls == TypeClass::Index) return {GgmlType::I32, ""};
  if (s.ne.size() == 1) return {GgmlType::F32, ""};
  if (is_ape(s)) return {out == OutType::DS4 ? GgmlType::F16 : GgmlType::F32, ""};
  GgmlType want;
  if (s.expert != ExpertPart::None) {
    want = expert_type(s.expert, experts, out);
  } else if (out == OutType::DS4) {
    want = s.ds4_type;
  } else if (out == OutType::Q8_0 && (is_router(s) || is_hc_fn(s))) {
    want = GgmlType::F32;
  } else {
    want = outtype_ggml(out);
  }
  const int64_t ne0 = s.ne[0];
  auto fits = [&](GgmlType t) { return ne0 % static_cast<int64_t>(type_info(t).block_elems) == 0; };
  if (fits(want)) return {want, ""};
  // Lossier block types step up to Q8_0 (32-element blocks); everything else to exact F32.
  const bool lossy = want == GgmlType::Q2_K || want == GgmlType::Q4_K || want == GgmlType::IQ2_XXS;
  const GgmlType t = lossy && fits(GgmlType::Q8_0) ? GgmlType::Q8_0 : GgmlType::F32;
  return {t, strfmt("%s: row length %lld is not a multiple of %s's block of %u, using %s", s.name.c_str(),
                    static_cast<long long>(ne0), type_name(want), type_info(want).block_elems, type_name(t))};
}

}  // namespace flashstar::convert
