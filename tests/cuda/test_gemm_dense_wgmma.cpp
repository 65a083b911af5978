// The dense products on warpgroup MMA (gemm_dense_wgmma.cu): Q8_0 and float (F16, BF16) weights. CPU
// tests (no device): the shared-memory layouts, the wgmma descriptor and the register fragments
// (gemm_dense_wgmma.h) replayed against the PTX ISA's definitions: every element the tensor core reads
// through a descriptor, and every element ldmatrix gives a float-weight A fragment, is the one the copies
// wrote there, every A-fragment byte is the weight of its row and column, the copy tasks and the
// accumulator cover their tiles once, the pipeline never rewrites a buffer in use. GPU tests: the model's
// dense shapes and ragged ones (1 .. 4096 tokens, rows no multiple of the block, row0 > 0, wider output
// rows whose padding must stay poisoned) against the reference matmul (fp32-class bound of the mma.sync
// kernels' tests), against a CPU fp64 product and the CPU replay of the per-k-tile error model on sampled
// outputs; the max relative difference to the mma.sync kernel printed; bitwise repeats; a token's outputs
// independent of its tile mates; the calls it declines. Float weights: the compressor's, indexer's and
// router's shapes and ragged ones, weights with subnormal, tiny and large values, bitwise equal to the
// mma.sync kernel (gemm_dense<T, false>) in both F16 variants. Timings of the model shapes at 4096 tokens
// against the mma.sync kernels (DISABLED_: run with --gtest_also_run_disabled_tests).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "common/half.h"
#include "cuda/fast_kernels.h"
#include "cuda/gemm_dense_wgmma.h"
#include "cuda/gemm_int_weights.h"
#include "gemm_test_util.h"
#include "tensor_core_model.h"

using namespace flashstar;
namespace wq = flashstar::cuda::wgmma_q8;
using cuda_test::mma_model;
using cuda_test::split16;

// ---- CPU: layouts and descriptors.

TEST(GemmDenseWgmmaLayout, DescriptorsReadWhatTheCopiesWrote) {
  // Shared memory as the copies leave it: byte -> (stage, term, token, column of the chunk).
  const uint32_t base = 3 * 1024;  // any 1024-byte aligned start (the kernel aligns its dynamic base)
  // Q8_0 stages hold the two activation terms; float-weight stages a weight tile after them (the same
  // term offsets: the activations' reads must not depend on the stride).
  for (const uint32_t stage_bytes : {uint32_t(wq::kStageBytes), uint32_t(wq::kFStageBytes)}) {
    ASSERT_EQ(stage_bytes % 1024, 0u) << "every stage's tiles on the swizzle atoms' alignment";
    std::map<uint32_t, std::array<int, 4>> owner;
    std::set<std::array<int, 3>> tasks;
    for (int st = 0; st < wq::kStages; ++st)
      for (int tid = 0; tid < wq::kThreads; ++tid)
        for (int v = 0; v < wq::kXCopies; ++v) {
          int term, tok, ch;
          wq::x_task(tid, v, term, tok, ch);
          ASSERT_LT(tok, wq::kBN);
          if (st == 0) {
            ASSERT_TRUE(tasks.insert({term, tok, ch}).second) << "copy task twice";
          }
          // The kernel's address: thread base b_off(tid / 8, ch) plus the token offset of copy v.
          const uint32_t a = base + st * stage_bytes + term * wq::kTermBytes + wq::b_off(tid >> 3, ch) +
                             (tok - (tid >> 3)) * 128;
          ASSERT_EQ(a, base + st * stage_bytes + term * wq::kTermBytes + wq::b_off(tok, ch));
          ASSERT_EQ(a % 16, 0u);
          for (int e = 0; e < 8; ++e)
            ASSERT_TRUE(owner.emplace(a + 2 * e, std::array<int, 4>{st, term, tok, 8 * ch + e}).second)
                << "two copies write one byte";
        }
    ASSERT_EQ(tasks.size(), size_t(2 * wq::kBN * 8));
    // The tensor core's reads: k-tile half h of a stage, k16 step s, element (n, k).
    for (int st = 0; st < wq::kStages; ++st)
      for (int term = 0; term < 2; ++term)
        for (int h = 0; h < 2; ++h)
          for (int s = 0; s < 2; ++s) {
            const uint32_t hi_addr = base + st * stage_bytes + 64 * h;
            // As the kernel forms it: the descriptor of the term's tile at the k-tile, plus 2 a step.
            const uint64_t d = wq::desc_b(hi_addr + term * wq::kTermBytes) + 2 * s;
            ASSERT_EQ(d, wq::desc_b(hi_addr + term * wq::kTermBytes + 32 * s)) << "the start field carried";
            ASSERT_EQ((d >> 62) & 3, 1u);
            for (int n = 0; n < wq::kBN; ++n)
              for (int k = 0; k < 16; ++k) {
                const auto it = owner.find(wq::desc_element_addr(d, n, k));
                ASSERT_TRUE(it != owner.end()) << "reads a byte no copy wrote";
                const std::array<int, 4> want{st, term, n, 32 * h + 16 * s + k};
                ASSERT_EQ(it->second, want) << "stage " << st << " term " << term << " n " << n << " k " << k;
              }
          }
  }
}

