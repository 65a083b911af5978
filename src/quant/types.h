// GGML tensor types as stored in GGUF files, and their block geometry.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace flashstar {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
};

struct TypeInfo {
  GgmlType type;
  const char* name;     // ggml's spelling: "f32", "q8_0", "q2_K", "iq2_xxs", ...
  uint32_t block_elems;  // elements per block (1 for plain types)
  uint32_t block_bytes;  // bytes per block
  bool supported;        // this engine can dequantize it
};

// Geometry of a known type, or nullopt for a number ggml never assigned.
std::optional<TypeInfo> type_info(uint32_t raw_type);
const TypeInfo& type_info(GgmlType t);  // t must be known
const char* type_name(GgmlType t);
std::optional<GgmlType> type_from_name(std::string_view name);  // case-insensitive

// Bytes of a row of n elements (n must be a multiple of the block size; checked by callers).
inline size_t row_bytes(GgmlType t, int64_t n) {
  const TypeInfo& ti = type_info(t);
  return static_cast<size_t>(n / ti.block_elems) * ti.block_bytes;
}

}  // namespace flashstar
