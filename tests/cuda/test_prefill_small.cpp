// The prefill's small ops (prefill_small.h) against the launches they replace: every output BITWISE
// equal (outputs poisoned with NaN first), on fresh random data, ragged token counts (1, 17, 300, 4 096;
// the mixer also 8 192, with both of its tiles kernels), widths other than the model's, and every post
// kind. DISABLED_Times prints old and new times at the model's shapes (4 096 tokens, d = 4 096, 6 routed
// slots, FF 2 048; the mixer's row for each tiles kernel):
//   flashstar_cuda_tests --gtest_also_run_disabled_tests --gtest_filter='PrefillSmall.DISABLED_Times'
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cuda/fast_kernels.h"
#include "cuda/prefill_small.h"
#include "cuda_test_fixture.h"

using namespace flashstar;

namespace {

constexpr int kHc = 4, kSplit = 24, kIters = 20;
constexpr float kEps = 1e-6f;

class PrefillSmall : public cuda_test::CudaKernelTest {
 protected:
  template <typename T>
  bool same(const cuda::DeviceArray<T>& a, const cuda::DeviceArray<T>& b) {
    const auto x = down(a), y = down(b);
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(T)) == 0;
  }
  template <typename T>
  cuda::DeviceArray<T> copy(const cuda::DeviceArray<T>& a) {
    cuda::DeviceArray<T> b(a.size());
    FS_CUDA_CHECK(cudaMemcpy(b.get(), a.get(), a.bytes(), cudaMemcpyDeviceToDevice));
    return b;
  }
  // A split as the session's has it: hc_split of random mixer logits.
  cuda::DeviceArray<float> random_split(int64_t n) {
    auto mix = up(randn(static_cast<size_t>(n * kSplit), 2.0f));
    auto sc = up(randn(3, 0.5f)), base = up(randn(kSplit));
    auto split = poisoned<float>(static_cast<size_t>(n * kSplit));
    EXPECT_TRUE(cuda::fast::hc_split(mix.get(), kSplit, sc.get(), base.get(), kHc, kIters, kEps, split.get(), n, nullptr));
    return split;
  }
  // Milliseconds of f (median of 9 after a warm-up).
  static double time_ms(const std::function<void()>& f) {
    return median_ms(1, 9, [&](int) { f(); });
  }
};

}  // namespace

// The post (every kind) and the flattened norm's scales: the streams as hc_post / sum_slots_post leave
// them, and x * scale equal to rms_norm_rows' output element for element.
TEST_F(PrefillSmall, PostScaleBitwiseEqualsPostAndNorm) {
  for (int64_t d : {4096, 1032}) {
    for (int64_t n : {1, 17, 300}) {
      const auto X = up(randn(static_cast<size_t>(n * kHc * d)));
      auto split = random_split(n);
      auto f = up(randn(static_cast<size_t>(n * d))), shared = up(randn(static_cast<size_t>(n * d)));
      auto slots = up(randn(static_cast<size_t>(n * 6 * d)));
      struct Case {
        cuda::fast::HcPost::Kind kind;
        int k;
        bool shared;
      };
      for (const Case c : {Case{cuda::fast::HcPost::Kind::None, 0, false}, Case{cuda::fast::HcPost::Kind::Plain, 0, false},
                           Case{cuda::fast::HcPost::Kind::Slots, 6, true}, Case{cuda::fast::HcPost::Kind::Slots, 2, false},
                           Case{cuda::fast::HcPost::Kind::Slots, 0, true}}) {
        auto x_ref = copy(X), x_got = copy(X);
        if (c.kind == cuda::fast::HcPost::Kind::Plain) {
          cuda::hc_post(f.get(), x_ref.get(), split.get(), kHc, d, n, nullptr);
        } else if (c.kind == cuda::fast::HcPost::Kind::Slots) {
          ASSERT_TRUE(cuda::fast::sum_slots_post(slots.get(), c.shared ? shared.get() : nullptr, c.k, x_ref.get(),
                                                 split.get(), kHc, d, n, nullptr));
        }
        cuda::fast::HcPost post;
        post.kind = c.kind, post.split = split.get(), post.k = c.k;
        post.f = c.kind == cuda::fast::HcPost::Kind::Plain ? f.get() : (c.k ? slots.get() : nullptr);
        post.shared = c.shared ? shared.get() : nullptr;
        auto scale = poisoned<float>(static_cast<size_t>(n));
        ASSERT_TRUE(cuda::fast::hc_post_scale(post, x_got.get(), d, n, kEps, scale.get(), nullptr));
        EXPECT_TRUE(same(x_ref, x_got)) << "streams, d " << d << " tokens " << n << " kind " << int(c.kind) << " k " << c.k;
        auto flat = poisoned<float>(static_cast<size_t>(n * kHc * d));
        ASSERT_TRUE(cuda::fast::rms_norm_rows(x_ref.get(), kHc * d, nullptr, flat.get(), kHc * d, n, kHc * d, kEps, nullptr));
        const auto xs = down(x_ref), fl = down(flat), sc = down(scale);
        size_t bad = 0;
        for (int64_t t = 0; t < n; ++t)
          for (int64_t i = 0; i < kHc * d; ++i) {
            const float v = xs[t * kHc * d + i] * sc[t];
            bad += std::memcmp(&v, &fl[t * kHc * d + i], 4) != 0;
          }
        EXPECT_EQ(bad, 0u) << "x * scale vs the norm, d " << d << " tokens " << n;
      }
    }
  }
}

