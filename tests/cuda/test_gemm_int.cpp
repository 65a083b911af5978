// Prefill products with exact FP16 integer weights (gemm_int_weights.h, fast_gemm.cu; two mma per step).
// CPU tests (no device needed): every piece decodes to the dequantizer's weights bitwise; a model of the
// tensor cores (exact products, sums aligned to the largest addend and truncated) replays both kernels'
// arithmetic (integer weights with per-k-tile promotion, and the three-mma split path) over whole rows of
// heavy-tailed activations against a double reference. GPU tests: every converted type against the
// reference kernels on the model's expert shapes (4096 x 2048 and 2048 x 4096), 64-item tiles with
// ragged tails, heavy-tailed activations, the split path run on the same data, bitwise repeats.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "common/half.h"
#include "cuda/fast_kernels.h"
#include "cuda/gemm_group_v2.h"
#include "cuda/gemm_int_weights.h"
#include "cuda_test_fixture.h"
#include "tensor_core_model.h"
#include "quant/quant.h"

using namespace flashstar;
namespace gi = flashstar::cuda::gemm_int;
using cuda_test::mma_model;
using cuda_test::split16;

namespace {

constexpr GgmlType kIntTypes[] = {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS};

// The fixture's generators without its device check: the CPU tests run anywhere.
class GemmIntModel : public cuda_test::CudaKernelTest {
 protected:
  void SetUp() override { rng_.seed(20261201); }
  // Normal activations with heavy tails inside the FP16 range (one in 64 times 30, one in 256 times
  // 1000, some exact zeros) and, in every fourth row, a 256-column stretch scaled by 1e-3 (their low
  // FP16 terms are subnormal: the activation split's own error floor).
  std::vector<float> heavy(int64_t rows, int64_t cols) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_int_distribution<int> pick(0, 255);
    std::vector<float> x(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const int k = pick(rng_);
        float v = nd(rng_);
        if (k == 0) v *= 1000.0f;
        else if (k < 5) v *= 30.0f;
        else if (k == 255) v = 0.0f;
        if (r % 4 == 3 && c >= 512 && c < 768) v *= 1e-3f;
        x[static_cast<size_t>(r * cols + c)] = v;
      }
    return x;
  }
};

const uint8_t* tab_signs() { return quant::kIq2xsSigns; }
const uint64_t* tab_grid() { return quant::kIq2xxsGrid; }

template <GgmlType T>
void decode_row(const uint8_t* row, int64_t cols, std::vector<float>& ints, std::vector<float>& scale,
                std::vector<float>& mins) {
  ints.resize(cols), scale.resize(cols / 32), mins.resize(cols / 16);
  for (int64_t c0 = 0; c0 < cols; c0 += 16) {
    gi::Piece p;
    gi::piece<T>(row, static_cast<int>(c0), tab_grid(), tab_signs(), p);
    for (int i = 0; i < 8; ++i) {
      ints[c0 + 2 * i] = f16_to_f32(static_cast<uint16_t>(p.h[i] & 0xffff));
      ints[c0 + 2 * i + 1] = f16_to_f32(static_cast<uint16_t>(p.h[i] >> 16));
    }
    if (c0 % 32 == 16) {
      EXPECT_EQ(p.scale, scale[c0 / 32]) << "both halves of a k-tile carry the same scale";
    }
    scale[c0 / 32] = p.scale, mins[c0 / 16] = p.min;
  }
}
void decode(GgmlType t, const uint8_t* row, int64_t cols, std::vector<float>& ints, std::vector<float>& scale,
            std::vector<float>& mins) {
  switch (t) {
    case GgmlType::Q8_0: return decode_row<GgmlType::Q8_0>(row, cols, ints, scale, mins);
    case GgmlType::Q2_K: return decode_row<GgmlType::Q2_K>(row, cols, ints, scale, mins);
    case GgmlType::Q4_K: return decode_row<GgmlType::Q4_K>(row, cols, ints, scale, mins);
    default: return decode_row<GgmlType::IQ2_XXS>(row, cols, ints, scale, mins);
  }
}
int mins_of(GgmlType t) { return t == GgmlType::Q2_K ? 2 : t == GgmlType::Q4_K ? 1 : 0; }

