// Every fast route's kernel against its reference kernel on the GPU: fresh random weights of every
// type (random bytes with sane scales, so every bit pattern of the quant codes occurs), the model's own
// layer shapes plus odd ones, ragged token counts, outputs poisoned before launch. Bounds follow the
// operands: fp32 activations (matrix-vector kernels) ~1e-6; two-term FP16 operands on the tensor cores
// ~1e-7 (each operand carries about 2^-22 relative rounding; block-quantized weights go in as exact FP16
// integers instead, test_gemm_int.cpp, with the same bound).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <cstring>
#include <string>
#include <vector>

#include "common/half.h"
#include "cuda/fast_kernels.h"
#include "cuda/fast_matvec_float.h"
#include "cuda_test_fixture.h"
#include "quant/quant.h"

using namespace flashstar;

namespace {

class FastKernels : public cuda_test::CudaKernelTest {
 protected:
  void SetUp() override {
    CudaKernelTest::SetUp();
    if (!IsSkipped()) cuda::fast::init_tables();
  }
};

constexpr GgmlType kTypes[] = {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0,
                               GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS};

}  // namespace

TEST_F(FastKernels, MatvecEqualsReferenceForEveryTypeAndTokenCount) {
  for (GgmlType t : kTypes) {
    const int64_t cols = t == GgmlType::IQ2_XXS ? 4096 : 2048;
    for (int64_t rows : {1, 37, 1024}) {
      for (int64_t n_tok : {1, 3, 8, 11}) {
        const auto wq = random_weights(t, rows, cols);
        const auto x = randn(static_cast<size_t>(n_tok * cols));
        auto dw = up(wq);
        auto dx = up(x);
        auto ref = poisoned<float>(static_cast<size_t>(n_tok * rows));
        auto got = poisoned<float>(static_cast<size_t>(n_tok * rows));
        cuda::DMat dm{t, dw.get(), cols, rows, row_bytes(t, cols)};
        cuda::matmul(dm, 0, rows, dx.get(), n_tok, cols, ref.get(), rows, nullptr);
        ASSERT_TRUE(cuda::fast::matvec(dm, 0, rows, dx.get(), n_tok, cols, got.get(), rows, nullptr)) << type_name(t);
        const double e = rel_err(down(got), down(ref));
        // A lone dot product can cancel to near zero; its relative error says little.
        EXPECT_LT(e, rows * n_tok >= 32 ? 2e-6 : 1e-4) << type_name(t) << " rows " << rows << " tokens " << n_tok;
      }
    }
  }
}

TEST_F(FastKernels, MatvecItemsEqualsReference) {
  for (GgmlType t : {GgmlType::IQ2_XXS, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::Q8_0}) {
    const int64_t n_mat = 9, rows_per = 96, cols = 2048, n_tok = 5, k = 3, items = n_tok * k;
    const auto wq = random_weights(t, n_mat * rows_per, cols);
    std::vector<int32_t> sel(items);
    std::uniform_int_distribution<int> pick(0, n_mat - 1);
    for (auto& s : sel) s = pick(rng_);
    const auto x = randn(static_cast<size_t>(n_tok * cols));
    auto dw = up(wq);
    auto dx = up(x);
    auto ds = up(sel);
    auto ref = poisoned<float>(static_cast<size_t>(items * rows_per));
    auto got = poisoned<float>(static_cast<size_t>(items * rows_per));
    cuda::DMat dm{t, dw.get(), cols, n_mat * rows_per, row_bytes(t, cols)};
    cuda::matmul_items(dm, rows_per, ds.get(), k, dx.get(), cols, items, ref.get(), rows_per, nullptr);
    ASSERT_TRUE(cuda::fast::matvec_items(dm, rows_per, ds.get(), k, dx.get(), cols, items, got.get(), rows_per, nullptr));
    EXPECT_LT(rel_err(down(got), down(ref)), 2e-6) << type_name(t);
  }
}

TEST_F(FastKernels, MatvecRefusesShapesItCannotTake) {
  const auto wq = random_weights(GgmlType::Q8_0, 4, 352);
  auto dw = up(wq);
  auto dx = up(randn(352));
  auto dy = poisoned<float>(4);
  cuda::DMat dm{GgmlType::Q8_0, dw.get(), 352, 4, row_bytes(GgmlType::Q8_0, 352)};
  EXPECT_FALSE(cuda::fast::matvec(dm, 0, 4, dx.get(), 1, 352, dy.get(), 4, nullptr));
}

