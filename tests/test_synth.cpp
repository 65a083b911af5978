// Synthetic models: size plans against spec/model.md §2.7, generated block statistics, the tiny
// preset written and read back, and thread-count independence.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "gguf/gguf.h"
#include "model/config.h"
#include "model/tensor_specs.h"
#include "quant/quant.h"
#include "synth/random_fill.h"
#include "synth/synth.h"
#include "test_convert_util.h"

using namespace flashstar;
using namespace flashstar::synth;
using convert_test::TempDir;

TEST(Synth, FlashQ2PlanMatchesPublishedSize) {
  SynthOptions o;
  o.preset = Preset::Flash;
  o.recipe = Recipe::Q2;
  const SynthPlan p = plan_synth(o);
  // spec/model.md §2.7: 1328 tensors (exp_probs_b in the 40 non-hash layers only), 86 714 777 664 B.
  EXPECT_EQ(p.tensors.size(), 1328u);
  EXPECT_EQ(p.data_bytes, 86714777664ull);
  EXPECT_TRUE(p.notes.empty());
  uint64_t gate_up = 0, down = 0;
  for (const auto& t : p.tensors) {
    if (t.spec.expert == ExpertPart::Down) down += t.nbytes;
    else if (t.spec.expert != ExpertPart::None) gate_up += t.nbytes;
  }
  EXPECT_EQ(gate_up, 2 * 23806869504ull);
  EXPECT_EQ(down, 30299652096ull);
  o.recipe = Recipe::Q4;
  EXPECT_EQ(plan_synth(o).data_bytes, 164628168768ull);
}

TEST(Synth, FlashFourLayerPlanHasDs4Types) {
  SynthOptions o;
  o.preset = Preset::Flash;
  o.layers = 4;
  const SynthPlan p = plan_synth(o);
  EXPECT_EQ(p.cfg.n_layer, 4u);
  EXPECT_EQ(p.cfg.compress_ratio, (std::vector<uint32_t>{0, 0, 4, 128}));
  size_t tid = 0, bias = 0;
  for (const auto& t : p.tensors) {
    const auto& s = t.spec;
    if (s.expert == ExpertPart::Gate || s.expert == ExpertPart::Up) EXPECT_EQ(t.type, GgmlType::IQ2_XXS) << s.name;
    else if (s.expert == ExpertPart::Down) EXPECT_EQ(t.type, GgmlType::Q2_K) << s.name;
    else EXPECT_EQ(t.type, s.ds4_type) << s.name;
    if (s.name.find("tid2eid") != std::string::npos) {
      ++tid;
      EXPECT_LT(s.layer, 3);
    }
    if (s.name.find("exp_probs_b") != std::string::npos) {
      ++bias;
      EXPECT_GE(s.layer, 3);
    }
  }
  EXPECT_EQ(tid, 3u);
  EXPECT_EQ(bias, 1u);
  EXPECT_EQ(p.tensors.size(), model_tensor_specs(p.cfg, true).size());
}

TEST(Synth, GeneratedBlocksHaveTheRequestedSpread) {
  const float want = 0.02f;
  const int64_t n0 = 4096, rows = 64;
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K,
                     GgmlType::IQ2_XXS}) {
    std::vector<uint8_t> buf(row_bytes(t, n0) * rows);
    Rng rng(42);
    fill_rows(t, Dist::normal(want), rng, n0, rows, buf.data());
    std::vector<float> v(static_cast<size_t>(n0 * rows));
    quant::dequantize_row(t, buf.data(), v.data(), n0 * rows);
    double s = 0, s2 = 0;
    for (float x : v) {
      ASSERT_TRUE(std::isfinite(x));
      s += x;
      s2 += double(x) * x;
    }
    const double mean = s / v.size(), std = std::sqrt(s2 / v.size() - mean * mean);
    EXPECT_NEAR(std, want, 0.03 * want) << type_name(t);
    EXPECT_NEAR(mean, 0, 0.01 * want) << type_name(t);
  }
  std::vector<int32_t> ids(6 * 1000);
  Rng rng(7);
  fill_expert_ids(rng, 256, 6, 1000, ids.data());
  for (int t = 0; t < 1000; ++t) {
    std::set<int32_t> row(ids.begin() + 6 * t, ids.begin() + 6 * t + 6);
    EXPECT_EQ(row.size(), 6u);
    EXPECT_GE(*row.begin(), 0);
    EXPECT_LT(*row.rbegin(), 256);
  }
}