// One 32-column k-tile of integer weights as the kernels run it: per 16-column half, W x_lo then W x_hi
// into the tensor-core partial `part`, and the half's activation sum s[h] as the kernel forms it (two
// threads' sum8 of 8 columns each, then added).
void tile_partial(const std::vector<float>& ints, const std::vector<float>& x, int64_t k0, float& part,
                  float (&s)[2]) {
  double p[16];
  for (int kk = 0; kk < 32; kk += 16) {
    float hi[16], lo[16];
    for (int i = 0; i < 16; ++i) split16(x[k0 + kk + i], hi[i], lo[i]);
    for (int i = 0; i < 16; ++i) p[i] = static_cast<double>(ints[k0 + kk + i]) * lo[i];
    part = mma_model(part, p, 16);
    for (int i = 0; i < 16; ++i) p[i] = static_cast<double>(ints[k0 + kk + i]) * hi[i];
    part = mma_model(part, p, 16);
    float half8[2];
    for (int h = 0; h < 2; ++h) {
      uint32_t wh[4], wl[4];
      for (int i = 0; i < 4; ++i) {
        const int c = 8 * h + 2 * i;
        wh[i] = f32_to_f16(hi[c]) | (static_cast<uint32_t>(f32_to_f16(hi[c + 1])) << 16);
        wl[i] = f32_to_f16(lo[c]) | (static_cast<uint32_t>(f32_to_f16(lo[c + 1])) << 16);
      }
      half8[h] = gi::sum8(wh, wl);
    }
    s[kk / 16] = half8[0] + half8[1];
  }
}

// Row dot products as the kernels compute them. x: cols activations of one token; w: the dequantized row.
float model_int(GgmlType t, const std::vector<float>& ints, const std::vector<float>& scale,
                const std::vector<float>& mins, const std::vector<float>& x) {
  const int64_t cols = static_cast<int64_t>(x.size());
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < cols; k0 += 32) {
    float part = 0.0f, s[2];
    tile_partial(ints, x, k0, part, s);
    const float nm0 = -mins[k0 / 16], nm1 = -mins[k0 / 16 + 1];
    switch (mins_of(t)) {
      case 0: acc = gi::promote<0>(acc, part, scale[k0 / 32], nm0, nm1, s[0], s[1]); break;
      case 1: acc = gi::promote<1>(acc, part, scale[k0 / 32], nm0, nm1, s[0], s[1]); break;
      default: acc = gi::promote<2>(acc, part, scale[k0 / 32], nm0, nm1, s[0], s[1]); break;
    }
  }
  return acc;
}
float model_split(const std::vector<float>& w, const std::vector<float>& x) {
  const int64_t cols = static_cast<int64_t>(x.size());
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < cols; k0 += 32) {
    float part = 0.0f;
    for (int kk = 0; kk < 32; kk += 16) {
      float xh[16], xl[16], wh[16], wl[16];
      double p[16];
      for (int i = 0; i < 16; ++i) split16(x[k0 + kk + i], xh[i], xl[i]), split16(w[k0 + kk + i] * 1024.0f, wh[i], wl[i]);
      for (int i = 0; i < 16; ++i) p[i] = static_cast<double>(wl[i]) * xh[i];
      part = mma_model(part, p, 16);
      for (int i = 0; i < 16; ++i) p[i] = static_cast<double>(wh[i]) * xl[i];
      part = mma_model(part, p, 16);
      for (int i = 0; i < 16; ++i) p[i] = static_cast<double>(wh[i]) * xh[i];
      part = mma_model(part, p, 16);
    }
    acc += part;
  }
  return acc * (1.0f / 1024.0f);
}