TEST_F(FastKernels, GemmMatchesReferenceWithinSplitFp16Bound) {
  struct Case {
    GgmlType t;
    int64_t rows, cols, n_tok;
  };
  // Real layer shapes (q_a, q_b, output_b, shared down, compressor) and odd ones with ragged tails.
  const Case cases[] = {{GgmlType::Q8_0, 1024, 4096, 257},  {GgmlType::Q8_0, 4096, 1024, 130},
                        {GgmlType::Q8_0, 200, 8192, 33},    {GgmlType::F16, 1024, 4096, 129},
                        {GgmlType::F32, 96, 4096, 17},      {GgmlType::BF16, 300, 2048, 64},
                        {GgmlType::Q2_K, 2048, 4096, 100},  {GgmlType::Q4_K, 777, 2048, 9},
                        {GgmlType::IQ2_XXS, 2048, 4096, 250}};
  for (const Case& c : cases) {
    const auto wq = random_weights(c.t, c.rows, c.cols);
    const auto x = randn(static_cast<size_t>(c.n_tok * c.cols));
    auto dw = up(wq);
    auto dx = up(x);
    const int64_t k8 = (c.cols + 7) / 8 * 8;
    cuda::DeviceArray<uint16_t> xb(static_cast<size_t>(2 * c.n_tok * k8));
    auto ref = poisoned<float>(static_cast<size_t>(c.n_tok * c.rows));
    auto got = poisoned<float>(static_cast<size_t>(c.n_tok * c.rows));
    cuda::DMat dm{c.t, dw.get(), c.cols, c.rows, row_bytes(c.t, c.cols)};
    cuda::matmul(dm, 0, c.rows, dx.get(), c.n_tok, c.cols, ref.get(), c.rows, nullptr);
    cuda::fast::to_f16(dx.get(), c.n_tok, c.cols, c.cols, xb.get(), nullptr);
    ASSERT_TRUE(cuda::fast::gemm(dm, 0, c.rows, xb.get(), c.n_tok, got.get(), c.rows, nullptr));
    const double e = rel_err(down(got), down(ref));
    std::printf("gemm %-8s %5lld x %5lld, %4lld tokens: rel err %.2e\n", type_name(c.t), (long long)c.rows,
                (long long)c.cols, (long long)c.n_tok, e);
    EXPECT_LT(e, 3e-6) << type_name(c.t);
  }
}

