// `flashstar inspect FILE [--tensors] [--json]`: what a GGUF file holds, for people (text) and scripts (JSON).
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "common/error.h"
#include "gguf/gguf.h"

namespace flashstar::tools {
namespace {

using gguf::Value;
using gguf::ValueType;
using ojson = nlohmann::ordered_json;

// Arrays in --json: numeric and bool arrays are listed in full up to kJsonNumericItems items, string
// and nested arrays up to kJsonOtherItems; longer ones list their first items and say "truncated": true.
constexpr size_t kJsonNumericItems = 4096;
constexpr size_t kJsonOtherItems = 64;

const char* kFooter =
    "Text output: header, one line per metadata key (long strings and arrays are abbreviated), and byte\n"
    "totals per tensor type; --tensors adds the tensor table (shape in GGML order, ne[0] first).\n"
    "--json prints one document: {file, version, alignment, tensor_count, kv_count, data_offset, file_size,\n"
    "metadata: {key: {type, value} or {type: \"array\", item_type, count, items, truncated}}, types: {name:\n"
    "{tensors, bytes, elements, supported}}, total: {tensors, bytes, elements}, tensors: [{name, type, type_id,\n"
    "shape, elements, bytes, offset}] (only with --tensors)}. Strings are complete; arrays of numbers or bools\n"
    "list up to 4096 items, arrays of strings or arrays up to 64, with \"truncated\": true when cut.";

// Shortest decimal that reads back as the same float (or double).
std::string shortest(double v, bool is_f32) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  if (v == std::trunc(v) && std::fabs(v) < 1e15) return strfmt("%.0f", v);  // "10", not "1e+01"
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    const double back = std::strtod(buf, nullptr);
    if (is_f32 ? static_cast<float>(back) == static_cast<float>(v) : back == v) break;
  }
  return buf;
}

std::string scalar_text(const Value& v, size_t max_string) {
  switch (v.type) {
    case ValueType::U8:
    case ValueType::U16:
    case ValueType::U32:
    case ValueType::U64: return std::to_string(v.u);
    case ValueType::I8:
    case ValueType::I16:
    case ValueType::I32:
    case ValueType::I64: return std::to_string(v.i);
    case ValueType::F32: return shortest(v.f, true);
    case ValueType::F64: return shortest(v.f, false);
    case ValueType::BOOL: return v.u ? "true" : "false";
    case ValueType::STRING: return gguf::display_string(v.s, max_string);
    case ValueType::ARRAY: break;
  }
  return "?";
}

// [array of string, 129280 items: "<s>", "</s>", ... ]
std::string array_text(const Value& v, int depth) {
  const bool wordy = v.item_type == ValueType::STRING || v.item_type == ValueType::ARRAY;
  size_t show = wordy ? 4 : 8;
  if (depth > 0) show = 3;
  std::string out = strfmt("[array of %s, %zu item%s", gguf::value_type_name(v.item_type), v.items.size(),
                           v.items.size() == 1 ? "" : "s");
  if (v.items.empty()) return out + "]";
  out += ": ";
  for (size_t k = 0; k < v.items.size() && k < show; ++k) {
    if (k) out += ", ";
    const Value& it = v.items[k];
    out += it.type == ValueType::ARRAY ? array_text(it, depth + 1) : scalar_text(it, 40);
  }
  out += v.items.size() > show ? ", ... ]" : "]";
  return out;
}

ojson scalar_json(const Value& v) {
  switch (v.type) {
    case ValueType::U8:
    case ValueType::U16:
    case ValueType::U32:
    case ValueType::U64: return v.u;
    case ValueType::I8:
    case ValueType::I16:
    case ValueType::I32:
    case ValueType::I64: return v.i;
    // NaN and infinities come out as null. An f32 is printed as its shortest decimal, not as the double.
    case ValueType::F32: return std::isfinite(v.f) ? std::strtod(shortest(v.f, true).c_str(), nullptr) : v.f;
    case ValueType::F64: return v.f;
    case ValueType::BOOL: return v.u != 0;
    case ValueType::STRING: return v.s;
    case ValueType::ARRAY: break;
  }
  return nullptr;
}

ojson array_json(const Value& v) {
  const bool wordy = v.item_type == ValueType::STRING || v.item_type == ValueType::ARRAY;
  const size_t limit = wordy ? kJsonOtherItems : kJsonNumericItems;
  ojson items = ojson::array();
  for (size_t k = 0; k < v.items.size() && k < limit; ++k) {
    const Value& it = v.items[k];
    items.push_back(it.type == ValueType::ARRAY ? array_json(it) : scalar_json(it));
  }
  ojson j;
  j["item_type"] = gguf::value_type_name(v.item_type);
  j["count"] = v.items.size();
  j["items"] = std::move(items);
  j["truncated"] = v.items.size() > limit;
  return j;
}

// Names are printed bare when they are plain printable ASCII, else quoted and escaped.
std::string name_text(std::string_view s, size_t max = 120) {
  bool plain = !s.empty() && s.size() <= max;
  for (char c : s) plain = plain && c > 0x20 && c < 0x7f;
  return plain ? std::string(s) : gguf::display_string(s, max, '\'');
}

std::string shape_text(const gguf::TensorInfo& t) {
  std::string s = "[";
  for (size_t d = 0; d < t.ne.size(); ++d) s += (d ? ", " : "") + std::to_string(t.ne[d]);
  return s + "]";
}

std::string bytes_text(uint64_t n) {
  if (n < (1u << 20)) return std::to_string(n);
  return strfmt("%" PRIu64 " (%.2f %s)", n, n >= (1ull << 30) ? n / 1073741824.0 : n / 1048576.0,
                n >= (1ull << 30) ? "GiB" : "MiB");
}

