// Converter building blocks: safetensors reader (incl. malformed files), name map, config mapping,
// type plan, placeholder vocabulary.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_set>

#include "common/error.h"
#include "common/half.h"
#include "convert/hf_config.h"
#include "convert/name_map.h"
#include "convert/safetensors.h"
#include "convert/type_plan.h"
#include "convert/vocab.h"
#include "test_convert_util.h"

using namespace flashstar;
using namespace flashstar::convert;
using namespace convert_test;

namespace {

std::string parse_error(const std::vector<uint8_t>& b) {
  try {
    SafetensorsFile::parse(b.data(), b.size(), "t.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ConvertSafetensors, ReadsEveryPlainDtype) {
  std::vector<uint16_t> bf = {f32_to_bf16(1.5f), f32_to_bf16(-2.0f), f32_to_bf16(0.25f), f32_to_bf16(3.0f)};
  std::vector<uint16_t> hf = {f32_to_f16(0.5f), f32_to_f16(-1.0f)};
  std::vector<double> f64 = {1.0, -0.125, 7.5};
  std::vector<int64_t> i64 = {0, 5, -3, 1LL << 40};
  std::vector<int32_t> i32 = {7, -7};
  auto b = make_safetensors({{"a", "BF16", {2, 2}, bytes_of(bf)},
                             {"h", "F16", {2}, bytes_of(hf)},
                             {"d", "F64", {3}, bytes_of(f64)},
                             {"i", "I64", {2, 2}, bytes_of(i64)},
                             {"j", "I32", {2}, bytes_of(i32)}});
  auto f = SafetensorsFile::parse(b.data(), b.size(), "t");
  ASSERT_EQ(f->tensors().size(), 5u);
  auto T = [&](const std::string& n) -> const StTensor& {
    for (const auto& t : f->tensors())
      if (t.name == n) return t;
    throw std::runtime_error(n);
  };
  PlainTensor a(T("a"));
  EXPECT_EQ(a.row_len(), 2);
  EXPECT_EQ(a.n_rows(), 2);
  float row[2];
  a.read_rows_f32(1, 1, row);
  EXPECT_EQ(row[0], 0.25f);
  EXPECT_EQ(row[1], 3.0f);
  EXPECT_THROW(a.read_rows_f32(2, 1, row), Error);
  float h[2];
  PlainTensor(T("h")).read_rows_f32(0, 1, h);
  EXPECT_EQ(h[0], 0.5f);
  EXPECT_EQ(h[1], -1.0f);
  float d[3];
  PlainTensor(T("d")).read_rows_f32(0, 1, d);
  EXPECT_EQ(d[1], -0.125f);
  std::vector<int64_t> v;
  PlainTensor(T("i")).read_ints(v);
  EXPECT_EQ(v, i64);
  EXPECT_TRUE(PlainTensor(T("i")).is_integer());
  EXPECT_THROW(PlainTensor(T("i")).read_rows_f32(0, 1, d), Error);
  PlainTensor(T("j")).read_ints(v);
  EXPECT_EQ(v, (std::vector<int64_t>{7, -7}));
  EXPECT_THROW(PlainTensor(T("a")).read_ints(v), Error);
}

TEST(ConvertSafetensors, RejectsMalformedFiles) {
  EXPECT_NE(parse_error({1, 2, 3}).find("at least 8"), std::string::npos);
  // Header length past the end of the file.
  EXPECT_NE(parse_error(raw_safetensors("{}", 0, 1000)).find("past the end"), std::string::npos);
  // Absurd header length.
  EXPECT_NE(parse_error(raw_safetensors("{}", 0, 1ull << 40)).find("limit"), std::string::npos);
  // Truncated header: the JSON is cut short.
  EXPECT_NE(parse_error(raw_safetensors("{\"a\": {\"dtype\": \"F32\"", 0)).find("JSON"), std::string::npos);
  EXPECT_NE(parse_error(raw_safetensors("[1,2]", 0)).find("object"), std::string::npos);
  const char* no_dtype = R"({"a": {"shape": [1], "data_offsets": [0, 4]}})";
  EXPECT_NE(parse_error(raw_safetensors(no_dtype, 4)).find("dtype"), std::string::npos);
  // Offsets outside the file.
  const char* outside = R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})";
  EXPECT_NE(parse_error(raw_safetensors(outside, 8)).find("outside"), std::string::npos);
  const char* reversed = R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})";
  EXPECT_NE(parse_error(raw_safetensors(reversed, 8)).find("outside"), std::string::npos);
  // Byte count that disagrees with shape x dtype.
  const char* mismatch = R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})";
  EXPECT_NE(parse_error(raw_safetensors(mismatch, 8)).find("need 12"), std::string::npos);
  // Shape overflow must not wrap around to a matching size.
  const char* huge = R"({"a": {"dtype": "F32", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 0]}})";
  EXPECT_NE(parse_error(raw_safetensors(huge, 0)), "");
  const char* neg = R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})";
  EXPECT_NE(parse_error(raw_safetensors(neg, 0)).find("negative"), std::string::npos);
  const char* overlap = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})";
  EXPECT_NE(parse_error(raw_safetensors(overlap, 12)).find("overlap"), std::string::npos);
  const char* bad_off = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})";
  EXPECT_NE(parse_error(raw_safetensors(bad_off, 4)).find("data_offsets"), std::string::npos);
  // Every message is one line.
  EXPECT_EQ(parse_error(raw_safetensors("{\n\"a\": 1\n", 0)).find('\n'), std::string::npos);
}