// The mixer product: the decode kernel (fast::matvec on the normed rows, one column part) vs both tiles
// kernels (FLASHSTAR_MIX_V2=0 and 1) with the scale applied on the fly, and without a scale.
TEST_F(PrefillSmall, MixTilesBitwiseEqualsMatvec) {
  const bool was = cuda::fast::mix_v2_requested();
  for (GgmlType t : {GgmlType::F16, GgmlType::F32, GgmlType::BF16}) {
    // 1032 x 4: a last tile with 4 units of F16 / BF16 rows; 256 and 64: 2 and 1 column warps (the tiny model)
    for (int64_t d : {4096, 1032, 256, 64}) {
      const int64_t cols = kHc * d, xs = cols;
      for (int64_t rows : {24, 13}) {
        auto dw = up(random_weights(t, rows, cols));
        const cuda::DMat W{t, dw.get(), cols, rows, row_bytes(t, cols)};
        ASSERT_TRUE(cuda::fast::hc_mix_tiles_supported(W, xs));
        for (int64_t n : {1, 17, 300, 4096, 8192}) {
          if (n >= 4096 && (rows != 24 || d != 4096 || (n == 8192 && t != GgmlType::F16))) continue;
          auto X = up(randn(static_cast<size_t>(n * xs), 2.0f));
          auto scale = poisoned<float>(static_cast<size_t>(n));
          ASSERT_TRUE(cuda::fast::hc_post_scale({}, X.get(), d, n, kEps, scale.get(), nullptr));
          auto flat = poisoned<float>(static_cast<size_t>(n * xs));
          ASSERT_TRUE(cuda::fast::rms_norm_rows(X.get(), xs, nullptr, flat.get(), xs, n, cols, kEps, nullptr));
          for (bool scaled : {true, false}) {
            auto ref = poisoned<float>(static_cast<size_t>(n * rows));
            ASSERT_TRUE(cuda::fast::matvec(W, 0, rows, scaled ? flat.get() : X.get(), n, xs, ref.get(), rows, nullptr));
            for (bool v2 : {false, true}) {
              auto got = poisoned<float>(static_cast<size_t>(n * rows));
              cuda::fast::mix_v2_set(v2);
              ASSERT_TRUE(cuda::fast::hc_mix_tiles(W, 0, rows, X.get(), xs, scaled ? scale.get() : nullptr, n, got.get(),
                                                   rows, nullptr));
              EXPECT_TRUE(same(ref, got)) << "type " << int(t) << " d " << d << " rows " << rows << " tokens " << n
                                          << " scaled " << scaled << " v2 " << v2;
            }
          }
        }
      }
    }
  }
  cuda::fast::mix_v2_set(was);
}

