// Hostile GGUF files: ~1000 deterministic mutants of a valid file (truncations, byte flips, absurd counts,
// lengths, shapes, types, offsets, alignments, nesting). Each must parse or throw flashstar::Error with a
// one-line message; never another exception, a crash, a hang or a huge allocation. The flashstar binary
// must turn the same files into exit code 1 and one "flashstar: ..." line on stderr.
#include <gtest/gtest.h>

#include <cstring>
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "test_gguf_util.h"

using namespace flashstar;
using gguf::Value;
using gguf::ValueType;
using gguf_test::Bytes;
using gguf_test::peek;
using gguf_test::poke;
using gguf_test::TempDir;

namespace {

constexpr uint32_t kAlign = 64;  // not the default, so general.alignment is present to mutate

std::vector<uint8_t> make_base_file(const TempDir& dir) {
  const std::string path = dir.file("base.gguf");
  gguf::Writer w(path, kAlign);
  w.add_string("general.architecture", "deepseek4");
  w.add_u32("deepseek4.block_count", 43);
  w.add_bool("deepseek4.expert_weights_norm", true);
  w.add_f64("deepseek4.rope.freq_base", 10000.0);
  w.add_array_string("tokenizer.ggml.tokens", {"<s>", "</s>", "\xe2\x96\x81hello", "x"});
  w.add_array_u32("deepseek4.attention.compress_ratios", {0, 0, 4, 128});
  w.add_array_f32("deepseek4.swiglu_clamp_exp", {10.0f, 10.0f});
  w.add("test.nested", Value::of_array(ValueType::ARRAY,
                                       {Value::of_array(ValueType::I32, {Value::of_int(ValueType::I32, -1)}),
                                        Value::of_array(ValueType::I32, {})}));
  w.add_u8("dup.aaaa", 1);
  w.add_u8("dup.bbbb", 2);
  struct T {
    const char* name;
    GgmlType type;
    std::vector<int64_t> ne;
  };
  const std::vector<T> ts = {{"t.a", GgmlType::F32, {8, 2}},     {"t.b", GgmlType::Q8_0, {32, 2}},
                             {"tok.w", GgmlType::F16, {16}},      {"q2.w", GgmlType::Q2_K, {256}},
                             {"iq.w", GgmlType::IQ2_XXS, {256, 1}}, {"i.w", GgmlType::I32, {4}}};
  for (const auto& t : ts) w.add_tensor(t.name, t.type, t.ne);
  w.begin_data();
  for (size_t i = 0; i < ts.size(); ++i) {
    std::vector<uint8_t> buf(w.tensor_nbytes(i), static_cast<uint8_t>(0x10 + i));
    w.write_tensor(i, buf.data(), buf.size());
  }
  w.finish();
  return gguf_test::slurp(path);
}

// Where each field of a well-formed GGUF lives, found by an independent walk (not the reader under test).
struct Layout {
  std::vector<std::pair<size_t, uint64_t>> str_len;  // length field offset, length
  std::vector<size_t> value_type, item_type, bools, n_dims, dims, ggml_type, tensor_offset;
  std::vector<std::pair<size_t, uint64_t>> array_count;
  size_t alignment_value = 0, alignment_type = 0;
  size_t infos_end = 0, data_offset = 0;
};

Layout walk(const std::vector<uint8_t>& b) {
  Layout L;
  size_t pos = 24;
  auto str = [&]() {
    const uint64_t n = peek<uint64_t>(b, pos);
    L.str_len.emplace_back(pos, n);
    std::string s(reinterpret_cast<const char*>(b.data() + pos + 8), n);
    pos += 8 + n;
    return s;
  };
  std::function<void(uint32_t)> value = [&](uint32_t t) {
    switch (static_cast<ValueType>(t)) {
      case ValueType::U8:
      case ValueType::I8: pos += 1; break;
      case ValueType::BOOL: L.bools.push_back(pos); pos += 1; break;
      case ValueType::U16:
      case ValueType::I16: pos += 2; break;
      case ValueType::U32:
      case ValueType::I32:
      case ValueType::F32: pos += 4; break;
      case ValueType::U64:
      case ValueType::I64:
      case ValueType::F64: pos += 8; break;
      case ValueType::STRING: str(); break;
      case ValueType::ARRAY: {
        const uint32_t it = peek<uint32_t>(b, pos);
        L.item_type.push_back(pos);
        const uint64_t n = peek<uint64_t>(b, pos + 4);
        L.array_count.emplace_back(pos + 4, n);
        pos += 12;
        for (uint64_t k = 0; k < n; ++k) value(it);
        break;
      }
    }
  };
  const uint64_t n_tensors = peek<uint64_t>(b, 8), n_kv = peek<uint64_t>(b, 16);
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = str();
    const uint32_t t = peek<uint32_t>(b, pos);
    L.value_type.push_back(pos);
    pos += 4;
    if (key == "general.alignment") {
      L.alignment_type = pos - 4;
      L.alignment_value = pos;
    }
    value(t);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    str();
    const uint32_t nd = peek<uint32_t>(b, pos);
    L.n_dims.push_back(pos);
    pos += 4;
    for (uint32_t d = 0; d < nd; ++d) L.dims.push_back(pos + 8 * d);
    pos += 8 * nd;
    L.ggml_type.push_back(pos);
    L.tensor_offset.push_back(pos + 4);
    pos += 12;
  }
  L.infos_end = pos;
  L.data_offset = (pos + kAlign - 1) / kAlign * kAlign;
  return L;
}