TEST(ConvertSafetensors, UnknownAndFp8DtypesFailOnlyWhenRead) {
  auto b = make_safetensors({{"w", "F8_E4M3", {2, 2}, std::vector<uint8_t>(4)}, {"x", "Q9_Z", {3}, std::vector<uint8_t>(5)}});
  TempDir dir("st_fp8");
  write_bytes(dir.file("model.safetensors"), b);
  auto ck = Checkpoint::open(dir.str());
  EXPECT_EQ(ck->size(), 2u);
  try {
    ck->source("w");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("FP8"), std::string::npos);
  }
  EXPECT_THROW(ck->source("x"), Error);
  EXPECT_THROW(ck->source("nope"), Error);
}

TEST(ConvertSafetensors, ShardedIndex) {
  TempDir dir("st_index");
  std::vector<float> one = {1, 2}, two = {3};
  write_bytes(dir.file("s1.safetensors"), make_safetensors({{"a", "F32", {2}, bytes_of(one)}}));
  write_bytes(dir.file("s2.safetensors"), make_safetensors({{"b", "F32", {1}, bytes_of(two)}}));
  auto write_index = [&](const std::string& text) {
    std::ofstream(dir.file("model.safetensors.index.json")) << text;
  };
  write_index(R"({"metadata": {}, "weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  auto ck = Checkpoint::open(dir.str());
  ASSERT_NE(ck->find("b"), nullptr);
  EXPECT_EQ(ck->names(), (std::vector<std::string>{"a", "b"}));
  write_index(R"({"weight_map": {"a": "s2.safetensors"}})");
  EXPECT_THROW(Checkpoint::open(dir.str()), Error);
  write_index(R"({"weight_map": {"a": "../s1.safetensors"}})");
  EXPECT_THROW(Checkpoint::open(dir.str()), Error);
  write_index(R"({"weight_map": {"a": "missing.safetensors"}})");
  EXPECT_THROW(Checkpoint::open(dir.str()), Error);
  write_index(R"({"weight_map": )");
  EXPECT_THROW(Checkpoint::open(dir.str()), Error);
  EXPECT_THROW(Checkpoint::open(dir.file("does-not-exist")), Error);
}

TEST(ConvertNames, BothNamingSchemes) {
  auto m = [](const std::string& n) { return map_tensor_name(n); };
  EXPECT_EQ(m("embed.weight").mapped.gguf, "token_embd.weight");
  EXPECT_EQ(m("model.embed_tokens.weight").mapped.gguf, "token_embd.weight");
  EXPECT_EQ(m("head.weight").mapped.gguf, "output.weight");
  EXPECT_EQ(m("model.norm.weight").mapped.gguf, "output_norm.weight");
  EXPECT_EQ(m("hc_head_fn").mapped.gguf, "output_hc_fn.weight");
  EXPECT_EQ(m("model.hc_head.hc_scale").mapped.gguf, "output_hc_scale.weight");
  EXPECT_EQ(m("layers.7.attn.wq_a.weight").mapped.gguf, "blk.7.attn_q_a.weight");
  EXPECT_EQ(m("model.layers.7.attn.norm.weight").mapped.gguf, "blk.7.attn_kv_a_norm.weight");
  EXPECT_EQ(m("layers.7.attn.kv_norm.weight").mapped.gguf, "blk.7.attn_kv_a_norm.weight");
  EXPECT_EQ(m("layers.7.attn.q_norm.weight").mapped.gguf, "blk.7.attn_q_a_norm.weight");
  EXPECT_EQ(m("layers.0.hc_ffn_fn").mapped.gguf, "blk.0.hc_ffn_fn.weight");
  EXPECT_EQ(m("layers.2.attn.indexer.compressor.wgate.weight").mapped.gguf, "blk.2.indexer_compressor_gate.weight");
  EXPECT_EQ(m("layers.2.attn.indexer.weights_proj.weight").mapped.gguf, "blk.2.indexer.proj.weight");
  EXPECT_EQ(m("layers.3.attn.compressor.ape").mapped.gguf, "blk.3.attn_compressor_ape.weight");
  EXPECT_EQ(m("layers.3.ffn.gate.bias").mapped.gguf, "blk.3.exp_probs_b.bias");
  EXPECT_EQ(m("layers.1.ffn.gate.tid2eid").mapped.gguf, "blk.1.ffn_gate_tid2eid.weight");
  EXPECT_EQ(m("layers.1.ffn.shared_experts.w2.weight").mapped.gguf, "blk.1.ffn_down_shexp.weight");
  NameResult e = m("model.layers.42.ffn.experts.255.w3.weight");
  EXPECT_EQ(e.kind, NameKind::Mapped);
  EXPECT_EQ(e.mapped.gguf, "blk.42.ffn_up_exps.weight");
  EXPECT_EQ(e.mapped.expert, 255);
  EXPECT_EQ(e.mapped.layer, 42);
  EXPECT_EQ(m("layers.4.attn.wq_a.scale").kind, NameKind::Companion);
  EXPECT_EQ(m("layers.4.ffn.experts.3.w1.weight_scale_inv").kind, NameKind::Companion);
  EXPECT_EQ(m("layers.4.hc_attn_scale").kind, NameKind::Mapped);  // `_scale` is a weight, not a companion
  EXPECT_EQ(m("mtp.0.attn.wq_a.weight").kind, NameKind::Mtp);
  EXPECT_EQ(m("model.mtp.0.emb").kind, NameKind::Mtp);
  EXPECT_EQ(m("layers.x.attn.wq_a.weight").kind, NameKind::Unknown);
  EXPECT_EQ(m("layers.1.attn.wq_c.weight").kind, NameKind::Unknown);
  EXPECT_EQ(m("layers.1.ffn.experts.1.w4.weight").kind, NameKind::Unknown);
}

TEST(ConvertConfig, TinyAConfig) {
  const std::string path = std::string(FLASHSTAR_SHARED_DIR) + "/fixtures/tiny-a/config.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no fixture at " << path;
  std::vector<std::string> defaulted;
  ModelConfig c = read_hf_config(path, &defaulted);
  EXPECT_EQ(c.n_layer, 6u);
  EXPECT_EQ(c.n_embd, 256u);
  EXPECT_EQ(c.n_rot, 64u);
  EXPECT_EQ(c.n_hash_layer, 3u);
  EXPECT_EQ(c.compress_ratio, (std::vector<uint32_t>{0, 0, 4, 128, 4, 128}));
  EXPECT_EQ(c.swiglu_clamp, std::vector<float>(6, 1.5f));
  EXPECT_EQ(c.rope_orig_ctx, 65536u);
  EXPECT_EQ(c.rope_scaling_factor, 16.0);
  EXPECT_EQ(c.compress_rope_freq_base, 160000.0);
  EXPECT_TRUE(defaulted.empty()) << defaulted.front();
}

TEST(ConvertConfig, OfficialNaming) {
  nlohmann::json j = {{"dim", 4096}, {"n_layers", 43}, {"vocab_size", 129280}, {"n_heads", 64}, {"head_dim", 512},
                      {"rope_head_dim", 64}, {"q_lora_rank", 1024}, {"o_lora_rank", 1024}, {"o_groups", 8},
                      {"n_routed_experts", 256}, {"n_activated_experts", 6}, {"moe_inter_dim", 2048},
                      {"n_shared_experts", 1}, {"n_hash_layers", 3}, {"window_size", 128}, {"index_n_heads", 64},
                      {"index_head_dim", 128}, {"index_topk", 512}, {"hc_mult", 4}, {"hc_sinkhorn_iters", 20},
                      {"hc_eps", 1e-6}, {"norm_eps", 1e-6}, {"swiglu_limit", 10.0}, {"rope_theta", 10000.0},
                      {"compress_rope_theta", 160000.0}, {"rope_factor", 16}, {"original_seq_len", 65536},
                      {"beta_fast", 32}, {"beta_slow", 1}, {"route_scale", 1.5}};
  std::vector<uint32_t> ratios = ModelConfig::flash_schedule(43);
  ratios.push_back(0);  // the MTP layer's entry
  j["compress_ratios"] = ratios;
  ModelConfig c = config_from_json(j);
  ModelConfig f = ModelConfig::flash(43);
  EXPECT_EQ(c.compress_ratio, f.compress_ratio);
  EXPECT_EQ(c.swiglu_clamp, f.swiglu_clamp);
  EXPECT_EQ(c.n_ff_exp, 2048u);
  EXPECT_EQ(c.expert_weights_scale, 1.5);
  EXPECT_EQ(c.context_length, 1048576u);
  j.erase("moe_inter_dim");
  try {
    config_from_json(j);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("moe_intermediate_size"), std::string::npos) << e.what();
  }
}

