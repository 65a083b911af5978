#include "engine/kv_state.h"

#include <cstring>

#include "common/error.h"

namespace flashstar {

namespace {
constexpr uint32_t kSnapMagic = 0x34565344;  // "DSV4"
constexpr uint32_t kSnapVersion = 1;
constexpr float kEmptyScore = -1e30f;

class Out {
 public:
  void u32(uint32_t v) { put(&v, 4); }
  void f32s(const std::vector<float>& v) { put(v.data(), v.size() * 4); }
  void put(const void* p, size_t n) {
    if (n) s.append(static_cast<const char*>(p), n);
  }
  std::string s;
};

class In {
 public:
  explicit In(const std::string& s) : s_(s) {}
  uint32_t u32() {
    uint32_t v;
    get(&v, 4);
    return v;
  }
  void f32s(std::vector<float>& v, size_t n) {
    v.resize(n);
    get(v.data(), n * 4);
  }
  void get(void* p, size_t n) {
    if (n == 0) return;  // p may be the null data() of an empty vector
    if (n > s_.size() - off_) fail("snapshot is truncated (need %zu bytes at offset %zu of %zu)", n, off_, s_.size());
    std::memcpy(p, s_.data() + off_, n);
    off_ += n;
  }
  bool done() const { return off_ == s_.size(); }

 private:
  const std::string& s_;
  size_t off_ = 0;
};
}  // namespace

void CompressorState::init(uint32_t ratio_, uint32_t dim) {
  ratio = ratio_;
  const uint32_t coff = ratio == 4 ? 2 : 1;
  width = coff * dim;
  rows = coff * ratio;
  kv.assign(static_cast<size_t>(rows) * width, 0.0f);
  score.assign(static_cast<size_t>(rows) * width, kEmptyScore);
}

void CompressorState::reset_rows(uint32_t from, uint32_t to) {
  for (uint32_t r = from; r < to; ++r)
    for (uint32_t j = 0; j < width; ++j) {
      kv[static_cast<size_t>(r) * width + j] = 0.0f;
      score[static_cast<size_t>(r) * width + j] = kEmptyScore;
    }
}

void KvState::init(const ModelConfig& c) {
  tokens.clear();
  logits.clear();
  layers.assign(c.n_layer, LayerState{});
  for (uint32_t il = 0; il < c.n_layer; ++il) {
    LayerState& L = layers[il];
    L.ratio = c.ratio(il);
    if (L.ratio) L.comp_state.init(L.ratio, c.head_dim);
    if (L.ratio == 4) L.idx_state.init(L.ratio, c.idx_head_dim);
  }
}

std::string save_snapshot(const ModelConfig& c, const KvState& s, const SnapshotInfo& info) {
  Out o;
  const uint32_t N = static_cast<uint32_t>(s.tokens.size());
  const uint32_t R = std::min<uint32_t>(N, c.n_swa);
  const uint32_t comp_cap = info.ctx / 4 + 2;
  for (uint32_t v : {kSnapMagic, kSnapVersion, info.ctx, info.chunk, info.raw_cap, c.n_swa, comp_cap, N, c.n_layer,
                     c.head_dim, c.idx_head_dim, c.n_vocab, R})
    o.u32(v);
  o.put(s.tokens.data(), N * 4);
  if (s.logits.size() == c.n_vocab) {
    o.f32s(s.logits);
  } else {
    o.f32s(std::vector<float>(c.n_vocab, 0.0f));
  }
  for (uint32_t il = 0; il < c.n_layer; ++il) o.u32(static_cast<uint32_t>(s.n_comp(c, il)));
  for (uint32_t il = 0; il < c.n_layer; ++il) o.u32(static_cast<uint32_t>(s.n_idx(c, il)));
  for (uint32_t il = 0; il < c.n_layer; ++il) {
    const LayerState& L = s.layers[il];
    if (L.raw.size() != static_cast<size_t>(R) * c.head_dim) fail("internal: raw window holds the wrong row count");
    o.f32s(L.raw);
    if (L.ratio) {
      o.f32s(L.comp);
      o.f32s(L.comp_state.kv);
      o.f32s(L.comp_state.score);
    }
    if (L.ratio == 4) {
      o.f32s(L.idx);
      o.f32s(L.idx_state.kv);
      o.f32s(L.idx_state.score);
    }
  }
  return o.s;
}

void load_snapshot(const ModelConfig& c, const std::string& bytes, uint32_t ctx, KvState& s) {
  In in(bytes);
  uint32_t h[13];
  for (uint32_t& v : h) v = in.u32();
  if (h[0] != kSnapMagic) fail("not a DeepSeek V4 session snapshot (bad magic)");
  if (h[1] != kSnapVersion) fail("unsupported snapshot version %u", h[1]);
  if (h[5] != c.n_swa || h[8] != c.n_layer || h[9] != c.head_dim || h[10] != c.idx_head_dim || h[11] != c.n_vocab)
    fail("snapshot was made for another model (layers %u, head %u, vocab %u)", h[8], h[9], h[11]);
  const uint32_t N = h[7], R = h[12];
  if (N >= ctx) fail("snapshot holds %u tokens, more than the context of %u allows", N, ctx);
  if (R != std::min<uint32_t>(N, c.n_swa)) fail("snapshot raw row count %u is inconsistent with %u tokens", R, N);
  KvState t;
  t.init(c);
  t.tokens.resize(N);
  in.get(t.tokens.data(), static_cast<size_t>(N) * 4);
  for (int32_t tok : t.tokens)
    if (tok < 0 || static_cast<uint32_t>(tok) >= c.n_vocab) fail("snapshot holds token id %d outside the vocabulary", tok);
  in.f32s(t.logits, c.n_vocab);
  if (N == 0) t.logits.clear();
  std::vector<uint32_t> nc(c.n_layer), ni(c.n_layer);
  for (auto& v : nc) v = in.u32();
  for (auto& v : ni) v = in.u32();
  for (uint32_t il = 0; il < c.n_layer; ++il) {
    LayerState& L = t.layers[il];
    const uint32_t want = L.ratio ? (N / L.ratio) : 0;
    if (nc[il] != want || ni[il] != (L.ratio == 4 ? want : 0))
      fail("snapshot layer %u has %u compressed rows, expected %u", il, nc[il], want);
    in.f32s(L.raw, static_cast<size_t>(R) * c.head_dim);
    if (L.ratio) {
      in.f32s(L.comp, static_cast<size_t>(nc[il]) * c.head_dim);
      in.f32s(L.comp_state.kv, L.comp_state.kv.size());
      in.f32s(L.comp_state.score, L.comp_state.score.size());
    }
    if (L.ratio == 4) {
      in.f32s(L.idx, static_cast<size_t>(ni[il]) * c.idx_head_dim);
      in.f32s(L.idx_state.kv, L.idx_state.kv.size());
      in.f32s(L.idx_state.score, L.idx_state.score.size());
    }
  }
  if (!in.done()) fail("snapshot has %s trailing bytes", "unexpected");
  s = std::move(t);
}

}  // namespace flashstar
