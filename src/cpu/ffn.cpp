// FFN half of a layer (spec/model.md §4.8): router (sqrt-softplus, hash or biased top-k), routed
// experts grouped by expert over the chunk, shared expert, clamped SwiGLU.
#include <algorithm>
#include <cmath>

#include "common/parallel.h"
#include "cpu/layers.h"

namespace flashstar::cpu {
namespace {

// mid = silu(min(g, lim)) * clamp(u, -lim, lim) * weight, written over g.
void clamped_swiglu(float* g, const float* u, int64_t n, float lim, float weight) {
  for (int64_t i = 0; i < n; ++i) {
    const float gg = std::min(g[i], lim);
    const float uu = std::clamp(u[i], -lim, lim);
    g[i] = silu(gg) * uu * weight;
  }
}

// Gate/up/down of one expert over m gathered token rows.
void expert_forward(const Matrix& gate, const Matrix& up, const Matrix& down, const float* x, int64_t m,
                    int64_t D, int64_t FF, float lim, const float* weights, float* y) {
  std::vector<float> g(m * FF), u(m * FF);
  matmul(gate, x, m, D, g.data(), FF);
  matmul(up, x, m, D, u.data(), FF);
  for (int64_t t = 0; t < m; ++t) clamped_swiglu(g.data() + t * FF, u.data() + t * FF, FF, lim, weights ? weights[t] : 1.0f);
  matmul(down, g.data(), m, FF, y, D);
}

}  // namespace

void ffn_half(const LayerContext& L, const Chunk& ch, float* X) {
  const ModelConfig& c = L.cfg;
  const LayerWeights& w = L.w;
  const int64_t n = ch.n, D = c.n_embd, E = c.n_expert, K = c.n_expert_used, FF = c.n_ff_exp;
  const float lim = c.swiglu_clamp[L.il];

  std::vector<float> y(n * D), fn(n * D);
  auto splits = hc_pre_batch(c, w.hc_ffn_fn, w.hc_ffn_scale, w.hc_ffn_base, X, n, y.data());
  for (int64_t t = 0; t < n; ++t) rms_norm(y.data() + t * D, w.ffn_norm.data(), fn.data() + t * D, D, float(c.rms_eps));

  // Router: probabilities from all experts; selection by hash table or biased top-k.
  std::vector<float> logits(n * E);
  matmul(w.gate_inp, fn.data(), n, D, logits.data(), E);
  std::vector<int32_t> sel(n * K);
  std::vector<float> wsel(n * K);
  std::vector<std::pair<float, int32_t>> order(static_cast<size_t>(E));
  for (int64_t t = 0; t < n; ++t) {
    float* p = logits.data() + t * E;
    for (int64_t e = 0; e < E; ++e) p[e] = std::sqrt(softplus(p[e]));
    int32_t* s = sel.data() + t * K;
    if (c.is_hash_layer(L.il)) {
      const int32_t tok = ch.tokens[t];
      for (int64_t i = 0; i < K; ++i) s[i] = w.tid2eid[static_cast<size_t>(tok) * K + i];
    } else {
      for (int64_t e = 0; e < E; ++e)
        order[e] = {p[e] + (w.exp_probs_b.empty() ? 0.0f : w.exp_probs_b[e]), static_cast<int32_t>(e)};
      auto better = [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      };
      std::partial_sort(order.begin(), order.begin() + K, order.end(), better);
      for (int64_t i = 0; i < K; ++i) s[i] = order[i].second;
      if (L.ties && K < E) {
        auto out = std::min_element(order.begin() + K, order.end(), better);
        L.ties->consider(ch.pos0 + t, L.il, "router", order[K - 1].first, out->first);
      }
    }
    float sum = 0;
    for (int64_t i = 0; i < K; ++i) sum += p[s[i]];
    const float denom = c.expert_weights_norm ? std::max(sum, 6.103515625e-5f) : 1.0f;
    for (int64_t i = 0; i < K; ++i) wsel[t * K + i] = p[s[i]] / denom * float(c.expert_weights_scale);
  }

  // Routed experts: gather each expert's tokens, run them together, scatter per (token, slot) so the
  // final sum runs in slot order whatever the chunking.
  std::vector<float> slot_out(n * K * D);
  std::vector<std::vector<int64_t>> by_expert(static_cast<size_t>(E));
  for (int64_t i = 0; i < n * K; ++i) by_expert[sel[i]].push_back(i);
  for (int64_t e = 0; e < E; ++e) {
    const auto& items = by_expert[e];
    if (items.empty()) continue;
    const int64_t m = static_cast<int64_t>(items.size());
    std::vector<float> xe(m * D), ye(m * D), we(m);
    for (int64_t j = 0; j < m; ++j) {
      std::copy_n(fn.data() + (items[j] / K) * D, D, xe.data() + j * D);
      we[j] = wsel[items[j]];
    }
    expert_forward(w.gate_exps.expert(e), w.up_exps.expert(e), w.down_exps.expert(e), xe.data(), m, D, FF, lim,
                   we.data(), ye.data());
    for (int64_t j = 0; j < m; ++j) std::copy_n(ye.data() + j * D, D, slot_out.data() + items[j] * D);
  }

  std::vector<float> out(n * D, 0.0f);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < K; ++i) {
      const float* so = slot_out.data() + (t * K + i) * D;
      float* o = out.data() + t * D;
      for (int64_t d = 0; d < D; ++d) o[d] += so[d];
    }
  if (c.n_expert_shared) {
    std::vector<float> shared(n * D);
    expert_forward(w.gate_shexp, w.up_shexp, w.down_shexp, fn.data(), n, D, c.n_ff_exp, lim, nullptr, shared.data());
    for (int64_t i = 0; i < n * D; ++i) out[i] += shared[i];
  }
  hc_post_batch(c, splits, out.data(), X, n);
}

}  // namespace flashstar::cpu