TEST(GemmDenseWgmmaLayout, FloatWeightTilesAndLdmatrixFragments) {
  // A stage's weight tile as the copies leave it: byte -> (row, column of the chunk), each once.
  const uint32_t base = 5 * 1024, tile = base + 2 * wq::kTermBytes;
  std::map<uint32_t, std::pair<int, int>> owner;
  for (int tid = 0; tid < wq::kThreads; ++tid)
    for (int v = 0; v < wq::kWCopies; ++v) {
      int term, row, ch;
      wq::x_task(tid, v, term, row, ch);
      ASSERT_EQ(term, 0);
      ASSERT_LT(row, wq::kBM);
      // The kernel's destination: the thread's activation base plus the weight tile and the row offset.
      const uint32_t a = tile + wq::b_off(tid >> 3, ch) + (row - (tid >> 3)) * 128;
      ASSERT_EQ(a, tile + wq::b_off(row, ch));
      for (int e = 0; e < 8; ++e) {
        ASSERT_EQ(a + 2 * e, tile + wq::w_elem_off(row, 8 * ch + e));
        ASSERT_TRUE(owner.emplace(a + 2 * e, std::make_pair(row, 8 * ch + e)).second) << "two copies write one byte";
        ASSERT_LT(a + 2 * e, base + uint32_t(wq::kFStageBytes)) << "past the stage";
      }
    }
  ASSERT_EQ(owner.size(), size_t(wq::kBM * wq::kChunkCols));
  // ldmatrix.x4 (PTX ISA): lanes 8 i .. 8 i + 7 give the row addresses of matrix i; lane l receives into
  // register i the two 16-bit elements at byte 4 (l % 4) of matrix i's row l / 4. Each must be the A
  // fragment's element (a_row, a_col) of its step; the 8 rows of a matrix fall on 8 distinct 16-byte bank
  // groups (no conflicts).
  for (int wg = 0; wg < 2; ++wg)
    for (int w = 0; w < 4; ++w)
      for (int h = 0; h < 2; ++h)
        for (int s = 0; s < 2; ++s) {
          uint32_t addr[32];
          for (int l = 0; l < 32; ++l) {
            addr[l] = tile + wq::a_ldm_off(wg, w, l, h, s);
            ASSERT_EQ(addr[l] % 16, 0u);
          }
          for (int i = 0; i < 4; ++i) {
            std::set<uint32_t> groups;
            for (int l = 8 * i; l < 8 * i + 8; ++l) groups.insert((addr[l] >> 4) & 7);
            ASSERT_EQ(groups.size(), 8u) << "bank conflict";
          }
          for (int l = 0; l < 32; ++l)
            for (int r = 0; r < 4; ++r)
              for (int half = 0; half < 2; ++half) {
                const auto it = owner.find(addr[8 * r + l / 4] + 4 * (l % 4) + 2 * half);
                ASSERT_TRUE(it != owner.end());
                const std::pair<int, int> want{64 * wg + wq::a_row(w, l, r), 32 * h + 16 * s + wq::a_col(l, r, half)};
                ASSERT_EQ(it->second, want) << "wg " << wg << " warp " << w << " lane " << l << " reg " << r;
              }
        }
}

TEST(GemmDenseWgmmaLayout, FragmentsAndRawCopiesCoverTheirTiles) {
  // Raw copies: every 16-byte chunk of 128 rows x 272 bytes once.
  std::set<std::pair<int, int>> raw;
  for (int q = 0; q < wq::kRawCopies; ++q) {
    int row, ch;
    wq::raw_task(q, row, ch);
    ASSERT_TRUE(row < wq::kBM && ch < 17 && raw.insert({row, ch}).second);
  }
  ASSERT_EQ(raw.size(), size_t(wq::kBM * 17));
  ASSERT_EQ(wq::kRawPerThread * wq::kThreads >= wq::kRawCopies, true);
  // A fragments: the kernel's byte (row r0's block + 8 rows for odd r, + 2 + 16 s + 2 (lane % 4), + 8 for
  // r >= 2, + 1 for the high half) is raw_q_off of the fragment's row and column, and every (row,
  // column) of the warpgroup's 64 x 16 step once.
  for (int s = 0; s < 2; ++s) {
    std::set<std::pair<int, int>> seen;
    for (int w = 0; w < 4; ++w)
      for (int lane = 0; lane < 32; ++lane)
        for (int r = 0; r < 4; ++r)
          for (int half = 0; half < 2; ++half) {
            const int row = wq::a_row(w, lane, r), col = wq::a_col(lane, r, half);
            ASSERT_TRUE(seen.insert({row, col}).second);
            const int r0 = wq::a_row(w, lane, 0);
            for (int j = 0; j < 8; ++j) {
              const uint32_t kernel = wq::raw_scale_off(r0, j) + (r & 1) * 8 * wq::kUnitBytes + 2 + 16 * s +
                                      2 * (lane & 3) + 8 * (r >> 1) + half;
              ASSERT_EQ(kernel, wq::raw_q_off(row, j, 16 * s + col));
              ASSERT_EQ(wq::raw_scale_off(r0, j) + (r & 1) * 8 * wq::kUnitBytes, wq::raw_scale_off(row, j));
            }
          }
    ASSERT_EQ(seen.size(), size_t(64 * 16));
  }
  // The accumulator: 64 rows x 128 tokens once; its rows are the fragment rows (the promotion's scales).
  std::set<std::pair<int, int>> acc;
  for (int w = 0; w < 4; ++w)
    for (int lane = 0; lane < 32; ++lane)
      for (int i = 0; i < 64; ++i) {
        ASSERT_TRUE(acc.insert({wq::d_row(w, lane, i), wq::d_col(lane, i)}).second);
        ASSERT_EQ(wq::d_row(w, lane, i), wq::a_row(w, lane, (i >> 1) & 1));
      }
  ASSERT_EQ(acc.size(), size_t(64 * 128));
  // Scale and integers of the raw bytes are the Q8_0 block's.
  for (int j = 0; j < 8; ++j) ASSERT_EQ(wq::raw_q_off(0, j, 0), wq::raw_scale_off(0, j) + 2);
}