// The second grouped kernel's decode of a whole row (gemm_group_v2.h) in raw units of U columns:
// integers (folded: with the sub-block scales in them), the scale of each 32-column k-tile and the
// minima of each 16 columns.
template <GgmlType T, bool kFold, int U = 256>
void decode_row_v2(const uint8_t* row, int64_t cols, std::vector<float>& ints, std::vector<float>& scale,
                   std::vector<float>& mins) {
  namespace g2 = cuda::gemm_v2;
  static uint32_t sel[256];
  static const bool ok = g2::iq2_sel_table(sel);
  EXPECT_TRUE(ok);
  ints.resize(cols), scale.resize(cols / 32), mins.resize(cols / 16);
  using F = g2::Fmt<T, U>;
  for (int64_t u = 0; u < cols / U; ++u) {
    uint32_t rw[F::kStride + 4] = {};
    const int a2 = g2::unit_a2<T, U>(static_cast<int>(u));
    const uint8_t* first = row + u * F::kBytes - a2;  // rows start 4-byte aligned
    std::memcpy(rw, first, static_cast<size_t>(a2 + F::kBytes));
    for (int j = 0; j < U / 32; ++j) {
      g2::Tile32 o;
      g2::Decode<T, kFold>::run(rw, a2, j, sel, o);
      const int64_t c0 = u * U + 32 * j;
      for (int i = 0; i < 16; ++i) {
        ints[c0 + 2 * i] = f16_to_f32(static_cast<uint16_t>(o.h[i] & 0xffff));
        ints[c0 + 2 * i + 1] = f16_to_f32(static_cast<uint16_t>(o.h[i] >> 16));
      }
      scale[c0 / 32] = o.scale, mins[c0 / 16] = o.min0, mins[c0 / 16 + 1] = o.min1;
    }
  }
}
template <bool kFold>
void decode_v2(GgmlType t, const uint8_t* row, int64_t cols, std::vector<float>& ints, std::vector<float>& scale,
               std::vector<float>& mins) {
  switch (t) {
    case GgmlType::Q8_0: return decode_row_v2<GgmlType::Q8_0, kFold>(row, cols, ints, scale, mins);
    case GgmlType::Q2_K: return decode_row_v2<GgmlType::Q2_K, kFold>(row, cols, ints, scale, mins);
    case GgmlType::Q4_K: return decode_row_v2<GgmlType::Q4_K, kFold>(row, cols, ints, scale, mins);
    default: return decode_row_v2<GgmlType::IQ2_XXS, kFold>(row, cols, ints, scale, mins);
  }
}

// Promotion over longer partials (folded integers): the tensor-core partial runs over `group` k-tiles
// (one scale), is promoted with one fused multiply-add, and each k-tile's minima are applied after it.
float model_v2(GgmlType t, const std::vector<float>& ints, const std::vector<float>& scale,
               const std::vector<float>& mins, const std::vector<float>& x, int group) {
  const int64_t cols = static_cast<int64_t>(x.size());
  float acc = 0.0f, part = 0.0f;
  for (int64_t k0 = 0; k0 < cols; k0 += 32) {
    float s[2];
    tile_partial(ints, x, k0, part, s);
    const float nm0 = -mins[k0 / 16], nm1 = -mins[k0 / 16 + 1];
    if ((k0 / 32 + 1) % group == 0) {
      acc = gi::promote<0>(acc, part, scale[k0 / 32], 0.0f, 0.0f, 0.0f, 0.0f);
      part = 0.0f;
    }
    switch (mins_of(t)) {
      case 1: acc = gi::promote<1>(acc, 0.0f, 0.0f, nm0, nm1, s[0], s[1]); break;
      case 2: acc = gi::promote<2>(acc, 0.0f, 0.0f, nm0, nm1, s[0], s[1]); break;
      default: break;
    }
  }
  return acc;
}

}  // namespace

TEST_F(GemmIntModel, PiecesDecodeToTheDequantizerBitwise) {
  for (GgmlType t : kIntTypes) {
    const int64_t rows = 64, cols = 2048;
    const auto wq = random_weights(t, rows, cols);
    const size_t rb = row_bytes(t, cols);
    const float bound = t == GgmlType::Q8_0 ? 128 : t == GgmlType::Q2_K ? 45 : t == GgmlType::Q4_K ? 15 : 43;
    std::vector<float> ref(static_cast<size_t>(cols)), ints, scale, mins;
    for (int64_t r = 0; r < rows; ++r) {
      quant::dequantize_row(t, wq.data() + r * rb, ref.data(), cols);
      decode(t, wq.data() + r * rb, cols, ints, scale, mins);
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(ints[c], std::trunc(ints[c])) << type_name(t);
        ASSERT_LE(std::fabs(ints[c]), bound) << type_name(t);
        // scale * int is an exact product; the dequantizer rounds only the subtraction of the minimum.
        const float w = scale[c / 32] * ints[c] - mins[c / 16];
        ASSERT_EQ(f32_to_bits(w), f32_to_bits(ref[c])) << type_name(t) << " row " << r << " col " << c;
      }
    }
  }
}

