#include "quant/types.h"

#include <cctype>
#include <string>

#include "common/error.h"

namespace flashstar {
namespace {

// Block geometry of every type number ggml has assigned (so files using other types still parse and
// can be inspected); `supported` marks the ones this engine can compute with.
constexpr TypeInfo kTypes[] = {
    {GgmlType::F32, "f32", 1, 4, true},
    {GgmlType::F16, "f16", 1, 2, true},
    {GgmlType::Q4_0, "q4_0", 32, 18, false},
    {GgmlType::Q4_1, "q4_1", 32, 20, false},
    {GgmlType::Q5_0, "q5_0", 32, 22, false},
    {GgmlType::Q5_1, "q5_1", 32, 24, false},
    {GgmlType::Q8_0, "q8_0", 32, 34, true},
    {GgmlType::Q8_1, "q8_1", 32, 36, false},
    {GgmlType::Q2_K, "q2_K", 256, 84, true},
    {GgmlType::Q3_K, "q3_K", 256, 110, false},
    {GgmlType::Q4_K, "q4_K", 256, 144, true},
    {GgmlType::Q5_K, "q5_K", 256, 176, false},
    {GgmlType::Q6_K, "q6_K", 256, 210, false},
    {GgmlType::Q8_K, "q8_K", 256, 292, false},
    {GgmlType::IQ2_XXS, "iq2_xxs", 256, 66, true},
    {GgmlType::IQ2_XS, "iq2_xs", 256, 74, false},
    {GgmlType::IQ3_XXS, "iq3_xxs", 256, 98, false},
    {GgmlType::IQ1_S, "iq1_s", 256, 50, false},
    {GgmlType::IQ4_NL, "iq4_nl", 32, 18, false},
    {GgmlType::IQ3_S, "iq3_s", 256, 110, false},
    {GgmlType::IQ2_S, "iq2_s", 256, 82, false},
    {GgmlType::IQ4_XS, "iq4_xs", 256, 136, false},
    {GgmlType::I8, "i8", 1, 1, false},
    {GgmlType::I16, "i16", 1, 2, false},
    {GgmlType::I32, "i32", 1, 4, true},
    {GgmlType::I64, "i64", 1, 8, false},
    {GgmlType::F64, "f64", 1, 8, false},
    {GgmlType::IQ1_M, "iq1_m", 256, 56, false},
    {GgmlType::BF16, "bf16", 1, 2, true},
};

}  // namespace

std::optional<TypeInfo> type_info(uint32_t raw_type) {
  for (const TypeInfo& t : kTypes)
    if (static_cast<uint32_t>(t.type) == raw_type) return t;
  return std::nullopt;
}

const TypeInfo& type_info(GgmlType type) {
  for (const TypeInfo& t : kTypes)
    if (t.type == type) return t;
  fail("unknown ggml type %u", static_cast<unsigned>(type));
}

const char* type_name(GgmlType t) { return type_info(t).name; }

std::optional<GgmlType> type_from_name(std::string_view name) {
  auto lower = [](std::string_view s) {
    std::string r(s);
    for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return r;
  };
  const std::string want = lower(name);
  for (const TypeInfo& t : kTypes)
    if (lower(t.name) == want) return t.type;
  return std::nullopt;
}

}  // namespace flashstar