TEST(GemmDenseWgmmaLayout, PipelineNeverRewritesABufferInUse) {
  // Replays the copy and read schedule: what each stage and raw buffer holds when an iteration reads it.
  for (int nc : {4, 8, 16, 32, 128}) {
    std::vector<int> stage(wq::kStages, -1), rawbuf(2, -1);
    auto issue = [&](int c) {
      for (int h = 0; h < wq::kChunksPerIter && c + h < nc; ++h) stage[wq::stage_of(c + h)] = c + h;
      if (c < nc && c % wq::kChunksPerUnit == 0) rawbuf[wq::raw_buf_of(c)] = c / wq::kChunksPerUnit;
    };
    issue(0);
    for (int c = 0; c < nc; c += wq::kChunksPerIter) {
      // After the barrier: the previous iteration's reads are over; this iteration issues, then reads.
      const std::vector<int> before = stage, raw_before = rawbuf;
      issue(c + wq::kChunksPerIter);
      for (int h = 0; h < wq::kChunksPerIter; ++h) {
        ASSERT_EQ(before[wq::stage_of(c + h)], c + h) << "chunk not loaded";
        ASSERT_EQ(stage[wq::stage_of(c + h)], c + h) << "chunk overwritten while read";
        ASSERT_EQ(rawbuf[wq::raw_buf_of(c + h)], (c + h) / wq::kChunksPerUnit) << "raw unit overwritten or missing";
      }
      (void)raw_before;
    }
  }
}

TEST(GemmDenseWgmmaLayout, TileOrderCoversEveryTileOnce) {
  for (int n_rb : {1, 4, 8, 16, 17, 32, 256})
    for (int n_tt : {1, 2, 32, 33}) {
      std::set<std::pair<int, int>> seen;
      for (int b = 0; b < n_rb * n_tt; ++b) {
        int rb, tt;
        wq::dense_tile(b, n_rb, n_tt, rb, tt);
        ASSERT_TRUE(rb >= 0 && rb < n_rb && tt >= 0 && tt < n_tt && seen.insert({rb, tt}).second);
      }
    }
}

// ---- GPU.

