#include "gguf/gguf.h"

#include <algorithm>
#include <bit>
#include <cstdarg>
#include <cstring>
#include <limits>

#include "common/error.h"

namespace flashstar::gguf {

static_assert(std::endian::native == std::endian::little, "GGUF fields are read as native little-endian");

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::U8: return "u8";
    case ValueType::I8: return "i8";
    case ValueType::U16: return "u16";
    case ValueType::I16: return "i16";
    case ValueType::U32: return "u32";
    case ValueType::I32: return "i32";
    case ValueType::F32: return "f32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "string";
    case ValueType::ARRAY: return "array";
    case ValueType::U64: return "u64";
    case ValueType::I64: return "i64";
    case ValueType::F64: return "f64";
  }
  return "invalid";
}

bool valid_value_type(uint32_t raw) { return raw <= static_cast<uint32_t>(ValueType::F64); }

uint64_t min_value_bytes(ValueType t) {
  switch (t) {
    case ValueType::U8:
    case ValueType::I8:
    case ValueType::BOOL: return 1;
    case ValueType::U16:
    case ValueType::I16: return 2;
    case ValueType::U32:
    case ValueType::I32:
    case ValueType::F32: return 4;
    case ValueType::U64:
    case ValueType::I64:
    case ValueType::F64:
    case ValueType::STRING: return 8;  // the length prefix
    case ValueType::ARRAY: return 12;  // item type + count
  }
  return 1;
}

// ---- Value -------------------------------------------------------------------------------------

static bool is_unsigned(ValueType t) {
  return t == ValueType::U8 || t == ValueType::U16 || t == ValueType::U32 || t == ValueType::U64;
}
static bool is_signed(ValueType t) {
  return t == ValueType::I8 || t == ValueType::I16 || t == ValueType::I32 || t == ValueType::I64;
}

bool Value::is_integer() const { return is_unsigned(type) || is_signed(type); }
bool Value::is_float() const { return type == ValueType::F32 || type == ValueType::F64; }

std::optional<uint64_t> Value::as_u64() const {
  if (is_unsigned(type)) return u;
  if (is_signed(type) && i >= 0) return static_cast<uint64_t>(i);
  return std::nullopt;
}

std::optional<int64_t> Value::as_i64() const {
  if (is_signed(type)) return i;
  if (is_unsigned(type) && u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return static_cast<int64_t>(u);
  return std::nullopt;
}

std::optional<double> Value::as_f64() const {
  if (is_float()) return f;
  if (is_unsigned(type)) return static_cast<double>(u);
  if (is_signed(type)) return static_cast<double>(i);
  return std::nullopt;
}

Value Value::of_uint(ValueType t, uint64_t v) {
  Value r;
  r.type = t;
  r.u = v;
  return r;
}
Value Value::of_int(ValueType t, int64_t v) {
  Value r;
  r.type = t;
  r.i = v;
  return r;
}
Value Value::of_float(ValueType t, double v) {
  Value r;
  r.type = t;
  r.f = v;
  return r;
}
Value Value::of_bool(bool v) { return of_uint(ValueType::BOOL, v ? 1 : 0); }
Value Value::of_string(std::string_view v) {
  Value r;
  r.type = ValueType::STRING;
  r.s = std::string(v);
  return r;
}
Value Value::of_array(ValueType item_type, std::vector<Value> items) {
  Value r;
  r.type = ValueType::ARRAY;
  r.item_type = item_type;
  r.items = std::move(items);
  return r;
}

int64_t TensorInfo::nelements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

// ---- display -----------------------------------------------------------------------------------

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 if it is not one.
static size_t utf8_len(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n;
  unsigned char lo = 0x80, hi = 0xbf;  // range of the second byte
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0;  // overlong
    if (c == 0xed) hi = 0x9f;  // surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if ((b(i + k) & 0xc0) != 0x80) return 0;
  return n;
}

std::string display_string(std::string_view s, size_t max_bytes, char quote) {
  std::string out;
  out.reserve(std::min(s.size(), max_bytes) + 8);
  out += quote;
  size_t i = 0;
  while (i < s.size() && i < max_bytes) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      if (c == static_cast<unsigned char>(quote) || c == '\\') out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c == '\n') {
      out += "\\n";
      ++i;
    } else if (c == '\t') {
      out += "\\t";
      ++i;
    } else if (size_t n = c >= 0x80 ? utf8_len(s, i) : 0; n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      ++i;
    }
  }
  out += quote;
  if (i < s.size()) out += strfmt("...(%zu bytes)", s.size());
  return out;
}

// ---- parser ------------------------------------------------------------------------------------

