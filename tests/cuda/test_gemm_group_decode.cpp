// The grouped wgmma kernel's fewer-instruction decoders (gemm_group_decode.h, FLASHSTAR_GEMM_GROUP_DECODE=1)
// against v2's (gemm_v2::Decode, FLASHSTAR_GEMM_GROUP_DECODE=0), on the CPU: the same Tile32 word for word
// (the FP16 integers the tensor core multiplies, the k-tile's scale and minima, compared as bits). IQ2_XXS:
// every grid entry with every sign pattern in every entry slot of every sub-block, both unit offsets;
// the scale for every FP16 d and 4-bit s; random blocks. Q2_K: every scale byte in both halves of every
// k-tile, random blocks. The GPU side (the products of the kernel with each decoder against v2's bits)
// is GemmGroupWgmma.ModelShapesAreV2sBitsAndCloseToReference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "common/half.h"
#include "cuda/gemm_group_decode.h"

using namespace flashstar;
namespace g2 = flashstar::cuda::gemm_v2;

namespace {

// A row's raw unit words as the kernel's shared memory holds them (48 words: past the unit's 17 or 21,
// as the kernel's spare words), with byte access for building blocks.
struct RawRow {
  uint32_t w[48];
  void set_byte(int b, uint32_t v) {
    const int sh = 8 * (b & 3);
    w[b >> 2] = (w[b >> 2] & ~(0xFFu << sh)) | ((v & 0xFFu) << sh);
  }
  void set16(int b, uint32_t v) { set_byte(b, v & 0xFF), set_byte(b + 1, v >> 8); }
  void set32(int b, uint32_t v) { set16(b, v & 0xFFFF), set16(b + 2, v >> 16); }
};

// Both decoders on one k-tile: every output word and the scale and minima bit for bit.
template <GgmlType T>
::testing::AssertionResult same_tile(const RawRow& r, int a2, int j, const uint32_t* sel, const uint32_t* fast) {
  g2::Tile32 o{}, n{};
  g2::Decode<T>::run(r.w, a2, j, sel, o);
  g2::decode_fast<T>(r.w, a2, j, fast, n);
  for (int i = 0; i < 16; ++i)
    if (o.h[i] != n.h[i])
      return ::testing::AssertionFailure() << "a2 " << a2 << " j " << j << " word " << i << ": v2 " << std::hex << o.h[i]
                                           << " new " << n.h[i];
  const float ov[3] = {o.scale, o.min0, o.min1}, nv[3] = {n.scale, n.min0, n.min1};
  for (int k = 0; k < 3; ++k)
    if (f32_to_bits(ov[k]) != f32_to_bits(nv[k]) && !(std::isnan(ov[k]) && std::isnan(nv[k])))
      return ::testing::AssertionFailure() << "a2 " << a2 << " j " << j << " factor " << k << ": v2 " << ov[k] << " new "
                                           << nv[k];
  return ::testing::AssertionSuccess();
}

class GemmGroupDecode : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(g2::iq2_sel_table(sel_));
    ASSERT_TRUE(g2::iq2_fast_table(fast_));
  }
  // Random words with finite FP16 in every half (clear the exponent's top bit), as the blocks' d, dmin.
  void randomise(RawRow& r) {
    for (uint32_t& w : r.w) w = rng_() & 0xBFFFBFFFu;
  }
  uint32_t sel_[256];
  uint32_t fast_[g2::kIq2FastWords];
  std::mt19937 rng_{20261201};
};

}  // namespace

TEST_F(GemmGroupDecode, Iq2xxsTablesHoldTheGridAndTheSigns) {
  for (int e = 0; e < 256; ++e)
    for (int k = 0; k < 8; ++k) {
      const uint32_t code = (fast_[2 * e + (k >> 2)] >> (8 * (k & 3))) & 255u;
      const uint32_t g = static_cast<uint32_t>(quant::kIq2xxsGrid[e] >> (8 * k)) & 255u;
      // The code's low and high FP16 bytes are the grid value's.
      ASSERT_EQ((code & 0x60u) | (((code & 0x1Fu) | 0x40u) << 8), static_cast<uint32_t>(f32_to_f16(float(g))));
    }
  for (int s = 0; s < 128; ++s)
    for (int k = 0; k < 8; ++k) {
      const uint32_t b = (fast_[g2::kIq2FastSigns + 2 * s + (k >> 2)] >> (8 * (k & 3))) & 255u;
      ASSERT_EQ(b, 0x40u | (((quant::kIq2xsSigns[s] >> k) & 1u) << 7)) << s << " " << k;
    }
}

