// GGUF writer -> reader round trips, hand-built v2/v1 files, value semantics, writer misuse, inspect output.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "common/error.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "test_gguf_util.h"

using namespace flashstar;
using gguf::Value;
using gguf::ValueType;
using gguf_test::Bytes;
using gguf_test::TempDir;

namespace {

bool same_value(const Value& a, const Value& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case ValueType::U8:
    case ValueType::U16:
    case ValueType::U32:
    case ValueType::U64:
    case ValueType::BOOL: return a.u == b.u;
    case ValueType::I8:
    case ValueType::I16:
    case ValueType::I32:
    case ValueType::I64: return a.i == b.i;
    case ValueType::F32: return static_cast<float>(a.f) == static_cast<float>(b.f);
    case ValueType::F64: return a.f == b.f;
    case ValueType::STRING: return a.s == b.s;
    case ValueType::ARRAY:
      if (a.item_type != b.item_type || a.items.size() != b.items.size()) return false;
      for (size_t k = 0; k < a.items.size(); ++k)
        if (!same_value(a.items[k], b.items[k])) return false;
      return true;
  }
  return false;
}

Value nested(int depth) {  // depth arrays, innermost holds two u16
  if (depth == 1)
    return Value::of_array(ValueType::U16, {Value::of_uint(ValueType::U16, 7), Value::of_uint(ValueType::U16, 65535)});
  return Value::of_array(ValueType::ARRAY, {nested(depth - 1), nested(depth - 1)});
}

struct TensorSpec {
  const char* name;
  GgmlType type;
  std::vector<int64_t> ne;
};

const std::vector<TensorSpec> kTensors = {
    {"token_embd.weight", GgmlType::F16, {64, 10}},
    {"blk.0.attn_norm.weight", GgmlType::F32, {7}},
    {"blk.0.bf", GgmlType::BF16, {3, 2, 2}},
    {"blk.0.q8", GgmlType::Q8_0, {64, 3}},
    {"blk.0.ffn_down_exps.weight", GgmlType::Q2_K, {256, 2, 3}},
    {"blk.0.q4k", GgmlType::Q4_K, {512}},
    {"blk.0.ffn_gate_exps.weight", GgmlType::IQ2_XXS, {256, 1, 2}},
    {"blk.0.ffn_gate_tid2eid", GgmlType::I32, {6, 5}},
    {"odd.q5_0", GgmlType::Q5_0, {32}},  // a known type this engine does not compute with
};

}  // namespace

TEST(Gguf, ValueSemantics) {
  EXPECT_EQ(Value::of_uint(ValueType::U32, 7).as_u64(), 7u);
  EXPECT_EQ(Value::of_int(ValueType::I32, 7).as_u64(), 7u);
  EXPECT_FALSE(Value::of_int(ValueType::I8, -1).as_u64());
  EXPECT_EQ(Value::of_int(ValueType::I8, -1).as_i64(), -1);
  EXPECT_FALSE(Value::of_uint(ValueType::U64, ~0ull).as_i64());
  EXPECT_FALSE(Value::of_bool(true).as_u64());
  EXPECT_FALSE(Value::of_bool(true).as_f64());
  EXPECT_FALSE(Value::of_bool(true).is_integer());
  EXPECT_FALSE(Value::of_float(ValueType::F32, 1.0).as_u64());
  EXPECT_EQ(Value::of_float(ValueType::F32, 1.5).as_f64(), 1.5);
  EXPECT_EQ(Value::of_uint(ValueType::U16, 3).as_f64(), 3.0);
  EXPECT_EQ(Value::of_int(ValueType::I32, -3).as_f64(), -3.0);
  EXPECT_FALSE(Value::of_string("1").as_f64());
}

TEST(Gguf, DisplayStringEscapes) {
  EXPECT_EQ(gguf::display_string("ab"), "\"ab\"");
  EXPECT_EQ(gguf::display_string("a\nb\x01\xff"), "\"a\\nb\\x01\\xff\"");
  EXPECT_EQ(gguf::display_string("it's", 96, '\''), "'it\\'s'");
  EXPECT_EQ(gguf::display_string("\xe2\x96\x81x"), "\"\xe2\x96\x81x\"");  // valid UTF-8 kept
  EXPECT_EQ(gguf::display_string("\xe2\x96"), "\"\\xe2\\x96\"");           // cut sequence escaped
  EXPECT_EQ(gguf::display_string(std::string(10, 'a'), 4), "\"aaaa\"...(10 bytes)");
}

class GgufRoundTrip : public ::testing::TestWithParam<uint32_t> {};