TEST_F(FastKernels, GroupedExpertGemmMatchesReference) {
  for (GgmlType t : {GgmlType::IQ2_XXS, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::Q8_0}) {
    const int64_t n_exp = 16, k = 6, n_tok = 203, items = n_tok * k, D = 2048, FF = 256 + 128;
    const auto wg = random_weights(t, n_exp * FF, D);   // gate: FF rows per expert over D
    const int64_t Fd = 512;  // down input width (a whole number of blocks)
    const auto wd = random_weights(t, n_exp * D, Fd);
    std::vector<int32_t> sel(items);
    std::uniform_int_distribution<int> pick(0, n_exp - 1);
    for (int64_t i = 0; i < n_tok; ++i)  // k distinct experts per token, skewed toward low ids
      for (int64_t j = 0; j < k; ++j) sel[i * k + j] = static_cast<int32_t>((pick(rng_) * pick(rng_) / n_exp + j * 3) % n_exp);
    const auto x = randn(static_cast<size_t>(n_tok * D));
    const auto g = randn(static_cast<size_t>(items * Fd));
    auto dwg = up(wg);
    auto dwd = up(wd);
    auto dx = up(x);
    auto dg = up(g);
    auto ds = up(sel);
    cuda::DMat mg{t, dwg.get(), D, n_exp * FF, row_bytes(t, D)};
    cuda::DMat md{t, dwd.get(), Fd, n_exp * D, row_bytes(t, Fd)};
    // plan
    const int max_tiles = cuda::fast::moe_max_tiles(items, n_exp);
    cuda::DeviceArray<int32_t> ints(static_cast<size_t>(n_exp + n_exp + 1 + items + max_tiles + 1));
    cuda::fast::MoePlan p{};
    p.count = ints.get(), p.offset = p.count + n_exp, p.items = p.offset + n_exp + 1;
    p.tiles = p.items + items, p.n_tiles = p.tiles + max_tiles, p.max_tiles = max_tiles;
    cuda::fast::moe_plan(ds.get(), items, n_exp, p, nullptr);
    // gate: gathered from token rows, output in plan order; compare after un-permuting.
    cuda::DeviceArray<uint16_t> xb(static_cast<size_t>(2 * items * std::max(D, Fd)));
    cuda::fast::to_f16(dx.get(), n_tok, D, D, xb.get(), nullptr);
    auto got = poisoned<float>(static_cast<size_t>(items * FF));
    ASSERT_TRUE(cuda::fast::gemm_grouped(mg, FF, p, xb.get(), D, n_tok, true, k, false, got.get(), FF, nullptr));
    auto ref = poisoned<float>(static_cast<size_t>(items * FF));
    cuda::matmul_items(mg, FF, ds.get(), k, dx.get(), D, items, ref.get(), FF, nullptr);
    std::vector<int32_t> order(static_cast<size_t>(items));
    FS_CUDA_CHECK(cudaDeviceSynchronize());
    FS_CUDA_CHECK(cudaMemcpy(order.data(), p.items, items * 4, cudaMemcpyDeviceToHost));
    const auto gp = down(got), rr = down(ref);
    std::vector<float> unperm(gp.size());
    std::vector<int> seen(static_cast<size_t>(items), 0);
    for (int64_t pos = 0; pos < items; ++pos) {
      ASSERT_GE(order[pos], 0);
      ASSERT_LT(order[pos], items);
      seen[order[pos]]++;
      std::memcpy(&unperm[order[pos] * FF], &gp[pos * FF], FF * 4);
    }
    for (int s : seen) ASSERT_EQ(s, 1);
    // The plan's order: by expert, items ascending within one (the products' bits depend on it).
    for (int64_t pos = 1; pos < items; ++pos) {
      const int32_t a = order[pos - 1], b = order[pos];
      ASSERT_TRUE(sel[a] < sel[b] || (sel[a] == sel[b] && a < b)) << "plan position " << pos;
    }
    const double eg = rel_err(unperm, rr);
    // down: plan-ordered input rows, output scattered back to item rows.
    cuda::fast::to_f16(dg.get(), items, Fd, Fd, xb.get(), nullptr);
    auto gotd = poisoned<float>(static_cast<size_t>(items * D));
    ASSERT_TRUE(cuda::fast::gemm_grouped(md, D, p, xb.get(), Fd, items, false, 1, true, gotd.get(), D, nullptr));
    // reference: input row pos belongs to item order[pos]
    std::vector<float> g_items(g.size());
    for (int64_t pos = 0; pos < items; ++pos) std::memcpy(&g_items[order[pos] * Fd], &g[pos * Fd], Fd * 4);
    auto dgi = up(g_items);
    auto refd = poisoned<float>(static_cast<size_t>(items * D));
    cuda::matmul_items(md, D, ds.get(), 1, dgi.get(), Fd, items, refd.get(), D, nullptr);
    const double ed = rel_err(down(gotd), down(refd));
    std::printf("grouped %-8s gate rel err %.2e, down rel err %.2e\n", type_name(t), eg, ed);
    EXPECT_LT(eg, 3e-6) << type_name(t);
    EXPECT_LT(ed, 3e-6) << type_name(t);
  }
}

TEST_F(FastKernels, FastKernelsAreDeterministic) {
  const int64_t rows = 1024, cols = 4096, n_tok = 300;
  const auto wq = random_weights(GgmlType::Q8_0, rows, cols);
  auto dw = up(wq);
  auto dx = up(randn(static_cast<size_t>(n_tok * cols)));
  cuda::DeviceArray<uint16_t> xb(static_cast<size_t>(2 * n_tok * cols));
  cuda::DMat dm{GgmlType::Q8_0, dw.get(), cols, rows, row_bytes(GgmlType::Q8_0, cols)};
  cuda::fast::to_f16(dx.get(), n_tok, cols, cols, xb.get(), nullptr);
  std::vector<float> first;
  for (int rep = 0; rep < 3; ++rep) {
    auto y = poisoned<float>(static_cast<size_t>(n_tok * rows));
    ASSERT_TRUE(cuda::fast::gemm(dm, 0, rows, xb.get(), n_tok, y.get(), rows, nullptr));
    auto v = down(y);
    if (rep == 0) first = v;
    else ASSERT_EQ(0, std::memcmp(first.data(), v.data(), v.size() * 4));
  }
}