struct Mutant {
  std::string what;
  std::vector<uint8_t> bytes;
  bool must_reject;
};

// A hand-built file whose only key is an array nested `depth` deep.
std::vector<uint8_t> nested_file(int depth) {
  Bytes b;
  b.u32(gguf::kMagic).u32(3).u64(0).u64(1).str("deep").u32(9);
  for (int d = 1; d < depth; ++d) b.u32(9).u64(1);
  b.u32(4).u64(1).u32(42);
  return b.b;
}

std::vector<Mutant> make_mutants(const std::vector<uint8_t>& base) {
  const Layout L = walk(base);
  std::vector<Mutant> out;
  auto with = [&](const std::string& what, bool must, auto&& edit) {
    std::vector<uint8_t> m = base;
    edit(m);
    out.push_back({what, std::move(m), must});
  };
  auto set32 = [&](const std::string& what, size_t off, uint32_t v, bool must) {
    with(what + "=" + std::to_string(v) + "@" + std::to_string(off), must, [&](auto& m) { poke<uint32_t>(m, off, v); });
  };
  auto set64 = [&](const std::string& what, size_t off, uint64_t v, bool must) {
    with(what + "=" + std::to_string(v) + "@" + std::to_string(off), must, [&](auto& m) { poke<uint64_t>(m, off, v); });
  };

  // Truncations: every length through the header region, then a stride through the data.
  const size_t last_end = base.size();  // the last tensor ends within the final alignment padding
  for (size_t n = 0; n <= L.data_offset; ++n)
    with("truncate " + std::to_string(n), true, [&](auto& m) { m.resize(n); });
  for (size_t n = L.data_offset + 1; n < last_end; n += 37)
    with("truncate " + std::to_string(n), false, [&](auto& m) { m.resize(n); });

  // Header fields.
  for (uint32_t v : std::initializer_list<uint32_t>{0u, 1u, 4u, 0x03000000u, 0xffffffffu}) set32("version", 4, v, true);
  set32("version", 4, 2, false);  // v2 has the same layout: parses
  for (uint32_t v : std::initializer_list<uint32_t>{0x46554746u, 0x47475546u, 0u}) set32("magic", 0, v, true);
  for (uint64_t v : std::initializer_list<uint64_t>{1ull << 63, ~0ull, 1ull << 32, 1ull << 40}) {
    set64("n_tensors", 8, v, true);
    set64("n_kv", 16, v, true);
  }
  for (uint64_t d : {1ull, 2ull, 1000ull}) {
    set64("n_tensors+", 8, peek<uint64_t>(base, 8) + d, false);
    set64("n_kv+", 16, peek<uint64_t>(base, 16) + d, false);
  }
  set64("n_kv", 16, 0, false);
  set64("n_tensors", 8, 0, false);

  const size_t left = base.size();
  for (auto [off, len] : L.str_len) {
    for (uint64_t v : std::initializer_list<uint64_t>{1ull << 60, ~0ull, 1ull << 63, static_cast<uint64_t>(left)}) set64("strlen", off, v, true);
    for (uint64_t v : std::initializer_list<uint64_t>{len + 1, len ? len - 1 : 7, 0ull}) set64("strlen", off, v, false);
  }
  for (size_t off : L.value_type)
    for (uint32_t v : std::initializer_list<uint32_t>{13u, 9999u, 0xffffffffu}) set32("value_type", off, v, true);
  for (size_t off : L.value_type)
    for (uint32_t v : std::initializer_list<uint32_t>{9u, 8u, 12u, 0u}) set32("value_type", off, v, false);
  for (size_t off : L.item_type) {
    for (uint32_t v : std::initializer_list<uint32_t>{13u, 0xffffffffu}) set32("item_type", off, v, true);
    for (uint32_t v : std::initializer_list<uint32_t>{9u, 8u, 0u, 10u}) set32("item_type", off, v, false);
  }
  for (auto [off, n] : L.array_count) {
    for (uint64_t v : std::initializer_list<uint64_t>{1ull << 40, ~0ull, 1ull << 62, (1ull << 61) + 1}) set64("array_count", off, v, true);
    for (uint64_t v : std::initializer_list<uint64_t>{n + 1, n ? n - 1 : 3, 0ull}) set64("array_count", off, v, false);
  }
  for (size_t off : L.bools)
    for (uint8_t v : {2, 0xff}) with("bool=" + std::to_string(v), true, [&](auto& m) { m[off] = v; });

  for (size_t off : L.n_dims) {
    for (uint32_t v : std::initializer_list<uint32_t>{0u, 9u, 0xffffffffu, 1u << 31}) set32("n_dims", off, v, true);
    set32("n_dims", off, peek<uint32_t>(base, off) + 1, false);
  }
  for (size_t off : L.dims) {
    for (uint64_t v : std::initializer_list<uint64_t>{0ull, 1ull << 63, ~0ull, 1ull << 40, 1ull << 32}) set64("dim", off, v, true);
    for (uint64_t v : std::initializer_list<uint64_t>{3ull, peek<uint64_t>(base, off) * 2}) set64("dim", off, v, false);
  }
  for (size_t off : L.ggml_type) {
    for (uint32_t v : std::initializer_list<uint32_t>{9999u, 4u, 5u, 31u, 0xffffffffu}) set32("ggml_type", off, v, true);
    for (uint32_t v : std::initializer_list<uint32_t>{0u, 1u, 8u, 10u, 28u}) set32("ggml_type", off, v, false);
  }
  for (size_t k = 0; k < L.tensor_offset.size(); ++k) {
    const size_t off = L.tensor_offset[k];
    const uint64_t rel = peek<uint64_t>(base, off);
    for (uint64_t v : std::initializer_list<uint64_t>{~0ull, 1ull << 63, static_cast<uint64_t>(base.size()), ~0ull - 63, rel + 1, rel + 32})
      set64("tensor_offset", off, v, true);
    if (k > 0) set64("tensor_offset(overlap)", off, peek<uint64_t>(base, L.tensor_offset[k - 1]), true);
  }
  for (uint32_t v : std::initializer_list<uint32_t>{0u, 3u, 0xffffffffu, 96u}) set32("alignment", L.alignment_value, v, true);
  for (uint32_t v : std::initializer_list<uint32_t>{1u, 16u, 32u, 128u, 1u << 31}) set32("alignment", L.alignment_value, v, false);
  set32("alignment_type", L.alignment_type, 5, true);  // i32 alignment is refused

  // Duplicates: rename the second key / tensor onto the first (same lengths).
  auto rename = [&](const char* from, const char* to) {
    with(std::string("rename ") + from, true, [&](auto& m) {
      auto it = std::search(m.begin(), m.end(), from, from + std::strlen(from));
      std::copy(to, to + std::strlen(to), it);
    });
  };
  rename("dup.bbbb", "dup.aaaa");
  rename("t.b", "t.a");

  // Nesting: the limit itself parses, anything deeper is refused without deep recursion.
  out.push_back({"nesting 8", nested_file(gguf::kMaxArrayNesting), false});
  for (int d : {gguf::kMaxArrayNesting + 1, 100, 5000}) out.push_back({"nesting " + std::to_string(d), nested_file(d), true});
  {
    Bytes b;  // a short file claiming a 2^60-byte key, then one claiming 2^40 array items
    b.u32(gguf::kMagic).u32(3).u64(0).u64(1).u64(1ull << 60);
    out.push_back({"huge key", b.b, true});
    Bytes c;
    c.u32(gguf::kMagic).u32(3).u64(0).u64(1).str("k").u32(9).u32(8).u64(1ull << 40).zeros(64);
    out.push_back({"huge array", c.b, true});
    Bytes d;  // every dimension 2^8: 8 dims multiply to 2^64
    d.u32(gguf::kMagic).u32(3).u64(1).u64(0).str("t").u32(8);
    for (int k = 0; k < 8; ++k) d.u64(256);
    d.u32(0).u64(0).pad_to(32).zeros(64);
    out.push_back({"dims product overflow", d.b, true});
  }

  // Random byte flips, mostly in the header region where they matter. Deterministic: raw mt19937 output.
  std::mt19937 rng(20240611);
  for (int k = 0; k < 300; ++k) {
    with("flip #" + std::to_string(k), false, [&](auto& m) {
      const int n = 1 + static_cast<int>(rng() % 3);
      for (int j = 0; j < n; ++j) {
        const size_t region = rng() % 8 == 0 ? m.size() : L.infos_end;
        m[rng() % region] ^= static_cast<uint8_t>(1 + rng() % 255);
      }
    });
  }
  return out;
}