TEST(ConvertConfig, RejectsBadSchedules) {
  nlohmann::json j = {{"hidden_size", 256}, {"num_hidden_layers", 2}, {"vocab_size", 1024}, {"num_attention_heads", 8},
                      {"head_dim", 128}, {"partial_rotary_factor", 0.5}, {"q_lora_rank", 128}, {"o_lora_rank", 64},
                      {"o_groups", 4}, {"n_routed_experts", 8}, {"num_experts_per_tok", 6},
                      {"moe_intermediate_size", 128}, {"sliding_window", 128}, {"index_n_heads", 8},
                      {"index_head_dim", 128}, {"index_topk", 16}, {"layer_types", {"sliding_attention", "x"}},
                      {"compress_rates", {{"x", 4}}}, {"mlp_layer_types", {"hash_moe", "moe"}}};
  ModelConfig c = config_from_json(j);
  EXPECT_EQ(c.n_rot, 64u);
  EXPECT_EQ(c.compress_ratio, (std::vector<uint32_t>{0, 4}));
  EXPECT_EQ(c.n_hash_layer, 1u);
  auto bad = j;
  bad["mlp_layer_types"] = {"moe", "hash_moe"};
  EXPECT_THROW(config_from_json(bad), Error);
  bad = j;
  bad["layer_types"] = {"sliding_attention"};
  EXPECT_THROW(config_from_json(bad), Error);
  bad = j;
  bad["compress_rates"] = nlohmann::json::object();
  EXPECT_THROW(config_from_json(bad), Error);
  bad = j;
  bad["swiglu_limit"] = 0;
  EXPECT_THROW(config_from_json(bad), Error);
}