TEST_F(FastKernels, SinkAttentionMatchesReference) {
  // The model's shape: 64 heads of 512 over a window of 128 raw rows plus compressed rows.
  const int n_head = 64, hd = 512, n_swa = 128, top_k = 512;
  // prefill-sized query counts (tensor-core tiles) and decode-sized ones (the flash-decoding kernel).
  // parts: room for that many n x n_head x hd partial outputs after the scores' room; the split count
  // follows (8 heads x (hd + 2) floats a split): 0 = one split walking every chunk, 6 = 7 splits of
  // several chunks, 24 = room for up to 24 splits (the default cap, 10, applies).
  struct Case {
    int ratio;
    int64_t n;
    int parts;
    int64_t pos0;
  };
  for (const Case& cs : {Case{0, 70, 0, 9000}, Case{4, 37, 0, 2500}, Case{128, 70, 0, 9000}, Case{0, 1, 24, 9000},
                         Case{4, 1, 24, 2500}, Case{4, 5, 0, 2500}, Case{128, 3, 24, 9000}, Case{4, 8, 24, 2500},
                         Case{4, 2, 6, 2500}, Case{128, 8, 24, 60000}, Case{128, 8, 6, 60000}}) {
    const int ratio = cs.ratio;
    const int64_t pos0 = cs.pos0, n = cs.n, n_old = 127;
    const int64_t n_comp = ratio ? (pos0 + n) / ratio : 0;
    const auto q = randn(static_cast<size_t>(n * n_head * hd));
    const auto hist = randn(static_cast<size_t>((n_old + n) * hd), 0.5f);
    const auto comp = randn(static_cast<size_t>(std::max<int64_t>(n_comp, 1) * hd), 0.5f);
    const auto sinks = randn(n_head);
    std::vector<int32_t> sel(static_cast<size_t>(n * top_k), -1);
    for (int64_t t = 0; ratio == 4 && t < n; ++t) {
      const int64_t vis = (pos0 + t + 1) / ratio;
      std::vector<int32_t> all(vis);
      for (int64_t i = 0; i < vis; ++i) all[i] = static_cast<int32_t>(i);
      std::shuffle(all.begin(), all.end(), rng_);
      all.resize(top_k - (t % 3));
      std::sort(all.begin(), all.end());
      std::copy(all.begin(), all.end(), sel.begin() + t * top_k);
    }
    auto dq = up(q), dh = up(hist), dc = up(comp), ds = up(sinks);
    auto dsel = up(sel);
    const int64_t max_rows = n_swa + std::max<int64_t>(top_k, n_comp);
    const int64_t scratch_floats = n * n_head * max_rows + cs.parts * n * n_head * hd;
    auto scratch = poisoned<float>(static_cast<size_t>(scratch_floats));
    cuda::AttentionArgs a;
    a.q = dq.get(), a.hist = dh.get(), a.hist_pos0 = pos0 - n_old, a.comp = dc.get();
    a.sel = ratio == 4 ? dsel.get() : nullptr, a.top_k = top_k, a.sinks = ds.get();
    a.pos0 = pos0, a.n = n, a.n_head = n_head, a.head_dim = hd, a.n_swa = n_swa, a.ratio = ratio;
    auto ref = poisoned<float>(q.size());
    auto got = poisoned<float>(q.size());
    a.out = ref.get();
    cuda::sink_attention(a, scratch.get(), max_rows, nullptr);
    ASSERT_TRUE(cuda::fast::attention_supported(a));
    a.out = got.get();
    cuda::fast::sink_attention(a, scratch.get(), max_rows, nullptr, scratch_floats);
    // again: the split parts' tickets must have returned to zero, and the result is the same bits
    auto again = poisoned<float>(q.size());
    a.out = again.get();
    cuda::fast::sink_attention(a, scratch.get(), max_rows, nullptr, scratch_floats);
    EXPECT_TRUE(down(again) == down(got)) << "ratio " << ratio << " n " << n;
    if (cuda::fast::attention_decode_path(a)) {
      // the decode path can also apply the output's inverse RoPE: the same bits as the separate rope launch
      const int n_rot = 64;
      const std::vector<double> freq = rope_freqs(n_rot);
      auto dfreq = up(freq);
      cuda::rope(again.get(), n, n_head * hd, n_head, hd, n_rot, dfreq.get(), pos0, 1, true, nullptr);
      auto roped = poisoned<float>(q.size());
      a.out = roped.get(), a.out_rope_freq = dfreq.get(), a.out_rope_n_rot = n_rot;
      EXPECT_TRUE(cuda::fast::sink_attention(a, scratch.get(), max_rows, nullptr, scratch_floats));
      EXPECT_TRUE(down(roped) == down(again)) << "inverse RoPE, ratio " << ratio << " n " << n;
      a.out_rope_freq = nullptr, a.out_rope_n_rot = 0;
    }
    const double e = rel_err(down(got), down(ref));
    std::printf("attention ratio %3d, pos %lld, %lld queries, %d parts: rel err %.2e\n", ratio, (long long)pos0,
                (long long)n, cs.parts, e);
    EXPECT_LT(e, 2e-5) << "ratio " << ratio;
  }
}