TEST_F(GemmIntModel, ErrorModelStaysAtFp32AccuracyLikeTheSplitPath) {
  // 24 rows x 8 tokens per type over 4096 columns (128 k-tiles). Errors are relative to sum |w x| of each
  // dot product (what rounding scales with) and over the whole output (the GPU tests' rel_err).
  for (GgmlType t : kIntTypes) {
    const int64_t rows = 24, cols = 4096, n_tok = 8;
    const auto wq = random_weights(t, rows, cols);
    const auto x = heavy(n_tok, cols);
    const size_t rb = row_bytes(t, cols);
    std::vector<float> w(static_cast<size_t>(cols)), ints, scale, mins, xt(static_cast<size_t>(cols));
    double max_int = 0, max_split = 0, e2_int = 0, e2_split = 0, ref2 = 0;
    double max_tile_int = 0, max_tile_split = 0;
    for (int64_t r = 0; r < rows; ++r) {
      quant::dequantize_row(t, wq.data() + r * rb, w.data(), cols);
      decode(t, wq.data() + r * rb, cols, ints, scale, mins);
      for (int64_t tok = 0; tok < n_tok; ++tok) {
        std::copy(x.begin() + tok * cols, x.begin() + (tok + 1) * cols, xt.begin());
        double ref = 0, mag = 0;
        for (int64_t c = 0; c < cols; ++c) ref += double(w[c]) * xt[c], mag += std::fabs(double(w[c]) * xt[c]);
        const double ei = model_int(t, ints, scale, mins, xt) - ref, es = model_split(w, xt) - ref;
        max_int = std::max(max_int, std::fabs(ei) / mag), max_split = std::max(max_split, std::fabs(es) / mag);
        e2_int += ei * ei, e2_split += es * es, ref2 += ref * ref;
        // One k-tile alone (the first of the row), the unit the promotion works on.
        std::vector<float> w1(w.begin(), w.begin() + 32), x1(xt.begin(), xt.begin() + 32), i1(ints.begin(), ints.begin() + 32);
        double r1 = 0, m1 = 0;
        for (int c = 0; c < 32; ++c) r1 += double(w1[c]) * x1[c], m1 += std::fabs(double(w1[c]) * x1[c]);
        if (m1 > 0) {
          max_tile_int = std::max(max_tile_int, std::fabs(model_int(t, i1, scale, mins, x1) - r1) / m1);
          max_tile_split = std::max(max_tile_split, std::fabs(model_split(w1, x1) - r1) / m1);
        }
      }
    }
    const double rel_int = std::sqrt(e2_int / ref2), rel_split = std::sqrt(e2_split / ref2);
    std::printf("gemm int model %-8s one k-tile max %.2e (split %.2e); rows max %.2e (split %.2e) of sum|wx|; rel_err %.2e (split %.2e)\n",
                type_name(t), max_tile_int, max_tile_split, max_int, max_split, rel_int, rel_split);
    // The model truncates every addend of an mma at 2^-23 of the largest (up to 16 such cuts per mma, 4
    // mma per k-tile), and the activations' low FP16 terms keep 2^-22 of each x (2^-25 absolute where
    // subnormal, the 1e-3 stretch): both schemes share these, so a k-tile's error reaches ~1e-6 of its
    // sum |w x| (more where Q4_K's minimum cancels the integer sum) and whole rows ~4e-7.
    EXPECT_LT(max_tile_int, 3e-6) << type_name(t);
    EXPECT_LT(max_int, 1e-6) << type_name(t);
    EXPECT_LT(rel_int, 6e-7) << type_name(t);
    EXPECT_LE(max_int, 1.5 * max_split) << type_name(t);
    EXPECT_LE(rel_int, 1.25 * rel_split) << type_name(t);
  }
}

TEST_F(GemmIntModel, PromotionAppliesEachTilesScaleAndMinimum) {
  // One nonzero activation per k-tile (exact in FP16, so every product and sum is exact): the model's
  // result must be the exact dot product, which a scale or minimum taken from the wrong tile or half breaks.
  for (GgmlType t : kIntTypes) {
    const int64_t cols = 1024;
    const auto wq = random_weights(t, 1, cols);
    std::vector<float> w(static_cast<size_t>(cols)), ints, scale, mins;
    quant::dequantize_row(t, wq.data(), w.data(), cols);
    decode(t, wq.data(), cols, ints, scale, mins);
    for (int trial = 0; trial < 64; ++trial) {
      std::vector<float> x(static_cast<size_t>(cols), 0.0f);
      double ref = 0, mag = 0;
      for (int64_t k0 = 0; k0 < cols; k0 += 32) {
        const int64_t c = k0 + (trial * 7 + k0 / 32 * 5) % 32;
        x[c] = static_cast<float>(1 + (c % 5)) * (c & 1 ? -0.25f : 2.0f);
        ref += double(w[c]) * x[c], mag += std::fabs(double(w[c]) * x[c]);
      }
      // Only the promotion's fp32 roundings remain (a mapping error is the size of a whole term).
      const float got = model_int(t, ints, scale, mins, x);
      EXPECT_NEAR(got, ref, 1e-6 * mag + 1e-12) << type_name(t) << " trial " << trial;
    }
  }
}

