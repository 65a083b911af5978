#include "gguf/writer.h"

#include <bit>
#include <cstring>
#include <limits>

#include "common/error.h"

namespace flashstar::gguf {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF fields are written as native little-endian");

bool align_up(uint64_t x, uint64_t a, uint64_t* out) {
  const uint64_t rem = x % a;
  if (rem == 0) {
    *out = x;
    return true;
  }
  return !__builtin_add_overflow(x, a - rem, out);
}

// Header bytes are built in memory (metadata and the tensor table are small next to the data).
class Bytes {
 public:
  template <class T>
  void put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    s_.append(b, sizeof(T));
  }
  void put_string(std::string_view v) {
    put<uint64_t>(v.size());
    s_.append(v);
  }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};

void put_value(Bytes& b, const Value& v) {
  switch (v.type) {
    case ValueType::U8: b.put<uint8_t>(static_cast<uint8_t>(v.u)); break;
    case ValueType::I8: b.put<int8_t>(static_cast<int8_t>(v.i)); break;
    case ValueType::U16: b.put<uint16_t>(static_cast<uint16_t>(v.u)); break;
    case ValueType::I16: b.put<int16_t>(static_cast<int16_t>(v.i)); break;
    case ValueType::U32: b.put<uint32_t>(static_cast<uint32_t>(v.u)); break;
    case ValueType::I32: b.put<int32_t>(static_cast<int32_t>(v.i)); break;
    case ValueType::U64: b.put<uint64_t>(v.u); break;
    case ValueType::I64: b.put<int64_t>(v.i); break;
    case ValueType::F32: b.put<float>(static_cast<float>(v.f)); break;
    case ValueType::F64: b.put<double>(v.f); break;
    case ValueType::BOOL: b.put<uint8_t>(v.u ? 1 : 0); break;
    case ValueType::STRING: b.put_string(v.s); break;
    case ValueType::ARRAY:
      b.put<uint32_t>(static_cast<uint32_t>(v.item_type));
      b.put<uint64_t>(v.items.size());
      for (const Value& it : v.items) put_value(b, it);
      break;
  }
}

}  // namespace

Writer::Writer(const std::string& path, uint32_t alignment) : path_(path), alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    fail("%s: alignment %u is not a non-zero power of two", path.c_str(), alignment);
  if (alignment != kDefaultAlignment) kv_.emplace_back("general.alignment", Value::of_uint(ValueType::U32, alignment));
}

Writer::~Writer() = default;

// A value that does not fit its declared type would be silently truncated on output; refuse it instead.
static void check_value(const std::string& path, std::string_view key, const Value& v, int depth) {
  const char* k = key.data();
  const int kl = static_cast<int>(key.size());
  auto range = [&](bool ok) {
    if (!ok) fail("%s: metadata '%.*s': value does not fit type %s", path.c_str(), kl, k, value_type_name(v.type));
  };
  switch (v.type) {
    case ValueType::U8: range(v.u <= 0xff); break;
    case ValueType::U16: range(v.u <= 0xffff); break;
    case ValueType::U32: range(v.u <= 0xffffffffu); break;
    case ValueType::BOOL: range(v.u <= 1); break;
    case ValueType::I8: range(v.i >= -128 && v.i <= 127); break;
    case ValueType::I16: range(v.i >= -32768 && v.i <= 32767); break;
    case ValueType::I32: range(v.i >= std::numeric_limits<int32_t>::min() && v.i <= std::numeric_limits<int32_t>::max()); break;
    case ValueType::U64:
    case ValueType::I64:
    case ValueType::F32:
    case ValueType::F64:
    case ValueType::STRING: break;
    case ValueType::ARRAY:
      if (depth + 1 > kMaxArrayNesting)
        fail("%s: metadata '%.*s': arrays nested more than %d deep", path.c_str(), kl, k, kMaxArrayNesting);
      if (!valid_value_type(static_cast<uint32_t>(v.item_type)))
        fail("%s: metadata '%.*s': invalid array item type", path.c_str(), kl, k);
      for (const Value& it : v.items) {
        if (it.type != v.item_type)
          fail("%s: metadata '%.*s': array of %s holds a %s item", path.c_str(), kl, k, value_type_name(v.item_type),
               value_type_name(it.type));
        check_value(path, key, it, depth + 1);
      }
      break;
    default: fail("%s: metadata '%.*s': invalid value type", path.c_str(), kl, k);
  }
}