TEST_P(GgufRoundTrip, EveryValueTypeAndTensorType) {
  const uint32_t align = GetParam();
  TempDir dir("gguf_rt");
  const std::string path = dir.file("rt.gguf");

  std::vector<std::pair<std::string, Value>> expect;
  {
    gguf::Writer w(path, align);
    auto add = [&](const std::string& k, const Value& v) {
      w.add(k, v);
      expect.emplace_back(k, v);
    };
    w.add_u8("t.u8", 255);
    expect.emplace_back("t.u8", Value::of_uint(ValueType::U8, 255));
    w.add_i8("t.i8", -128);
    expect.emplace_back("t.i8", Value::of_int(ValueType::I8, -128));
    w.add_u16("t.u16", 65535);
    expect.emplace_back("t.u16", Value::of_uint(ValueType::U16, 65535));
    w.add_i16("t.i16", -32768);
    expect.emplace_back("t.i16", Value::of_int(ValueType::I16, -32768));
    w.add_u32("t.u32", 0xffffffffu);
    expect.emplace_back("t.u32", Value::of_uint(ValueType::U32, 0xffffffffu));
    w.add_i32("t.i32", std::numeric_limits<int32_t>::min());
    expect.emplace_back("t.i32", Value::of_int(ValueType::I32, std::numeric_limits<int32_t>::min()));
    w.add_u64("t.u64", ~0ull);
    expect.emplace_back("t.u64", Value::of_uint(ValueType::U64, ~0ull));
    w.add_i64("t.i64", std::numeric_limits<int64_t>::min());
    expect.emplace_back("t.i64", Value::of_int(ValueType::I64, std::numeric_limits<int64_t>::min()));
    w.add_f32("t.f32", 1e-6f);
    expect.emplace_back("t.f32", Value::of_float(ValueType::F32, 1e-6f));
    w.add_f64("t.f64", M_PI);
    expect.emplace_back("t.f64", Value::of_float(ValueType::F64, M_PI));
    w.add_bool("t.true", true);
    expect.emplace_back("t.true", Value::of_bool(true));
    w.add_bool("t.false", false);
    expect.emplace_back("t.false", Value::of_bool(false));
    w.add_string("t.str", std::string("h\xc3\xa9llo\0world", 12));
    expect.emplace_back("t.str", Value::of_string(std::string("h\xc3\xa9llo\0world", 12)));
    w.add_string("t.empty", "");
    expect.emplace_back("t.empty", Value::of_string(""));
    const std::vector<std::string> toks = {"<s>", "</s>", "", "\xe2\x96\x81the", std::string(300, 'x')};
    w.add_array_string("tokenizer.ggml.tokens", toks);
    std::vector<Value> tv;
    for (const auto& s : toks) tv.push_back(Value::of_string(s));
    expect.emplace_back("tokenizer.ggml.tokens", Value::of_array(ValueType::STRING, tv));
    w.add_array_u32("t.arr_u32", {0, 0, 4, 128, 0xffffffffu});
    expect.emplace_back("t.arr_u32", Value::of_array(ValueType::U32, {Value::of_uint(ValueType::U32, 0),
                                                                       Value::of_uint(ValueType::U32, 0),
                                                                       Value::of_uint(ValueType::U32, 4),
                                                                       Value::of_uint(ValueType::U32, 128),
                                                                       Value::of_uint(ValueType::U32, 0xffffffffu)}));
    w.add_array_i32("t.arr_i32", {-1, 2});
    expect.emplace_back("t.arr_i32",
                        Value::of_array(ValueType::I32, {Value::of_int(ValueType::I32, -1), Value::of_int(ValueType::I32, 2)}));
    w.add_array_f32("t.arr_f32", {10.0f, -0.5f});
    expect.emplace_back("t.arr_f32", Value::of_array(ValueType::F32, {Value::of_float(ValueType::F32, 10.0),
                                                                       Value::of_float(ValueType::F32, -0.5)}));
    add("t.arr_u8", Value::of_array(ValueType::U8, {Value::of_uint(ValueType::U8, 1), Value::of_uint(ValueType::U8, 255)}));
    add("t.arr_i8", Value::of_array(ValueType::I8, {Value::of_int(ValueType::I8, -5)}));
    add("t.arr_i16", Value::of_array(ValueType::I16, {Value::of_int(ValueType::I16, -300)}));
    add("t.arr_u64", Value::of_array(ValueType::U64, {Value::of_uint(ValueType::U64, 1ull << 40)}));
    add("t.arr_i64", Value::of_array(ValueType::I64, {Value::of_int(ValueType::I64, -(1ll << 40))}));
    add("t.arr_f64", Value::of_array(ValueType::F64, {Value::of_float(ValueType::F64, 1e300)}));
    add("t.arr_bool", Value::of_array(ValueType::BOOL, {Value::of_bool(true), Value::of_bool(false)}));
    add("t.arr_empty", Value::of_array(ValueType::STRING, {}));
    add("t.nested2", nested(2));
    add("t.nested_max", nested(gguf::kMaxArrayNesting));
    for (const auto& t : kTensors) w.add_tensor(t.name, t.type, t.ne);
    w.begin_data();
    EXPECT_EQ(w.data_offset() % align, 0u);
    EXPECT_EQ(w.file_size() % align, 0u);

    // Tensor i's byte k is (i * 31 + k * 7) & 255; written in odd-sized pieces from several threads.
    std::vector<std::thread> threads;
    for (size_t i = 0; i < kTensors.size(); ++i) {
      threads.emplace_back([&w, i] {
        const uint64_t n = w.tensor_nbytes(i);
        std::vector<uint8_t> buf(n);
        for (uint64_t k = 0; k < n; ++k) buf[k] = static_cast<uint8_t>(i * 31 + k * 7);
        const uint64_t piece = 13;
        for (uint64_t off = n; off > 0;) {  // back to front, to exercise positional writes
          const uint64_t start = off > piece ? off - piece : 0;
          w.write_tensor(i, buf.data() + start, off - start, start);
          off = start;
        }
      });
    }
    for (auto& t : threads) t.join();
    w.finish();
  }
  if (align != gguf::kDefaultAlignment)
    expect.insert(expect.begin(), {"general.alignment", Value::of_uint(ValueType::U32, align)});

  const auto f = gguf::File::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), align);
  EXPECT_EQ(f->data_offset() % align, 0u);
  EXPECT_EQ(f->size() % align, 0u);
  ASSERT_EQ(f->metadata().size(), expect.size());
  for (size_t k = 0; k < expect.size(); ++k) {
    EXPECT_EQ(f->metadata()[k].key, expect[k].first);
    EXPECT_TRUE(same_value(f->metadata()[k].value, expect[k].second)) << expect[k].first;
    ASSERT_NE(f->find(expect[k].first), nullptr);
  }
  EXPECT_EQ(f->get_u64("t.u32"), 0xffffffffu);
  EXPECT_EQ(f->get_u64("t.i8"), std::nullopt);
  EXPECT_EQ(f->get_f64("t.u16"), 65535.0);
  EXPECT_EQ(f->get_f64("t.f32"), static_cast<double>(1e-6f));
  EXPECT_EQ(f->get_bool("t.true"), true);
  EXPECT_EQ(f->get_bool("t.u8"), std::nullopt);
  EXPECT_EQ(f->get_string("t.empty"), "");
  EXPECT_EQ(f->get_string("t.u8"), std::nullopt);
  EXPECT_EQ(f->find("missing"), nullptr);

  ASSERT_EQ(f->tensors().size(), kTensors.size());
  for (size_t i = 0; i < kTensors.size(); ++i) {
    const auto& t = f->tensors()[i];
    EXPECT_EQ(t.name, kTensors[i].name);
    EXPECT_EQ(t.type, kTensors[i].type);
    EXPECT_EQ(t.ne, kTensors[i].ne);
    EXPECT_EQ(t.offset % align, 0u);
    EXPECT_EQ(t.offset, f->data_offset() + t.rel_offset);
    const auto& ti = type_info(t.type);
    EXPECT_EQ(t.nbytes, static_cast<uint64_t>(t.nelements() / ti.block_elems) * ti.block_bytes);
    EXPECT_EQ(f->find_tensor(t.name), &t);
    const uint8_t* d = f->tensor_data(t);
    for (uint64_t k = 0; k < t.nbytes; ++k)
      ASSERT_EQ(d[k], static_cast<uint8_t>(i * 31 + k * 7)) << t.name << " byte " << k;
  }
  EXPECT_EQ(f->find_tensor("nope"), nullptr);

  // The same bytes parse identically from memory.
  const auto bytes = gguf_test::slurp(path);
  const auto g = gguf::File::parse(bytes.data(), bytes.size(), "mem");
  EXPECT_EQ(g->tensors().size(), kTensors.size());
  EXPECT_EQ(g->data_offset(), f->data_offset());
}

