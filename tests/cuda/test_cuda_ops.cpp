// Each CUDA reference kernel against the CPU reference on fresh random inputs (odd sizes, outputs
// poisoned with NaN before launch). Skipped when no GPU is present (CI builds and links only).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/ops.h"
#include "cuda_test_fixture.h"
#include "quant/quant.h"

using namespace flashstar;

namespace {

class CudaOps : public cuda_test::CudaKernelTest {};

}  // namespace

TEST_F(CudaOps, MatmulEveryTypeMatchesCpu) {
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K,
                     GgmlType::IQ2_XXS}) {
    const int64_t block = type_info(t).block_elems;
    const int64_t cols = block == 256 ? 768 : 352, rows = 37, n_tok = 19;
    const auto wf = randn(static_cast<size_t>(rows * cols), 0.05f);
    std::vector<uint8_t> wq(row_bytes(t, cols) * rows);
    for (int64_t r = 0; r < rows; ++r) quant::quantize_row(t, wf.data() + r * cols, wq.data() + r * row_bytes(t, cols), cols);
    const auto x = randn(static_cast<size_t>(n_tok * cols));
    Matrix hm{"w", t, wq.data(), cols, rows, row_bytes(t, cols)};
    std::vector<float> ref(static_cast<size_t>(n_tok * rows));
    cpu::matmul(hm, x.data(), n_tok, cols, ref.data(), rows);

    auto dw = up(wq);
    auto dx = up(x);
    auto dy = poisoned<float>(ref.size());
    cuda::DMat dm{t, dw.get(), cols, rows, row_bytes(t, cols)};
    cuda::matmul(dm, 0, rows, dx.get(), n_tok, cols, dy.get(), rows, nullptr);
    const auto got = down(dy);
    EXPECT_LT(rel_err(got, ref), 1e-5) << type_name(t);
  }
}

TEST_F(CudaOps, MatmulItemsGathersExperts) {
  const int64_t cols = 512, rows_per = 29, n_mat = 5, n_src = 7, k = 3;
  const GgmlType t = GgmlType::Q4_K;
  const auto wf = randn(static_cast<size_t>(n_mat * rows_per * cols), 0.05f);
  const size_t rb = row_bytes(t, cols);
  std::vector<uint8_t> wq(rb * n_mat * rows_per);
  for (int64_t r = 0; r < n_mat * rows_per; ++r) quant::quantize_row(t, wf.data() + r * cols, wq.data() + r * rb, cols);
  const auto x = randn(static_cast<size_t>(n_src * cols));
  std::vector<int32_t> mat(n_src * k);
  for (auto& m : mat) m = static_cast<int32_t>(rng_() % n_mat);
  std::vector<float> ref(static_cast<size_t>(n_src * k * rows_per));
  for (int64_t i = 0; i < n_src * k; ++i) {
    Matrix hm{"w", t, wq.data() + mat[i] * rows_per * rb, cols, rows_per, rb};
    cpu::matmul(hm, x.data() + (i / k) * cols, 1, cols, ref.data() + i * rows_per, rows_per);
  }
  auto dw = up(wq);
  auto dx = up(x);
  auto dmat = up(mat);
  auto dy = poisoned<float>(ref.size());
  cuda::DMat dm{t, dw.get(), cols, n_mat * rows_per, rb};
  cuda::matmul_items(dm, rows_per, dmat.get(), int32_t(k), dx.get(), cols, n_src * k, dy.get(), rows_per, nullptr);
  EXPECT_LT(rel_err(down(dy), ref), 1e-5);
}

TEST_F(CudaOps, RmsNormRopeAndCachedRowNumerics) {
  const int64_t n = 13, dim = 192, n_rot = 64;
  auto x = randn(static_cast<size_t>(n * dim), 3.0f);
  const auto w = randn(dim, 1.0f);
  std::vector<float> ref(x.size());
  for (int64_t r = 0; r < n; ++r) cpu::rms_norm(x.data() + r * dim, w.data(), ref.data() + r * dim, dim, 1e-6f);
  ModelConfig c = ModelConfig::flash(4);
  c.n_rot = static_cast<uint32_t>(n_rot);
  const cpu::Rope rope = cpu::Rope::make(c, true);
  for (int64_t r = 0; r < n; ++r) rope.apply(ref.data() + r * dim + dim - n_rot, 1000 + 7 * r, false);
  std::vector<float> fin = ref;
  for (int64_t r = 0; r < n; ++r) {
    cpu::fp8_e4m3_roundtrip_blocks(fin.data() + r * dim, dim - n_rot, 64);
    cpu::f16_round_inplace(fin.data() + r * dim, dim);
  }

  auto dx = up(x);
  auto dw = up(w);
  auto dy = poisoned<float>(x.size());
  std::vector<double> freq(rope.freq);
  auto dfreq = up(freq);
  cuda::rms_norm_rows(dx.get(), dim, dw.get(), dy.get(), dim, n, dim, 1e-6f, nullptr);
  cuda::rope(dy.get(), n, dim, 1, dim, int(n_rot), dfreq.get(), 1000, 7, false, nullptr);
  const auto got = down(dy);
  EXPECT_LT(rel_err(got, ref), 1e-6);
  cuda::finish_rows(dy.get(), n, dim, dim, int(n_rot), cuda::RowKind::Attention, true, nullptr);
  EXPECT_LT(rel_err(down(dy), fin), 1e-3);

  // Indexer QAT of 128-wide rows: identical arithmetic on both sides.
  auto q = randn(static_cast<size_t>(9 * 128));
  std::vector<float> qref = q;
  for (int r = 0; r < 9; ++r) cpu::indexer_qat_row(qref.data() + r * 128, 128);
  auto dq = up(q);
  cuda::indexer_qat(dq.get(), 9, 128, nullptr);
  EXPECT_EQ(down(dq), qref);
}