void Writer::add(std::string_view key, const Value& v) {
  const int kl = static_cast<int>(key.size());
  if (begun_) fail("%s: metadata '%.*s' added after begin_data()", path_.c_str(), kl, key.data());
  if (key.empty()) fail("%s: empty metadata key", path_.c_str());
  if (key == "general.alignment") {
    if (v.type != ValueType::U32 || v.u != alignment_)
      fail("%s: general.alignment must be the u32 %u given to the writer", path_.c_str(), alignment_);
    if (alignment_ != kDefaultAlignment) return;  // already added by the constructor
  }
  for (const auto& [k, _] : kv_)
    if (k == key) fail("%s: duplicate metadata key '%.*s'", path_.c_str(), kl, key.data());
  check_value(path_, key, v, 0);
  kv_.emplace_back(std::string(key), v);
}

void Writer::add_u8(std::string_view key, uint8_t v) { add(key, Value::of_uint(ValueType::U8, v)); }
void Writer::add_i8(std::string_view key, int8_t v) { add(key, Value::of_int(ValueType::I8, v)); }
void Writer::add_u16(std::string_view key, uint16_t v) { add(key, Value::of_uint(ValueType::U16, v)); }
void Writer::add_i16(std::string_view key, int16_t v) { add(key, Value::of_int(ValueType::I16, v)); }
void Writer::add_u32(std::string_view key, uint32_t v) { add(key, Value::of_uint(ValueType::U32, v)); }
void Writer::add_i32(std::string_view key, int32_t v) { add(key, Value::of_int(ValueType::I32, v)); }
void Writer::add_u64(std::string_view key, uint64_t v) { add(key, Value::of_uint(ValueType::U64, v)); }
void Writer::add_i64(std::string_view key, int64_t v) { add(key, Value::of_int(ValueType::I64, v)); }
void Writer::add_f32(std::string_view key, float v) { add(key, Value::of_float(ValueType::F32, v)); }
void Writer::add_f64(std::string_view key, double v) { add(key, Value::of_float(ValueType::F64, v)); }
void Writer::add_bool(std::string_view key, bool v) { add(key, Value::of_bool(v)); }
void Writer::add_string(std::string_view key, std::string_view v) { add(key, Value::of_string(v)); }

void Writer::add_array_u32(std::string_view key, const std::vector<uint32_t>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (uint32_t x : v) items.push_back(Value::of_uint(ValueType::U32, x));
  add(key, Value::of_array(ValueType::U32, std::move(items)));
}

void Writer::add_array_i32(std::string_view key, const std::vector<int32_t>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (int32_t x : v) items.push_back(Value::of_int(ValueType::I32, x));
  add(key, Value::of_array(ValueType::I32, std::move(items)));
}

void Writer::add_array_f32(std::string_view key, const std::vector<float>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (float x : v) items.push_back(Value::of_float(ValueType::F32, x));
  add(key, Value::of_array(ValueType::F32, std::move(items)));
}

void Writer::add_array_string(std::string_view key, const std::vector<std::string>& v) {
  std::vector<Value> items;
  items.reserve(v.size());
  for (const std::string& x : v) items.push_back(Value::of_string(x));
  add(key, Value::of_array(ValueType::STRING, std::move(items)));
}