namespace {

class GemmDenseWgmma : public cuda_test::GemmKernelTest {
 protected:
  void SetUp() override {
    GemmKernelTest::SetUp();
    if (IsSkipped()) return;
    cuda::fast::init_tables();
    saved_on_ = cuda::fast::gemm_wgmma();
    saved_rows_ = cuda::fast::gemm_dense_v2_rows();
    saved_f16_ = cuda::fast::gemm_wgmma_f16();
    saved_int_ = cuda::fast::gemm_int_weights();
  }
  void TearDown() override {
    cuda::fast::gemm_set_wgmma(saved_on_);
    cuda::fast::gemm_set_dense_v2(saved_rows_);
    cuda::fast::gemm_set_wgmma_f16(saved_f16_);
    cuda::fast::gemm_set_int_weights(saved_int_);
  }
  // fast::gemm with the wgmma kernel on (or the default dense_v2 with it off), into a NaN-poisoned buffer
  // of n_tok + 2 token rows of ys floats.
  std::vector<float> run(const Problem& p, bool wgmma) {
    cuda::fast::gemm_set_wgmma(wgmma);
    cuda::fast::gemm_set_dense_v2(128);
    auto y = poisoned<float>(static_cast<size_t>((p.n_tok + 2) * p.ys));
    EXPECT_TRUE(cuda::fast::gemm(p.W, p.row0, p.rows, p.xb.get(), p.n_tok, y.get(), p.ys, nullptr));
    return down(y);
  }
  // The warpgroup kernel alone (gemm_dense_wgmma, any token count; F16 variant f16_mode), into a
  // NaN-poisoned buffer as run().
  std::vector<float> run_wgmma(const Problem& p, int f16_mode) {
    cuda::fast::gemm_set_wgmma(true);
    cuda::fast::gemm_set_wgmma_f16(f16_mode);
    auto y = poisoned<float>(static_cast<size_t>((p.n_tok + 2) * p.ys));
    EXPECT_TRUE(cuda::fast::gemm_dense_wgmma(p.W, p.row0, p.rows, p.xb.get(), p.n_tok, y.get(), p.ys, nullptr))
        << "declined";
    return down(y);
  }
  // Float weights with the values that test the split: F16 subnormals (their 2^10-scaled hi term is the
  // least normal), signed zeros, the largest weights whose scaled term is finite (63.97); BF16 weights
  // below 2^-24 (a non-zero lo term, or none left at all), and the same large ones. About 1 in 61.
  void spice(Problem& p) {
    const size_t n = p.wq.size() / 2;
    static const float f16s[] = {5.96e-8f, -1.2e-7f, 3.0e-5f, 0.0f, -0.0f, 63.96875f, -40.0f, 6.1035e-5f};
    static const float bf16s[] = {3.0e-9f, -7.1e-9f, 2.5e-8f, 1.0e-30f, -0.0f, 60.0f, -1.1e-7f, 6.0e-8f};
    for (size_t i = 0, k = 0; i < n; i += 61, ++k) {
      const float v = p.t == GgmlType::F16 ? f16s[k % 8] : bf16s[k % 8];
      const uint16_t h = p.t == GgmlType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
      std::memcpy(&p.wq[2 * i], &h, 2);
    }
    p.w = up(p.wq);
    p.W.data = p.w.get();
  }
  bool saved_on_ = false;
  int saved_rows_ = 128, saved_f16_ = 2;
  bool saved_int_ = true;
};

// One dot product of Q8_0 row `wrow` (raw bytes) with activations x, in fp64 (dequantized weights) and
// as the kernels compute it: per 32-column k-tile a partial from zero, per 16 columns W x_lo then W x_hi
// (mma_model: the tensor core's aligned, truncated sums), promoted with the block scale in one FMA.
void dot_q8(const uint8_t* wrow, const float* x, int64_t cols, double& exact, double& mag, float& model) {
  exact = 0, mag = 0, model = 0.0f;
  for (int64_t k0 = 0; k0 < cols; k0 += 32) {
    const uint8_t* b = wrow + (k0 / 32) * 34;
    uint16_t hs;
    std::memcpy(&hs, b, 2);
    const float d = f16_to_f32(hs);
    float part = 0.0f;
    for (int kk = 0; kk < 32; kk += 16) {
      double pl[16], ph[16];
      for (int i = 0; i < 16; ++i) {
        const float q = static_cast<float>(static_cast<int8_t>(b[2 + kk + i]));
        float hi, lo;
        split16(x[k0 + kk + i], hi, lo);
        pl[i] = double(q) * lo, ph[i] = double(q) * hi;
        const double w = double(d * q);  // the dequantizer's weight (an exact product)
        exact += w * x[k0 + kk + i], mag += std::fabs(w * x[k0 + kk + i]);
      }
      part = mma_model(part, pl, 16);
      part = mma_model(part, ph, 16);
    }
    model = cuda::gemm_int::promote<0>(model, part, d, 0.f, 0.f, 0.f, 0.f);
  }
}

}  // namespace

