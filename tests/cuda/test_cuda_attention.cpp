// The attention-side CUDA kernels (compressor, indexer selection, sink attention) against the CPU
// reference pieces on fresh random data, odd sizes, outputs poisoned. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cpu/layers.h"
#include "cuda_test_fixture.h"

using namespace flashstar;

namespace {

class CudaAttention : public cuda_test::CudaKernelTest {};

}  // namespace

TEST_F(CudaAttention, SinkAttentionOverWindowAndSelectedRows) {
  const int n_head = 5, hd = 96, n_swa = 16, top_k = 7;
  const int64_t pos0 = 300, n = 9, n_old = 15;
  for (int ratio : {4, 16}) {
    const int64_t n_comp = (pos0 + n) / ratio;
    const auto q = randn(static_cast<size_t>(n * n_head * hd));
    const auto hist = randn(static_cast<size_t>((n_old + n) * hd));
    const auto comp = randn(static_cast<size_t>(n_comp * hd));
    const auto sinks = randn(n_head);
    std::vector<int32_t> sel(static_cast<size_t>(n * top_k), -1);
    const bool use_sel = ratio == 4;
    for (int64_t t = 0; use_sel && t < n; ++t) {  // a sorted random subset of the visible rows
      const int64_t vis = (pos0 + t + 1) / ratio;
      std::vector<int32_t> all(vis);
      for (int64_t i = 0; i < vis; ++i) all[i] = static_cast<int32_t>(i);
      std::shuffle(all.begin(), all.end(), rng_);
      all.resize(top_k - (t % 2));
      std::sort(all.begin(), all.end());
      std::copy(all.begin(), all.end(), sel.begin() + t * top_k);
    }
    std::vector<float> ref(q.size());
    std::vector<float> s;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t pos = pos0 + t;
      std::vector<const float*> rows;
      for (int64_t p = std::max<int64_t>(0, pos - n_swa + 1); p <= pos; ++p) rows.push_back(hist.data() + (p - (pos0 - n_old)) * hd);
      if (use_sel) {
        for (int i = 0; i < top_k && sel[t * top_k + i] >= 0; ++i) rows.push_back(comp.data() + sel[t * top_k + i] * hd);
      } else {
        for (int64_t c = 0; c < (pos + 1) / ratio; ++c) rows.push_back(comp.data() + c * hd);
      }
      for (int h = 0; h < n_head; ++h)
        cpu::sink_attention_head(q.data() + (t * n_head + h) * hd, rows, sinks[h], hd, s, ref.data() + (t * n_head + h) * hd);
    }
    auto dq = up(q), dh = up(hist), dc = up(comp), ds = up(sinks);
    auto dsel = up(sel);
    auto dout = poisoned<float>(ref.size());
    const int64_t max_rows = n_swa + std::max<int64_t>(top_k, n_comp);
    auto scratch = poisoned<float>(static_cast<size_t>(n * n_head * max_rows));
    cuda::AttentionArgs a;
    a.q = dq.get(), a.hist = dh.get(), a.hist_pos0 = pos0 - n_old, a.comp = dc.get();
    a.sel = use_sel ? dsel.get() : nullptr, a.top_k = top_k, a.sinks = ds.get(), a.out = dout.get();
    a.pos0 = pos0, a.n = n, a.n_head = n_head, a.head_dim = hd, a.n_swa = n_swa, a.ratio = ratio;
    cuda::sink_attention(a, scratch.get(), max_rows, nullptr);
    EXPECT_LT(rel_err(down(dout), ref), 1e-5) << "ratio " << ratio;
  }
}

