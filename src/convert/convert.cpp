#include "convert/convert.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "common/parallel.h"
#include "convert/hf_config.h"
#include "convert/name_map.h"
#include "convert/progress.h"
#include "convert/safetensors.h"
#include "convert/vocab.h"
#include "gguf/writer.h"
#include "quant/quant.h"
#include "text/vocab_builder.h"

namespace flashstar::convert {
namespace {

// Where a GGUF tensor's data comes from: one source tensor, or one per routed expert.
struct Binding {
  std::string source;
  std::vector<std::string> experts;
  std::string companion;  // a block-scale tensor next to the weight (FP8/FP4 checkpoints)
};

struct Planned {
  const TensorSpec* spec;
  GgmlType type;
  const Binding* bind;
  size_t index = 0;  // in the writer
};

std::string dir_of(const std::string& p) {
  auto s = p.find_last_of('/');
  return s == std::string::npos ? "." : (s == 0 ? "/" : p.substr(0, s));
}
std::string base_of(const std::string& p) {
  std::string q = p;
  while (q.size() > 1 && q.back() == '/') q.pop_back();
  auto s = q.find_last_of('/');
  return s == std::string::npos ? q : q.substr(s + 1);
}

std::string shape_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// PyTorch [out, in] is GGUF ne [in, out]: same bytes, reversed dims, never a transpose.
std::vector<int64_t> reversed(const std::vector<int64_t>& v) { return {v.rbegin(), v.rend()}; }

void check_shape(const TensorSpec& s, const Binding& b, const Checkpoint& ck) {
  if (s.expert != ExpertPart::None) {
    const std::vector<int64_t> want = {s.ne[0], s.ne[1]};
    for (size_t e = 0; e < b.experts.size(); ++e) {
      const StTensor* t = ck.find(b.experts[e]);
      if (reversed(t->shape) != want)
        fail("%s: shape %s, expected %s (PyTorch order) for %s", t->name.c_str(), shape_str(t->shape).c_str(),
             shape_str(reversed(want)).c_str(), s.name.c_str());
    }
    return;
  }
  const StTensor* t = ck.find(b.source);
  if (reversed(t->shape) != s.ne)
    fail("%s: shape %s, expected %s (PyTorch order) for %s", t->name.c_str(), shape_str(t->shape).c_str(),
         shape_str(reversed(s.ne)).c_str(), s.name.c_str());
}

// Maps every checkpoint tensor; returns GGUF name → binding.
std::map<std::string, Binding> bind_sources(const Checkpoint& ck, const ModelConfig& c, ConvertResult& res,
                                            std::vector<std::string>& unknown) {
  std::map<std::string, Binding> out;
  for (const std::string& n : ck.names()) {
    NameResult r = map_tensor_name(n);
    if (r.kind == NameKind::Mtp) {
      ++res.ignored_mtp;
      continue;
    }
    if (r.kind == NameKind::Unknown || r.mapped.layer >= static_cast<int>(c.n_layer)) {
      ++res.ignored_other;
      unknown.push_back(n);
      continue;
    }
    Binding& b = out[r.mapped.gguf];
    if (r.kind == NameKind::Companion) {
      b.companion = n;
      continue;
    }
    if (r.mapped.expert >= 0) {
      if (r.mapped.expert >= static_cast<int>(c.n_expert))
        fail("%s: expert %d is outside the %u experts of config.json", n.c_str(), r.mapped.expert, c.n_expert);
      if (b.experts.size() < c.n_expert) b.experts.resize(c.n_expert);
      b.experts[r.mapped.expert] = n;
    } else {
      if (!b.source.empty()) fail("%s and %s both map to %s", b.source.c_str(), n.c_str(), r.mapped.gguf.c_str());
      b.source = n;
    }
  }
  return out;
}

// Converts rows of floats to the output type. Rejects values that are not finite or overflow the type.
void encode_rows(const Planned& p, const float* src, int64_t n_rows, uint8_t* dst, int64_t first_row) {
  const int64_t n0 = p.spec->ne[0];
  const size_t rb = row_bytes(p.type, n0);
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* x = src + r * n0;
    uint8_t* y = dst + r * rb;
    for (int64_t i = 0; i < n0; ++i)
      if (!std::isfinite(x[i]))
        fail("%s: row %lld holds a non-finite value", p.spec->name.c_str(), static_cast<long long>(first_row + r));
    switch (p.type) {
      case GgmlType::F32:
        std::memcpy(y, x, rb);
        break;
      case GgmlType::F16:
        for (int64_t i = 0; i < n0; ++i) {
          const uint16_t h = f32_to_f16(x[i]);
          if ((h & 0x7c00u) == 0x7c00u)
            fail("%s: value %g in row %lld overflows f16", p.spec->name.c_str(), static_cast<double>(x[i]),
                 static_cast<long long>(first_row + r));
          std::memcpy(y + 2 * i, &h, 2);
        }
        break;
      case GgmlType::BF16:
        for (int64_t i = 0; i < n0; ++i) {
          const uint16_t h = f32_to_bf16(x[i]);
          std::memcpy(y + 2 * i, &h, 2);
        }
        break;
      default:
        quant::quantize_row(p.type, x, y, n0);
    }
  }
}

void write_float_tensor(const Planned& p, const Checkpoint& ck, gguf::Writer& w, Progress& prog) {
  const TensorSpec& s = *p.spec;
  const int64_t n0 = s.ne[0];
  int64_t rows = 1;
  for (size_t i = 1; i < s.ne.size(); ++i) rows *= s.ne[i];
  const size_t rb = row_bytes(p.type, n0);
  // Chunks of ~2 MB of floats, but enough of them to keep every thread busy on small tensors.
  const int64_t by_size = std::max<int64_t>(1, (2 << 20) / (n0 * 4));
  const int64_t by_threads = std::max<int64_t>(1, (rows + 4 * num_threads() - 1) / (4 * num_threads()));
  const int64_t chunk = std::min(by_size, by_threads);
  const int64_t n_chunks = (rows + chunk - 1) / chunk;

  std::vector<std::unique_ptr<SourceTensor>> srcs;
  if (s.expert != ExpertPart::None) {
    for (const auto& n : p.bind->experts) srcs.push_back(ck.source(n));
  } else {
    srcs.push_back(ck.source(p.bind->source));
  }
  for (const auto& src : srcs)
    if (src->is_integer()) fail("%s: integer dtype %s where %s needs floats", src->name().c_str(), src->dtype_desc().c_str(), s.name.c_str());
  const int64_t rows_per_src = s.expert != ExpertPart::None ? s.ne[1] : rows;

  parallel_for(n_chunks, [&](int64_t cb, int64_t ce) {
    std::vector<float> fbuf;
    std::vector<uint8_t> obuf;
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t r0 = c * chunk, r1 = std::min(rows, r0 + chunk);
      fbuf.resize(static_cast<size_t>((r1 - r0) * n0));
      obuf.resize(static_cast<size_t>(r1 - r0) * rb);
      // Rows of a stacked expert tensor may span two experts: read each expert's run separately.
      for (int64_t r = r0; r < r1;) {
        const int64_t e = r / rows_per_src, local = r % rows_per_src;
        const int64_t n = std::min(r1 - r, rows_per_src - local);
        srcs[static_cast<size_t>(e)]->read_rows_f32(local, n, fbuf.data() + (r - r0) * n0);
        r += n;
      }
      encode_rows(p, fbuf.data(), r1 - r0, obuf.data(), r0);
      w.write_tensor(p.index, obuf.data(), obuf.size(), static_cast<uint64_t>(r0) * rb);
      prog.add(obuf.size());
    }
  });
}