TEST(ConvertTypes, Rules) {
  const auto specs = model_tensor_specs(ModelConfig::flash(4));
  auto find = [&](const std::string& n) -> const TensorSpec& {
    for (const auto& s : specs)
      if (s.name == n) return s;
    throw std::runtime_error(n);
  };
  auto t = [&](const std::string& n, OutType o, ExpertRecipe e = ExpertRecipe::FollowOutType) {
    return choose_type(find(n), o, e).type;
  };
  EXPECT_EQ(t("blk.2.attn_q_a.weight", OutType::Q8_0), GgmlType::Q8_0);
  EXPECT_EQ(t("blk.2.ffn_gate_inp.weight", OutType::Q8_0), GgmlType::F32);
  EXPECT_EQ(t("blk.2.hc_attn_fn.weight", OutType::Q8_0), GgmlType::F32);
  EXPECT_EQ(t("output_hc_fn.weight", OutType::Q8_0), GgmlType::F32);
  EXPECT_EQ(t("blk.2.ffn_gate_inp.weight", OutType::F16), GgmlType::F16);
  EXPECT_EQ(t("blk.2.attn_norm.weight", OutType::F16), GgmlType::F32);
  EXPECT_EQ(t("blk.2.attn_compressor_ape.weight", OutType::F16), GgmlType::F32);
  EXPECT_EQ(t("blk.2.attn_compressor_ape.weight", OutType::DS4), GgmlType::F16);
  EXPECT_EQ(t("blk.1.ffn_gate_tid2eid.weight", OutType::F16), GgmlType::I32);
  EXPECT_EQ(t("blk.3.ffn_gate_exps.weight", OutType::BF16), GgmlType::BF16);
  EXPECT_EQ(t("blk.3.ffn_gate_exps.weight", OutType::DS4), GgmlType::IQ2_XXS);
  EXPECT_EQ(t("blk.3.ffn_down_exps.weight", OutType::DS4), GgmlType::Q2_K);
  EXPECT_EQ(t("blk.3.ffn_down_exps.weight", OutType::DS4, ExpertRecipe::Q4_K), GgmlType::Q4_K);
  EXPECT_EQ(t("blk.3.ffn_down_exps.weight", OutType::F32, ExpertRecipe::Q8_0), GgmlType::Q8_0);
  EXPECT_EQ(t("blk.3.ffn_up_exps.weight", OutType::F16, ExpertRecipe::IQ2_XXS_Q2_K), GgmlType::IQ2_XXS);
  for (const auto& s : specs) EXPECT_EQ(choose_type(s, OutType::DS4, ExpertRecipe::FollowOutType).type, s.ds4_type) << s.name;
  // A row a block cannot tile falls back, with a note.
  TensorSpec odd{"blk.0.ffn_down_exps.weight", {128, 256, 8}, TypeClass::Expert, GgmlType::Q2_K, false, 0, ExpertPart::Down};
  TypeChoice c = choose_type(odd, OutType::DS4, ExpertRecipe::FollowOutType);
  EXPECT_EQ(c.type, GgmlType::Q8_0);
  EXPECT_NE(c.note.find("128"), std::string::npos);
  odd.ne[0] = 48;
  EXPECT_EQ(choose_type(odd, OutType::Q8_0, ExpertRecipe::FollowOutType).type, GgmlType::F32);
  EXPECT_EQ(summarize_notes({"blk.0.x: a", "blk.1.x: a", "y: b"}),
            (std::vector<std::string>{"blk.*.x (2 tensors): a", "y: b"}));
  EXPECT_FALSE(parse_outtype("q4"));
  EXPECT_EQ(parse_expert_recipe("IQ2_XXS-Q2_K"), ExpertRecipe::IQ2_XXS_Q2_K);
}