INSTANTIATE_TEST_SUITE_P(Alignments, GgufRoundTrip, ::testing::Values(32u, 64u, 1u, 4096u));

TEST(Gguf, EmptyFileRoundTrip) {
  TempDir dir("gguf_empty");
  const std::string path = dir.file("e.gguf");
  gguf::Writer w(path);
  w.begin_data();
  w.finish();
  const auto f = gguf::File::open(path);
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_TRUE(f->tensors().empty());
}

// A GGUF v2 file has the v3 layout (64-bit counts and lengths); only the version number differs.
TEST(Gguf, ReadsHandBuiltV2) {
  Bytes b;
  b.u32(gguf::kMagic).u32(2).u64(2).u64(3);
  b.str("general.architecture").u32(8).str("deepseek4");
  b.str("v2.count").u32(10).u64(123456789012ull);
  b.str("v2.list").u32(9).u32(8).u64(2).str("a").str("bc");
  b.str("first").u32(2).u64(4).u64(2).u32(0).u64(0);  // f32 [4, 2] at 0
  b.str("second").u32(1).u64(32).u32(8).u64(32);  // q8_0 [32] at 32
  b.pad_to(32);
  const size_t data = b.b.size();
  for (int k = 0; k < 16; ++k) b.put<float>(static_cast<float>(k));
  b.zeros(34).pad_to(32);
  const auto f = gguf::File::parse(b.b.data(), b.b.size(), "v2.gguf");
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->get_string("general.architecture"), "deepseek4");
  EXPECT_EQ(f->get_u64("v2.count"), 123456789012ull);
  ASSERT_EQ(f->find("v2.list")->items.size(), 2u);
  EXPECT_EQ(f->find("v2.list")->items[1].s, "bc");
  EXPECT_EQ(f->data_offset(), data);
  const auto* t = f->find_tensor("first");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->ne, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(t->nbytes, 32u);
  float x;
  std::memcpy(&x, f->tensor_data(*t) + 12, 4);
  EXPECT_EQ(x, 3.0f);
  EXPECT_EQ(f->find_tensor("second")->offset, data + 32);
}