void write_index_tensor(const Planned& p, const Checkpoint& ck, const ModelConfig& c, gguf::Writer& w, Progress& prog) {
  auto src = ck.source(p.bind->source);
  if (!src->is_integer()) fail("%s: dtype %s, expected an integer tensor", src->name().c_str(), src->dtype_desc().c_str());
  std::vector<int64_t> v;
  src->read_ints(v);
  std::vector<int32_t> out(v.size());
  // Same element order: token row t holds its n_expert_used ids, which is GGUF ne [used, vocab].
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] < 0 || v[i] >= static_cast<int64_t>(c.n_expert))
      fail("%s: token %zu routes to expert %lld, outside [0, %u)", src->name().c_str(), i / c.n_expert_used,
           static_cast<long long>(v[i]), c.n_expert);
    out[i] = static_cast<int32_t>(v[i]);
  }
  w.write_tensor(p.index, out.data(), out.size() * 4, 0);
  prog.add(out.size() * 4);
}

}  // namespace

namespace {

// The checkpoint's own tokenizer (tokenizer.json) when it has one, else the placeholder vocabulary.
Vocab checkpoint_vocab(const std::string& dir, uint32_t n_vocab, bool progress) {
  const std::string path = dir + "/tokenizer.json";
  if (!std::filesystem::exists(path)) return placeholder_vocab(n_vocab);
  text::BpeVocab b = text::vocab_from_tokenizer_json(path);
  if (b.tokens.size() > n_vocab)
    fail("%s: %zu tokens, more than the model's vocabulary of %u", path.c_str(), b.tokens.size(), n_vocab);
  if (progress) std::fprintf(stderr, "convert: tokenizer from %s (%zu tokens, %zu merges)\n", path.c_str(), b.tokens.size(), b.merges.size());
  Vocab v;
  v.tokens = std::move(b.tokens);
  v.merges = std::move(b.merges);
  v.token_types = std::move(b.token_types);
  v.bos = b.bos;
  v.eos = b.eos;
  return v;
}

}  // namespace