std::string params_text(uint64_t n) {
  if (n >= 1000000000ull) return strfmt("%.2f B", n / 1e9);
  if (n >= 1000000ull) return strfmt("%.2f M", n / 1e6);
  return std::to_string(n);
}

struct TypeTotal {
  uint64_t tensors = 0, bytes = 0, elements = 0;
};

struct Options {
  std::string file;
  bool tensors = false;
  bool json = false;
};

void run_inspect(const Options& o) {
  const auto f = gguf::File::open(o.file);
  std::map<uint32_t, TypeTotal> by_type;
  TypeTotal total;
  for (const auto& t : f->tensors()) {
    TypeTotal& tt = by_type[static_cast<uint32_t>(t.type)];
    const auto nel = static_cast<uint64_t>(t.nelements());
    for (TypeTotal* x : {&tt, &total}) {
      x->tensors += 1;
      x->bytes += t.nbytes;
      x->elements += nel;
    }
  }

  if (o.json) {
    ojson j;
    j["file"] = o.file;
    j["version"] = f->version();
    j["alignment"] = f->alignment();
    j["tensor_count"] = f->tensors().size();
    j["kv_count"] = f->metadata().size();
    j["data_offset"] = f->data_offset();
    j["file_size"] = f->size();
    ojson meta = ojson::object();
    for (const auto& kv : f->metadata()) {
      ojson e;
      e["type"] = gguf::value_type_name(kv.value.type);
      if (kv.value.type == ValueType::ARRAY)
        e.update(array_json(kv.value));
      else
        e["value"] = scalar_json(kv.value);
      meta[kv.key] = std::move(e);
    }
    j["metadata"] = std::move(meta);
    ojson types = ojson::object();
    for (const auto& [raw, tt] : by_type) {
      const auto& ti = type_info(static_cast<GgmlType>(raw));
      types[ti.name] = {{"tensors", tt.tensors}, {"bytes", tt.bytes}, {"elements", tt.elements},
                        {"supported", ti.supported}};
    }
    j["types"] = std::move(types);
    j["total"] = {{"tensors", total.tensors}, {"bytes", total.bytes}, {"elements", total.elements}};
    if (o.tensors) {
      ojson ts = ojson::array();
      for (const auto& t : f->tensors())
        ts.push_back({{"name", t.name},
                      {"type", type_name(t.type)},
                      {"type_id", static_cast<uint32_t>(t.type)},
                      {"shape", t.ne},
                      {"elements", t.nelements()},
                      {"bytes", t.nbytes},
                      {"offset", t.offset}});
      j["tensors"] = std::move(ts);
    }
    // Strings in a GGUF need not be UTF-8; replace bad bytes rather than fail halfway through output.
    const std::string doc = j.dump(2, ' ', false, ojson::error_handler_t::replace);
    std::printf("%s\n", doc.c_str());
    return;
  }

  std::printf("%s: GGUF v%u, %zu tensors, %zu metadata keys\n", name_text(o.file, 4096).c_str(),
              f->version(), f->tensors().size(), f->metadata().size());
  std::printf("  alignment    %u\n", f->alignment());
  std::printf("  data offset  %" PRIu64 "\n", f->data_offset());
  std::printf("  file size    %s bytes\n", bytes_text(f->size()).c_str());

  std::printf("\nmetadata:\n");
  size_t width = 0;
  std::vector<std::string> keys;
  for (const auto& kv : f->metadata()) {
    keys.push_back(name_text(kv.key));
    width = std::max(width, keys.back().size());
  }
  width = std::min<size_t>(width, 48);
  for (size_t i = 0; i < f->metadata().size(); ++i) {
    const Value& v = f->metadata()[i].value;
    const std::string text = v.type == ValueType::ARRAY ? array_text(v, 0) : scalar_text(v, 120);
    std::printf("  %-*s  %-6s  %s\n", static_cast<int>(width), keys[i].c_str(), gguf::value_type_name(v.type),
                text.c_str());
  }

  std::printf("\ntensor types:\n  %-8s  %8s  %s\n", "type", "tensors", "bytes");
  for (const auto& [raw, tt] : by_type) {
    const auto& ti = type_info(static_cast<GgmlType>(raw));
    std::printf("  %-8s  %8" PRIu64 "  %s%s\n", ti.name, tt.tensors, bytes_text(tt.bytes).c_str(),
                ti.supported ? "" : "  (not supported by this engine)");
  }
  std::printf("  %-8s  %8" PRIu64 "  %s, %s parameters\n", "total", total.tensors, bytes_text(total.bytes).c_str(),
              params_text(total.elements).c_str());

  if (o.tensors) {
    size_t nw = 4;
    for (const auto& t : f->tensors()) nw = std::max(nw, std::min<size_t>(t.name.size(), 64));
    std::printf("\ntensors:\n  %-*s  %-8s  %-28s  %14s  %14s\n", static_cast<int>(nw), "name", "type", "shape", "bytes",
                "offset");
    for (const auto& t : f->tensors()) {
      const std::string name = name_text(t.name);
      std::printf("  %-*s  %-8s  %-28s  %14" PRIu64 "  %14" PRIu64 "\n", static_cast<int>(nw), name.c_str(),
                  type_name(t.type), shape_text(t).c_str(), t.nbytes, t.offset);
    }
  }
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("inspect", "Print a GGUF file's header, metadata and tensor table");
  cmd->add_option("file", opts->file, "GGUF file")->required();
  cmd->add_flag("--tensors", opts->tensors, "List every tensor (name, type, shape, bytes, offset)");
  cmd->add_flag("--json", opts->json, "Print one JSON document instead of text");
  cmd->footer(kFooter);
  cmd->callback([opts] { run_inspect(*opts); });
}

}  // namespace flashstar::tools
