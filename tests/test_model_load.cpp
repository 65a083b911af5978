// Model binding: a file with a missing tensor, a misshapen or mistyped tensor, a bad expert id or a
// broken configuration is refused with one line naming what is wrong.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>

#include "common/error.h"
#include "gguf/gguf.h"
#include "gguf/writer.h"
#include "model/weights.h"
#include "test_models.h"

using namespace flashstar;

namespace {

const std::string& tiny() { return test_models::synth_tiny_model(FLASHSTAR_BINARY, 2); }

// Copies the tiny model, letting `edit` drop (return false) or change a tensor's declaration, and
// `edit_kv` change metadata.
std::string rewrite(const std::string& tag,
                    const std::function<bool(std::string&, GgmlType&, std::vector<int64_t>&)>& edit,
                    const std::function<void(std::string&, gguf::Value&)>& edit_kv = nullptr,
                    const std::function<void(const std::string&, std::vector<uint8_t>&)>& edit_data = nullptr) {
  auto src = gguf::File::open(tiny());
  const std::string out = tiny() + "." + tag + ".gguf";
  gguf::Writer w(out);
  for (const auto& kv : src->metadata()) {
    if (kv.key == "general.alignment") continue;
    std::string key = kv.key;
    gguf::Value v = kv.value;
    if (edit_kv) edit_kv(key, v);
    w.add(key, v);
  }
  std::vector<const gguf::TensorInfo*> kept;
  for (const auto& t : src->tensors()) {
    std::string name = t.name;
    GgmlType type = t.type;
    std::vector<int64_t> ne = t.ne;
    if (!edit(name, type, ne)) continue;
    w.add_tensor(name, type, ne);
    kept.push_back(&t);
  }
  w.begin_data();
  for (size_t i = 0; i < kept.size(); ++i) {
    std::vector<uint8_t> bytes(w.tensor_nbytes(i), 0);
    std::memcpy(bytes.data(), src->tensor_data(*kept[i]), std::min<size_t>(bytes.size(), kept[i]->nbytes));
    if (edit_data) edit_data(kept[i]->name, bytes);
    w.write_tensor(i, bytes.data(), bytes.size());
  }
  w.finish();
  return out;
}

void expect_refused(const std::string& path, const std::string& needle) {
  try {
    Model::load(path);
    ADD_FAILURE() << "loaded " << path;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
  std::filesystem::remove(path);
}

class ModelLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    if (tiny().empty()) GTEST_SKIP() << "flashstar synth failed";
  }
};

}  // namespace

TEST_F(ModelLoad, TheSyntheticModelLoads) {
  auto m = Model::load(tiny());
  EXPECT_EQ(m->layers.size(), m->config().n_layer);
}

TEST_F(ModelLoad, MissingTensorIsNamed) {
  expect_refused(rewrite("missing", [](std::string& n, GgmlType&, std::vector<int64_t>&) {
                   return n != "blk.3.attn_kv.weight";
                 }),
                 "missing tensor blk.3.attn_kv.weight");
}

TEST_F(ModelLoad, WrongShapeIsNamed) {
  expect_refused(rewrite("shape", [](std::string& n, GgmlType&, std::vector<int64_t>& ne) {
                   if (n == "blk.1.attn_q_a.weight") ne[1] += 32;
                   return true;
                 }),
                 "blk.1.attn_q_a.weight has shape");
}

TEST_F(ModelLoad, WrongTypeIsNamed) {
  expect_refused(rewrite("type", [](std::string& n, GgmlType& t, std::vector<int64_t>&) {
                   if (n == "blk.0.attn_q_a.weight") t = GgmlType::Q4_K;  // K-quants only for experts
                   return true;
                 }),
                 "blk.0.attn_q_a.weight has type q4_K");
}

TEST_F(ModelLoad, ExpertIdsOutOfRangeAreRefused) {
  expect_refused(rewrite("tid", [](std::string&, GgmlType&, std::vector<int64_t>&) { return true; }, nullptr,
                         [](const std::string& name, std::vector<uint8_t>& bytes) {
                           if (name == "blk.0.ffn_gate_tid2eid.weight") {
                             const int32_t bad = 1000;
                             std::memcpy(bytes.data() + 8, &bad, 4);
                           }
                         }),
                 "expert id 1000");
}

TEST_F(ModelLoad, BrokenConfigurationIsNamed) {
  expect_refused(rewrite("cfg", [](std::string&, GgmlType&, std::vector<int64_t>&) { return true; },
                         [](std::string& key, gguf::Value& v) {
                           if (key == "deepseek4.attention.output_group_count") v.u = 3;
                         }),
                 "output_group_count");
  expect_refused(rewrite("cfg2", [](std::string&, GgmlType&, std::vector<int64_t>&) { return true; },
                         [](std::string& key, gguf::Value&) {
                           if (key == "deepseek4.block_count") key = "deepseek4.block_count_renamed";
                         }),
                 "deepseek4.block_count");
}