TEST_F(FastKernels, IndexerTopKMatchesReferenceSets) {
  // 64 heads of 128; scores computed in another order can reorder rows whose scores differ by rounding
  // only, so all but a few boundary rows must agree. 23 queries: tensor-core tiles; 1-8: the decode
  // kernel (fp32), also with the position read on the device (the decode graph) and more rows than its
  // blocks cover in one tile each (65 000 positions: 16 250 rows, about the reference kernel's limit).
  const int H = 64, hd = 128, top_k = 512;
  struct Case {
    int64_t pos0, n;
    bool pos_on_device;
  };
  for (const Case& cs : {Case{5000, 23, false}, Case{5000, 1, false}, Case{4093, 3, true}, Case{65000, 2, true},
                         Case{2100, 8, false}}) {
    const int64_t pos0 = cs.pos0, n = cs.n;
    const int64_t n_rows = (pos0 + n) / 4;
    const auto iq = randn(static_cast<size_t>(n * H * hd));
    const auto iw = randn(static_cast<size_t>(n * H));
    const auto rows = randn(static_cast<size_t>(n_rows * hd));
    auto diq = up(iq), diw = up(iw), drows = up(rows);
    const int64_t stride = n_rows + 2;
    auto scratch = poisoned<float>(static_cast<size_t>(n * stride));
    auto ref = poisoned<int32_t>(static_cast<size_t>(n * top_k));
    auto got = poisoned<int32_t>(static_cast<size_t>(n * top_k));
    const float wscale = 1.0f / std::sqrt(float(H * hd));
    cuda::indexer_select(diq.get(), diw.get(), wscale, drows.get(), H, hd, pos0, n, 4, top_k, scratch.get(), stride,
                         ref.get(), nullptr);
    ASSERT_TRUE(cuda::fast::indexer_supported(H, hd, n));
    std::vector<int64_t> pos_h{pos0};
    auto dpos = up(pos_h);
    const int64_t* pd = cs.pos_on_device ? dpos.get() : nullptr;
    const int64_t pos_arg = cs.pos_on_device ? 0 : pos0;
    cuda::fast::indexer_select(diq.get(), diw.get(), wscale, drows.get(), H, hd, pos_arg, n, 4, top_k, scratch.get(),
                               stride, got.get(), nullptr, pd);
    auto again = poisoned<int32_t>(static_cast<size_t>(n * top_k));
    cuda::fast::indexer_select(diq.get(), diw.get(), wscale, drows.get(), H, hd, pos_arg, n, 4, top_k, scratch.get(),
                               stride, again.get(), nullptr, pd);
    EXPECT_TRUE(down(again) == down(got)) << "repeat, " << n << " queries";
    const auto r = down(ref), g = down(got);
    int64_t differ = 0;
    for (int64_t t = 0; t < n; ++t) {
      std::vector<int32_t> a(r.begin() + t * top_k, r.begin() + (t + 1) * top_k);
      std::vector<int32_t> b(g.begin() + t * top_k, g.begin() + (t + 1) * top_k);
      ASSERT_TRUE(std::is_sorted(b.begin(), b.end())) << "query " << t;
      ASSERT_EQ(std::adjacent_find(b.begin(), b.end()), b.end()) << "duplicate row, query " << t;
      std::vector<int32_t> only;
      std::set_symmetric_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(only));
      differ += static_cast<int64_t>(only.size());
    }
    std::printf("indexer top-%d over %lld rows, %lld queries: %lld rows differ\n", top_k, (long long)n_rows,
                (long long)n, (long long)differ);
    EXPECT_LE(differ, n * 4);  // a few boundary swaps per query from rounding
  }
}