TEST_F(CudaAttention, CompressorMatchesStreamingCpuFromAnyState) {
  ModelConfig c = ModelConfig::flash(4);
  const int64_t dim = 128;
  const cpu::Rope rope = cpu::Rope::make(c, true);
  LayerWeights w;
  LayerState ls;
  for (int ratio : {4, 16})
    for (Numerics num : {Numerics::Clean, Numerics::Official}) {
      cpu::LayerContext L{c, w, ls, rope, num, 2, nullptr};
      CompressorState st;
      st.init(static_cast<uint32_t>(ratio), static_cast<uint32_t>(dim));
      const int64_t W = st.width, n1 = 2 * ratio + 3, n2 = 3 * ratio + 2;  // resume mid-window
      const auto kv = randn(static_cast<size_t>((n1 + n2) * W)), gate = randn(static_cast<size_t>((n1 + n2) * W));
      const auto ape = randn(static_cast<size_t>(ratio * W), 0.5f);
      auto norm = randn(dim, 0.1f);
      for (auto& x : norm) x += 1.0f;
      std::vector<float> rows;
      for (int64_t t = 0; t < n1; ++t)
        cpu::compressor_push(st, kv.data() + t * W, gate.data() + t * W, ape, t, dim, norm, L, cpu::RowKind::Attention, rows);
      const size_t rows_before = rows.size();
      auto skv = up(st.kv), ssc = up(st.score);
      for (int64_t t = n1; t < n1 + n2; ++t)
        cpu::compressor_push(st, kv.data() + t * W, gate.data() + t * W, ape, t, dim, norm, L, cpu::RowKind::Attention, rows);

      auto dkv = up(std::vector<float>(kv.begin() + n1 * W, kv.end()));
      auto dgate = up(std::vector<float>(gate.begin() + n1 * W, gate.end()));
      auto dape = up(ape), dnorm = up(norm);
      auto dfreq = up(rope.freq);
      auto dout = poisoned<float>(rows.size());
      FS_CUDA_CHECK(cudaMemcpy(dout.get(), rows.data(), rows_before * 4, cudaMemcpyHostToDevice));
      cuda::CompressorArgs a{skv.get(), ssc.get(), dkv.get(), dgate.get(), dape.get(), dnorm.get(), dfreq.get(), dout.get(),
                             n1, n2, ratio, int(dim), int(W), int(c.n_rot), float(c.rms_eps), cuda::RowKind::Attention,
                             num == Numerics::Official};
      cuda::compressor_chunk(a, nullptr);
      const double bound = num == Numerics::Official ? 2e-2 : 1e-5;  // FP8 steps can flip on last-bit noise
      EXPECT_LT(rel_err(down(dout), rows), bound) << "ratio " << ratio;
      EXPECT_LT(rel_err(down(skv), st.kv), 1e-6) << "ratio " << ratio;
      EXPECT_EQ(down(ssc), st.score) << "ratio " << ratio;
    }
}

TEST_F(CudaAttention, IndexerSelectsTheCpuTopK) {
  ModelConfig c = ModelConfig::flash(4);
  c.n_idx_head = 6;
  c.idx_head_dim = 128;
  c.idx_top_k = 5;
  const cpu::Rope rope = cpu::Rope::make(c, true);
  LayerWeights w;
  LayerState ls;
  ls.ratio = 4;
  const int64_t pos0 = 13, n = 11, hd = c.idx_head_dim, H = c.n_idx_head;
  const int64_t n_rows = (pos0 + n) / 4;
  ls.idx = randn(static_cast<size_t>(n_rows * hd));
  const auto iq = randn(static_cast<size_t>(n * H * hd)), iw = randn(static_cast<size_t>(n * H));
  const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd * H)));
  cpu::LayerContext L{c, w, ls, rope, Numerics::Official, 2, nullptr};
  std::vector<int32_t> ref(static_cast<size_t>(n * c.idx_top_k), -1);
  std::vector<int64_t> sel;
  std::vector<std::pair<float, int64_t>> scored;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> wt(iw.begin() + t * H, iw.begin() + (t + 1) * H);
    for (auto& x : wt) x *= wscale;
    cpu::select_compressed(L, pos0 + t, (pos0 + t + 1) / 4, iq.data() + t * H * hd, wt.data(), sel, scored);
    for (size_t i = 0; i < sel.size(); ++i) ref[t * c.idx_top_k + i] = static_cast<int32_t>(sel[i]);
  }
  auto diq = up(iq), diw = up(iw), drows = up(ls.idx);
  auto scratch = poisoned<float>(static_cast<size_t>(n * (n_rows + 1)));
  auto dsel = poisoned<int32_t>(ref.size());
  cuda::indexer_select(diq.get(), diw.get(), wscale, drows.get(), int(H), int(hd), pos0, n, 4, int(c.idx_top_k),
                       scratch.get(), n_rows + 1, dsel.get(), nullptr);
  EXPECT_EQ(down(dsel), ref);
}