// The weighted sum, the weighted norm and its FP16 copy against hc_split_sum's sum, rms_norm_rows, to_f16.
TEST_F(PrefillSmall, SumNormBitwiseEqualsSumNormAndCopy) {
  for (int64_t d : {4096, 1032}) {
    for (int64_t n : {1, 17, 300}) {
      auto mix = up(randn(static_cast<size_t>(n * kSplit), 2.0f));
      auto sc = up(randn(3, 0.5f)), base = up(randn(kSplit)), w = up(randn(static_cast<size_t>(d)));
      auto X = up(randn(static_cast<size_t>(n * kHc * d)));
      auto split = poisoned<float>(static_cast<size_t>(n * kSplit)), split2 = poisoned<float>(static_cast<size_t>(n * kSplit));
      auto xin_ref = poisoned<float>(static_cast<size_t>(n * d)), nrm_ref = poisoned<float>(static_cast<size_t>(n * d));
      auto xb_ref = poisoned<uint16_t>(static_cast<size_t>(2 * n * d));
      ASSERT_TRUE(cuda::fast::hc_split_sum(mix.get(), kSplit, sc.get(), base.get(), kHc, kIters, kEps, split.get(), X.get(),
                                           d, xin_ref.get(), n, nullptr));
      ASSERT_TRUE(cuda::fast::rms_norm_rows(xin_ref.get(), d, w.get(), nrm_ref.get(), d, n, d, kEps, nullptr));
      cuda::fast::to_f16(nrm_ref.get(), n, d, d, xb_ref.get(), nullptr);
      ASSERT_TRUE(cuda::fast::hc_split(mix.get(), kSplit, sc.get(), base.get(), kHc, kIters, kEps, split2.get(), n, nullptr));
      EXPECT_TRUE(same(split, split2)) << "split, tokens " << n;
      for (bool with_xb : {true, false}) {
        auto xin = poisoned<float>(static_cast<size_t>(n * d)), nrm = poisoned<float>(static_cast<size_t>(n * d));
        auto xb = poisoned<uint16_t>(static_cast<size_t>(2 * n * d));
        ASSERT_TRUE(cuda::fast::hc_sum_norm(X.get(), split2.get(), d, w.get(), kEps, n, xin.get(), nrm.get(),
                                            with_xb ? xb.get() : nullptr, nullptr));
        EXPECT_TRUE(same(xin_ref, xin)) << "xin, d " << d << " tokens " << n;
        EXPECT_TRUE(same(nrm_ref, nrm)) << "normed, d " << d << " tokens " << n;
        if (with_xb) {
          EXPECT_TRUE(same(xb_ref, xb)) << "FP16 copy, d " << d << " tokens " << n;
        }
      }
    }
  }
}

TEST_F(PrefillSmall, SwigluF16BitwiseEqualsSwigluAndCopy) {
  for (int64_t ff : {2048, 72}) {
    for (int64_t items : {1, 17, 300 * 6}) {
      auto g = up(randn(static_cast<size_t>(items * ff), 4.0f)), u = up(randn(static_cast<size_t>(items * ff), 4.0f));
      auto w = up(randn(static_cast<size_t>(items)));
      for (bool weighted : {true, false}) {
        const float* wp = weighted ? w.get() : nullptr;
        auto g_ref = copy(g);
        cuda::swiglu(g_ref.get(), u.get(), items, ff, 7.0f, wp, nullptr);
        auto xb_ref = poisoned<uint16_t>(static_cast<size_t>(2 * items * ff));
        cuda::fast::to_f16(g_ref.get(), items, ff, ff, xb_ref.get(), nullptr);
        auto out = poisoned<float>(static_cast<size_t>(items * ff));
        auto xb = poisoned<uint16_t>(static_cast<size_t>(2 * items * ff));
        ASSERT_TRUE(cuda::fast::swiglu_f16(g.get(), u.get(), items, ff, 7.0f, wp, out.get(), xb.get(), nullptr));
        EXPECT_TRUE(same(g_ref, out)) << "f32, ff " << ff << " items " << items << " weighted " << weighted;
        EXPECT_TRUE(same(xb_ref, xb)) << "FP16 copy, ff " << ff << " items " << items;
        auto g_in = copy(g);  // in place, then no f32 output
        auto xb2 = poisoned<uint16_t>(static_cast<size_t>(2 * items * ff));
        ASSERT_TRUE(cuda::fast::swiglu_f16(g_in.get(), u.get(), items, ff, 7.0f, wp, g_in.get(), xb2.get(), nullptr));
        EXPECT_TRUE(same(g_ref, g_in)) << "in place, ff " << ff << " items " << items;
        ASSERT_TRUE(cuda::fast::swiglu_f16(g.get(), u.get(), items, ff, 7.0f, wp, nullptr, xb2.get(), nullptr));
        EXPECT_TRUE(same(xb_ref, xb2)) << "copy only, ff " << ff << " items " << items;
      }
    }
  }
}

