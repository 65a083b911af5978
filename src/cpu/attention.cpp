// Attention half of a layer (spec/model.md §4.4-4.7): q/kv projections, the raw window, the
// compressors, the indexer and sink attention, then the grouped output projection.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/parallel.h"
#include "common/rounding_margin.h"
#include "cpu/layers.h"

namespace flashstar::cpu {
namespace {

// With a tie log, every rounding of a cached row (or indexer query) that came within
// TieLog::kRoundingGap of its boundary, so drift against another backend can be traced to it.
// Kinds: kv_* (raw rows), comp_* (compressed attention rows), idx_* (indexer rows), idx_q_* (queries).
enum class RowOrigin { Raw, Compressed, Query };
void log_roundings(const float* row, int64_t dim, int64_t n_rot, RowKind kind, RowOrigin origin, int64_t pos,
                   const LayerContext& L) {
  if (!L.ties || L.numerics != Numerics::Official) return;
  TieLog& t = *L.ties;
  if (kind == RowKind::Attention) {
    for (int64_t b0 = 0; b0 < dim - n_rot; b0 += 64) {
      const int64_t b1 = std::min(b0 + 64, dim - n_rot);
      float amax = 0;
      for (int64_t i = b0; i < b1; ++i) amax = std::max(amax, std::fabs(row[i]));
      const double y = std::max(amax, 1e-4f) / 448.0;
      const bool comp = origin == RowOrigin::Compressed;
      t.rounding(pos, L.il, comp ? "comp_fp8_scale" : "kv_fp8_scale", y, pow2_ceil_boundary(y), y, static_cast<int32_t>(b0));
      const float scale = fp8_block_scale(amax);
      for (int64_t i = b0; i < b1; ++i) {
        const double a = std::fabs(row[i] / scale);
        t.rounding(pos, L.il, comp ? "comp_fp8" : "kv_fp8", a, e4m3_boundary(a), amax / scale, static_cast<int32_t>(i));
      }
    }
    float rmax = 0;
    for (int64_t i = dim - n_rot; i < dim; ++i) rmax = std::max(rmax, std::fabs(row[i]));
    for (int64_t i = dim - n_rot; i < dim; ++i) {
      const double a = std::fabs(row[i]);
      t.rounding(pos, L.il, origin == RowOrigin::Compressed ? "comp_f16" : "kv_f16", a, f16_boundary(a), rmax,
                 static_cast<int32_t>(i));
    }
    return;
  }
  const bool query = origin == RowOrigin::Query;
  std::vector<float> h(row, row + dim);
  hadamard_inplace(h.data(), dim);
  for (int64_t b0 = 0; b0 < dim; b0 += 32) {
    const int64_t b1 = std::min<int64_t>(b0 + 32, dim);
    float amax = 0;
    for (int64_t i = b0; i < b1; ++i) amax = std::max(amax, std::fabs(h[i]));
    const double y = std::max(amax, 7.052966104933725e-38f) / 6.0;
    t.rounding(pos, L.il, query ? "idx_q_fp4_scale" : "idx_fp4_scale", y, pow2_ceil_boundary(y), y,
               static_cast<int32_t>(b0));
    const float scale = fp4_block_scale(amax);
    for (int64_t i = b0; i < b1; ++i) {
      const double a = std::fabs(h[i] / scale);
      t.rounding(pos, L.il, query ? "idx_q_fp4" : "idx_fp4", a, e2m1_boundary(a), amax / scale, static_cast<int32_t>(i));
    }
  }
}

// The official numerics a cached row goes through before it is stored (FP8 on the non-rope dims of
// attention rows, Hadamard + FP4 on indexer rows, then f16 storage).
void finish_cached_row(float* row, int64_t dim, int64_t n_rot, RowKind kind, RowOrigin origin, int64_t pos,
                       const LayerContext& L) {
  if (L.numerics != Numerics::Official) return;
  log_roundings(row, dim, n_rot, kind, origin, pos, L);
  if (kind == RowKind::Attention) {
    fp8_e4m3_roundtrip_blocks(row, dim - n_rot, 64);
  } else {
    indexer_qat_row(row, dim);
  }
  f16_round_inplace(row, dim);
}

}  // namespace

// Feeds one token's projections into a compressor; when the token closes a window, pools it into a
// new compressed row appended to `rows` (spec/model.md §4.5).
void compressor_push(CompressorState& st, const float* kv_cur, const float* sc_cur, const std::vector<float>& ape,
                     int64_t pos, int64_t dim, const std::vector<float>& norm, const LayerContext& L, RowKind kind,
                     std::vector<float>& rows) {
  const uint32_t r = st.ratio, W = st.width;
  const uint32_t phase = static_cast<uint32_t>(pos % r);
  const uint32_t slot = r == 4 ? r + phase : phase;
  float* kv = st.kv.data() + static_cast<size_t>(slot) * W;
  float* sc = st.score.data() + static_cast<size_t>(slot) * W;
  for (uint32_t j = 0; j < W; ++j) {
    kv[j] = kv_cur[j];
    sc[j] = sc_cur[j] + ape[static_cast<size_t>(phase) * W + j];
  }
  if ((pos + 1) % r != 0) return;

  // Per channel softmax over the window's slots. Ratio 4 overlaps two windows: the previous window's
  // first-half channels (rows 0..3) and the current window's second-half channels (rows 4..7).
  const uint32_t n_slots = r == 4 ? 8 : r;
  std::vector<float> pooled(static_cast<size_t>(dim)), p(n_slots);
  for (int64_t j = 0; j < dim; ++j) {
    auto at = [&](uint32_t s) -> size_t {
      const int64_t ch = (r == 4 && s >= 4) ? dim + j : j;
      return static_cast<size_t>(s) * W + static_cast<size_t>(ch);
    };
    float mx = kNegInf;
    for (uint32_t s = 0; s < n_slots; ++s) mx = std::max(mx, st.score[at(s)]);
    float sum = 0;
    for (uint32_t s = 0; s < n_slots; ++s) {
      p[s] = std::exp(st.score[at(s)] - mx);
      sum += p[s];
    }
    float acc = 0;
    for (uint32_t s = 0; s < n_slots; ++s) acc += (p[s] / sum) * st.kv[at(s)];
    pooled[j] = acc;
  }
  rms_norm(pooled.data(), norm.data(), pooled.data(), dim, float(L.cfg.rms_eps));
  L.rope.apply(pooled.data() + dim - L.cfg.n_rot, pos + 1 - r, false);
  finish_cached_row(pooled.data(), dim, L.cfg.n_rot, kind, RowOrigin::Compressed, pos, L);
  rows.insert(rows.end(), pooled.begin(), pooled.end());

  if (r == 4) {  // the current window becomes the previous one
    std::copy(st.kv.begin() + 4 * W, st.kv.begin() + 8 * W, st.kv.begin());
    std::copy(st.score.begin() + 4 * W, st.score.begin() + 8 * W, st.score.begin());
    st.reset_rows(4, 8);
  } else {
    st.reset_rows(0, st.rows);
  }
}

// Rows a query may read from the compressed cache: all visible ones, or the indexer's top-k of them.
void select_compressed(const LayerContext& L, int64_t pos, int64_t n_vis, const float* iq, const float* iw,
                       std::vector<int64_t>& sel, std::vector<std::pair<float, int64_t>>& scored) {
  const ModelConfig& c = L.cfg;
  sel.clear();
  if (L.state.ratio != 4 || n_vis <= static_cast<int64_t>(c.idx_top_k)) {
    for (int64_t i = 0; i < n_vis; ++i) sel.push_back(i);
    return;
  }
  const int64_t IHD = c.idx_head_dim;
  scored.resize(static_cast<size_t>(n_vis));
  for (int64_t i = 0; i < n_vis; ++i) {
    const float* k = L.state.idx.data() + i * IHD;
    float s = 0;
    for (uint32_t h = 0; h < c.n_idx_head; ++h) s += std::max(0.0f, dot_f32(iq + h * IHD, k, IHD)) * iw[h];
    scored[i] = {s, i};
  }
  // Highest score first; equal scores keep the lower row index (ds4's rule).
  auto better = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  std::partial_sort(scored.begin(), scored.begin() + c.idx_top_k, scored.end(), better);
  for (uint32_t i = 0; i < c.idx_top_k; ++i) sel.push_back(scored[i].second);
  if (L.ties) {
    auto out = std::min_element(scored.begin() + c.idx_top_k, scored.end(), better);
    L.ties->consider(pos, L.il, "indexer", scored[c.idx_top_k - 1].first, out->first);
  }
  std::sort(sel.begin(), sel.end());
}

// One head over the visible rows with a sink logit in the denominator (spec/model.md §4.7).
void sink_attention_head(const float* q, const std::vector<const float*>& rows, float sink, int64_t hd,
                         std::vector<float>& s, float* out) {
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  s.resize(rows.size());
  float mx = sink;
  for (size_t r = 0; r < rows.size(); ++r) {
    s[r] = dot_f32(q, rows[r], hd) * scale;
    mx = std::max(mx, s[r]);
  }
  float denom = std::exp(sink - mx);
  for (size_t r = 0; r < rows.size(); ++r) {
    s[r] = std::exp(s[r] - mx);
    denom += s[r];
  }
  std::fill(out, out + hd, 0.0f);
  for (size_t r = 0; r < rows.size(); ++r) {
    const float p = s[r] / denom;
    for (int64_t i = 0; i < hd; ++i) out[i] += p * rows[r][i];
  }
}

void attention_half(const LayerContext& L, const Chunk& ch, float* X) {
  const ModelConfig& c = L.cfg;
  const LayerWeights& w = L.w;
  LayerState& st = L.state;
  const int64_t n = ch.n, D = c.n_embd, HD = c.head_dim, H = c.n_head, QL = c.q_lora, QD = c.q_dim();
  const int64_t NOPE = c.nope_dim(), OL = c.out_low_dim();
  const float eps = float(c.rms_eps);

  std::vector<float> xin(n * D), an(n * D);
  auto splits = hc_pre_batch(c, w.hc_attn_fn, w.hc_attn_scale, w.hc_attn_base, X, n, xin.data());
  for (int64_t t = 0; t < n; ++t) rms_norm(xin.data() + t * D, w.attn_norm.data(), an.data() + t * D, D, eps);

  // Q path: low-rank, normalised q_a (also the indexer's query input), per-head plain norm, rope.
  std::vector<float> qr(n * QL), q(n * QD), kv(n * HD);
  matmul(w.q_a, an.data(), n, D, qr.data(), QL);
  for (int64_t t = 0; t < n; ++t) rms_norm(qr.data() + t * QL, w.q_a_norm.data(), qr.data() + t * QL, QL, eps);
  matmul(w.q_b, qr.data(), n, QL, q.data(), QD);
  matmul(w.kv, an.data(), n, D, kv.data(), HD);
  parallel_for(n, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t pos = ch.pos0 + t;
      for (int64_t h = 0; h < H; ++h) {
        float* qh = q.data() + t * QD + h * HD;
        rms_norm(qh, nullptr, qh, HD, eps);
        L.rope.apply(qh + NOPE, pos, false);
      }
      float* k = kv.data() + t * HD;
      rms_norm(k, w.kv_a_norm.data(), k, HD, eps);
      L.rope.apply(k + NOPE, pos, false);
      finish_cached_row(k, HD, c.n_rot, RowKind::Attention, RowOrigin::Raw, pos, L);
    }
  });

  // Compressors: projections batched, window updates in token order.
  const uint32_t ratio = st.ratio;
  if (ratio) {
    const int64_t W = st.comp_state.width;
    std::vector<float> ckv(n * W), cg(n * W);
    matmul(w.comp_kv, an.data(), n, D, ckv.data(), W);
    matmul(w.comp_gate, an.data(), n, D, cg.data(), W);
    std::vector<float> ikv, ig;
    const int64_t IW = st.idx_state.width;
    if (ratio == 4) {
      ikv.resize(n * IW);
      ig.resize(n * IW);
      matmul(w.idx_comp_kv, an.data(), n, D, ikv.data(), IW);
      matmul(w.idx_comp_gate, an.data(), n, D, ig.data(), IW);
    }
    for (int64_t t = 0; t < n; ++t) {
      const int64_t pos = ch.pos0 + t;
      compressor_push(st.comp_state, ckv.data() + t * W, cg.data() + t * W, w.comp_ape, pos, HD, w.comp_norm, L,
                      RowKind::Attention, st.comp);
      if (ratio == 4)
        compressor_push(st.idx_state, ikv.data() + t * IW, ig.data() + t * IW, w.idx_comp_ape, pos, c.idx_head_dim,
                        w.idx_comp_norm, L, RowKind::Indexer, st.idx);
    }
  }

  // Indexer queries and head weights, only when some query sees more rows than top-k.
  const int64_t NIH = c.n_idx_head, IHD = c.idx_head_dim;
  std::vector<float> iq, iw;
  const int64_t last_vis = ratio ? (ch.pos0 + n) / ratio : 0;
  if (ratio == 4 && last_vis > static_cast<int64_t>(c.idx_top_k)) {
    iq.resize(n * NIH * IHD);
    iw.resize(n * NIH);
    matmul(w.idx_q_b, qr.data(), n, QL, iq.data(), NIH * IHD);
    matmul(w.idx_proj, an.data(), n, D, iw.data(), NIH);
    const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(IHD * NIH)));
    for (auto& v : iw) v *= wscale;
    parallel_for(n, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t h = 0; h < NIH; ++h) {
          float* qh = iq.data() + (t * NIH + h) * IHD;
          L.rope.apply(qh + IHD - c.n_rot, ch.pos0 + t, false);
          if (L.numerics != Numerics::Official) continue;
          log_roundings(qh, IHD, 0, RowKind::Indexer, RowOrigin::Query, ch.pos0 + t, L);
          indexer_qat_row(qh, IHD);
        }
    });
  }

  // Raw rows visible to the chunk: the saved window followed by the chunk's own rows.
  const int64_t n_old = static_cast<int64_t>(st.raw.size()) / HD;
  std::vector<float> hist(st.raw);
  hist.insert(hist.end(), kv.begin(), kv.end());
  const int64_t hist_pos0 = ch.pos0 - n_old;

  std::vector<float> heads(n * QD);
  parallel_for(n, [&](int64_t t0, int64_t t1) {
    std::vector<int64_t> sel;
    std::vector<std::pair<float, int64_t>> scored;
    std::vector<const float*> rows;
    std::vector<float> s;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t pos = ch.pos0 + t;
      rows.clear();
      for (int64_t p = std::max<int64_t>(0, pos - c.n_swa + 1); p <= pos; ++p)
        rows.push_back(hist.data() + (p - hist_pos0) * HD);
      if (ratio) {
        const int64_t n_vis = (pos + 1) / ratio;
        select_compressed(L, pos, n_vis, iq.empty() ? nullptr : iq.data() + t * NIH * IHD,
                          iw.empty() ? nullptr : iw.data() + t * NIH, sel, scored);
        for (int64_t r : sel) rows.push_back(st.comp.data() + r * HD);
      }
      for (int64_t h = 0; h < H; ++h) {
        float* out = heads.data() + t * QD + h * HD;
        sink_attention_head(q.data() + t * QD + h * HD, rows, w.sinks[h], HD, s, out);
        L.rope.apply(out + NOPE, pos, true);
      }
    }
  });

  // Grouped output projection: group g reads only its own heads and its own rows of out_a.
  std::vector<float> low(n * OL), out(n * D);
  const int64_t GD = c.group_dim();
  for (uint32_t g = 0; g < c.n_out_group; ++g)
    matmul_rows(w.out_a, int64_t(g) * c.o_lora, c.o_lora, heads.data() + g * GD, n, QD, low.data() + g * c.o_lora, OL);
  matmul(w.out_b, low.data(), n, OL, out.data(), D);
  hc_post_batch(c, splits, out.data(), X, n);

  const int64_t keep = std::min<int64_t>(c.n_swa, n_old + n);
  st.raw.assign(hist.end() - keep * HD, hist.end());
}

}  // namespace flashstar::cpu