TEST_F(FastKernels, IndexerTopKBreaksTiesByLowerRow) {
  // All-equal scores (every head's product is zero): the first top_k rows must be chosen, as the
  // reference and ds4 do.
  const int H = 64, hd = 128, top_k = 16;
  const int64_t pos0 = 200, n = 3, n_rows = (pos0 + n) / 4;
  std::vector<float> iq(static_cast<size_t>(n * H * hd), 0.0f), iw(static_cast<size_t>(n * H), 1.0f);
  const auto rows = randn(static_cast<size_t>(n_rows * hd));
  auto diq = up(iq), diw = up(iw), drows = up(rows);
  auto scratch = poisoned<float>(static_cast<size_t>(n * n_rows));
  auto got = poisoned<int32_t>(static_cast<size_t>(n * top_k));
  cuda::fast::indexer_select(diq.get(), diw.get(), 1.0f, drows.get(), H, hd, pos0, n, 4, top_k, scratch.get(), n_rows,
                             got.get(), nullptr);
  const auto g = down(got);
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < top_k; ++i) ASSERT_EQ(g[t * top_k + i], i);
}

TEST_F(FastKernels, ParallelCompressorMatchesSequentialReference) {
  // From a state saved mid-window (and at the very start), chunks spanning several windows; rows and
  // the slot state left behind must match the sequential reference kernel.
  const int n_rot = 64;
  const std::vector<double> freq = rope_freqs(n_rot);
  auto dfreq = up(freq);
  for (int ratio : {4, 16, 128})
    for (bool official : {false, true})
      for (int64_t pos0 : {int64_t(0), int64_t(3 * ratio + ratio / 2 + 1), int64_t(3 * ratio - 1)}) {
        const int dim = ratio == 4 ? 128 : 512, W = ratio == 4 ? 2 * dim : dim, rows = ratio == 4 ? 8 : ratio;
        const int64_t n = pos0 == 3 * ratio - 1 ? 1 : 5 * ratio + 3;  // the last: one decode token closing a row
        const auto kv = randn(static_cast<size_t>(n * W)), gate = randn(static_cast<size_t>(n * W));
        const auto ape = randn(static_cast<size_t>(ratio * W), 0.5f);
        auto norm = randn(dim, 0.1f);
        for (auto& x : norm) x += 1.0f;
        // a plausible saved state: filled slots for the positions before pos0, empty ones after
        std::vector<float> skv(static_cast<size_t>(rows * W), 0.0f), ssc(static_cast<size_t>(rows * W), -1e30f);
        if (pos0 > 0) {
          const auto fill = randn(skv.size()), fsc = randn(ssc.size());
          const int64_t cur = pos0 / ratio * ratio;
          for (int r = 0; r < rows; ++r) {
            const int64_t q = ratio == 4 ? (r >= 4 ? cur + r - 4 : cur - 4 + r) : cur + r;
            if (q < pos0)
              for (int j = 0; j < W; ++j) skv[r * W + j] = fill[r * W + j], ssc[r * W + j] = fsc[r * W + j];
          }
        }
        const int64_t n_out = (pos0 + n) / ratio;
        auto dkv = up(kv), dgate = up(gate), dape = up(ape), dnorm = up(norm);
        auto kv_ref = up(skv), sc_ref = up(ssc), kv_got = up(skv), sc_got = up(ssc);
        auto out_ref = poisoned<float>(static_cast<size_t>(n_out * dim));
        auto out_got = poisoned<float>(static_cast<size_t>(n_out * dim));
        auto tmp = poisoned<float>(static_cast<size_t>(2 * rows * W));
        const auto kind = ratio == 4 && dim == 128 ? cuda::RowKind::Indexer : cuda::RowKind::Attention;
        cuda::CompressorArgs a{kv_ref.get(), sc_ref.get(), dkv.get(), dgate.get(), dape.get(), dnorm.get(), dfreq.get(),
                               out_ref.get(), pos0, n, ratio, dim, W, n_rot, 1e-6f, kind, official};
        cuda::compressor_chunk(a, nullptr);
        a.state_kv = kv_got.get(), a.state_score = sc_got.get(), a.out_rows = out_got.get();
        ASSERT_TRUE(cuda::fast::compressor_supported(a));
        cuda::fast::compressor_chunk(a, tmp.get(), nullptr);
        const int64_t first = pos0 / ratio;  // rows before the chunk were never written by either
        auto ro = down(out_ref), go = down(out_got);
        ro.erase(ro.begin(), ro.begin() + first * dim);
        go.erase(go.begin(), go.begin() + first * dim);
        const double e = rel_err(go, ro);
        std::printf("compressor ratio %3d %s pos0 %lld: rows rel err %.2e\n", ratio, official ? "official" : "clean",
                    (long long)pos0, e);
        EXPECT_LT(e, official ? 3e-2 : 1e-5) << "ratio " << ratio;  // FP8 steps flip on last-bit noise
        EXPECT_EQ(down(kv_got), down(kv_ref)) << "ratio " << ratio;
        EXPECT_EQ(down(sc_got), down(sc_ref)) << "ratio " << ratio;
      }
}