TEST_F(GemmDenseWgmma, ModelShapesMatchReferenceAndErrorModel) {
  struct Case {
    const char* name;
    int64_t rows, cols, n_tok, row0, pad;
  };
  const Case cases[] = {
      {"q_a", 1024, 4096, 4096, 0, 0},        {"kv", 512, 4096, 4095, 0, 0},
      {"q_b", 32768, 1024, 100, 0, 0},        {"q_b", 32768, 1024, 1, 0, 0},
      {"out_a group", 1024, 4096, 17, 3072, 7168},  // rows 3072.. of 8 groups, outputs 8192 wide
      {"out_b", 4096, 8192, 300, 0, 0},       {"gate/up_sh", 2048, 4096, 4095, 0, 0},
      {"down_sh", 4096, 2048, 4096, 0, 0},    {"ragged", 200, 1024, 9, 3, 3},
      {"ragged", 777, 2048, 33, 5, 1},        {"ragged", 130, 256, 129, 1, 0},
      {"ragged", 64, 8192, 65, 1, 0},
  };
  for (const Case& c : cases) {
    const Problem p = make(GgmlType::Q8_0, c.rows, c.cols, c.n_tok, c.row0, c.pad);
    // Taken by the wgmma kernel itself (not a fallback).
    {
      cuda::fast::gemm_set_wgmma(true);
      auto y = poisoned<float>(static_cast<size_t>((p.n_tok + 2) * p.ys));
      ASSERT_TRUE(cuda::fast::gemm_dense_wgmma(p.W, p.row0, p.rows, p.xb.get(), p.n_tok, y.get(), p.ys, nullptr))
          << c.name << ": declined";
      FS_CUDA_CHECK(cudaDeviceSynchronize());
    }
    int64_t stray_a = 0, stray_b = 0, stray_v = 0;
    const auto a = outputs(p, run(p, true), stray_a), b = outputs(p, run(p, true), stray_b);
    const auto v2 = outputs(p, run(p, false), stray_v);
    ASSERT_EQ(stray_a, 0) << c.name << ": wrote outside the outputs";
    ASSERT_EQ(stray_v, 0);
    for (size_t i = 0; i < a.size(); ++i) ASSERT_TRUE(std::isfinite(a[i])) << c.name << ": output " << i << " unwritten";
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << c.name << ": repeat not bitwise";
    // Measured on the H200: HGMMA's sums of a k-tile round as HMMA's do, so the bits are the mma.sync
    // kernels' (which is what lets this kernel be the default without a drift budget of its own).
    EXPECT_EQ(0, std::memcmp(a.data(), v2.data(), a.size() * 4)) << c.name << ": not dense_v2's bits";
    // The reference matmul over all outputs.
    auto dx = up(p.x);
    auto ref = poisoned<float>(static_cast<size_t>(c.n_tok * c.rows));
    cuda::matmul(p.W, c.row0, c.rows, dx.get(), c.n_tok, c.cols, ref.get(), c.rows, nullptr);
    const auto r = down(ref);
    const double e = rel_err(a, r), ev2 = rel_err(v2, r);
    // Against the mma.sync kernel (dense_v2: gemm_dense's bits): normwise, and the largest difference
    // over the outputs' rms (elementwise ratios explode where an output nearly cancels).
    double rms_v2 = 0, max_v2 = 0;
    for (float v : v2) rms_v2 += double(v) * v;
    rms_v2 = std::sqrt(rms_v2 / std::max<size_t>(v2.size(), 1));
    for (size_t i = 0; i < a.size(); ++i) max_v2 = std::max(max_v2, std::fabs(double(a[i]) - v2[i]));
    max_v2 /= std::max(rms_v2, 1e-30);
    const double d_v2 = rel_err(a, v2);
    // Sampled outputs against fp64 and the error model (the first and last token and row always).
    std::mt19937 g(static_cast<uint32_t>(c.rows * 31 + c.n_tok));
    std::uniform_int_distribution<int64_t> pr(0, c.rows - 1), pt(0, c.n_tok - 1);
    const size_t rb = row_bytes(GgmlType::Q8_0, c.cols);
    double n2_ref = 0, e2_ref = 0, n2_model = 0, e2_model = 0, max_model = 0, max_ref = 0;
    for (int sidx = 0; sidx < 1500; ++sidx) {
      const int64_t row = sidx == 0 ? 0 : sidx == 1 ? c.rows - 1 : pr(g);
      const int64_t tok = sidx == 0 ? 0 : sidx == 1 ? c.n_tok - 1 : pt(g);
      double exact, mag;
      float model;
      dot_q8(p.wq.data() + (c.row0 + row) * rb, p.x.data() + tok * c.cols, c.cols, exact, mag, model);
      const double got = a[tok * c.rows + row];
      e2_ref += (got - exact) * (got - exact), n2_ref += exact * exact;
      e2_model += (got - model) * (got - model), n2_model += double(model) * model;
      if (mag > 0) {
        max_ref = std::max(max_ref, std::fabs(got - exact) / mag);
        max_model = std::max(max_model, std::fabs(got - model) / mag);
      }
    }
    const double e_cpu = std::sqrt(e2_ref / std::max(n2_ref, 1e-30)), e_model = std::sqrt(e2_model / std::max(n2_model, 1e-30));
    std::printf("wgmma %-11s %5lld x %4lld (row0 %4lld), %4lld tokens: rel err %.2e (dense_v2 %.2e); sampled: vs fp64 "
                "%.2e (max %.2e of sum|wx|), vs error model %.2e (max %.2e); vs dense_v2 %.2e (max %.2e of rms)\n",
                c.name, (long long)c.rows, (long long)c.cols, (long long)c.row0, (long long)c.n_tok, e, ev2, e_cpu,
                max_ref, e_model, max_model, d_v2, max_v2);
    EXPECT_LT(e, 3e-6) << c.name;
    EXPECT_LT(e_cpu, 3e-6) << c.name;
    EXPECT_LT(max_ref, 1e-6) << c.name;
    // The replay models the tensor core's sums; the hardware may cut a bit differently, not more coarsely.
    EXPECT_LT(e_model, 3e-6) << c.name;
    EXPECT_LT(max_model, 1e-6) << c.name;
  }
}

TEST_F(GemmDenseWgmma, TokenOutputDoesNotDependOnItsTileMates) {
  const Problem all = make(GgmlType::Q8_0, 300, 1024, 300, 4, 0);
  int64_t stray = 0;
  const auto y_all = outputs(all, run(all, true), stray);
  for (const int64_t first : {int64_t{0}, int64_t{100}, int64_t{250}})
    for (const int64_t n : {int64_t{37}, int64_t{1}, int64_t{50}}) {
      if (first + n > all.n_tok) continue;
      const Problem part = slice(all, first, n);
      const auto y = outputs(part, run(part, true), stray);
      ASSERT_EQ(0, std::memcmp(y.data(), &y_all[first * all.rows], y.size() * 4)) << "tokens " << first << " + " << n;
    }
}

TEST_F(GemmDenseWgmma, DeclinesWhatItDoesNotTake) {
  cuda::fast::gemm_set_wgmma(true);
  auto y = poisoned<float>(1 << 20);
  cuda::DeviceArray<uint16_t> xb(1 << 20);
  auto w = up(random_weights(GgmlType::Q8_0, 64, 512));
  const cuda::DMat q8{GgmlType::Q8_0, w.get(), 512, 64, row_bytes(GgmlType::Q8_0, 512)};
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(q8, 0, 64, xb.get() + 1, 16, y.get(), 64, nullptr)) << "misaligned X";
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(q8, 0, 65, xb.get(), 16, y.get(), 64, nullptr)) << "rows past W";
  const cuda::DMat narrow{GgmlType::Q8_0, w.get(), 224, 64, row_bytes(GgmlType::Q8_0, 224)};
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(narrow, 0, 64, xb.get(), 16, y.get(), 64, nullptr)) << "cols % 256";
  auto wk = up(random_weights(GgmlType::Q4_K, 64, 512));
  const cuda::DMat q4{GgmlType::Q4_K, wk.get(), 512, 64, row_bytes(GgmlType::Q4_K, 512)};
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(q4, 0, 64, xb.get(), 16, y.get(), 64, nullptr)) << "Q4_K";
  cuda::fast::gemm_set_wgmma(false);
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(q8, 0, 64, xb.get(), 16, y.get(), 64, nullptr)) << "off";
  const auto h = down(y);
  for (float v : h) ASSERT_EQ(f32_to_bits(v), 0xffffffffu) << "a declined call wrote";
}

