// End-to-end: convert the tiny-a fixture and read it back through the GGUF reader.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/error.h"
#include "convert/convert.h"
#include "convert/safetensors.h"
#include "gguf/gguf.h"
#include "model/config.h"
#include "model/tensor_specs.h"
#include "quant/quant.h"
#include "test_convert_util.h"

using namespace flashstar;
using namespace flashstar::convert;
using namespace convert_test;

namespace {

std::string fixture() { return std::string(FLASHSTAR_SHARED_DIR) + "/fixtures/tiny-a"; }

#define NEED_FIXTURE() \
  if (!std::filesystem::exists(fixture() + "/config.json")) GTEST_SKIP() << "no fixture at " << fixture()

std::string convert_to(const TempDir& d, const std::string& name, OutType o, ExpertRecipe e = ExpertRecipe::FollowOutType,
                       const std::string& input = fixture()) {
  ConvertOptions opt;
  opt.input = input;
  opt.output = d.file(name);
  opt.outtype = o;
  opt.experts = e;
  opt.progress = false;
  convert_checkpoint(opt);
  return opt.output;
}

std::vector<float> source_rows(const Checkpoint& ck, const std::string& name) {
  auto s = ck.source(name);
  std::vector<float> v(static_cast<size_t>(s->n_rows() * s->row_len()));
  s->read_rows_f32(0, s->n_rows(), v.data());
  return v;
}

std::vector<float> gguf_floats(const gguf::File& f, const std::string& name, int64_t first = 0, int64_t n = -1) {
  const gguf::TensorInfo* t = f.find_tensor(name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return {};
  if (n < 0) n = t->nelements() - first;
  std::vector<float> v(static_cast<size_t>(n));
  const size_t bytes = row_bytes(t->type, first);
  quant::dequantize_row(t->type, f.tensor_data(*t) + bytes, v.data(), n);
  return v;
}

// Copies every tensor of the fixture into one model.safetensors, letting `edit` drop or alter entries.
template <typename Edit>
void rewrite_fixture(const TempDir& d, Edit edit) {
  auto ck = Checkpoint::open(fixture());
  std::vector<StEntry> entries;
  for (const auto& n : ck->names()) {
    const StTensor* t = ck->find(n);
    StEntry e{n, t->dtype_name, t->shape, std::vector<uint8_t>(t->data, t->data + t->nbytes)};
    if (edit(e)) entries.push_back(std::move(e));
  }
  write_bytes(d.file("model.safetensors"), make_safetensors(entries));
  std::filesystem::copy_file(fixture() + "/config.json", d.file("config.json"));
}

std::string convert_error(const TempDir& d) {
  try {
    convert_to(d, "out.gguf", OutType::F32, ExpertRecipe::FollowOutType, d.str());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Convert, TinyAF32RoundTrip) {
  NEED_FIXTURE();
  TempDir d("conv_f32");
  const std::string out = convert_to(d, "a.gguf", OutType::F32);
  auto f = gguf::File::open(out);
  const ModelConfig c = read_config(*f);
  EXPECT_EQ(c.n_layer, 6u);
  EXPECT_EQ(c.n_embd, 256u);
  EXPECT_EQ(c.n_vocab, 1024u);
  EXPECT_EQ(c.n_head, 8u);
  EXPECT_EQ(c.head_dim, 128u);
  EXPECT_EQ(c.n_rot, 64u);
  EXPECT_EQ(c.q_lora, 128u);
  EXPECT_EQ(c.o_lora, 64u);
  EXPECT_EQ(c.n_out_group, 4u);
  EXPECT_EQ(c.n_expert, 8u);
  EXPECT_EQ(c.n_expert_used, 6u);
  EXPECT_EQ(c.n_ff_exp, 128u);
  EXPECT_EQ(c.n_hash_layer, 3u);
  EXPECT_EQ(c.idx_top_k, 16u);
  EXPECT_EQ(c.n_idx_head, 8u);
  EXPECT_EQ(c.compress_ratio, (std::vector<uint32_t>{0, 0, 4, 128, 4, 128}));
  EXPECT_EQ(c.swiglu_clamp, std::vector<float>(6, 1.5f));
  EXPECT_DOUBLE_EQ(c.rope_freq_base, 10000.0);
  EXPECT_DOUBLE_EQ(c.compress_rope_freq_base, 160000.0);
  EXPECT_EQ(c.name, "tiny-a");
  EXPECT_TRUE(f->find("tokenizer.ggml.tokens"));
  EXPECT_TRUE(f->find("tokenizer.ggml.merges"));

  // Every spec present with its shape; matrices and vectors F32, tid2eid I32.
  const auto specs = model_tensor_specs(c, true);
  EXPECT_EQ(f->tensors().size(), specs.size());
  for (const auto& s : specs) {
    const gguf::TensorInfo* t = f->find_tensor(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    EXPECT_EQ(t->ne, s.ne) << s.name;
    EXPECT_EQ(t->type, s.cls == TypeClass::Index ? GgmlType::I32 : GgmlType::F32) << s.name;
  }

  // Values equal the source exactly (BF16 and F32 both widen losslessly to F32).
  auto ck = Checkpoint::open(fixture());
  const auto emb = source_rows(*ck, "model.embed_tokens.weight");
  EXPECT_EQ(gguf_floats(*f, "token_embd.weight", 17 * 256, 256), std::vector<float>(emb.begin() + 17 * 256, emb.begin() + 18 * 256));
  // Expert 5 of layer 3's down projection: ne [128, 256, 8], slice 5.
  EXPECT_EQ(gguf_floats(*f, "blk.3.ffn_down_exps.weight", 5 * 128 * 256, 128 * 256),
            source_rows(*ck, "model.layers.3.ffn.experts.5.w2.weight"));
  EXPECT_EQ(gguf_floats(*f, "blk.4.ffn_gate_exps.weight", 7 * 256 * 128, 256 * 128),
            source_rows(*ck, "model.layers.4.ffn.experts.7.w1.weight"));
  EXPECT_EQ(gguf_floats(*f, "blk.2.attn_compressor_ape.weight"), source_rows(*ck, "model.layers.2.attn.compressor.ape"));
  EXPECT_EQ(gguf_floats(*f, "blk.3.attn_compressor_ape.weight"), source_rows(*ck, "model.layers.3.attn.compressor.ape"));
  EXPECT_EQ(gguf_floats(*f, "blk.2.attn_kv_a_norm.weight"), source_rows(*ck, "model.layers.2.attn.norm.weight"));
  EXPECT_EQ(gguf_floats(*f, "blk.2.attn_q_a_norm.weight"), source_rows(*ck, "model.layers.2.attn.q_norm.weight"));
  EXPECT_EQ(gguf_floats(*f, "output_hc_fn.weight"), source_rows(*ck, "model.hc_head.hc_fn"));
  EXPECT_EQ(gguf_floats(*f, "blk.5.exp_probs_b.bias"), source_rows(*ck, "model.layers.5.ffn.gate.bias"));
  EXPECT_EQ(f->find_tensor("blk.1.exp_probs_b.bias"), nullptr);

  std::vector<int64_t> ids;
  ck->source("model.layers.1.ffn.gate.tid2eid")->read_ints(ids);
  const gguf::TensorInfo* t = f->find_tensor("blk.1.ffn_gate_tid2eid.weight");
  ASSERT_EQ(t->nbytes, ids.size() * 4);
  std::vector<int32_t> got(ids.size());
  std::memcpy(got.data(), f->tensor_data(*t), t->nbytes);
  for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(got[i], ids[i]) << i;
}

TEST(Convert, TinyAQ8AndDs4Types) {
  NEED_FIXTURE();
  TempDir d("conv_q8");
  auto f = gguf::File::open(convert_to(d, "q8.gguf", OutType::Q8_0));
  const ModelConfig c = read_config(*f);
  auto ck = Checkpoint::open(fixture());
  for (const auto& s : model_tensor_specs(c, true)) {
    const gguf::TensorInfo* t = f->find_tensor(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    GgmlType want = GgmlType::Q8_0;
    if (s.cls == TypeClass::Index) want = GgmlType::I32;
    else if (s.ne.size() == 1 || is_ape(s) || is_router(s) || is_hc_fn(s)) want = GgmlType::F32;
    EXPECT_EQ(t->type, want) << s.name;
  }
  // Q8_0 error stays within half a quantization step of each 32-block (plus the f16 rounding of d).
  const auto src = source_rows(*ck, "model.layers.2.attn.wq_b.weight");
  const auto got = gguf_floats(*f, "blk.2.attn_q_b.weight");
  ASSERT_EQ(src.size(), got.size());
  for (size_t b = 0; b < src.size(); b += 32) {
    float amax = 0;
    for (size_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs(src[i]));
    for (size_t i = b; i < b + 32; ++i) ASSERT_LE(std::fabs(src[i] - got[i]), amax / 127 * 0.5f + amax / 1024 + 1e-7f) << i;
  }

  auto g = gguf::File::open(convert_to(d, "ds4.gguf", OutType::DS4, ExpertRecipe::Q8_0));
  for (const auto& s : model_tensor_specs(c, true)) {
    const gguf::TensorInfo* t = g->find_tensor(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    EXPECT_EQ(t->type, s.expert != ExpertPart::None ? GgmlType::Q8_0 : s.ds4_type) << s.name;
  }
}

TEST(Convert, ReportsMissingMisshapenAndBadTensors) {
  NEED_FIXTURE();
  {
    TempDir d("conv_missing");
    rewrite_fixture(d, [](StEntry& e) { return e.name != "model.layers.4.attn.wq_b.weight"; });
    EXPECT_NE(convert_error(d).find("blk.4.attn_q_b.weight"), std::string::npos) << convert_error(d);
  }
  {
    TempDir d("conv_missing_expert");
    rewrite_fixture(d, [](StEntry& e) { return e.name != "model.layers.5.ffn.experts.6.w3.weight"; });
    const std::string err = convert_error(d);
    EXPECT_NE(err.find("expert 6"), std::string::npos) << err;
  }
  {
    TempDir d("conv_shape");
    rewrite_fixture(d, [](StEntry& e) {
      if (e.name == "model.layers.2.attn.wq_a.weight") std::swap(e.shape[0], e.shape[1]);
      return true;
    });
    const std::string err = convert_error(d);
    EXPECT_NE(err.find("model.layers.2.attn.wq_a.weight"), std::string::npos) << err;
    EXPECT_NE(err.find("expected [128, 256]"), std::string::npos) << err;
  }
  {
    TempDir d("conv_tid");
    rewrite_fixture(d, [](StEntry& e) {
      if (e.name == "model.layers.0.ffn.gate.tid2eid") {
        const int64_t bad = 8;
        std::memcpy(e.bytes.data() + 8 * 100, &bad, 8);
      }
      return true;
    });
    const std::string err = convert_error(d);
    EXPECT_NE(err.find("outside [0, 8)"), std::string::npos) << err;
  }
  {
    // Extra MTP tensors are ignored; the single-file layout works.
    TempDir d("conv_mtp");
    rewrite_fixture(d, [](StEntry&) { return true; });
    auto ck = Checkpoint::open(fixture());
    std::vector<StEntry> entries;
    for (const auto& n : ck->names()) {
      const StTensor* t = ck->find(n);
      entries.push_back({n, t->dtype_name, t->shape, std::vector<uint8_t>(t->data, t->data + t->nbytes)});
    }
    entries.push_back({"mtp.0.attn.wq_a.weight", "F32", {2}, std::vector<uint8_t>(8)});
    write_bytes(d.file("model.safetensors"), make_safetensors(entries));
    ConvertOptions opt;
    opt.input = d.str();
    opt.output = d.file("out.gguf");
    opt.outtype = OutType::F32;
    opt.progress = false;
    const ConvertResult r = convert_checkpoint(opt);
    EXPECT_EQ(r.ignored_mtp, 1u);
    EXPECT_EQ(r.n_tensors, 178u);
  }
  {
    TempDir d("conv_nan");
    rewrite_fixture(d, [](StEntry& e) {
      if (e.name == "model.norm.weight") {
        const float nan = std::nanf("");
        std::memcpy(e.bytes.data() + 4 * 3, &nan, 4);
      }
      return true;
    });
    EXPECT_NE(convert_error(d).find("non-finite"), std::string::npos);
  }
}