namespace {

constexpr uint64_t kMinKvBytes = 8 + 4 + 1;             // empty-key length, type, smallest value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // name length, n_dims, one dim, type, offset
constexpr uint64_t kReserveCap = 1 << 16;  // most we reserve on a count's word alone

struct Parsed {
  uint32_t version = 0;
  uint32_t alignment = kDefaultAlignment;
  uint64_t data_offset = 0;
  std::vector<KeyValue> kv;
  std::vector<TensorInfo> tensors;
  std::unordered_map<std::string, size_t> kv_index, tensor_index;
};

class Parser {
 public:
  Parser(const uint8_t* data, size_t size, const std::string& label) : p_(data), size_(size), label_(label) {}

  Parsed run() {
    Parsed r;
    parse_header(r);
    parse_metadata(r);
    parse_tensor_infos(r);
    place_tensors(r);
    return r;
  }

 private:
  // Every error names the file, then what was being read ("metadata 'x' item [3]"), then the defect.
  [[noreturn]] __attribute__((format(printf, 2, 3))) void bad(const char* fmt, ...) const {
    va_list ap;
    va_start(ap, fmt);
    std::string msg = vstrfmt(fmt, ap);
    va_end(ap);
    std::string where = ctx_;
    if (!path_.empty()) {
      where += " item ";
      for (uint64_t k : path_) where += strfmt("[%llu]", static_cast<unsigned long long>(k));
    }
    if (where.empty()) fail("%s: %s", label_.c_str(), msg.c_str());
    fail("%s: %s: %s", label_.c_str(), where.c_str(), msg.c_str());
  }

  size_t left() const { return size_ - pos_; }