TEST_F(GemmDenseWgmma, FloatWeightsBitwiseEqualToMmaSync) {
  // The compressor's (kv and gate: 2 x 512 rows on ratio-4 layers, 512 on ratio-128 ones), the indexer's
  // (its compressor's 2 x 128, proj 64 heads, q_b 64 x 128 over q_lora) and the router's (256 experts)
  // F16 projections, ragged ones, and BF16 (the converter's --outtype bf16).
  struct Case {
    const char* name;
    GgmlType t;
    int64_t rows, cols, n_tok, row0, pad;
  };
  const Case cases[] = {
      {"comp kv r4", GgmlType::F16, 1024, 4096, 4096, 0, 0}, {"comp gate r128", GgmlType::F16, 512, 4096, 4095, 0, 0},
      {"idx comp kv", GgmlType::F16, 256, 4096, 300, 0, 0},  {"idx proj", GgmlType::F16, 64, 4096, 17, 0, 0},
      {"idx q_b", GgmlType::F16, 8192, 1024, 4096, 0, 0},    {"gate_inp", GgmlType::F16, 256, 4096, 4095, 0, 0},
      {"ragged", GgmlType::F16, 200, 1024, 300, 3, 3},       {"ragged", GgmlType::F16, 777, 2048, 17, 5, 1},
      {"ragged", GgmlType::F16, 130, 256, 129, 1, 0},        {"ragged", GgmlType::F16, 1, 512, 65, 0, 0},
      {"comp kv", GgmlType::BF16, 1024, 4096, 300, 0, 0},    {"idx q_b", GgmlType::BF16, 8192, 1024, 17, 0, 0},
      {"ragged", GgmlType::BF16, 200, 1024, 4095, 3, 3},     {"ragged", GgmlType::BF16, 130, 256, 4096, 1, 0},
  };
  for (const Case& c : cases) {
    Problem p = make(c.t, c.rows, c.cols, c.n_tok, c.row0, c.pad);
    spice(p);
    int64_t stray = 0;
    const auto ms = outputs(p, run(p, false), stray);  // gemm_dense<T, false>
    ASSERT_EQ(stray, 0);
    auto dx = up(p.x);
    auto ref = poisoned<float>(static_cast<size_t>(c.n_tok * c.rows));
    cuda::matmul(p.W, c.row0, c.rows, dx.get(), c.n_tok, c.cols, ref.get(), c.rows, nullptr);
    const auto r = down(ref);
    for (const int mode : c.t == GgmlType::F16 ? std::vector<int>{2, 3} : std::vector<int>{2}) {
      const auto a = outputs(p, run_wgmma(p, mode), stray);
      ASSERT_EQ(stray, 0) << c.name << ": wrote outside the outputs";
      const auto b = outputs(p, run_wgmma(p, mode), stray);
      int64_t differ = 0, unwritten = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        differ += f32_to_bits(a[i]) != f32_to_bits(ms[i]);
        unwritten += f32_to_bits(a[i]) == 0xffffffffu;
      }
      const double e = rel_err(a, r), ems = rel_err(ms, r);
      std::printf("wgmma %-4s %-14s %5lld x %4lld (row0 %lld), %4lld tokens, %d products a step: %lld of %zu differ "
                  "from mma.sync; rel err %.2e (mma.sync %.2e)\n",
                  type_name(c.t), c.name, (long long)c.rows, (long long)c.cols, (long long)c.row0, (long long)c.n_tok,
                  c.t == GgmlType::F16 ? mode : 3, (long long)differ, a.size(), e, ems);
      ASSERT_EQ(unwritten, 0) << c.name;
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << c.name << ": repeat not bitwise";
      EXPECT_EQ(0, std::memcmp(a.data(), ms.data(), a.size() * 4))
          << c.name << " mode " << mode << ": not mma.sync's bits";
      EXPECT_LT(e, 3e-6) << c.name;
    }
    // Through gemm (more than 64 tokens: the warpgroup kernel, whatever FLASHSTAR_GEMM_INT says).
    if (c.n_tok > 64) {
      cuda::fast::gemm_set_wgmma_f16(2);
      cuda::fast::gemm_set_int_weights(false);
      const auto g = outputs(p, run(p, true), stray);
      cuda::fast::gemm_set_int_weights(saved_int_);
      EXPECT_EQ(0, std::memcmp(g.data(), ms.data(), g.size() * 4)) << c.name << ": gemm";
    }
  }
}