TEST(Synth, TinyPresetRoundTrip) {
  TempDir d("synth_tiny");
  SynthOptions o;
  o.preset = Preset::Tiny;
  o.output = d.file("tiny.gguf");
  o.progress = false;
  o.seed = 3;
  const SynthResult r = synthesize(o);
  auto f = gguf::File::open(o.output);
  const ModelConfig c = read_config(*f);
  EXPECT_EQ(c.n_layer, 6u);
  EXPECT_EQ(c.n_embd, 256u);
  EXPECT_EQ(c.n_expert, 8u);
  EXPECT_EQ(c.compress_ratio, (std::vector<uint32_t>{0, 0, 4, 128, 4, 128}));
  EXPECT_EQ(c.swiglu_clamp, std::vector<float>(6, 10.0f));
  EXPECT_EQ(f->get_string("general.architecture"), "deepseek4");
  EXPECT_EQ(f->find("general.alignment"), nullptr);
  const gguf::Value* toks = f->find("tokenizer.ggml.tokens");
  ASSERT_NE(toks, nullptr);
  EXPECT_EQ(toks->items.size(), 1024u);
  ASSERT_NE(f->find("tokenizer.ggml.merges"), nullptr);

  const auto specs = model_tensor_specs(c, true);
  ASSERT_EQ(f->tensors().size(), specs.size());
  EXPECT_EQ(r.n_tensors, specs.size());
  for (const auto& s : specs) {
    const gguf::TensorInfo* t = f->find_tensor(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    EXPECT_EQ(t->ne, s.ne) << s.name;
    // ds4's types, except the 128-wide expert down rows Q2_K cannot tile.
    const GgmlType want = s.expert == ExpertPart::Down ? GgmlType::Q8_0
                          : s.expert != ExpertPart::None ? GgmlType::IQ2_XXS
                                                         : s.ds4_type;
    EXPECT_EQ(t->type, want) << s.name;
    if (t->type == GgmlType::I32) {
      std::vector<int32_t> ids(static_cast<size_t>(t->nelements()));
      std::memcpy(ids.data(), f->tensor_data(*t), t->nbytes);
      for (int64_t tok = 0; tok < s.ne[1]; ++tok) {
        std::set<int32_t> row(ids.begin() + tok * 6, ids.begin() + tok * 6 + 6);
        ASSERT_EQ(row.size(), 6u) << s.name << " token " << tok;
        ASSERT_GE(*row.begin(), 0);
        ASSERT_LT(*row.rbegin(), 8);
      }
      continue;
    }
    std::vector<float> v(static_cast<size_t>(t->nelements()));
    quant::dequantize_row(t->type, f->tensor_data(*t), v.data(), t->nelements());
    double s2 = 0;
    for (float x : v) {
      ASSERT_TRUE(std::isfinite(x)) << s.name;
      s2 += double(x) * x;
    }
    const double rms = std::sqrt(s2 / v.size());
    if (s.name.find("norm.weight") != std::string::npos) {
      EXPECT_NEAR(rms, 1.0, 0.05) << s.name;
    } else if (s.ne.size() >= 2 && s.name.find("ape") == std::string::npos && s.name != "token_embd.weight") {
      EXPECT_NEAR(rms, 1.0 / std::sqrt(double(s.ne[0])), 0.1 / std::sqrt(double(s.ne[0]))) << s.name;
    }
  }
}

// Through the CLI, so each thread count gets a fresh process (and exercises --threads and --seed).
TEST(Synth, SameBytesForAnyThreadCount) {
  TempDir d("synth_threads");
  auto run = [&](const std::string& args, const std::string& out) {
    const std::string cmd = std::string("'") + FLASHSTAR_BINARY + "' synth --preset tiny --layers 3 " + args + " -o '" +
                            d.file(out) + "' 2>/dev/null";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    std::ifstream in(d.file(out), std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const std::string a = run("--threads 1", "a.gguf"), b = run("--threads 3", "b.gguf"),
                    c = run("--threads 2 --seed 2", "c.gguf");
  EXPECT_GT(a.size(), 1000u);
  EXPECT_TRUE(a == b);
  EXPECT_EQ(a.size(), c.size());
  EXPECT_FALSE(a == c);
}

TEST(Synth, CliDryRun) {
  const std::string out = std::filesystem::temp_directory_path() / "flashstar_synth_dry.txt";
  const std::string cmd = std::string("'") + FLASHSTAR_BINARY + "' synth --preset flash --layers 43 --recipe q2 --dry-run >'" +
                          out + "' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream in(out);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(out.c_str());
  EXPECT_NE(text.find("tensors: 1328"), std::string::npos) << text;
  EXPECT_NE(text.find("tensor data: 86714777664 B"), std::string::npos) << text;
}