size_t Writer::add_tensor(std::string_view name, GgmlType type, const std::vector<int64_t>& ne) {
  const int nl = static_cast<int>(name.size());
  const char* n = name.data();
  if (begun_) fail("%s: tensor '%.*s' added after begin_data()", path_.c_str(), nl, n);
  if (name.empty()) fail("%s: empty tensor name", path_.c_str());
  const auto ti = type_info(static_cast<uint32_t>(type));
  if (!ti) fail("%s: tensor '%.*s': unknown ggml type %u", path_.c_str(), nl, n, static_cast<unsigned>(type));
  if (ne.empty() || ne.size() > static_cast<size_t>(kMaxDims))
    fail("%s: tensor '%.*s' has %zu dimensions (must be 1..%d)", path_.c_str(), nl, n, ne.size(), kMaxDims);
  int64_t nel = 1;
  for (size_t d = 0; d < ne.size(); ++d) {
    if (ne[d] < 1) fail("%s: tensor '%.*s': ne[%zu] = %lld must be >= 1", path_.c_str(), nl, n, d, static_cast<long long>(ne[d]));
    if (__builtin_mul_overflow(nel, ne[d], &nel)) fail("%s: tensor '%.*s': element count overflows", path_.c_str(), nl, n);
  }
  if (ne[0] % ti->block_elems != 0)
    fail("%s: tensor '%.*s': ne[0] = %lld is not a multiple of the %s block size %u", path_.c_str(), nl, n,
         static_cast<long long>(ne[0]), ti->name, ti->block_elems);
  uint64_t nbytes = 0, rel = 0, end = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(nel) / ti->block_elems, uint64_t{ti->block_bytes}, &nbytes) ||
      !align_up(data_size_, alignment_, &rel) || __builtin_add_overflow(rel, nbytes, &end))
    fail("%s: tensor '%.*s': size overflows 64 bits", path_.c_str(), nl, n);
  if (!tensor_names_.emplace(name).second) fail("%s: duplicate tensor name '%.*s'", path_.c_str(), nl, n);
  tensors_.push_back(Pending{std::string(name), type, ne, nbytes, rel});
  data_size_ = end;
  return tensors_.size() - 1;
}

uint64_t Writer::tensor_nbytes(size_t index) const {
  if (index >= tensors_.size()) fail("%s: no tensor #%zu", path_.c_str(), index);
  return tensors_[index].nbytes;
}

void Writer::begin_data() {
  if (begun_) fail("%s: begin_data() called twice", path_.c_str());
  Bytes b;
  b.put<uint32_t>(kMagic);
  b.put<uint32_t>(3);
  b.put<uint64_t>(tensors_.size());
  b.put<uint64_t>(kv_.size());
  for (const auto& [k, v] : kv_) {
    b.put_string(k);
    b.put<uint32_t>(static_cast<uint32_t>(v.type));
    put_value(b, v);
  }
  for (const Pending& t : tensors_) {
    b.put_string(t.name);
    b.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) b.put<uint64_t>(static_cast<uint64_t>(d));
    b.put<uint32_t>(static_cast<uint32_t>(t.type));
    b.put<uint64_t>(t.rel_offset);
  }
  uint64_t total = 0;
  if (!align_up(b.str().size(), alignment_, &data_start_) || !align_up(data_size_, alignment_, &data_padded_) ||
      __builtin_add_overflow(data_start_, data_padded_, &total) ||
      total > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    fail("%s: file size overflows", path_.c_str());
  out_ = std::make_unique<AtomicFileWriter>(path_);
  out_->write(b.str().data(), b.str().size());
  // Sizing the file up front leaves the padding as zeros and lets write_tensor() use pwrite anywhere.
  out_->truncate(total);
  written_ = std::make_unique<std::atomic<uint64_t>[]>(tensors_.size());
  begun_ = true;
}

void Writer::write_tensor(size_t index, const void* data, size_t n, uint64_t offset_in_tensor) {
  if (!begun_ || finished_) fail("%s: write_tensor() outside begin_data()..finish()", path_.c_str());
  if (index >= tensors_.size()) fail("%s: no tensor #%zu", path_.c_str(), index);
  const Pending& t = tensors_[index];
  if (offset_in_tensor > t.nbytes || n > t.nbytes - offset_in_tensor)
    fail("%s: tensor '%s': write of %zu bytes at %llu runs past its %llu bytes", path_.c_str(), t.name.c_str(), n,
         static_cast<unsigned long long>(offset_in_tensor), static_cast<unsigned long long>(t.nbytes));
  out_->pwrite(data, n, data_start_ + t.rel_offset + offset_in_tensor);
  written_[index].fetch_add(n, std::memory_order_relaxed);
}

void Writer::finish() {
  if (!begun_) fail("%s: finish() before begin_data()", path_.c_str());
  if (finished_) fail("%s: finish() called twice", path_.c_str());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const uint64_t w = written_[i].load();
    if (w < tensors_[i].nbytes)
      fail("%s: tensor '%s': only %llu of its %llu bytes were written", path_.c_str(), tensors_[i].name.c_str(),
           static_cast<unsigned long long>(w), static_cast<unsigned long long>(tensors_[i].nbytes));
  }
  out_->commit();
  out_.reset();
  finished_ = true;
}

}  // namespace flashstar::gguf