  template <class T>
  T read(const char* what) {
    if (left() < sizeof(T))
      bad("truncated: %s at offset %zu needs %zu bytes, the file has %zu left", what, pos_, sizeof(T), left());
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string_view read_string(const char* what) {
    const size_t at = pos_;
    const uint64_t n = read<uint64_t>(what);
    if (n > left())
      bad("%s length %llu at offset %zu exceeds the %zu bytes left in the file", what,
          static_cast<unsigned long long>(n), at, left());
    std::string_view s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

  void count_values(uint64_t n) {
    if (n > kMaxMetadataValues - values_)
      bad("more than %llu metadata values in total; refusing to decode them",
          static_cast<unsigned long long>(kMaxMetadataValues));
    values_ += n;
  }

  void parse_header(Parsed& r) {
    if (size_ < 4) bad("too small to be a GGUF file (%zu bytes)", size_);
    const uint32_t magic = read<uint32_t>("magic");
    if (magic != kMagic)
      bad("not a GGUF file (starts with %s, expected \"GGUF\")",
          display_string(std::string_view(reinterpret_cast<const char*>(p_), 4)).c_str());
    const uint32_t version = read<uint32_t>("version");
    if (version == 1) bad("GGUF v1 is not supported (only v2 and v3)");
    if (version != 2 && version != 3) {
      const uint32_t swapped = __builtin_bswap32(version);
      if (swapped == 2 || swapped == 3) bad("big-endian GGUF v%u is not supported", swapped);
      bad("unsupported GGUF version %u (only v2 and v3)", version);
    }
    r.version = version;
    n_tensors_ = read<uint64_t>("tensor count");
    n_kv_ = read<uint64_t>("metadata key count");
    // Reject counts the file cannot possibly hold before reserving anything for them.
    if (n_kv_ > left() / kMinKvBytes)
      bad("header claims %llu metadata keys, but only %zu bytes follow", static_cast<unsigned long long>(n_kv_),
          left());
    if (n_tensors_ > left() / kMinTensorInfoBytes)
      bad("header claims %llu tensors, but only %zu bytes follow", static_cast<unsigned long long>(n_tensors_),
          left());
    if (n_kv_ * kMinKvBytes + n_tensors_ * kMinTensorInfoBytes > left())
      bad("header claims %llu metadata keys and %llu tensors, but only %zu bytes follow",
          static_cast<unsigned long long>(n_kv_), static_cast<unsigned long long>(n_tensors_), left());
  }

  void parse_value(ValueType t, int depth, Value& out) {
    out.type = t;
    switch (t) {
      case ValueType::U8: out.u = read<uint8_t>("u8 value"); break;
      case ValueType::I8: out.i = read<int8_t>("i8 value"); break;
      case ValueType::U16: out.u = read<uint16_t>("u16 value"); break;
      case ValueType::I16: out.i = read<int16_t>("i16 value"); break;
      case ValueType::U32: out.u = read<uint32_t>("u32 value"); break;
      case ValueType::I32: out.i = read<int32_t>("i32 value"); break;
      case ValueType::U64: out.u = read<uint64_t>("u64 value"); break;
      case ValueType::I64: out.i = read<int64_t>("i64 value"); break;
      case ValueType::F32: out.f = read<float>("f32 value"); break;
      case ValueType::F64: out.f = read<double>("f64 value"); break;
      case ValueType::BOOL: {
        const uint8_t b = read<uint8_t>("bool value");
        if (b > 1) bad("bool value %u is neither 0 nor 1", b);
        out.u = b;
        break;
      }
      case ValueType::STRING: out.s = std::string(read_string("string")); break;
      case ValueType::ARRAY: parse_array(depth, out); break;
    }
  }

  void parse_array(int depth, Value& out) {
    if (depth + 1 > kMaxArrayNesting) bad("arrays nested more than %d deep", kMaxArrayNesting);
    const uint32_t raw = read<uint32_t>("array item type");
    if (!valid_value_type(raw)) bad("unknown array item type %u", raw);
    const auto item = static_cast<ValueType>(raw);
    const uint64_t count = read<uint64_t>("array length");
    const uint64_t min = min_value_bytes(item);
    if (count > left() / min) {
      uint64_t need = 0;
      if (__builtin_mul_overflow(count, min, &need))
        bad("array of %llu %s items cannot fit in the %zu bytes left", static_cast<unsigned long long>(count),
            value_type_name(item), left());
      bad("array of %llu %s items needs at least %llu bytes, but only %zu are left",
          static_cast<unsigned long long>(count), value_type_name(item), static_cast<unsigned long long>(need), left());
    }
    count_values(count);
    out.item_type = item;
    // Grow as items are actually read, so a corrupt count in a large file costs memory only in
    // proportion to the bytes parsed before the error.
    out.items.reserve(static_cast<size_t>(std::min<uint64_t>(count, kReserveCap)));
    path_.push_back(0);
    for (uint64_t k = 0; k < count; ++k) {
      path_.back() = k;
      parse_value(item, depth + 1, out.items.emplace_back());
    }
    path_.pop_back();
  }

  void parse_metadata(Parsed& r) {
    r.kv.reserve(static_cast<size_t>(std::min<uint64_t>(n_kv_, kReserveCap)));
    for (uint64_t i = 0; i < n_kv_; ++i) {
      ctx_ = strfmt("metadata key #%llu", static_cast<unsigned long long>(i));
      std::string key(read_string("key"));
      if (key.empty()) bad("empty key");
      ctx_ = "metadata " + display_string(key, 96, '\'');
      const uint32_t raw = read<uint32_t>("value type");
      if (!valid_value_type(raw)) bad("unknown value type %u", raw);
      count_values(1);
      Value v;
      parse_value(static_cast<ValueType>(raw), 0, v);
      if (!r.kv_index.emplace(key, r.kv.size()).second) bad("duplicate key");
      r.kv.push_back(KeyValue{std::move(key), std::move(v)});
    }
    ctx_.clear();
    if (auto it = r.kv_index.find("general.alignment"); it != r.kv_index.end()) {
      const Value& a = r.kv[it->second].value;
      ctx_ = "metadata 'general.alignment'";
      if (a.type != ValueType::U32) bad("has type %s, expected u32", value_type_name(a.type));
      if (a.u == 0 || (a.u & (a.u - 1)) != 0)
        bad("%llu is not a non-zero power of two", static_cast<unsigned long long>(a.u));
      r.alignment = static_cast<uint32_t>(a.u);
      ctx_.clear();
    }
  }

  void parse_tensor_infos(Parsed& r) {
    r.tensors.reserve(static_cast<size_t>(std::min<uint64_t>(n_tensors_, kReserveCap)));
    for (uint64_t i = 0; i < n_tensors_; ++i) {
      ctx_ = strfmt("tensor #%llu", static_cast<unsigned long long>(i));
      TensorInfo t;
      t.name = std::string(read_string("tensor name"));
      if (t.name.empty()) bad("empty tensor name");
      ctx_ = "tensor " + display_string(t.name, 96, '\'');
      const uint32_t n_dims = read<uint32_t>("dimension count");
      if (n_dims < 1 || n_dims > static_cast<uint32_t>(kMaxDims))
        bad("has %u dimensions (must be 1..%d)", n_dims, kMaxDims);
      t.ne.resize(n_dims);
      int64_t nel = 1;
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t x = read<uint64_t>("dimension");
        if (x == 0) bad("dimension ne[%u] is 0", d);
        if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          bad("dimension ne[%u] = %llu is too large", d, static_cast<unsigned long long>(x));
        t.ne[d] = static_cast<int64_t>(x);
        if (__builtin_mul_overflow(nel, t.ne[d], &nel)) bad("element count overflows 64 bits");
      }
      const uint32_t raw_type = read<uint32_t>("ggml type");
      const auto ti = type_info(raw_type);
      if (!ti) bad("unknown ggml type %u", raw_type);
      t.type = ti->type;
      t.rel_offset = read<uint64_t>("data offset");
      if (t.ne[0] % ti->block_elems != 0)
        bad("ne[0] = %lld is not a multiple of the %s block size %u", static_cast<long long>(t.ne[0]), ti->name,
            ti->block_elems);
      const uint64_t blocks = static_cast<uint64_t>(nel) / ti->block_elems;
      if (__builtin_mul_overflow(blocks, uint64_t{ti->block_bytes}, &t.nbytes)) bad("byte size overflows 64 bits");
      if (!r.tensor_index.emplace(t.name, r.tensors.size()).second) bad("duplicate tensor name");
      r.tensors.push_back(std::move(t));
    }
    ctx_.clear();
  }

  void place_tensors(Parsed& r) {
    const uint64_t a = r.alignment;
    const uint64_t end = pos_;
    const uint64_t rem = end % a;
    r.data_offset = rem == 0 ? end : end + (a - rem);  // end <= file size, so this cannot wrap
    for (TensorInfo& t : r.tensors) {
      ctx_ = "tensor " + display_string(t.name, 96, '\'');
      if (t.rel_offset % a != 0)
        bad("data offset %llu is not a multiple of the alignment %u", static_cast<unsigned long long>(t.rel_offset),
            r.alignment);
      if (__builtin_add_overflow(r.data_offset, t.rel_offset, &t.offset))
        bad("data offset %llu overflows 64 bits", static_cast<unsigned long long>(t.rel_offset));
      if (t.offset > size_ || t.nbytes > size_ - t.offset)
        bad("points outside the file (offset %llu + %llu > size %zu)", static_cast<unsigned long long>(t.offset),
            static_cast<unsigned long long>(t.nbytes), size_);
    }
    ctx_.clear();
    // Tensors may come in any order, but no two may share bytes.
    std::vector<const TensorInfo*> order;
    order.reserve(r.tensors.size());
    for (const TensorInfo& t : r.tensors) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const TensorInfo* x, const TensorInfo* y) {
      return x->offset != y->offset ? x->offset < y->offset : x->name < y->name;
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const TensorInfo& prev = *order[k - 1];
      const TensorInfo& cur = *order[k];
      if (prev.offset + prev.nbytes > cur.offset)
        bad("tensor %s (bytes %llu..%llu) overlaps tensor %s (offset %llu)",
            display_string(prev.name, 96, '\'').c_str(), static_cast<unsigned long long>(prev.offset),
            static_cast<unsigned long long>(prev.offset + prev.nbytes), display_string(cur.name, 96, '\'').c_str(),
            static_cast<unsigned long long>(cur.offset));
    }
  }

  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& label_;
  uint64_t n_tensors_ = 0, n_kv_ = 0, values_ = 0;
  std::string ctx_;
  std::vector<uint64_t> path_;  // indices of the array items being read, outermost first
};

}  // namespace