TEST_F(GemmIntModel, V2TilesDecodeToThePiecesBitwise) {
  // The second grouped kernel's decode from raw words (gemm_group_v2.h) gives the first kernel's
  // integers, scales and minima bit for bit, so both kernels do the same arithmetic. Rows of 8 units
  // (IQ2_XXS units alternate between starting at byte 0 and byte 2 of a word) and rows of 2 units whose
  // row bytes are no multiple of 16 (only 4-byte alignment is assumed). Folded, the weights are still
  // the dequantizer's bitwise, with one scale per 256 columns.
  for (GgmlType t : kIntTypes)
    for (int64_t cols : {2048, 512}) {
      const int64_t rows = 48;
      const auto wq = random_weights(t, rows, cols);
      const size_t rb = row_bytes(t, cols);
      ASSERT_EQ(rb % 4, 0u);
      std::vector<float> ref(static_cast<size_t>(cols)), ints, scale, mins, i1, s1, m1;
      for (int64_t r = 0; r < rows; ++r) {
        quant::dequantize_row(t, wq.data() + r * rb, ref.data(), cols);
        decode(t, wq.data() + r * rb, cols, i1, s1, m1);
        decode_v2<false>(t, wq.data() + r * rb, cols, ints, scale, mins);
        for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(f32_to_bits(ints[c]), f32_to_bits(i1[c])) << type_name(t) << " col " << c;
        for (int64_t k = 0; k < cols / 32; ++k) ASSERT_EQ(f32_to_bits(scale[k]), f32_to_bits(s1[k])) << type_name(t);
        for (int64_t k = 0; k < cols / 16; ++k) ASSERT_EQ(f32_to_bits(mins[k]), f32_to_bits(m1[k])) << type_name(t);
        if (t == GgmlType::Q8_0) {  // the dense kernel's 128-column units: the same numbers
          std::vector<float> i2, s2, m2;
          decode_row_v2<GgmlType::Q8_0, false, 128>(wq.data() + r * rb, cols, i2, s2, m2);
          ASSERT_EQ(0, std::memcmp(i2.data(), ints.data(), ints.size() * 4)) << "Q8_0, 128-column units";
          ASSERT_EQ(0, std::memcmp(s2.data(), scale.data(), scale.size() * 4)) << "Q8_0, 128-column units";
        }
        decode_v2<true>(t, wq.data() + r * rb, cols, ints, scale, mins);
        for (int64_t c = 0; c < cols; ++c) {
          ASSERT_EQ(ints[c], std::trunc(ints[c])) << type_name(t);
          ASSERT_LT(std::fabs(ints[c]), 2048.0f) << type_name(t) << ": not exact in FP16";
          const float w = scale[c / 32] * ints[c] - mins[c / 16];
          ASSERT_EQ(f32_to_bits(w), f32_to_bits(ref[c])) << type_name(t) << " row " << r << " col " << c;
        }
        if (t != GgmlType::Q8_0) {
          for (int64_t k = 0; k < cols / 32; ++k) ASSERT_EQ(scale[k], scale[k / 8 * 8]) << type_name(t);
        }
      }
    }
}