ConvertResult convert_checkpoint(const ConvertOptions& o) {
  ConvertResult res;
  std::string dir = o.input;
  std::string cfg_path = dir + "/config.json";
  if (dir.size() > 12 && dir.compare(dir.size() - 12, 12, ".safetensors") == 0) cfg_path = dir_of(dir) + "/config.json";
  std::vector<std::string> defaulted;
  ModelConfig cfg = read_hf_config(cfg_path, &defaulted);
  if (!o.name.empty()) {
    cfg.name = o.name;
  } else if (cfg.name == ModelConfig().name) {
    cfg.name = base_of(dir);
  }
  if (o.progress && !defaulted.empty()) {
    std::string s;
    for (const auto& k : defaulted) s += (s.empty() ? "" : ", ") + k;
    std::fprintf(stderr, "convert: config.json lacks %s; using DeepSeek V4 Flash defaults\n", s.c_str());
  }

  auto ck = Checkpoint::open(dir);
  std::vector<std::string> unknown;
  auto binds = bind_sources(*ck, cfg, res, unknown);

  const std::vector<TensorSpec> specs = model_tensor_specs(cfg, /*include_optional=*/true);
  std::vector<Planned> plan;
  std::map<std::string, int> wanted;
  std::vector<std::string> notes;
  for (const TensorSpec& s : specs) {
    wanted[s.name] = 1;
    auto it = binds.find(s.name);
    const bool have = it != binds.end() && (!it->second.source.empty() || !it->second.experts.empty());
    if (!have) {
      if (s.optional) continue;
      fail("checkpoint has no tensor for %s", s.name.c_str());
    }
    const Binding& b = it->second;
    if (!b.companion.empty())
      fail("%s has a block-scale companion %s: scaled FP8/FP4 weights are not supported yet", s.name.c_str(),
           b.companion.c_str());
    if (s.expert != ExpertPart::None) {
      if (b.experts.size() != static_cast<size_t>(s.ne[2]))
        fail("%s: expected %lld routed experts", s.name.c_str(), static_cast<long long>(s.ne[2]));
      for (size_t e = 0; e < b.experts.size(); ++e)
        if (b.experts[e].empty()) fail("checkpoint lacks expert %zu of %s", e, s.name.c_str());
    } else if (b.source.empty()) {
      fail("%s: per-expert tensors found where one tensor was expected", s.name.c_str());
    }
    check_shape(s, b, *ck);
    TypeChoice tc = choose_type(s, o.outtype, o.experts);
    if (!tc.note.empty()) notes.push_back(tc.note);
    if (!type_allowed(s.cls, tc.type))
      fail("%s: type %s is not allowed (allowed: %s)", s.name.c_str(), type_name(tc.type), type_class_name(s.cls));
    const bool plain = tc.type == GgmlType::F32 || tc.type == GgmlType::F16 || tc.type == GgmlType::BF16 ||
                       tc.type == GgmlType::I32;
    if (!plain && !quant::can_quantize(tc.type)) fail("%s: cannot quantize to %s", s.name.c_str(), type_name(tc.type));
    plan.push_back({&s, tc.type, &b});
  }
  for (const auto& [name, b] : binds)
    if (!wanted.count(name))
      fail("%s maps to %s, which this configuration does not have (check config.json against the checkpoint)",
           (b.source.empty() ? (b.experts.empty() ? b.companion : b.experts.front()) : b.source).c_str(), name.c_str());

  if (o.progress) {
    for (const auto& n : summarize_notes(notes)) std::fprintf(stderr, "convert: %s\n", n.c_str());
    if (res.ignored_mtp) std::fprintf(stderr, "convert: ignoring %zu mtp.* tensors\n", res.ignored_mtp);
    if (res.ignored_other) {
      std::fprintf(stderr, "convert: ignoring %zu unrecognised tensors (e.g. %s)\n", res.ignored_other, unknown[0].c_str());
    }
  }

  gguf::Writer w(o.output);
  write_config(w, cfg);
  write_vocab(w, checkpoint_vocab(std::filesystem::is_directory(dir) ? dir : dir_of(dir), cfg.n_vocab, o.progress));
  uint64_t total = 0;
  for (Planned& p : plan) {
    p.index = w.add_tensor(p.spec->name, p.type, p.spec->ne);
    total += w.tensor_nbytes(p.index);
  }
  w.begin_data();
  Progress prog("convert", total, o.progress);
  for (size_t i = 0; i < plan.size(); ++i) {
    const Planned& p = plan[i];
    prog.set_label(strfmt("[%zu/%zu] %s %s", i + 1, plan.size(), p.spec->name.c_str(), type_name(p.type)));
    if (p.type == GgmlType::I32) {
      write_index_tensor(p, *ck, cfg, w, prog);
    } else {
      write_float_tensor(p, *ck, w, prog);
    }
  }
  w.finish();
  prog.finish();
  res.n_tensors = plan.size();
  res.data_bytes = total;
  res.seconds = prog.seconds();
  return res;
}

}  // namespace flashstar::convert