// The session's prefill hc_pre: the old launch sequence vs hc_pre_prefill, every output.
TEST_F(PrefillSmall, HcPrePrefillBitwiseEqualsTheOldLaunches) {
  const int64_t d = 4096, cols = kHc * d;
  auto dw = up(random_weights(GgmlType::F16, kSplit, cols));
  const cuda::DMat W{GgmlType::F16, dw.get(), cols, kSplit, row_bytes(GgmlType::F16, cols)};
  auto sc = up(randn(3, 0.5f)), base = up(randn(kSplit)), w = up(randn(static_cast<size_t>(d)));
  for (int64_t n : {17, 300, 4096}) {
    const auto X = up(randn(static_cast<size_t>(n * cols)));
    auto prev = random_split(n);
    auto f = up(randn(static_cast<size_t>(n * d)));
    auto slots = up(randn(static_cast<size_t>(n * 6 * d))), shared = up(randn(static_cast<size_t>(n * d)));
    for (auto kind : {cuda::fast::HcPost::Kind::None, cuda::fast::HcPost::Kind::Plain, cuda::fast::HcPost::Kind::Slots}) {
      cuda::fast::HcPost post;
      post.kind = kind, post.split = prev.get(), post.k = 6;
      post.f = kind == cuda::fast::HcPost::Kind::Slots ? slots.get() : f.get(), post.shared = shared.get();
      if (kind != cuda::fast::HcPost::Kind::Slots) post.k = 0, post.shared = nullptr;
      auto fresh = [&] { return poisoned<float>(static_cast<size_t>(n * d)); };
      auto fresh24 = [&] { return poisoned<float>(static_cast<size_t>(n * kSplit)); };
      // old: the post, the flattened norm, the mixer's matvec, split + sum, the norm, to_f16
      auto x_ref = copy(X), mix_ref = fresh24(), split_ref = fresh24(), xin_ref = fresh(), nrm_ref = fresh();
      auto flat = poisoned<float>(static_cast<size_t>(n * cols));
      auto xb_ref = poisoned<uint16_t>(static_cast<size_t>(2 * n * d));
      if (kind == cuda::fast::HcPost::Kind::Plain) cuda::hc_post(f.get(), x_ref.get(), prev.get(), kHc, d, n, nullptr);
      if (kind == cuda::fast::HcPost::Kind::Slots) {
        ASSERT_TRUE(cuda::fast::sum_slots_post(slots.get(), shared.get(), 6, x_ref.get(), prev.get(), kHc, d, n, nullptr));
      }
      ASSERT_TRUE(cuda::fast::rms_norm_rows(x_ref.get(), cols, nullptr, flat.get(), cols, n, cols, kEps, nullptr));
      ASSERT_TRUE(cuda::fast::matvec(W, 0, kSplit, flat.get(), n, cols, mix_ref.get(), kSplit, nullptr));
      ASSERT_TRUE(cuda::fast::hc_split_sum(mix_ref.get(), kSplit, sc.get(), base.get(), kHc, kIters, kEps, split_ref.get(),
                                           x_ref.get(), d, xin_ref.get(), n, nullptr));
      ASSERT_TRUE(cuda::fast::rms_norm_rows(xin_ref.get(), d, w.get(), nrm_ref.get(), d, n, d, kEps, nullptr));
      cuda::fast::to_f16(nrm_ref.get(), n, d, d, xb_ref.get(), nullptr);
      // new
      auto x = copy(X), mix = fresh24(), split = fresh24(), xin = fresh(), nrm = fresh();
      auto xb = poisoned<uint16_t>(static_cast<size_t>(2 * n * d));
      auto rs = poisoned<float>(static_cast<size_t>(n));
      cuda::fast::HcPrefillArgs a;
      a.fn = W, a.X = x.get(), a.post = post, a.scale = sc.get(), a.base = base.get(), a.norm_w = w.get();
      a.mix = mix.get(), a.split = split.get(), a.xin = xin.get(), a.normed = nrm.get(), a.xb = xb.get();
      a.row_scale = rs.get(), a.n = n, a.d = d, a.iters = kIters, a.norm_eps = kEps, a.hc_eps = kEps;
      ASSERT_TRUE(cuda::fast::hc_pre_prefill(a, nullptr));
      const std::string what = " tokens " + std::to_string(n) + " kind " + std::to_string(int(kind));
      EXPECT_TRUE(same(x_ref, x)) << "streams" << what;
      EXPECT_TRUE(same(mix_ref, mix)) << "mix" << what;
      EXPECT_TRUE(same(split_ref, split)) << "split" << what;
      EXPECT_TRUE(same(xin_ref, xin)) << "xin" << what;
      EXPECT_TRUE(same(nrm_ref, nrm)) << "normed" << what;
      EXPECT_TRUE(same(xb_ref, xb)) << "FP16 copy" << what;
    }
  }
}