// Parses one mutant from an exactly-sized heap copy (so ASan sees any overread). Returns true if rejected.
bool rejected(const Mutant& m) {
  std::unique_ptr<uint8_t[]> buf(new uint8_t[m.bytes.size()]);
  if (!m.bytes.empty()) std::memcpy(buf.get(), m.bytes.data(), m.bytes.size());
  try {
    const auto f = gguf::File::parse(buf.get(), m.bytes.size(), "mutant.gguf");
    unsigned sum = 0;
    for (const auto& t : f->tensors()) {
      EXPECT_LE(t.offset + t.nbytes, m.bytes.size()) << m.what;
      sum += f->tensor_data(t)[0] + f->tensor_data(t)[t.nbytes - 1];
    }
    for (const auto& kv : f->metadata()) sum += static_cast<unsigned>(kv.key.size() + kv.value.items.size());
    EXPECT_FALSE(m.must_reject) << m.what << " was accepted (checksum " << sum << ")";
    return false;
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (std::getenv("FLASHSTAR_TEST_VERBOSE")) std::printf("%-40s %s\n", m.what.c_str(), msg.c_str());
    EXPECT_EQ(msg.find_first_of("\n\r"), std::string::npos) << m.what << ": " << msg;
    EXPECT_EQ(msg.rfind("mutant.gguf: ", 0), 0u) << m.what << ": " << msg;
    EXPECT_GT(msg.size(), 14u) << m.what;
    EXPECT_LT(msg.size(), 600u) << m.what << ": " << msg;
    return true;
  } catch (const std::exception& e) {
    ADD_FAILURE() << m.what << ": non-flashstar exception: " << e.what();
  } catch (...) {
    ADD_FAILURE() << m.what << ": unknown exception";
  }
  return true;
}

}  // namespace