TEST(Gguf, RejectsV1AndBigEndianClearly) {
  for (auto [ver, want] : std::vector<std::pair<uint32_t, std::string>>{
           {1, "v1 is not supported"}, {0x03000000u, "big-endian"}, {4, "unsupported GGUF version 4"}}) {
    Bytes b;
    b.u32(gguf::kMagic).u32(ver).u64(0).u64(0);
    try {
      gguf::File::parse(b.b.data(), b.b.size(), "old.gguf");
      ADD_FAILURE() << "accepted version " << ver;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("old.gguf: ", 0), 0u) << e.what();
    }
  }
}

TEST(Gguf, ErrorsNameTheFileAndTheTensor) {
  Bytes b;
  b.u32(gguf::kMagic).u32(3).u64(1).u64(0);
  b.str("blk.0.attn_q_a.weight").u32(1).u64(64).u32(0).u64(0);
  b.pad_to(32).zeros(100);
  try {
    gguf::File::parse(b.b.data(), b.b.size(), "model.gguf");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "model.gguf: tensor 'blk.0.attn_q_a.weight': points outside the file (offset 96 + 256 > size 196)");
  }
}

TEST(Gguf, OpenMissingFileFails) {
  EXPECT_THROW(gguf::File::open("/nonexistent/dir/x.gguf"), Error);
}

TEST(Gguf, WriterRefusesMisuse) {
  TempDir dir("gguf_misuse");
  const std::string path = dir.file("m.gguf");
  EXPECT_THROW(gguf::Writer(path, 0), Error);
  EXPECT_THROW(gguf::Writer(path, 48), Error);
  {
    gguf::Writer w(path);
    w.add_u32("a", 1);
    EXPECT_THROW(w.add_u32("a", 2), Error);
    EXPECT_THROW(w.add_u32("", 2), Error);
    EXPECT_THROW(w.add("b", Value::of_uint(ValueType::U8, 256)), Error);
    EXPECT_THROW(w.add("b", Value::of_array(ValueType::U32, {Value::of_int(ValueType::I32, 1)})), Error);
    EXPECT_THROW(w.add("b", nested(gguf::kMaxArrayNesting + 1)), Error);
    EXPECT_THROW(w.add_u32("general.alignment", 64), Error);
    EXPECT_THROW(w.add_tensor("q", GgmlType::Q8_0, {33}), Error);
    EXPECT_THROW(w.add_tensor("q", GgmlType::F32, {}), Error);
    EXPECT_THROW(w.add_tensor("q", GgmlType::F32, {1, 1, 1, 1, 1, 1, 1, 1, 1}), Error);
    EXPECT_THROW(w.add_tensor("q", GgmlType::F32, {4, 0}), Error);
    EXPECT_THROW(w.add_tensor("q", GgmlType::F32, {1ll << 40, 1ll << 40}), Error);
    EXPECT_THROW(w.add_tensor("q", static_cast<GgmlType>(9999), {4}), Error);
    const size_t t = w.add_tensor("t", GgmlType::F32, {4});
    EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {4}), Error);
    EXPECT_THROW(w.finish(), Error);
    w.begin_data();
    EXPECT_THROW(w.add_u32("late", 1), Error);
    float x[5] = {};
    EXPECT_THROW(w.write_tensor(t, x, 20), Error);
    EXPECT_THROW(w.write_tensor(t, x, 4, 16), Error);
    EXPECT_THROW(w.write_tensor(7, x, 4), Error);
    w.write_tensor(t, x, 8);
    EXPECT_THROW(w.finish(), Error);  // half the tensor never written
  }
  EXPECT_FALSE(std::filesystem::exists(path));  // nothing half-written left behind
}