TEST_F(GemmDenseWgmma, FloatWeightsSwitchesTileMatesAndDeclines) {
  Problem all = make(GgmlType::F16, 300, 1024, 300, 4, 0);
  spice(all);
  int64_t stray = 0;
  const auto y_all = outputs(all, run_wgmma(all, 2), stray);
  for (const int64_t first : {int64_t{0}, int64_t{100}, int64_t{250}})
    for (const int64_t n : {int64_t{37}, int64_t{1}, int64_t{50}}) {
      if (first + n > all.n_tok) continue;
      const Problem part = slice(all, first, n);
      const auto y = outputs(part, run_wgmma(part, 2), stray);
      ASSERT_EQ(0, std::memcmp(y.data(), &y_all[first * all.rows], y.size() * 4)) << "tokens " << first << " + " << n;
    }
  auto y = poisoned<float>(1 << 20);
  cuda::DeviceArray<uint16_t> xb(1 << 20);
  auto w = up(random_weights(GgmlType::F16, 64, 512));
  const cuda::DMat f16{GgmlType::F16, w.get(), 512, 64, row_bytes(GgmlType::F16, 512)};
  cuda::fast::gemm_set_wgmma(true);
  cuda::fast::gemm_set_wgmma_f16(0);
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(f16, 0, 64, xb.get(), 16, y.get(), 64, nullptr)) << "F16 off";
  auto q = up(random_weights(GgmlType::Q8_0, 64, 512));
  const cuda::DMat q8{GgmlType::Q8_0, q.get(), 512, 64, row_bytes(GgmlType::Q8_0, 512)};
  auto yq = poisoned<float>(16 * 64);
  EXPECT_TRUE(cuda::fast::gemm_dense_wgmma(q8, 0, 64, xb.get(), 16, yq.get(), 64, nullptr)) << "Q8_0 stays on";
  cuda::fast::gemm_set_wgmma_f16(2);
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(f16, 0, 64, xb.get() + 1, 16, y.get(), 64, nullptr)) << "misaligned X";
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(f16, 0, 65, xb.get(), 16, y.get(), 64, nullptr)) << "rows past W";
  const cuda::DMat narrow{GgmlType::F16, w.get(), 448, 64, row_bytes(GgmlType::F16, 512)};
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(narrow, 0, 64, xb.get(), 16, y.get(), 64, nullptr)) << "cols % 128";
  auto wf = up(random_weights(GgmlType::F32, 64, 512));
  const cuda::DMat f32{GgmlType::F32, wf.get(), 512, 64, row_bytes(GgmlType::F32, 512)};
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(f32, 0, 64, xb.get(), 16, y.get(), 64, nullptr)) << "F32";
  cuda::fast::gemm_set_wgmma(false);
  EXPECT_FALSE(cuda::fast::gemm_dense_wgmma(f16, 0, 64, xb.get(), 16, y.get(), 64, nullptr)) << "all off";
  for (float v : down(y)) ASSERT_EQ(f32_to_bits(v), 0xffffffffu) << "a declined call wrote";
  // 384 columns (three chunk pairs): taken by the kernel alone (gemm's kernels want 256-column units).
  Problem odd = make(GgmlType::F16, 96, 384, 200, 0, 0);
  const auto a = outputs(odd, run_wgmma(odd, 2), stray);
  auto dx = up(odd.x);
  auto ref = poisoned<float>(static_cast<size_t>(200 * 96));
  cuda::matmul(odd.W, 0, 96, dx.get(), 200, 384, ref.get(), 96, nullptr);
  EXPECT_EQ(stray, 0);
  EXPECT_LT(rel_err(a, down(ref)), 3e-6) << "384 columns";
}

TEST_F(GemmDenseWgmma, DISABLED_TimesModelShapes) {
  // The dense Q8_0 products of one layer at 4096 tokens (out_a: 8 groups of a 8192-row matrix, each on its
  // own input): median of 9 timed runs after a warm-up, inputs rotating over 3 activation sets so that
  // they do not sit in L2 from the previous run. wgmma vs dense_v2 at 128-row blocks.
  const auto& shapes = kLayerDenseShapes;
  const int64_t n_tok = 4096;
  constexpr int kSets = 3, kRuns = 9;
  double layer[2] = {0, 0}, flops = 0;
  for (const LayerShape& sh : shapes) {
    const int64_t total = sh.rows * sh.groups;
    auto w = up(random_weights(GgmlType::Q8_0, total, sh.cols));
    const cuda::DMat W{GgmlType::Q8_0, w.get(), sh.cols, total, row_bytes(GgmlType::Q8_0, sh.cols)};
    std::vector<cuda::DeviceArray<uint16_t>> xb;
    for (int s = 0; s < kSets * sh.groups; ++s) {
      auto dx = up(randn(static_cast<size_t>(n_tok * sh.cols)));
      xb.emplace_back(static_cast<size_t>(2 * n_tok * sh.cols));
      cuda::fast::to_f16(dx.get(), n_tok, sh.cols, sh.cols, xb.back().get(), nullptr);
    }
    cuda::DeviceArray<float> y(static_cast<size_t>(n_tok * total));
    float med[2];
    for (int m = 0; m < 2; ++m) {
      cuda::fast::gemm_set_wgmma(m == 0);
      cuda::fast::gemm_set_dense_v2(128);
      auto once = [&](int set) {
        for (int g = 0; g < sh.groups; ++g) {
          const uint16_t* x = xb[set * sh.groups + g].get();
          if (m == 0)
            ASSERT_TRUE(cuda::fast::gemm_dense_wgmma(W, g * sh.rows, sh.rows, x, n_tok, y.get() + g * sh.rows, total, nullptr));
          else
            ASSERT_TRUE(cuda::fast::gemm_dense_v2(W, g * sh.rows, sh.rows, x, n_tok, y.get() + g * sh.rows, total, nullptr));
        }
      };
      med[m] = median_ms(kSets, kRuns, once);
      layer[m] += med[m] * sh.per_layer;
    }
    const double tf = 2.0 * n_tok * total * sh.cols / 1e12;
    flops += tf * sh.per_layer;
    std::printf("dense %-10s %5lld x %4lld%s, 4096 tokens: wgmma %.3f ms (%.0f TFLOP/s useful), dense_v2 %.3f ms (%.0f); "
                "%.2fx\n",
                sh.name, (long long)sh.rows, (long long)sh.cols, sh.groups > 1 ? " x 8" : "", med[0], tf / med[0] * 1e3,
                med[1], tf / med[1] * 1e3, med[1] / med[0]);
  }
  std::printf("dense Q8_0 products of a layer, 4096 tokens: wgmma %.2f ms (%.0f TFLOP/s), dense_v2 %.2f ms (%.0f); %.2fx\n",
              layer[0], flops / layer[0] * 1e3, layer[1], flops / layer[1] * 1e3, layer[1] / layer[0]);
}

