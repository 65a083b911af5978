#include "synth/synth.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"
#include "convert/progress.h"
#include "convert/vocab.h"
#include "gguf/writer.h"
#include "synth/random_fill.h"

namespace flashstar::synth {
namespace {

bool has(const std::string& s, const char* p) { return s.find(p) != std::string::npos; }

uint64_t align32(uint64_t n) { return (n + 31) & ~uint64_t(31); }

// Value distributions chosen so a forward pass stays O(1) through all layers: matrices ~ N(0, 1/fan_in)
// (std 1/sqrt(ne0), ne0 being the input width), norm weights near 1, the small hyper-connection,
// sink, APE and bias parameters small, and the router wide enough that top-6 is not a tie.
Dist dist_for(const TensorSpec& s, float residual_scale) {
  const std::string& n = s.name;
  if (has(n, "attn_output_b.") || has(n, "ffn_down_exps.") || has(n, "ffn_down_shexp."))
    return Dist::normal(residual_scale / std::sqrt(static_cast<float>(s.ne[0])));
  if (has(n, "norm.weight")) return Dist::uniform(0.9f, 1.1f);
  if (has(n, "hc_") && has(n, "_base.weight")) return Dist::uniform(-0.1f, 0.1f);
  if (has(n, "hc_") && has(n, "_scale.weight")) return Dist::uniform(0.05f, 0.2f);
  if (has(n, "attn_sinks")) return Dist::uniform(-0.5f, 0.5f);
  if (has(n, "exp_probs_b")) return Dist::uniform(-0.01f, 0.01f);
  if (convert::is_ape(s)) return Dist::normal(0.1f);
  if (n == "token_embd.weight") return Dist::normal(1.0f);
  return Dist::normal(1.0f / std::sqrt(static_cast<float>(s.ne[0])));
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

uint64_t chunk_seed(uint64_t seed, const std::string& name, int64_t chunk) {
  uint64_t s = seed ^ fnv1a(name);
  s = splitmix64(s) ^ static_cast<uint64_t>(chunk) * 0xd1342543de82ef95ull;
  return splitmix64(s);
}

// Chunk geometry depends only on the tensor (never on threads), so the bytes do not either.
constexpr uint64_t kChunkBytes = 4u << 20;

// Biases step apart in a seeded random order: the biased top-k is decided by a margin of at least
// step - (score range), far above any rounding difference. (Router scores sqrt(softplus(x)) stay below
// ~3 for this model's O(1) activations.)
void ranked_router_bias(const PlannedTensor& p, size_t index, uint64_t seed, float step, gguf::Writer& w) {
  if (p.type != GgmlType::F32) fail("synth: %s must be f32 for ranked router biases", p.spec.name.c_str());
  const int64_t n = p.spec.ne[0];
  std::vector<int32_t> rank(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rank[i] = static_cast<int32_t>(i);
  Rng rng(chunk_seed(seed, p.spec.name, 0));
  for (int64_t i = n - 1; i > 0; --i) std::swap(rank[i], rank[rng.below(static_cast<uint32_t>(i + 1))]);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = step * (static_cast<float>(rank[i]) - 0.5f * static_cast<float>(n - 1));
  w.write_tensor(index, v.data(), v.size() * sizeof(float), 0);
}

void generate_tensor(const PlannedTensor& p, size_t index, const ModelConfig& c, const SynthOptions& o,
                     gguf::Writer& w, Progress& prog) {
  const uint64_t seed = o.seed;
  const TensorSpec& s = p.spec;
  if (o.router_bias_step > 0 && has(s.name, "exp_probs_b")) {
    ranked_router_bias(p, index, seed, o.router_bias_step, w);
    prog.add(p.nbytes);
    return;
  }
  const int64_t n0 = s.ne[0];
  int64_t rows = 1;
  for (size_t i = 1; i < s.ne.size(); ++i) rows *= s.ne[i];
  const size_t rb = row_bytes(p.type, n0);
  const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(kChunkBytes / rb));
  const int64_t n_chunks = (rows + chunk - 1) / chunk;
  const Dist dist = dist_for(s, o.residual_scale);
  parallel_for(n_chunks, [&](int64_t cb, int64_t ce) {
    std::vector<uint8_t> buf;
    for (int64_t ci = cb; ci < ce; ++ci) {
      const int64_t r0 = ci * chunk, r1 = std::min(rows, r0 + chunk);
      buf.resize(static_cast<size_t>(r1 - r0) * rb);
      Rng rng(chunk_seed(seed, s.name, ci));
      if (s.cls == TypeClass::Index) {
        fill_expert_ids(rng, c.n_expert, static_cast<uint32_t>(n0), r1 - r0, reinterpret_cast<int32_t*>(buf.data()));
      } else {
        fill_rows(p.type, dist, rng, n0, r1 - r0, buf.data());
      }
      w.write_tensor(index, buf.data(), buf.size(), static_cast<uint64_t>(r0) * rb);
      prog.add(buf.size());
    }
  });
}

}  // namespace

ModelConfig tiny_config(uint32_t n_layer) {
  ModelConfig c = ModelConfig::flash(n_layer);
  c.name = "flashstar-synth-tiny";
  c.n_embd = 256;
  c.n_vocab = 1024;
  c.n_head = 8;
  c.head_dim = 128;
  c.n_rot = 64;
  c.q_lora = 128;
  c.n_out_group = 4;
  c.o_lora = 64;
  c.n_expert = 8;
  c.n_expert_used = 6;
  c.n_ff_exp = 128;
  c.n_expert_shared = 1;
  c.n_hash_layer = std::min<uint32_t>(3, n_layer);
  c.n_swa = 128;
  c.n_idx_head = 8;
  c.idx_head_dim = 128;
  c.idx_top_k = 16;
  return c;
}

ModelConfig preset_config(Preset p, int layers) {
  if (layers < 0 || layers > 1024) fail("synth: --layers %d is out of range", layers);
  ModelConfig c;
  if (p == Preset::Tiny) {
    c = tiny_config(layers ? static_cast<uint32_t>(layers) : 6);
  } else {
    c = ModelConfig::flash(layers ? static_cast<uint32_t>(layers) : 43);
    c.name = "flashstar-synth-flash";
    c.n_hash_layer = std::min<uint32_t>(c.n_hash_layer, c.n_layer);
  }
  c.validate();
  return c;
}

SynthPlan plan_synth(const SynthOptions& o) {
  SynthPlan plan;
  plan.cfg = preset_config(o.preset, o.layers);
  if (!(o.residual_scale > 0) || !std::isfinite(o.residual_scale)) fail("synth: the residual scale must be positive");
  if (!(o.router_bias_step >= 0) || !std::isfinite(o.router_bias_step))
    fail("synth: the router bias step must be >= 0");
  // The name tells a conditioned file from a plain one in `inspect` output.
  if (o.residual_scale != 1.0f || o.router_bias_step > 0) plan.cfg.name += "-conditioned";
  const auto recipe = o.recipe == Recipe::Q2 ? convert::ExpertRecipe::IQ2_XXS_Q2_K : convert::ExpertRecipe::Q4_K;
  const Vocab vocab = placeholder_vocab(plan.cfg.n_vocab);
  // Header: magic, version, counts; metadata: the tokenizer exactly plus ~1 KB of model keys (two
  // per-layer arrays included); tensor table exactly.
  plan.header_bytes = 24 + vocab_metadata_bytes(vocab) + 1200 + 8ull * plan.cfg.n_layer;
  for (const TensorSpec& s : model_tensor_specs(plan.cfg, /*include_optional=*/true)) {
    convert::TypeChoice tc = convert::choose_type(s, convert::OutType::DS4, recipe);
    if (!tc.note.empty()) plan.notes.push_back(tc.note);
    if (!type_allowed(s.cls, tc.type))
      fail("synth: %s would get type %s (allowed: %s)", s.name.c_str(), type_name(tc.type), type_class_name(s.cls));
    int64_t nel = 1;
    for (int64_t d : s.ne) nel *= d;
    const TypeInfo& ti = type_info(tc.type);
    const uint64_t nbytes = static_cast<uint64_t>(nel / ti.block_elems) * ti.block_bytes;
    plan.tensors.push_back({s, tc.type, nbytes});
    plan.data_bytes += align32(nbytes);
    plan.header_bytes += 8 + s.name.size() + 4 + 8 * s.ne.size() + 4 + 8;
  }
  plan.header_bytes = align32(plan.header_bytes);
  return plan;
}

SynthResult synthesize(const SynthOptions& o) {
  if (o.output.empty()) fail("synth: no output path");
  const SynthPlan plan = plan_synth(o);
  if (o.progress)
    for (const auto& n : convert::summarize_notes(plan.notes)) std::fprintf(stderr, "synth: %s\n", n.c_str());
  gguf::Writer w(o.output);
  write_config(w, plan.cfg);
  write_vocab(w, placeholder_vocab(plan.cfg.n_vocab));
  std::vector<size_t> idx;
  for (const auto& t : plan.tensors) idx.push_back(w.add_tensor(t.spec.name, t.type, t.spec.ne));
  w.begin_data();
  Progress prog("synth", plan.data_bytes, o.progress);
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    prog.set_label(strfmt("[%zu/%zu] %s", i + 1, plan.tensors.size(), plan.tensors[i].spec.name.c_str()));
    generate_tensor(plan.tensors[i], idx[i], plan.cfg, o, w, prog);
  }
  w.finish();
  prog.finish();
  SynthResult r;
  r.bytes_written = prog.done();
  r.n_tensors = plan.tensors.size();
  r.seconds = prog.seconds();
  return r;
}

}  // namespace flashstar::synth