TEST_F(FastKernels, SplitMatvecForShortMatricesEqualsReference) {
  // Few rows (the HC mixers: 24 x 16384; kv: 512 x 4096) split their columns over blocks.
  cuda::DeviceArray<float> work(1 << 20);
  for (GgmlType t : kTypes) {
    for (int64_t rows : {24, 512}) {
      const int64_t cols = t == GgmlType::IQ2_XXS ? 16384 : (rows == 24 ? 16384 : 4096);
      for (int64_t n_tok : {1, 5}) {
        const auto wq = random_weights(t, rows, cols);
        auto dw = up(wq);
        auto dx = up(randn(static_cast<size_t>(n_tok * cols)));
        auto ref = poisoned<float>(static_cast<size_t>(n_tok * rows));
        auto got = poisoned<float>(static_cast<size_t>(n_tok * rows));
        cuda::DMat dm{t, dw.get(), cols, rows, row_bytes(t, cols)};
        cuda::matmul(dm, 0, rows, dx.get(), n_tok, cols, ref.get(), rows, nullptr);
        ASSERT_TRUE(cuda::fast::matvec(dm, 0, rows, dx.get(), n_tok, cols, got.get(), rows, nullptr, work.get(),
                                       static_cast<int64_t>(work.size())));
        EXPECT_LT(rel_err(down(got), down(ref)), 2e-6) << type_name(t) << " rows " << rows << " tokens " << n_tok;
      }
    }
  }
}

TEST_F(FastKernels, RouterMatchesReference) {
  struct Case {
    int E, k;
    bool bias;
  };
  // the model's 256 x 6; an expert count that is no multiple of 32 without a bias (exact ties between
  // candidates: the lower id must win); the largest block
  for (const Case& c : {Case{256, 6, true}, Case{100, 5, false}, Case{1000, 8, true}}) {
    const int E = c.E, k = c.k;
    const int64_t n = 37;
    auto logits = randn(static_cast<size_t>(n * E));
    for (int64_t i = 0; i < n; ++i) logits[i * E + 7] = logits[i * E + 9] = logits[i * E + 3];
    const auto bias = randn(E, 0.1f);
    std::vector<int32_t> tokens(n), t2e(static_cast<size_t>(100 * k));
    std::uniform_int_distribution<int> pick(0, E - 1), tk(0, 99);
    for (auto& x : tokens) x = tk(rng_);
    for (auto& x : t2e) x = pick(rng_);
    auto dbias = up(bias);
    auto dtok = up(tokens), dt2e = up(t2e);
    const float* b = c.bias ? dbias.get() : nullptr;
    for (bool hash : {false, true}) {
      auto l1 = up(logits), l2 = up(logits);
      auto s1 = poisoned<int32_t>(static_cast<size_t>(n * k)), s2 = poisoned<int32_t>(static_cast<size_t>(n * k));
      auto w1 = poisoned<float>(static_cast<size_t>(n * k)), w2 = poisoned<float>(static_cast<size_t>(n * k));
      cuda::route(l1.get(), b, hash ? dt2e.get() : nullptr, dtok.get(), n, E, k, true, 1.5f, s1.get(), w1.get(), nullptr);
      ASSERT_TRUE(cuda::fast::route_supported(E, k));
      cuda::fast::route(l2.get(), b, hash ? dt2e.get() : nullptr, dtok.get(), n, E, k, true, 1.5f, s2.get(), w2.get(),
                        nullptr);
      EXPECT_EQ(down(s1), down(s2)) << "E " << E << " hash " << hash;
      EXPECT_LT(rel_err(down(w2), down(w1)), 1e-6) << "E " << E << " hash " << hash;
      EXPECT_LT(rel_err(down(l2), down(l1)), 1e-6) << "probabilities, E " << E;
    }
  }
}