TEST_F(GemmDenseWgmma, DISABLED_TimesF16Shapes) {
  // The F16 projections at 4096 tokens: median of 9 timed runs after a warm-up, inputs rotating over 3
  // activation sets. The warpgroup kernel with two products a step (the default) and three, against the
  // mma.sync kernel (gemm_dense<F16, false>). The 4-layer synthetic model's prefill runs 12 of them:
  // the router on every layer, the compressor and indexer on the ratio-4 layer, the compressor on the
  // ratio-128 one.
  struct Shape {
    const char* name;
    int64_t rows, cols;
    int in_4l;  // launches in a 4-layer 4096-token prefill
  };
  const Shape shapes[] = {{"comp kv/gate r4", 1024, 4096, 2}, {"comp kv/gate r128", 512, 4096, 2},
                          {"idx comp kv/gate", 256, 4096, 2}, {"idx proj", 64, 4096, 1},
                          {"idx q_b", 8192, 1024, 1},         {"gate_inp", 256, 4096, 4}};
  const int64_t n_tok = 4096;
  constexpr int kSets = 3, kRuns = 9, kModes = 3;
  double total[kModes] = {0, 0, 0}, flops = 0;
  for (const Shape& sh : shapes) {
    auto w = up(random_weights(GgmlType::F16, sh.rows, sh.cols));
    const cuda::DMat W{GgmlType::F16, w.get(), sh.cols, sh.rows, row_bytes(GgmlType::F16, sh.cols)};
    std::vector<cuda::DeviceArray<uint16_t>> xb;
    for (int s = 0; s < kSets; ++s) {
      auto dx = up(randn(static_cast<size_t>(n_tok * sh.cols)));
      xb.emplace_back(static_cast<size_t>(2 * n_tok * sh.cols));
      cuda::fast::to_f16(dx.get(), n_tok, sh.cols, sh.cols, xb.back().get(), nullptr);
    }
    cuda::DeviceArray<float> y(static_cast<size_t>(n_tok * sh.rows));
    float med[kModes];
    for (int m = 0; m < kModes; ++m) {  // wgmma 2 products, wgmma 3, mma.sync
      cuda::fast::gemm_set_wgmma(m < 2);
      cuda::fast::gemm_set_wgmma_f16(m == 1 ? 3 : 2);
      auto once = [&](int set) {
        if (m < 2)
          ASSERT_TRUE(cuda::fast::gemm_dense_wgmma(W, 0, sh.rows, xb[set].get(), n_tok, y.get(), sh.rows, nullptr));
        else
          ASSERT_TRUE(cuda::fast::gemm(W, 0, sh.rows, xb[set].get(), n_tok, y.get(), sh.rows, nullptr));
      };
      med[m] = median_ms(kSets, kRuns, once);
      total[m] += med[m] * sh.in_4l;
    }
    const double tf = 2.0 * n_tok * sh.rows * sh.cols / 1e12;
    flops += tf * sh.in_4l;
    std::printf("F16 %-17s %5lld x %4lld, 4096 tokens: wgmma %.3f ms (%.0f TFLOP/s useful), 3 products %.3f ms (%.0f), "
                "mma.sync %.3f ms (%.0f); %.2fx\n",
                sh.name, (long long)sh.rows, (long long)sh.cols, med[0], tf / med[0] * 1e3, med[1], tf / med[1] * 1e3,
                med[2], tf / med[2] * 1e3, med[2] / med[0]);
  }
  std::printf("F16 products of a 4-layer 4096-token prefill (12 launches): wgmma %.2f ms (%.0f TFLOP/s), 3 products "
              "%.2f ms, mma.sync %.2f ms (%.0f); %.2fx\n",
              total[0], flops / total[0] * 1e3, total[1], total[2], flops / total[2] * 1e3, total[2] / total[0]);
}