TEST_F(GemmIntModel, V2DecodeIgnoresTheWordsPastTheUnit) {
  // The decoder reads whole words, up to one past the unit's last; whatever they hold, same output.
  namespace g2 = cuda::gemm_v2;
  uint32_t sel[256];
  ASSERT_TRUE(g2::iq2_sel_table(sel));
  for (uint32_t i = 0; i < 128; ++i) ASSERT_EQ(g2::iq2_signs(i), quant::kIq2xsSigns[i]) << i;
  auto check = [&](auto tag, auto unit) {
    constexpr GgmlType T = decltype(tag)::value;
    constexpr int U = decltype(unit)::value;
    using F = g2::Fmt<T, U>;
    const auto wq = random_weights(T, 1, 512);
    for (int u = 0; u < 2; ++u) {
      const int a2 = g2::unit_a2<T, U>(u);
      ASSERT_LE(a2 + F::kBytes, 4 * F::kWords);
      uint32_t w1[F::kStride + 4], w2[F::kStride + 4];
      for (int i = 0; i < F::kStride + 4; ++i) w1[i] = 0xDEADBEEFu * (i + 1), w2[i] = ~w1[i];
      std::memcpy(w1, wq.data() + u * F::kBytes - a2, a2 + F::kBytes);
      std::memcpy(w2, w1, a2 + F::kBytes);
      for (int j = 0; j < U / 32; ++j) {
        g2::Tile32 o1, o2;
        g2::Decode<T>::run(w1, a2, j, sel, o1);
        g2::Decode<T>::run(w2, a2, j, sel, o2);
        ASSERT_EQ(0, std::memcmp(o1.h, o2.h, sizeof(o1.h))) << type_name(T) << " tile " << j;
        ASSERT_EQ(o1.scale, o2.scale);
        ASSERT_EQ(o1.min0, o2.min0);
        ASSERT_EQ(o1.min1, o2.min1);
      }
    }
  };
  using U256 = std::integral_constant<int, 256>;
  check(std::integral_constant<GgmlType, GgmlType::IQ2_XXS>{}, U256{});
  check(std::integral_constant<GgmlType, GgmlType::Q2_K>{}, U256{});
  check(std::integral_constant<GgmlType, GgmlType::Q4_K>{}, U256{});
  check(std::integral_constant<GgmlType, GgmlType::Q8_0>{}, U256{});
  check(std::integral_constant<GgmlType, GgmlType::Q8_0>{}, std::integral_constant<int, 128>{});  // dense units
}

TEST_F(GemmIntModel, LongerPartialsCostAccuracy) {
  // With the sub-block scales folded into the integers, a partial could run over 2, 4 or 8 k-tiles (one
  // scale per 256 columns) and be promoted once. The model says the errors grow with the length (the
  // truncating sums of the partial), so the kernels promote every k-tile: printout only, plus the check
  // that folding alone (length 1) stays within the per-k-tile scheme's bounds.
  for (GgmlType t : kIntTypes) {
    if (t == GgmlType::Q8_0) continue;  // its scale changes every 32 columns
    const int64_t rows = 24, cols = 4096, n_tok = 8;
    const auto wq = random_weights(t, rows, cols);
    const auto x = heavy(n_tok, cols);
    const size_t rb = row_bytes(t, cols);
    std::vector<float> w(static_cast<size_t>(cols)), ints, scale, mins, i1, s1, m1, xt(static_cast<size_t>(cols));
    for (int group : {1, 2, 4, 8}) {
      double max_v2 = 0, max_1 = 0, e2_v2 = 0, e2_1 = 0, e2_split = 0, ref2 = 0;
      for (int64_t r = 0; r < rows; ++r) {
        quant::dequantize_row(t, wq.data() + r * rb, w.data(), cols);
        decode_v2<true>(t, wq.data() + r * rb, cols, ints, scale, mins);
        decode(t, wq.data() + r * rb, cols, i1, s1, m1);
        for (int64_t tok = 0; tok < n_tok; ++tok) {
          std::copy(x.begin() + tok * cols, x.begin() + (tok + 1) * cols, xt.begin());
          double ref = 0, mag = 0;
          for (int64_t c = 0; c < cols; ++c) ref += double(w[c]) * xt[c], mag += std::fabs(double(w[c]) * xt[c]);
          const double ev = model_v2(t, ints, scale, mins, xt, group) - ref;
          const double e1 = model_int(t, i1, s1, m1, xt) - ref, es = model_split(w, xt) - ref;
          max_v2 = std::max(max_v2, std::fabs(ev) / mag), max_1 = std::max(max_1, std::fabs(e1) / mag);
          e2_v2 += ev * ev, e2_1 += e1 * e1, e2_split += es * es, ref2 += ref * ref;
        }
      }
      const double rel_v2 = std::sqrt(e2_v2 / ref2), rel_1 = std::sqrt(e2_1 / ref2), rel_s = std::sqrt(e2_split / ref2);
      std::printf("gemm folded model %-8s partial of %d k-tiles: rows max %.2e (per k-tile %.2e) of sum|wx|; "
                  "rel_err %.2e (per k-tile %.2e, split %.2e)\n",
                  type_name(t), group, max_v2, max_1, rel_v2, rel_1, rel_s);
      if (group == 1) {
        EXPECT_LT(max_v2, 1e-6) << type_name(t);
        EXPECT_LT(rel_v2, 6e-7) << type_name(t);
        EXPECT_LE(rel_v2, 1.25 * rel_s) << type_name(t);
      }
    }
  }
}