TEST_F(PrefillSmall, DISABLED_Times) {
  const bool was = cuda::fast::prefill_small_requested();
  const int64_t n = 4096, d = 4096, cols = kHc * d, ff = 2048, k = 6;
  auto dw = up(random_weights(GgmlType::F16, kSplit, cols));
  const cuda::DMat W{GgmlType::F16, dw.get(), cols, kSplit, row_bytes(GgmlType::F16, cols)};
  auto sc = up(randn(3, 0.5f)), base = up(randn(kSplit)), w = up(randn(static_cast<size_t>(d)));
  auto X = up(randn(static_cast<size_t>(n * cols))), flat = poisoned<float>(static_cast<size_t>(n * cols));
  auto split = random_split(n), mix = poisoned<float>(static_cast<size_t>(n * kSplit));
  auto f = up(randn(static_cast<size_t>(n * d))), xin = poisoned<float>(static_cast<size_t>(n * d));
  auto nrm = poisoned<float>(static_cast<size_t>(n * d)), rs = poisoned<float>(static_cast<size_t>(n));
  auto slots = up(randn(static_cast<size_t>(n * k * d))), shared = up(randn(static_cast<size_t>(n * d)));
  auto xb = poisoned<uint16_t>(static_cast<size_t>(2 * n * k * ff));
  auto g = up(randn(static_cast<size_t>(n * k * ff))), u = up(randn(static_cast<size_t>(n * k * ff)));
  auto wsel = up(randn(static_cast<size_t>(n * k)));
  cuda::fast::HcPost plain, sl;
  plain.kind = cuda::fast::HcPost::Kind::Plain, plain.f = f.get(), plain.split = split.get();
  sl.kind = cuda::fast::HcPost::Kind::Slots, sl.f = slots.get(), sl.shared = shared.get(), sl.k = int(k);
  sl.split = split.get();
  auto row = [](const char* what, double old_ms, double new_ms, double mb) {
    std::printf("%-44s old %8.1f us   new %8.1f us   (%6.0f MB: %5.2f TB/s new)\n", what, old_ms * 1e3, new_ms * 1e3,
                mb, mb / 1e6 / (new_ms * 1e-3));
  };
  const double mbX = n * cols * 4 / 1e6, mbD = n * d * 4 / 1e6;
  row("post (plain) + flattened norm -> scale",
      time_ms([&] {
        cuda::hc_post(f.get(), X.get(), split.get(), kHc, d, n, nullptr);
        cuda::fast::rms_norm_rows(X.get(), cols, nullptr, flat.get(), cols, n, cols, kEps, nullptr);
      }),
      time_ms([&] { cuda::fast::hc_post_scale(plain, X.get(), d, n, kEps, rs.get(), nullptr); }), 2 * mbX + mbD);
  row("post (6 slots + shared) + norm -> scale",
      time_ms([&] {
        cuda::fast::sum_slots_post(slots.get(), shared.get(), int(k), X.get(), split.get(), kHc, d, n, nullptr);
        cuda::fast::rms_norm_rows(X.get(), cols, nullptr, flat.get(), cols, n, cols, kEps, nullptr);
      }),
      time_ms([&] { cuda::fast::hc_post_scale(sl, X.get(), d, n, kEps, rs.get(), nullptr); }), 2 * mbX + 7 * mbD);
  const bool was_v2 = cuda::fast::mix_v2_requested();
  const double mv_ms =
      time_ms([&] { cuda::fast::matvec(W, 0, kSplit, flat.get(), n, cols, mix.get(), kSplit, nullptr); });
  for (bool v2 : {false, true}) {  // old: the decode kernel; new: the tiles kernel FLASHSTAR_MIX_V2 picks
    cuda::fast::mix_v2_set(v2);
    row(v2 ? "mixer 24 x 16384 F16 (tiles v2)" : "mixer 24 x 16384 F16 (tiles v1, MIX_V2=0)", mv_ms,
        time_ms([&] { cuda::fast::hc_mix_tiles(W, 0, kSplit, X.get(), cols, rs.get(), n, mix.get(), kSplit, nullptr); }),
        mbX);
  }
  cuda::fast::mix_v2_set(was_v2);
  row("split + sum + norm + to_f16",
      time_ms([&] {
        cuda::fast::hc_split_sum(mix.get(), kSplit, sc.get(), base.get(), kHc, kIters, kEps, split.get(), X.get(), d,
                                 xin.get(), n, nullptr);
        cuda::fast::rms_norm_rows(xin.get(), d, w.get(), nrm.get(), d, n, d, kEps, nullptr);
        cuda::fast::prefill_small_set(false);  // the scalar to_f16, as before
        cuda::fast::to_f16(nrm.get(), n, d, d, xb.get(), nullptr);
        cuda::fast::prefill_small_set(was);
      }),
      time_ms([&] {
        cuda::fast::hc_split(mix.get(), kSplit, sc.get(), base.get(), kHc, kIters, kEps, split.get(), n, nullptr);
        cuda::fast::hc_sum_norm(X.get(), split.get(), d, w.get(), kEps, n, xin.get(), nrm.get(), xb.get(), nullptr);
      }),
      mbX + 3 * mbD);
  for (const cuda::fast::HcPost* post : {&plain, &sl}) {  // the whole hc_pre: the session's old launches vs one call
    cuda::fast::HcPrefillArgs a;
    a.fn = W, a.X = X.get(), a.post = *post, a.scale = sc.get(), a.base = base.get(), a.norm_w = w.get();
    a.mix = mix.get(), a.split = split.get(), a.xin = xin.get(), a.normed = nrm.get(), a.xb = xb.get();
    a.row_scale = rs.get(), a.n = n, a.d = d, a.iters = kIters, a.norm_eps = kEps, a.hc_eps = kEps;
    const bool slots = post == &sl;
    row(slots ? "hc_pre with the slots post (FFN half's end)" : "hc_pre with the plain post (attention's end)",
        time_ms([&] {
          if (slots) cuda::fast::sum_slots_post(sl.f, shared.get(), int(k), X.get(), split.get(), kHc, d, n, nullptr);
          else cuda::hc_post(f.get(), X.get(), split.get(), kHc, d, n, nullptr);
          cuda::fast::rms_norm_rows(X.get(), cols, nullptr, flat.get(), cols, n, cols, kEps, nullptr);
          cuda::fast::matvec(W, 0, kSplit, flat.get(), n, cols, mix.get(), kSplit, nullptr);
          cuda::fast::hc_split_sum(mix.get(), kSplit, sc.get(), base.get(), kHc, kIters, kEps, split.get(), X.get(), d,
                                   xin.get(), n, nullptr);
          cuda::fast::rms_norm_rows(xin.get(), d, w.get(), nrm.get(), d, n, d, kEps, nullptr);
          cuda::fast::prefill_small_set(false);
          cuda::fast::to_f16(nrm.get(), n, d, d, xb.get(), nullptr);
          cuda::fast::prefill_small_set(was);
        }),
        time_ms([&] { cuda::fast::hc_pre_prefill(a, nullptr); }), 4 * mbX + (slots ? 7 : 1) * mbD + 3 * mbD);
  }
  const double mbG = n * k * ff * 4 / 1e6;
  row("routed swiglu + to_f16 (24576 x 2048)",
      time_ms([&] {
        cuda::swiglu(g.get(), u.get(), n * k, ff, 7.0f, wsel.get(), nullptr);
        cuda::fast::prefill_small_set(false);  // the scalar to_f16, as before
        cuda::fast::to_f16(g.get(), n * k, ff, ff, xb.get(), nullptr);
        cuda::fast::prefill_small_set(was);
      }),
      time_ms([&] { cuda::fast::swiglu_f16(g.get(), u.get(), n * k, ff, 7.0f, wsel.get(), nullptr, xb.get(), nullptr); }),
      3 * mbG);
}