// Offsets past 4 GiB: the writer's layout arithmetic, and the reader on a sparse file (no real disk use).
TEST(Gguf, OffsetsBeyond4GiB) {
  TempDir dir("gguf_big");
  {
    gguf::Writer w(dir.file("never.gguf"));
    const size_t a = w.add_tensor("a", GgmlType::I32, {1ll << 30, 2});  // 8 GiB
    w.add_tensor("b", GgmlType::F32, {8});
    w.begin_data();
    EXPECT_EQ(w.tensor_nbytes(a), 8ull << 30);
    EXPECT_EQ(w.file_size(), w.data_offset() + (8ull << 30) + 32);
    const uint32_t tail = 0xdeadbeef;
    w.write_tensor(a, &tail, 4, w.tensor_nbytes(a) - 4);  // pwrite lands past 4 GiB
  }  // never finished: the temp file is removed
  EXPECT_FALSE(std::filesystem::exists(dir.file("never.gguf")));

  Bytes b;
  b.u32(gguf::kMagic).u32(3).u64(2).u64(0);
  b.str("a").u32(2).u64(1ull << 30).u64(2).u32(26).u64(0);
  b.str("b").u32(1).u64(8).u32(0).u64(8ull << 30);
  b.pad_to(32);
  const uint64_t data = b.b.size();
  const std::string path = dir.file("sparse.gguf");
  gguf_test::spit(path, b.b);
  {
    std::filesystem::resize_file(path, data + (8ull << 30) + 32);
    FILE* fp = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(fp, nullptr);
    const float v = 42.5f;
    ASSERT_EQ(fseeko(fp, static_cast<off_t>(data + (8ull << 30) + 4), SEEK_SET), 0);
    std::fwrite(&v, 4, 1, fp);
    std::fclose(fp);
  }
  const auto f = gguf::File::open(path);
  const auto* tb = f->find_tensor("b");
  ASSERT_NE(tb, nullptr);
  EXPECT_EQ(tb->offset, data + (8ull << 30));
  float got;
  std::memcpy(&got, f->tensor_data(*tb) + 4, 4);
  EXPECT_EQ(got, 42.5f);
}

// The decoded-value budget is checked against an array's count before any item is decoded.
TEST(Gguf, RefusesMoreMetadataValuesThanTheCap) {
  Bytes b;
  b.u32(gguf::kMagic).u32(3).u64(0).u64(1).str("big").u32(9).u32(0).u64(gguf::kMaxMetadataValues + 1);
  b.zeros(static_cast<size_t>(gguf::kMaxMetadataValues) + 1);
  try {
    gguf::File::parse(b.b.data(), b.b.size(), "big.gguf");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metadata values in total"), std::string::npos) << e.what();
  }
  b.b.resize(b.b.size() - 2);  // one item fewer than the header says: now a plain truncation
  EXPECT_THROW(gguf::File::parse(b.b.data(), b.b.size(), "big.gguf"), Error);
}

// Names from the file reach the message escaped and shortened, never as raw control bytes.
TEST(Gguf, HostileNamesAreEscapedInErrors) {
  Bytes b;
  b.u32(gguf::kMagic).u32(3).u64(1).u64(0);
  b.str("evil\n\x1b[31m" + std::string(500, 'x')).u32(1).u64(4).u32(0).u64(0);
  b.pad_to(32);
  try {
    gguf::File::parse(b.b.data(), b.b.size(), "evil.gguf");
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find_first_of("\n\x1b"), std::string::npos) << m;
    EXPECT_NE(m.find("evil\\n\\x1b[31m"), std::string::npos) << m;
    EXPECT_LT(m.size(), 300u) << m;
  }
}