TEST(ConvertVocab, PlaceholderIsAValidByteLevelVocabulary) {
  for (uint32_t n : {263u, 1024u, 129280u}) {
    SCOPED_TRACE(n);
    Vocab v = placeholder_vocab(n);
    ASSERT_EQ(v.tokens.size(), n);
    ASSERT_EQ(v.token_types.size(), n);
    for (size_t i = 0; i < 7; ++i) EXPECT_EQ(v.tokens[i], ds4_special_tokens()[i]);
    EXPECT_EQ(v.tokens[v.bos], "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
    EXPECT_EQ(v.tokens[v.eos], "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
    std::unordered_set<std::string> seen(v.tokens.begin(), v.tokens.end());
    EXPECT_EQ(seen.size(), n) << "duplicate tokens";
    EXPECT_LE(v.merges.size(), n - 263u);
    for (const auto& m : v.merges) {
      const size_t sp = m.find(' ');
      ASSERT_NE(sp, std::string::npos);
      ASSERT_EQ(m.find(' ', sp + 1), std::string::npos) << m;
      const std::string l = m.substr(0, sp), r = m.substr(sp + 1);
      ASSERT_TRUE(seen.count(l) && seen.count(r) && seen.count(l + r)) << m;
    }
  }
  EXPECT_EQ(gpt2_byte_token(' '), "\xc4\xa0");  // U+0120 'Ġ'
  EXPECT_EQ(gpt2_byte_token('a'), "a");
  EXPECT_EQ(gpt2_byte_token(0), "\xc4\x80");  // U+0100
  EXPECT_EQ(gpt2_byte_token(173), "\xc5\x83");  // the 68th remapped byte: U+0143
  EXPECT_THROW(placeholder_vocab(100), Error);
}