// Every grid entry x every sign pattern, in entry slot e of sub-block j (the other slots random), both
// unit offsets: 256 x 128 x 4 x 8 x 2 tiles.
TEST_F(GemmGroupDecode, Iq2xxsEveryEntryAndSignPatternIsV2s) {
  RawRow r;
  for (int a2 : {0, 2})
    for (int j = 0; j < 8; ++j)
      for (int e = 0; e < 4; ++e)
        for (int g = 0; g < 256; ++g) {
          randomise(r);
          for (int s = 0; s < 128; ++s) {
            const int sub = a2 + 2 + 8 * j;  // 4 grid indices, then the 32-bit signs-and-scale word
            r.set_byte(sub + e, static_cast<uint32_t>(g));
            uint32_t sg = rng_();  // the other slots' signs and the scale random
            sg = (sg & ~(127u << (7 * e))) | (static_cast<uint32_t>(s) << (7 * e));
            r.set32(sub + 4, sg);
            ASSERT_TRUE(same_tile<GgmlType::IQ2_XXS>(r, a2, j, sel_, fast_))
                << "grid " << g << " signs " << s << " slot " << e;
          }
        }
}

// The k-tile scale d (0.5 + s) / 4 for every FP16 d (with subnormals, zeros, infinities and NaNs) and s.
TEST_F(GemmGroupDecode, Iq2xxsScaleForEveryDAndSubScaleIsV2s) {
  RawRow r;
  randomise(r);
  for (int a2 : {0, 2})
    for (uint32_t d = 0; d < 65536; ++d) {
      r.set16(a2, d);
      for (uint32_t s = 0; s < 16; ++s) {
        const int j = static_cast<int>((d + s) & 7);
        const int top = a2 + 2 + 8 * j + 7;
        r.set_byte(top, (r.w[top >> 2] >> (8 * (top & 3)) & 0x0Fu) | (s << 4));
        ASSERT_TRUE(same_tile<GgmlType::IQ2_XXS>(r, a2, j, sel_, fast_)) << "d " << d << " s " << s;
      }
    }
}

TEST_F(GemmGroupDecode, Iq2xxsRandomBlocksAreV2s) {
  RawRow r;
  for (int trial = 0; trial < 20000; ++trial) {
    randomise(r);
    for (int a2 : {0, 2})
      for (int j = 0; j < 8; ++j) ASSERT_TRUE(same_tile<GgmlType::IQ2_XXS>(r, a2, j, sel_, fast_)) << "trial " << trial;
  }
}

// Every scale byte (4-bit scale and minimum) in either half of every k-tile, random quants and d, dmin.
TEST_F(GemmGroupDecode, Q2kEveryScaleByteIsV2s) {
  RawRow r;
  for (int j = 0; j < 8; ++j)
    for (int half = 0; half < 2; ++half)
      for (uint32_t sc = 0; sc < 256; ++sc)
        for (int rep = 0; rep < 8; ++rep) {
          randomise(r);
          // Block: scales [16] at byte 0; k-tile j = 4 h + step takes scale bytes 8 h + 2 step + half.
          r.set_byte(8 * (j >> 2) + 2 * (j & 3) + half, sc);
          ASSERT_TRUE(same_tile<GgmlType::Q2_K>(r, 0, j, sel_, fast_)) << "sc " << sc << " half " << half;
        }
}

TEST_F(GemmGroupDecode, Q2kRandomBlocksAreV2s) {
  RawRow r;
  for (int trial = 0; trial < 20000; ++trial) {
    randomise(r);
    for (int j = 0; j < 8; ++j) ASSERT_TRUE(same_tile<GgmlType::Q2_K>(r, 0, j, sel_, fast_)) << "trial " << trial;
  }
}