TEST_F(CudaOps, HyperConnectionSplitSumAndPost) {
  const int n_hc = 4, iters = 20;
  const int64_t n = 11, d = 96, mixn = 2 * n_hc + n_hc * n_hc, sp = mixn;
  const auto mix = randn(static_cast<size_t>(n * mixn));
  const auto scale = randn(3, 1.0f), base = randn(static_cast<size_t>(mixn), 0.5f);
  const auto X = randn(static_cast<size_t>(n * n_hc * d)), f = randn(static_cast<size_t>(n * d));
  std::vector<float> ref_sum(static_cast<size_t>(n * d)), ref_X(X.size());
  std::vector<float> sc(scale.begin(), scale.end()), bs(base.begin(), base.end());
  for (int64_t t = 0; t < n; ++t) {
    const auto s = cpu::hc_split(mix.data() + t * mixn, sc, bs, n_hc, iters, 1e-6f);
    cpu::hc_weighted_sum(X.data() + t * n_hc * d, s.pre, n_hc, d, ref_sum.data() + t * d);
    cpu::hc_post(f.data() + t * d, X.data() + t * n_hc * d, s, n_hc, d, ref_X.data() + t * n_hc * d);
  }
  auto dmix = up(mix);
  auto dsc = up(scale);
  auto dbase = up(base);
  auto dX = up(X);
  auto df = up(f);
  auto dsplit = poisoned<float>(static_cast<size_t>(n * sp));
  auto dsum = poisoned<float>(ref_sum.size());
  cuda::hc_split(dmix.get(), mixn, dsc.get(), dbase.get(), n_hc, iters, 1e-6f, dsplit.get(), n, nullptr);
  cuda::hc_weighted_sum(dX.get(), dsplit.get(), n_hc, d, dsum.get(), n, nullptr);
  cuda::hc_post(df.get(), dX.get(), dsplit.get(), n_hc, d, n, nullptr);
  EXPECT_LT(rel_err(down(dsum), ref_sum), 1e-6);
  EXPECT_LT(rel_err(down(dX), ref_X), 1e-6);
}

TEST_F(CudaOps, RouterHashAndBiasedTopK) {
  const int64_t n = 17;
  const int E = 40, k = 6;
  auto logits = randn(static_cast<size_t>(n * E), 2.0f);
  const auto bias = randn(E, 0.1f);
  // Exact ties: the lower expert id must win, as on the CPU.
  logits[3] = logits[5];
  std::vector<int32_t> tokens(n), tid(static_cast<size_t>(50 * k));
  for (auto& t : tokens) t = static_cast<int32_t>(rng_() % 50);
  for (auto& e : tid) e = static_cast<int32_t>(rng_() % E);
  for (bool hash : {false, true}) {
    std::vector<int32_t> ref_sel(n * k);
    std::vector<float> ref_w(n * k);
    for (int64_t t = 0; t < n; ++t) {
      std::vector<float> p(E);
      std::vector<std::pair<float, int>> order;
      for (int e = 0; e < E; ++e) {
        p[e] = std::sqrt(cpu::softplus(logits[t * E + e]));
        order.push_back({p[e] + bias[e], e});
      }
      std::stable_sort(order.begin(), order.end(), [](auto& a, auto& b) { return a.first > b.first; });
      float sum = 0;
      for (int i = 0; i < k; ++i) {
        ref_sel[t * k + i] = hash ? tid[tokens[t] * k + i] : order[i].second;
        sum += p[ref_sel[t * k + i]];
      }
      for (int i = 0; i < k; ++i) ref_w[t * k + i] = p[ref_sel[t * k + i]] / std::max(sum, 6.103515625e-5f) * 1.5f;
    }
    auto dl = up(logits);
    auto db = up(bias);
    auto dt = up(tokens);
    auto dtid = up(tid);
    auto dsel = poisoned<int32_t>(ref_sel.size());
    auto dw = poisoned<float>(ref_w.size());
    cuda::route(dl.get(), db.get(), hash ? dtid.get() : nullptr, dt.get(), n, E, k, true, 1.5f, dsel.get(), dw.get(),
                nullptr);
    EXPECT_EQ(down(dsel), ref_sel) << "hash " << hash;
    EXPECT_LT(rel_err(down(dw), ref_w), 1e-6) << "hash " << hash;
  }
}