// The query heads on a warp a row: every row as norm_rope_pair's block kernel leaves it (both sets, with
// and without a weight, FP8 kv rows), and the fallback for widths the warp kernel does not take.
TEST_F(PrefillSmall, NormRopePairPrefillBitwiseEqualsPair) {
  const int n_rot = 64, heads = 64;
  const std::vector<double> freq = rope_freqs(n_rot);
  auto dfreq = up(freq);
  for (int64_t dim : {512, 256}) {
    for (int64_t n : {1, 17, 300}) {
      const auto q = up(randn(static_cast<size_t>(n * heads * dim), 3.0f));
      const auto kv = up(randn(static_cast<size_t>(n * dim), 3.0f));
      auto w = up(randn(static_cast<size_t>(dim)));
      for (bool weighted : {false, true}) {
        for (bool fp8 : {false, true}) {
          auto q_ref = copy(q), kv_ref = copy(kv), q_got = copy(q), kv_got = copy(kv);
          auto job = [&](float* qx, float* kx, cuda::fast::NormRopeJob& a, cuda::fast::NormRopeJob& b) {
            a.x = qx, a.rows = n * heads, a.rows_per_pos = heads, a.w = weighted ? w.get() : nullptr;
            b.x = kx, b.rows = n, b.w = w.get(), b.fp8 = fp8;
          };
          cuda::fast::NormRopeJob a, b, c, e;
          job(q_ref.get(), kv_ref.get(), a, b);
          job(q_got.get(), kv_got.get(), c, e);
          ASSERT_TRUE(cuda::fast::norm_rope_pair(a, b, dim, kEps, n_rot, dfreq.get(), 5000, nullptr, nullptr));
          ASSERT_TRUE(cuda::fast::norm_rope_pair_prefill(c, e, dim, kEps, n_rot, dfreq.get(), 5000, nullptr));
          EXPECT_TRUE(same(q_ref, q_got)) << "q, dim " << dim << " tokens " << n << " weighted " << weighted;
          EXPECT_TRUE(same(kv_ref, kv_got)) << "kv, dim " << dim << " tokens " << n << " fp8 " << fp8;
        }
      }
    }
  }
}