// FLASHSTAR_ROUTER_FUSED (fast_matvec_float.h: float_matvec_route): the router's product and its picks in
// one launch give float_matvec's logits then fast::route's probabilities, picks and weights, bit for bit:
// the model's 256 experts x 6 (bias, and the hash layers' table), 100 x 5 without a bias, 1 to 8 tokens,
// F16 weights; poisoned outputs. It refuses more than one token group and more experts than a block.
TEST_F(FastKernels, RouterInOneLaunchIsProductThenRoute) {
  struct Case {
    int E, k;
    bool bias;
  };
  const int64_t cols = 4096;
  for (const Case& c : {Case{256, 6, true}, Case{100, 5, false}}) {
    const int E = c.E, k = c.k;
    std::vector<uint16_t> w(static_cast<size_t>(E) * cols);
    const auto wf = randn(w.size(), 0.02f);
    for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_f16(wf[i]);
    auto dw = up(w);
    const cuda::DMat W{GgmlType::F16, reinterpret_cast<const uint8_t*>(dw.get()), cols, E, static_cast<size_t>(cols * 2)};
    const auto bias = randn(E, 0.1f);
    std::vector<int32_t> tokens(8), t2e(static_cast<size_t>(100 * k));
    std::uniform_int_distribution<int> pick(0, E - 1), tk(0, 99);
    for (auto& x : tokens) x = tk(rng_);
    for (auto& x : t2e) x = pick(rng_);
    auto dbias = up(bias);
    auto dtok = up(tokens), dt2e = up(t2e);
    auto work = poisoned<float>(1 << 16);
    for (int64_t n : {1, 2, 3, 8})
      for (bool hash : {false, true}) {
        auto dx = up(randn(static_cast<size_t>(n * cols)));
        auto l1 = poisoned<float>(static_cast<size_t>(n * E)), l2 = poisoned<float>(static_cast<size_t>(n * E));
        auto s1 = poisoned<int32_t>(static_cast<size_t>(n * k)), s2 = poisoned<int32_t>(static_cast<size_t>(n * k));
        auto w1 = poisoned<float>(static_cast<size_t>(n * k)), w2 = poisoned<float>(static_cast<size_t>(n * k));
        const float* b = c.bias ? dbias.get() : nullptr;
        const int32_t* t2 = hash ? dt2e.get() : nullptr;
        ASSERT_TRUE(cuda::fast::float_matvec(W, 0, E, dx.get(), n, cols, l1.get(), E, nullptr, work.get(), 1 << 16));
        cuda::fast::route(l1.get(), b, t2, dtok.get(), n, E, k, true, 1.5f, s1.get(), w1.get(), nullptr);
        cuda::fast::RouterArgs r;
        r.bias = b, r.tid2eid = t2, r.tokens = dtok.get(), r.k = k, r.norm = true, r.scale = 1.5f;
        r.sel = s2.get(), r.weights = w2.get();
        ASSERT_TRUE(cuda::fast::float_matvec_route(W, dx.get(), n, cols, l2.get(), r, nullptr, work.get(), 1 << 16));
        const std::string what = "E " + std::to_string(E) + " tokens " + std::to_string(n) + (hash ? " hash" : "");
        EXPECT_EQ(down(s1), down(s2)) << what;
        const auto pw1 = down(w1), pw2 = down(w2), pl1 = down(l1), pl2 = down(l2);
        EXPECT_EQ(std::memcmp(pw1.data(), pw2.data(), pw1.size() * 4), 0) << what << ": weights";
        EXPECT_EQ(std::memcmp(pl1.data(), pl2.data(), pl1.size() * 4), 0) << what << ": probabilities";
        // again (the ticket came back to zero): the same bits
        auto s3 = poisoned<int32_t>(static_cast<size_t>(n * k));
        r.sel = s3.get();
        ASSERT_TRUE(cuda::fast::float_matvec_route(W, dx.get(), n, cols, l2.get(), r, nullptr, work.get(), 1 << 16));
        EXPECT_EQ(down(s3), down(s1)) << what << ": repeat";
      }
    auto dx = up(randn(static_cast<size_t>(9 * cols)));
    auto l = poisoned<float>(static_cast<size_t>(9 * E));
    cuda::fast::RouterArgs r;
    auto s = poisoned<int32_t>(static_cast<size_t>(9 * k));
    auto wt = poisoned<float>(static_cast<size_t>(9 * k));
    r.k = k, r.sel = s.get(), r.weights = wt.get();
    EXPECT_FALSE(cuda::fast::float_matvec_route(W, dx.get(), 9, cols, l.get(), r, nullptr, work.get(), 1 << 16))
        << "two token groups";
  }
}
