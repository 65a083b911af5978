// GGUF container reader (v2 and v3). The file is memory-mapped; every count, length, offset and size is
// validated against the file before use, so a hostile file yields one flashstar::Error line, never a
// crash, a hang or an allocation larger than the file itself.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/file_util.h"
#include "quant/types.h"

namespace flashstar::gguf {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr uint32_t kDefaultAlignment = 32;
constexpr int kMaxDims = 8;
constexpr int kMaxArrayNesting = 8;
// Upper bound on decoded metadata values (array items included). Real models hold well under a million
// (tokenizer tokens, merges, types); the cap bounds the memory a hostile file can make us spend, since a
// decoded Value is much larger than the 1..12 bytes it occupies in the file.
constexpr uint64_t kMaxMetadataValues = uint64_t{1} << 23;

enum class ValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
const char* value_type_name(ValueType t);

// A metadata value. Scalars are decoded eagerly; arrays keep their items (nested arrays allowed).
struct Value {
  ValueType type = ValueType::U8;
  // Scalars: exactly one of these is meaningful, chosen by `type`.
  uint64_t u = 0;  // U8/U16/U32/U64/BOOL
  int64_t i = 0;   // I8/I16/I32/I64
  double f = 0;    // F32/F64
  std::string s;   // STRING
  // ARRAY
  ValueType item_type = ValueType::U8;
  std::vector<Value> items;

  bool is_integer() const;
  bool is_float() const;
  std::optional<uint64_t> as_u64() const;  // any non-negative integer type
  std::optional<int64_t> as_i64() const;   // any integer type that fits
  std::optional<double> as_f64() const;    // float types and integers

  // Builders. of_uint/of_int/of_float take the concrete type (e.g. U16, I32, F32).
  static Value of_uint(ValueType t, uint64_t v);
  static Value of_int(ValueType t, int64_t v);
  static Value of_float(ValueType t, double v);
  static Value of_bool(bool v);
  static Value of_string(std::string_view v);
  static Value of_array(ValueType item_type, std::vector<Value> items);
};

// True for the 13 type numbers GGUF defines.
bool valid_value_type(uint32_t raw);
// Bytes a value of this type occupies at the least (arrays: item type + count).
uint64_t min_value_bytes(ValueType t);

// `s` quoted and escaped for a one-line message or listing: control bytes and invalid UTF-8 become \xNN
// escapes; input beyond `max_bytes` is cut at a character boundary and the full length noted, as in
// "abc"...(5000 bytes). Names from a hostile file go through this before reaching a terminal.
std::string display_string(std::string_view s, size_t max_bytes = 96, char quote = '"');

struct KeyValue {
  std::string key;
  Value value;
};

struct TensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // GGML order: ne[0] is contiguous
  uint64_t rel_offset = 0;  // relative to the data section
  uint64_t offset = 0;      // absolute offset in the file
  uint64_t nbytes = 0;
  int64_t nelements() const;
  int64_t dim(int i) const { return i < static_cast<int>(ne.size()) ? ne[i] : 1; }
};

class File {
 public:
  // Opens and fully validates the header, metadata and tensor table. Throws Error on any defect.
  static std::unique_ptr<File> open(const std::string& path);
  // Parses an in-memory image (used by the fuzzer and tests). The buffer must outlive the File.
  static std::unique_ptr<File> parse(const uint8_t* data, size_t size, const std::string& label);

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  size_t size() const { return size_; }
  const uint8_t* base() const { return base_; }
  const std::string& path() const { return label_; }

  const std::vector<KeyValue>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;
  const uint8_t* tensor_data(const TensorInfo& t) const { return base_ + t.offset; }

  // Typed lookups; nullopt when missing or of another type family.
  std::optional<uint64_t> get_u64(std::string_view key) const;
  std::optional<double> get_f64(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;

 private:
  File() = default;
  void parse_all();

  MappedFile map_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  std::string label_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<KeyValue> kv_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> kv_index_, tensor_index_;
};

}  // namespace flashstar::gguf