// ---- File --------------------------------------------------------------------------------------

std::unique_ptr<File> File::open(const std::string& path) {
  std::unique_ptr<File> f(new File());
  f->map_ = MappedFile(path);
  f->base_ = f->map_.data();
  f->size_ = f->map_.size();
  f->label_ = path;
  f->parse_all();
  return f;
}

std::unique_ptr<File> File::parse(const uint8_t* data, size_t size, const std::string& label) {
  std::unique_ptr<File> f(new File());
  f->base_ = data;
  f->size_ = size;
  f->label_ = label;
  f->parse_all();
  return f;
}

void File::parse_all() {
  static const uint8_t kEmpty[1] = {0};
  Parsed r = Parser(base_ ? base_ : kEmpty, base_ ? size_ : 0, label_).run();
  version_ = r.version;
  alignment_ = r.alignment;
  data_offset_ = r.data_offset;
  kv_ = std::move(r.kv);
  tensors_ = std::move(r.tensors);
  kv_index_ = std::move(r.kv_index);
  tensor_index_ = std::move(r.tensor_index);
}

const Value* File::find(std::string_view key) const {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].value;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::optional<uint64_t> File::get_u64(std::string_view key) const {
  const Value* v = find(key);
  return v ? v->as_u64() : std::nullopt;
}

std::optional<double> File::get_f64(std::string_view key) const {
  const Value* v = find(key);
  return v ? v->as_f64() : std::nullopt;
}

std::optional<std::string> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v || v->type != ValueType::STRING) return std::nullopt;
  return v->s;
}

std::optional<bool> File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v || v->type != ValueType::BOOL) return std::nullopt;
  return v->u != 0;
}

}  // namespace flashstar::gguf
