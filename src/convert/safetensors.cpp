#include "convert/safetensors.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/half.h"

namespace flashstar::convert {
namespace {

struct DtypeRow {
  StDtype t;
  const char* name;
  size_t size;
};
constexpr DtypeRow kDtypes[] = {
    {StDtype::BOOL, "BOOL", 1},       {StDtype::U8, "U8", 1},           {StDtype::I8, "I8", 1},
    {StDtype::U16, "U16", 2},         {StDtype::I16, "I16", 2},         {StDtype::U32, "U32", 4},
    {StDtype::I32, "I32", 4},         {StDtype::U64, "U64", 8},         {StDtype::I64, "I64", 8},
    {StDtype::F16, "F16", 2},         {StDtype::BF16, "BF16", 2},       {StDtype::F32, "F32", 4},
    {StDtype::F64, "F64", 8},         {StDtype::F8_E4M3, "F8_E4M3", 1}, {StDtype::F8_E5M2, "F8_E5M2", 1},
    {StDtype::F8_E8M0, "F8_E8M0", 1},
};

// The format's own cap on the JSON header; also keeps a hostile length from driving a huge parse.
constexpr uint64_t kMaxHeader = 100ull << 20;

bool is_regular_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool is_directory(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

const char* st_dtype_name(StDtype t) {
  for (const auto& r : kDtypes)
    if (r.t == t) return r.name;
  return "unknown";
}
size_t st_dtype_size(StDtype t) {
  for (const auto& r : kDtypes)
    if (r.t == t) return r.size;
  return 0;
}
StDtype st_dtype_from_name(const std::string& s) {
  for (const auto& r : kDtypes)
    if (s == r.name) return r.t;
  return StDtype::Unknown;
}

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->map_ = MappedFile(path);
  f->base_ = f->map_.data();
  f->size_ = f->map_.size();
  f->label_ = path;
  f->parse_header();
  return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(const uint8_t* data, size_t size, const std::string& label) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->base_ = data;
  f->size_ = size;
  f->label_ = label;
  f->parse_header();
  return f;
}

void SafetensorsFile::parse_header() {
  const char* L = label_.c_str();
  if (size_ < 8) fail("%s: not a safetensors file (%zu bytes, need at least 8)", L, size_);
  const uint64_t hlen = load<uint64_t>(base_);
  if (hlen > kMaxHeader) fail("%s: header length %llu exceeds the 100 MiB limit", L, (unsigned long long)hlen);
  if (hlen > size_ - 8)
    fail("%s: header length %llu runs past the end of the file (%zu bytes)", L, (unsigned long long)hlen, size_);
  const uint64_t data_start = 8 + hlen, data_size = size_ - data_start;
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(base_ + 8, base_ + data_start);
  } catch (const nlohmann::json::exception& e) {
    fail("%s: header is not valid JSON (%s)", L, e.what());
  }
  if (!h.is_object()) fail("%s: header is not a JSON object", L);

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const char* N = name.c_str();
    const auto& e = it.value();
    if (!e.is_object()) fail("%s: tensor %s: header entry is not an object", L, N);
    StTensor t;
    t.name = name;
    t.file = label_;
    auto dt = e.find("dtype");
    if (dt == e.end() || !dt->is_string()) fail("%s: tensor %s: missing dtype", L, N);
    t.dtype_name = dt->get<std::string>();
    t.dtype = st_dtype_from_name(t.dtype_name);
    auto sh = e.find("shape");
    if (sh == e.end() || !sh->is_array() || sh->size() > 8) fail("%s: tensor %s: missing or bad shape", L, N);
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        fail("%s: tensor %s: shape holds a non-integer or negative dimension", L, N);
      const uint64_t v = d.get<uint64_t>();
      if (v > (1ull << 40)) fail("%s: tensor %s: dimension %llu is implausibly large", L, N, (unsigned long long)v);
      if (v != 0 && numel > UINT64_MAX / v) overflow = true;
      numel *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    auto off = e.find("data_offsets");
    if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail("%s: tensor %s: missing or bad data_offsets", L, N);
    const uint64_t b = (*off)[0].get<uint64_t>(), en = (*off)[1].get<uint64_t>();
    if (b > en || en > data_size)
      fail("%s: tensor %s: data_offsets [%llu, %llu] lie outside the data section (%llu bytes)", L, N,
           (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_size);
    const size_t es = st_dtype_size(t.dtype);
    if (es != 0 && (overflow || numel > UINT64_MAX / es || numel * es != en - b))
      fail("%s: tensor %s: %llu bytes stored but shape and dtype %s need %llu", L, N, (unsigned long long)(en - b),
           t.dtype_name.c_str(), (unsigned long long)(numel * es));
    t.data = base_ + data_start + b;
    t.nbytes = en - b;
    if (en > b) ranges.emplace_back(b, en);
    tensors_.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail("%s: tensor data ranges overlap", L);
}

int64_t SourceTensor::row_len() const { return shape().empty() ? 1 : shape().back(); }
int64_t SourceTensor::n_rows() const {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < shape().size(); ++i) n *= shape()[i];
  return n;
}

bool PlainTensor::is_integer() const {
  switch (t_.dtype) {
    case StDtype::U8: case StDtype::I8: case StDtype::U16: case StDtype::I16:
    case StDtype::U32: case StDtype::I32: case StDtype::I64: case StDtype::U64:
      return true;
    default:
      return false;
  }
}

void PlainTensor::read_rows_f32(int64_t row0, int64_t n, float* dst) const {
  const int64_t rl = row_len();
  if (row0 < 0 || n < 0 || row0 + n > n_rows()) fail("%s: row range out of bounds", t_.name.c_str());
  const uint64_t first = static_cast<uint64_t>(row0 * rl), count = static_cast<uint64_t>(n * rl);
  const uint8_t* p = t_.data + first * st_dtype_size(t_.dtype);
  switch (t_.dtype) {
    case StDtype::F32:
      std::memcpy(dst, p, count * 4);
      return;
    case StDtype::BF16:
      for (uint64_t i = 0; i < count; ++i) dst[i] = bf16_to_f32(load<uint16_t>(p + 2 * i));
      return;
    case StDtype::F16:
      for (uint64_t i = 0; i < count; ++i) dst[i] = f16_to_f32(load<uint16_t>(p + 2 * i));
      return;
    case StDtype::F64:
      for (uint64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(load<double>(p + 8 * i));
      return;
    default:
      // FP8/FP4 sources need their block scales: they get their own SourceTensor (see the header).
      fail("%s (%s): dtype %s cannot be read as float%s", t_.name.c_str(), t_.file.c_str(), t_.dtype_name.c_str(),
           (t_.dtype == StDtype::F8_E4M3 || t_.dtype == StDtype::I8) ? " (block-scaled FP8/FP4 is not supported yet)"
                                                                      : "");
  }
}

void PlainTensor::read_ints(std::vector<int64_t>& out) const {
  const uint64_t n = static_cast<uint64_t>(t_.numel());
  out.resize(n);
  const uint8_t* p = t_.data;
  switch (t_.dtype) {
    case StDtype::I64: for (uint64_t i = 0; i < n; ++i) out[i] = load<int64_t>(p + 8 * i); return;
    case StDtype::I32: for (uint64_t i = 0; i < n; ++i) out[i] = load<int32_t>(p + 4 * i); return;
    case StDtype::I16: for (uint64_t i = 0; i < n; ++i) out[i] = load<int16_t>(p + 2 * i); return;
    case StDtype::I8: for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<int8_t>(p[i]); return;
    case StDtype::U8: for (uint64_t i = 0; i < n; ++i) out[i] = p[i]; return;
    case StDtype::U16: for (uint64_t i = 0; i < n; ++i) out[i] = load<uint16_t>(p + 2 * i); return;
    case StDtype::U32: for (uint64_t i = 0; i < n; ++i) out[i] = load<uint32_t>(p + 4 * i); return;
    case StDtype::U64:
      for (uint64_t i = 0; i < n; ++i) {
        const uint64_t v = load<uint64_t>(p + 8 * i);
        if (v > static_cast<uint64_t>(INT64_MAX)) fail("%s: value %llu out of range", t_.name.c_str(), (unsigned long long)v);
        out[i] = static_cast<int64_t>(v);
      }
      return;
    default:
      fail("%s (%s): dtype %s is not an integer type", t_.name.c_str(), t_.file.c_str(), t_.dtype_name.c_str());
  }
}

void Checkpoint::add_file(std::unique_ptr<SafetensorsFile> f) {
  for (const StTensor& t : f->tensors()) {
    auto [it, fresh] = index_.emplace(t.name, &t);
    if (!fresh) fail("%s: tensor %s is also stored in %s", f->path().c_str(), t.name.c_str(), it->second->file.c_str());
  }
  files_.push_back(std::move(f));
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string& dir_or_file) {
  std::unique_ptr<Checkpoint> ck(new Checkpoint());
  if (is_regular_file(dir_or_file)) {
    ck->add_file(SafetensorsFile::open(dir_or_file));
    return ck;
  }
  if (!is_directory(dir_or_file)) fail("%s: no such checkpoint directory or file", dir_or_file.c_str());
  const std::string dir = dir_or_file;
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (is_regular_file(index_path)) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file(index_path));
    } catch (const nlohmann::json::exception& e) {
      fail("%s: not valid JSON (%s)", index_path.c_str(), e.what());
    }
    auto wm = j.find("weight_map");
    if (!j.is_object() || wm == j.end() || !wm->is_object()) fail("%s: missing weight_map object", index_path.c_str());
    std::map<std::string, std::vector<std::string>> by_shard;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string()) fail("%s: weight_map entry %s is not a string", index_path.c_str(), it.key().c_str());
      const std::string shard = it.value().get<std::string>();
      // Shards are siblings of the index; a path component would let an index point anywhere.
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        fail("%s: weight_map names an invalid shard file '%s'", index_path.c_str(), shard.c_str());
      by_shard[shard].push_back(it.key());
    }
    if (by_shard.empty()) fail("%s: weight_map is empty", index_path.c_str());
    for (const auto& [shard, names] : by_shard) {
      auto f = SafetensorsFile::open(dir + "/" + shard);
      std::map<std::string, int> have;
      for (const StTensor& t : f->tensors()) have[t.name] = 1;
      for (const std::string& n : names)
        if (!have.count(n)) fail("%s: index lists %s in %s, which does not hold it", index_path.c_str(), n.c_str(), shard.c_str());
      ck->add_file(std::move(f));
    }
    return ck;
  }
  if (is_regular_file(dir + "/model.safetensors")) {
    ck->add_file(SafetensorsFile::open(dir + "/model.safetensors"));
    return ck;
  }
  // Otherwise accept exactly one *.safetensors file in the directory.
  std::vector<std::string> found;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) found.push_back(n);
    }
    ::closedir(d);
  }
  if (found.size() != 1)
    fail("%s: no model.safetensors.index.json or model.safetensors (found %zu other .safetensors files)", dir.c_str(),
         found.size());
  ck->add_file(SafetensorsFile::open(dir + "/" + found[0]));
  return ck;
}

const StTensor* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> r;
  r.reserve(index_.size());
  for (const auto& [n, t] : index_) r.push_back(n);
  return r;
}

std::unique_ptr<SourceTensor> Checkpoint::source(const std::string& name) const {
  const StTensor* t = find(name);
  if (!t) fail("checkpoint has no tensor %s", name.c_str());
  switch (t->dtype) {
    case StDtype::F8_E4M3:
    case StDtype::F8_E5M2:
    case StDtype::F8_E8M0:
      // Extension point: pair the weight with its `.scale` / `weight_scale_inv` companion here.
      fail("%s (%s): dtype %s (block-scaled FP8) is not supported yet", name.c_str(), t->file.c_str(),
           t->dtype_name.c_str());
    case StDtype::Unknown:
    case StDtype::BOOL:
      fail("%s (%s): unsupported dtype %s", name.c_str(), t->file.c_str(), t->dtype_name.c_str());
    default:
      return std::make_unique<PlainTensor>(*t);
  }
}

}  // namespace flashstar::convert