TEST(GgufHostile, BaseFileIsValid) {
  TempDir dir("gguf_hostile");
  const auto base = make_base_file(dir);
  const auto f = gguf::File::parse(base.data(), base.size(), "base.gguf");
  EXPECT_EQ(f->alignment(), kAlign);
  EXPECT_EQ(f->tensors().size(), 6u);
  EXPECT_EQ(walk(base).data_offset, f->data_offset());
  // A seed corpus for fuzz/fuzz_gguf: FLASHSTAR_GGUF_SEED_DIR=dir ./flashstar_tests --gtest_filter='GgufHostile.*'
  if (const char* seeds = std::getenv("FLASHSTAR_GGUF_SEED_DIR")) {
    gguf_test::spit(std::string(seeds) + "/base.gguf", base);
    gguf_test::spit(std::string(seeds) + "/nested8.gguf", nested_file(gguf::kMaxArrayNesting));
  }
}

TEST(GgufHostile, MutantsParseOrFailWithOneLine) {
  TempDir dir("gguf_hostile");
  const auto mutants = make_mutants(make_base_file(dir));
  size_t n_rejected = 0;
  std::map<std::string, std::pair<int, int>> by_kind;  // kind -> (rejected, total)
  for (const Mutant& m : mutants) {
    const bool r = rejected(m);
    n_rejected += r;
    auto& k = by_kind[m.what.substr(0, m.what.find_first_of("=# 0123456789"))];
    k.first += r;
    k.second += 1;
  }
  std::string summary;
  for (const auto& [k, v] : by_kind) summary += k + " " + std::to_string(v.first) + "/" + std::to_string(v.second) + "; ";
  std::printf("%zu mutants, %zu rejected: %s\n", mutants.size(), n_rejected, summary.c_str());
  EXPECT_GE(mutants.size(), 1000u);
  EXPECT_GE(n_rejected * 10, mutants.size() * 8) << summary;  // at least 80% rejected
}