TEST_F(PrefillSmall, DISABLED_TimesNormRope) {
  const int64_t n = 4096, heads = 64, dim = 512;
  const int n_rot = 64;
  const std::vector<double> freq = rope_freqs(n_rot);
  auto dfreq = up(freq);
  auto q = up(randn(static_cast<size_t>(n * heads * dim))), kv = up(randn(static_cast<size_t>(n * dim)));
  auto w = up(randn(static_cast<size_t>(dim)));
  cuda::fast::NormRopeJob a, b;
  a.x = q.get(), a.rows = n * heads, a.rows_per_pos = int(heads);
  b.x = kv.get(), b.rows = n, b.w = w.get(), b.fp8 = true;
  const double old_ms = time_ms([&] { cuda::fast::norm_rope_pair(a, b, dim, kEps, n_rot, dfreq.get(), 0, nullptr, nullptr); });
  const double new_ms = time_ms([&] { cuda::fast::norm_rope_pair_prefill(a, b, dim, kEps, n_rot, dfreq.get(), 0, nullptr); });
  const double mb = 2.0 * n * (heads + 1) * dim * 4 / 1e6;
  std::printf("%-44s old %8.1f us   new %8.1f us   (%6.0f MB: %5.2f TB/s new)\n", "norm + RoPE (q heads + kv row)",
              old_ms * 1e3, new_ms * 1e3, mb, mb / 1e6 / (new_ms * 1e-3));
}

// to_f16's 8-values-a-thread kernel against the scalar one (FLASHSTAR_PREFILL_SMALL=0's), strided rows,
// widths it takes and one it leaves to the scalar kernel (not a multiple of 8).
TEST_F(PrefillSmall, ToF16Vec8BitwiseEqualsScalar) {
  const bool was = cuda::fast::prefill_small_requested();
  for (int64_t k : {4096, 2048, 1032, 1036}) {
    for (int64_t n : {1, 17, 300}) {
      const int64_t xs = k + 4, k8 = (k + 7) / 8 * 8;
      auto X = up(tailed_acts(static_cast<size_t>(n * xs)));
      auto ref = poisoned<uint16_t>(static_cast<size_t>(2 * n * k8)), got = poisoned<uint16_t>(static_cast<size_t>(2 * n * k8));
      cuda::fast::prefill_small_set(false);
      cuda::fast::to_f16(X.get(), n, k, xs, ref.get(), nullptr);
      cuda::fast::prefill_small_set(true);
      cuda::fast::to_f16(X.get(), n, k, xs, got.get(), nullptr);
      EXPECT_TRUE(same(ref, got)) << "k " << k << " rows " << n;
    }
  }
  cuda::fast::prefill_small_set(was);
}