namespace {

class GemmInt : public cuda_test::CudaKernelTest {
 protected:
  void SetUp() override {
    CudaKernelTest::SetUp();
    if (!IsSkipped()) cuda::fast::init_tables();
  }
  void TearDown() override { cuda::fast::gemm_set_int_weights(true); }
  std::vector<float> acts(int64_t rows, int64_t cols) { return tailed_acts(static_cast<size_t>(rows * cols)); }
};

}  // namespace

TEST_F(GemmInt, DenseEveryConvertedTypeMatchesReferenceAndRepeatsBitwise) {
  struct Case {
    GgmlType t;
    int64_t rows, cols, n_tok;
  };
  const Case cases[] = {{GgmlType::Q8_0, 4096, 1024, 257}, {GgmlType::Q8_0, 1024, 4096, 130},
                        {GgmlType::Q8_0, 200, 8192, 33},   {GgmlType::Q2_K, 4096, 2048, 129},
                        {GgmlType::Q2_K, 131, 4096, 300},  {GgmlType::Q4_K, 2048, 4096, 65},
                        {GgmlType::Q4_K, 777, 2048, 9},    {GgmlType::IQ2_XXS, 2048, 4096, 250},
                        {GgmlType::IQ2_XXS, 96, 2048, 128}};
  for (const Case& c : cases) {
    const auto wq = random_weights(c.t, c.rows, c.cols);
    auto dw = up(wq);
    auto dx = up(acts(c.n_tok, c.cols));
    const int64_t k8 = c.cols;
    cuda::DeviceArray<uint16_t> xb(static_cast<size_t>(2 * c.n_tok * k8));
    cuda::DMat dm{c.t, dw.get(), c.cols, c.rows, row_bytes(c.t, c.cols)};
    auto ref = poisoned<float>(static_cast<size_t>(c.n_tok * c.rows));
    cuda::matmul(dm, 0, c.rows, dx.get(), c.n_tok, c.cols, ref.get(), c.rows, nullptr);
    cuda::fast::to_f16(dx.get(), c.n_tok, c.cols, c.cols, xb.get(), nullptr);
    std::vector<float> runs[3];
    for (int rep = 0; rep < 3; ++rep) {  // integer, integer again, split
      cuda::fast::gemm_set_int_weights(rep < 2);
      auto got = poisoned<float>(static_cast<size_t>(c.n_tok * c.rows));
      ASSERT_TRUE(cuda::fast::gemm(dm, 0, c.rows, xb.get(), c.n_tok, got.get(), c.rows, nullptr));
      runs[rep] = down(got);
    }
    cuda::fast::gemm_set_int_weights(true);
    const auto r = down(ref);
    const double e = rel_err(runs[0], r), es = rel_err(runs[2], r);
    std::printf("gemm int %-8s %5lld x %5lld, %4lld tokens: rel err %.2e (three-mma split %.2e)\n", type_name(c.t),
                (long long)c.rows, (long long)c.cols, (long long)c.n_tok, e, es);
    EXPECT_LT(e, 3e-6) << type_name(c.t);
    EXPECT_EQ(0, std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * 4)) << type_name(c.t);
  }
}