// The binary must turn the same defects into exit code 1 and exactly one "flashstar: " line on stderr.
TEST(GgufHostile, InspectBinaryFailsCleanly) {
  TempDir dir("gguf_hostile_bin");
  const auto mutants = make_mutants(make_base_file(dir));
  std::vector<const Mutant*> picked;
  for (const Mutant& m : mutants)
    if (m.must_reject) picked.push_back(&m);
  ASSERT_GT(picked.size(), 20u);
  const size_t step = picked.size() / 20;
  for (size_t k = 0; k < 20; ++k) {
    const Mutant& m = *picked[k * step];
    const std::string path = dir.file(strfmt("m%zu.gguf", k));
    gguf_test::spit(path, m.bytes);
    const char* extra = k % 3 == 0 ? " --json --tensors" : (k % 3 == 1 ? " --tensors" : "");
    const auto r = gguf_test::run_flashstar("inspect '" + path + "'" + extra, path);
    EXPECT_EQ(r.exit_code, 1) << m.what << ": " << r.err;
    EXPECT_EQ(r.err.rfind("flashstar: ", 0), 0u) << m.what << ": " << r.err;
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.back(), '\n') << m.what;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << m.what << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << m.what << ": " << r.out;
  }
}

TEST(GgufInspect, TextAndJsonOfAValidFile) {
  TempDir dir("gguf_inspect");
  make_base_file(dir);
  const std::string path = dir.file("base.gguf");
  const auto text = gguf_test::run_flashstar("inspect '" + path + "' --tensors", path);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(text.err.empty()) << text.err;
  for (const char* want : {"GGUF v3", "alignment    64", "tokenizer.ggml.tokens", "[array of string, 4 items: \"<s>\"",
                           "deepseek4.block_count", "q2_K", "iq2_xxs", "[256, 1]", "total"})
    EXPECT_NE(text.out.find(want), std::string::npos) << want << "\n" << text.out;

  const auto js = gguf_test::run_flashstar("inspect '" + path + "' --json --tensors", path);
  ASSERT_EQ(js.exit_code, 0) << js.err;
  const auto j = nlohmann::json::parse(js.out);
  EXPECT_EQ(j["version"], 3);
  EXPECT_EQ(j["alignment"], 64);
  EXPECT_EQ(j["tensor_count"], 6);
  EXPECT_EQ(j["metadata"]["deepseek4.block_count"]["value"], 43);
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.tokens"]["count"], 4);
  EXPECT_EQ(j["metadata"]["tokenizer.ggml.tokens"]["items"][2], "\xe2\x96\x81hello");
  EXPECT_EQ(j["metadata"]["test.nested"]["items"][0]["items"][0], -1);
  ASSERT_EQ(j["tensors"].size(), 6u);
  EXPECT_EQ(j["tensors"][4]["name"], "iq.w");
  EXPECT_EQ(j["tensors"][4]["type"], "iq2_xxs");
  EXPECT_EQ(j["tensors"][4]["shape"], nlohmann::json({256, 1}));
  EXPECT_EQ(j["types"]["q8_0"]["bytes"], 68);

  const auto missing = gguf_test::run_flashstar("inspect '" + dir.file("nope.gguf") + "'", path);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err.rfind("flashstar: ", 0), 0u) << missing.err;
}