TEST_F(PrefillSmall, DISABLED_TimesToF16) {
  const bool was = cuda::fast::prefill_small_requested();
  for (int64_t k : {4096, 2048}) {
    const int64_t n = k == 4096 ? 4096 : 4096 * 6;
    auto X = up(randn(static_cast<size_t>(n * k)));
    auto out = poisoned<uint16_t>(static_cast<size_t>(2 * n * k));
    cuda::fast::prefill_small_set(false);
    const double old_ms = time_ms([&] { cuda::fast::to_f16(X.get(), n, k, k, out.get(), nullptr); });
    cuda::fast::prefill_small_set(true);
    const double new_ms = time_ms([&] { cuda::fast::to_f16(X.get(), n, k, k, out.get(), nullptr); });
    const double mb = n * k * 8.0 / 1e6;
    std::printf("to_f16 %5lld x %-5lld                          old %8.1f us   new %8.1f us   (%6.0f MB: %5.2f TB/s new)\n",
                static_cast<long long>(n), static_cast<long long>(k), old_ms * 1e3, new_ms * 1e3, mb,
                mb / 1e6 / (new_ms * 1e-3));
  }
  cuda::fast::prefill_small_set(was);
}

// The rotations formed once a row against rope_kernel: the attention output's inverse RoPE (64 heads of
// 512) and the indexer queries' (64 of 128), positions far out (large angles), strided rows.
TEST_F(PrefillSmall, RopePrefillBitwiseEqualsRope) {
  const int n_rot = 64;
  const std::vector<double> freq = rope_freqs(n_rot);
  auto dfreq = up(freq);
  struct Shape {
    int heads;
    int64_t hd;
    bool inverse;
  };
  for (const Shape sh : {Shape{64, 512, true}, Shape{64, 128, false}, Shape{3, 96, true}}) {
    for (int64_t n : {1, 17, 300}) {
      for (int64_t pos0 : {0, 123457}) {
        const int64_t stride = sh.heads * sh.hd + 4;
        const auto x = up(randn(static_cast<size_t>(n * stride)));
        auto ref = copy(x), got = copy(x);
        cuda::rope(ref.get(), n, stride, sh.heads, sh.hd, n_rot, dfreq.get(), pos0, 1, sh.inverse, nullptr);
        ASSERT_TRUE(cuda::fast::rope_prefill(got.get(), n, stride, sh.heads, sh.hd, n_rot, dfreq.get(), pos0, 1, sh.inverse,
                                             nullptr));
        EXPECT_TRUE(same(ref, got)) << "heads " << sh.heads << " x " << sh.hd << " tokens " << n << " pos0 " << pos0;
      }
    }
  }
}

TEST_F(PrefillSmall, DISABLED_TimesRope) {
  const int64_t n = 4096;
  const int n_rot = 64;
  const std::vector<double> freq = rope_freqs(n_rot);
  auto dfreq = up(freq);
  for (int64_t hd : {512, 128}) {
    auto x = up(randn(static_cast<size_t>(n * 64 * hd)));
    const double old_ms = time_ms([&] { cuda::rope(x.get(), n, 64 * hd, 64, hd, n_rot, dfreq.get(), 0, 1, true, nullptr); });
    const double new_ms =
        time_ms([&] { cuda::fast::rope_prefill(x.get(), n, 64 * hd, 64, hd, n_rot, dfreq.get(), 0, 1, true, nullptr); });
    const double mb = 2.0 * n * 64 * n_rot * 4 / 1e6;
    std::printf("rope 4096 x 64 heads x %-4lld                     old %8.1f us   new %8.1f us   (%6.0f MB: %5.2f TB/s new)\n",
                static_cast<long long>(hd), old_ms * 1e3, new_ms * 1e3, mb, mb / 1e6 / (new_ms * 1e-3));
  }
}