TEST_F(GemmInt, GroupedExpertsOnModelShapesMatchReference) {
  // gate/up: FF = 2048 rows over D = 4096; down: D rows over FF (spec §2.4), 8 experts, 6 per token;
  // skewed routing so some experts get several 64-item tiles and ragged tails, others few items.
  for (GgmlType t : kIntTypes) {
    const int64_t n_exp = 8, k = 6, n_tok = 97 + 40 * (t == GgmlType::Q2_K), items = n_tok * k, D = 4096, FF = 2048;
    const auto wg = random_weights(t, n_exp * FF, D);
    const auto wd = random_weights(t, n_exp * D, FF);
    std::vector<int32_t> sel(static_cast<size_t>(items));
    std::uniform_int_distribution<int> pick(0, n_exp - 1);
    for (int64_t i = 0; i < n_tok; ++i)
      for (int64_t j = 0; j < k; ++j) sel[i * k + j] = static_cast<int32_t>((pick(rng_) * pick(rng_) / n_exp + j) % n_exp);
    const auto x = acts(n_tok, D);
    const auto g = acts(items, FF);
    auto dwg = up(wg), dwd = up(wd);
    auto dx = up(x);
    auto ds = up(sel);
    cuda::DMat mg{t, dwg.get(), D, n_exp * FF, row_bytes(t, D)};
    cuda::DMat md{t, dwd.get(), FF, n_exp * D, row_bytes(t, FF)};
    const int max_tiles = cuda::fast::moe_max_tiles(items, n_exp);
    cuda::DeviceArray<int32_t> ints(static_cast<size_t>(n_exp + n_exp + 1 + items + max_tiles + 1));
    cuda::fast::MoePlan p{};
    p.count = ints.get(), p.offset = p.count + n_exp, p.items = p.offset + n_exp + 1;
    p.tiles = p.items + items, p.n_tiles = p.tiles + max_tiles, p.max_tiles = max_tiles;
    cuda::fast::moe_plan(ds.get(), items, n_exp, p, nullptr);
    std::vector<int32_t> order(static_cast<size_t>(items));
    FS_CUDA_CHECK(cudaDeviceSynchronize());
    FS_CUDA_CHECK(cudaMemcpy(order.data(), p.items, items * 4, cudaMemcpyDeviceToHost));
    cuda::DeviceArray<uint16_t> xb(static_cast<size_t>(2 * items * D));
    // gate: gathered from token rows, output in plan order.
    cuda::fast::to_f16(dx.get(), n_tok, D, D, xb.get(), nullptr);
    std::vector<float> gate[3];
    for (int rep = 0; rep < 3; ++rep) {
      cuda::fast::gemm_set_int_weights(rep < 2);
      auto got = poisoned<float>(static_cast<size_t>(items * FF));
      ASSERT_TRUE(cuda::fast::gemm_grouped(mg, FF, p, xb.get(), D, n_tok, true, k, false, got.get(), FF, nullptr));
      gate[rep] = down(got);
    }
    auto refg = poisoned<float>(static_cast<size_t>(items * FF));
    cuda::matmul_items(mg, FF, ds.get(), k, dx.get(), D, items, refg.get(), FF, nullptr);
    const auto rg = down(refg);
    std::vector<float> rg_plan(rg.size());
    for (int64_t pos = 0; pos < items; ++pos) std::memcpy(&rg_plan[pos * FF], &rg[order[pos] * FF], FF * 4);
    // down: plan-ordered input rows, output scattered back to item rows.
    auto dg = up(g);
    cuda::fast::to_f16(dg.get(), items, FF, FF, xb.get(), nullptr);
    std::vector<float> dn[3];
    for (int rep = 0; rep < 3; ++rep) {
      cuda::fast::gemm_set_int_weights(rep < 2);
      auto got = poisoned<float>(static_cast<size_t>(items * D));
      ASSERT_TRUE(cuda::fast::gemm_grouped(md, D, p, xb.get(), FF, items, false, 1, true, got.get(), D, nullptr));
      dn[rep] = down(got);
    }
    cuda::fast::gemm_set_int_weights(true);
    std::vector<float> g_items(g.size());
    for (int64_t pos = 0; pos < items; ++pos) std::memcpy(&g_items[order[pos] * FF], &g[pos * FF], FF * 4);
    auto dgi = up(g_items);
    auto refd = poisoned<float>(static_cast<size_t>(items * D));
    cuda::matmul_items(md, D, ds.get(), 1, dgi.get(), FF, items, refd.get(), D, nullptr);
    const auto rd = down(refd);
    const double eg = rel_err(gate[0], rg_plan), ed = rel_err(dn[0], rd);
    std::printf("grouped int %-8s gate %.2e (split %.2e), down %.2e (split %.2e)\n", type_name(t), eg,
                rel_err(gate[2], rg_plan), ed, rel_err(dn[2], rd));
    EXPECT_LT(eg, 3e-6) << type_name(t);
    EXPECT_LT(ed, 3e-6) << type_name(t);
    EXPECT_EQ(0, std::memcmp(gate[0].data(), gate[1].data(), gate[0].size() * 4)) << type_name(t);
    EXPECT_EQ(0, std::memcmp(dn[0].data(), dn[1].data(), dn[0].size() * 4)) << type_name(t);
  }
}
