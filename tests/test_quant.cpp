// Block formats: hand-built known values, quantizer bit-identity with gguf-py (reference vectors
// generated once with gguf 0.19 / numpy 2.4), round-trip error bounds, and the IQ2_XXS search's
// optimality. The random-bytes dequantization cross-check lives in python/test_quant_ggufpy.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iterator>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "quant/quant.h"
#include "test_random.h"

using namespace flashstar;
using test_random::gaussian;
using namespace flashstar::quant;

namespace {

std::vector<uint8_t> quantize_vec(GgmlType t, const std::vector<float>& x, const float* importance = nullptr) {
  std::vector<uint8_t> q(row_bytes(t, static_cast<int64_t>(x.size())));
  quantize_row(t, x.data(), q.data(), static_cast<int64_t>(x.size()), importance);
  return q;
}

std::vector<float> dequantize_vec(GgmlType t, const std::vector<uint8_t>& q, size_t n) {
  std::vector<float> y(n);
  dequantize_row(t, q.data(), y.data(), static_cast<int64_t>(n));
  return y;
}

double rel_rms(const std::vector<float>& x, const std::vector<float>& y, const float* w = nullptr) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double wi = w ? w[i] : 1.0;
    num += wi * (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += wi * double(x[i]) * x[i];
  }
  return std::sqrt(num / den);
}

void put_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
void put_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

}  // namespace

TEST(QuantTypes, SupportedSet) {
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K,
                     GgmlType::IQ2_XXS}) {
    EXPECT_TRUE(can_dequantize(t)) << type_name(t);
    EXPECT_TRUE(can_quantize(t)) << type_name(t);
  }
  for (GgmlType t : {GgmlType::Q6_K, GgmlType::Q4_0, GgmlType::IQ2_XS, GgmlType::Q8_K, GgmlType::I32}) {
    EXPECT_FALSE(can_dequantize(t)) << type_name(t);
    EXPECT_FALSE(can_quantize(t)) << type_name(t);
  }
}

TEST(QuantTypes, BadInputThrows) {
  std::vector<uint8_t> raw(1024);
  std::vector<float> out(512);
  EXPECT_THROW(dequantize_row(GgmlType::Q6_K, raw.data(), out.data(), 256), Error);
  EXPECT_THROW(dequantize_row(GgmlType::Q8_0, raw.data(), out.data(), 33), Error);
  EXPECT_THROW(dot_row_f32(GgmlType::Q2_K, raw.data(), out.data(), 100), Error);
  EXPECT_THROW(quantize_row(GgmlType::Q5_K, out.data(), raw.data(), 256), Error);
  EXPECT_THROW(quantize_row(GgmlType::IQ2_XXS, out.data(), raw.data(), 128), Error);
}

TEST(QuantTables, Iq2Format) {
  // Every grid byte is a magnitude from {8, 25, 43}; every sign mask has even parity and its low
  // seven bits are its own index.
  for (uint64_t g : kIq2xxsGrid)
    for (int j = 0; j < 8; ++j) {
      const int v = static_cast<int>((g >> (8 * j)) & 255);
      EXPECT_TRUE(v == 8 || v == 25 || v == 43) << std::hex << g;
    }
  for (int i = 0; i < 128; ++i) {
    EXPECT_EQ(kIq2xsSigns[i] & 127, i);
    EXPECT_EQ(__builtin_popcount(kIq2xsSigns[i]) % 2, 0);
  }
  EXPECT_EQ(kIq2xxsGrid[0], 0x0808080808080808ull);
  EXPECT_EQ(kIq2xxsGrid[255], 0x2b2b2b1908081908ull);
}

// ---- Dequantization of hand-built blocks (independent of gguf-py; the layouts of model.md §3). ----

TEST(QuantDequant, Q8_0Known) {
  BlockQ8_0 b;
  b.d = f32_to_f16(0.5f);
  for (int i = 0; i < 32; ++i) b.qs[i] = static_cast<int8_t>(i * 8 - 128);
  float y[32];
  dequantize_row(GgmlType::Q8_0, &b, y, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.5f * static_cast<float>(i * 8 - 128));
}

TEST(QuantDequant, Q2_KKnown) {
  uint8_t raw[84] = {};
  for (int s = 0; s < 16; ++s) raw[s] = static_cast<uint8_t>((s % 16) | ((15 - s) << 4));  // sc = s, m = 15-s
  // Element 128h + 32j + 16half + l gets level (h + j + half + l) % 4.
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j)
      for (int half = 0; half < 2; ++half)
        for (int l = 0; l < 16; ++l)
          raw[16 + 32 * h + 16 * half + l] |= static_cast<uint8_t>(((h + j + half + l) % 4) << (2 * j));
  put_u16(raw + 80, f32_to_f16(0.25f));
  put_u16(raw + 82, f32_to_f16(0.125f));
  float y[256];
  dequantize_row(GgmlType::Q2_K, raw, y, 256);
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, j = (i % 128) / 32, half = (i % 32) / 16, l = i % 16, s = i / 16;
    EXPECT_EQ(y[i], 0.25f * s * ((h + j + half + l) % 4) - 0.125f * (15 - s)) << i;
  }
}

TEST(QuantDequant, Q4_KKnown) {
  // Scale/min pairs with every 6-bit value pattern exercised through the packed layout.
  const int sc[8] = {1, 63, 17, 40, 5, 62, 33, 48}, mn[8] = {60, 2, 31, 9, 50, 1, 47, 16};
  uint8_t raw[144] = {};
  put_u16(raw, f32_to_f16(0.5f));
  put_u16(raw + 2, f32_to_f16(0.25f));
  uint8_t* scales = raw + 4;
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
  for (int j = 0; j < 8; ++j) {
    int a, m;
    q4_K_scale_min(scales, j, &a, &m);
    EXPECT_EQ(a, sc[j]);
    EXPECT_EQ(m, mn[j]);
  }
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) raw[16 + 32 * c + l] = static_cast<uint8_t>((l % 16) | (((l + c) % 16) << 4));
  float y[256];
  dequantize_row(GgmlType::Q4_K, raw, y, 256);
  for (int i = 0; i < 256; ++i) {
    const int c = i / 64, hi = (i % 64) / 32, l = i % 32, j = i / 32;
    const int q = hi ? (l + c) % 16 : l % 16;
    EXPECT_EQ(y[i], 0.5f * sc[j] * q - 0.25f * mn[j]) << i;
  }
}

TEST(QuantDequant, Iq2XxsKnown) {
  uint8_t raw[66] = {};
  put_u16(raw, f32_to_f16(2.0f));
  uint8_t idx[8][4], sidx[8][4];
  for (int g = 0; g < 8; ++g) {
    uint32_t a = 0, b = static_cast<uint32_t>(2 * g) << 28;
    for (int k = 0; k < 4; ++k) {
      idx[g][k] = static_cast<uint8_t>((g * 37 + k * 71) & 255);
      sidx[g][k] = static_cast<uint8_t>((g * 13 + k * 29) & 127);
      a |= static_cast<uint32_t>(idx[g][k]) << (8 * k);
      b |= static_cast<uint32_t>(sidx[g][k]) << (7 * k);
    }
    put_u32(raw + 2 + 8 * g, a);
    put_u32(raw + 6 + 8 * g, b);
  }
  float y[256];
  dequantize_row(GgmlType::IQ2_XXS, raw, y, 256);
  for (int i = 0; i < 256; ++i) {
    const int g = i / 32, k = (i % 32) / 8, j = i % 8;
    const float mag = static_cast<float>((kIq2xxsGrid[idx[g][k]] >> (8 * j)) & 255);
    const bool neg = (kIq2xsSigns[sidx[g][k]] >> j) & 1;
    const float scale = 2.0f * (0.5f + static_cast<float>(2 * g)) * 0.25f;
    EXPECT_EQ(y[i], (neg ? -1.0f : 1.0f) * scale * mag) << i;
  }
}

TEST(QuantDequant, PlainTypes) {
  const float x[8] = {1.0f, -2.5f, 0.0f, -0.0f, 65504.0f, 1e-7f, INFINITY, 3.14159f};
  uint16_t h[8], bf[8];
  for (int i = 0; i < 8; ++i) {
    h[i] = f32_to_f16(x[i]);
    bf[i] = f32_to_bf16(x[i]);
  }
  float y[8];
  dequantize_row(GgmlType::F32, x, y, 8);
  EXPECT_EQ(0, std::memcmp(x, y, sizeof(x)));
  dequantize_row(GgmlType::F16, h, y, 8);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(f32_to_bits(y[i]), f32_to_bits(f16_to_f32(h[i])));
  dequantize_row(GgmlType::BF16, bf, y, 8);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(f32_to_bits(y[i]), static_cast<uint32_t>(bf[i]) << 16);
}

TEST(QuantDequant, F16EveryBitPattern) {
  std::vector<uint16_t> h(65536);
  for (uint32_t i = 0; i < 65536; ++i) h[i] = static_cast<uint16_t>(i);
  std::vector<float> y(65536);
  dequantize_row(GgmlType::F16, h.data(), y.data(), 65536);
  for (uint32_t i = 0; i < 65536; ++i) ASSERT_EQ(f32_to_bits(y[i]), f32_to_bits(f16_to_f32(h[i]))) << std::hex << i;
  EXPECT_EQ(dot_row_f32(GgmlType::F16, h.data() + 0x3c00, y.data() + 0x3c00, 1), 1.0f);  // 1.0 * 1.0
}

TEST(QuantDequant, RowsMatchRowByRow) {
  std::mt19937 rng(7);
  for (GgmlType t : {GgmlType::F16, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS}) {
    const int64_t ncols = 512, nrows = 300;  // > 64K elements: splits across threads
    std::vector<uint8_t> raw(row_bytes(t, ncols) * nrows);
    for (uint8_t& b : raw) b = static_cast<uint8_t>(rng());
    const size_t bb = type_info(t).block_bytes;
    for (size_t off = 0; off < raw.size(); off += bb) put_u16(raw.data() + off, f32_to_f16(0.01f));  // finite scales
    std::vector<float> all(static_cast<size_t>(ncols * nrows)), one(static_cast<size_t>(ncols));
    dequantize_rows(t, raw.data(), all.data(), nrows, ncols);
    for (int64_t r = 0; r < nrows; ++r) {
      dequantize_row(t, raw.data() + r * row_bytes(t, ncols), one.data(), ncols);
      ASSERT_EQ(0, std::memcmp(one.data(), all.data() + r * ncols, one.size() * 4)) << type_name(t) << " row " << r;
    }
  }
}

// ---- Quantizers bit-identical to gguf-py where it has one (F16, BF16, Q8_0). ----

namespace {
// Q8_0: 5 blocks (gaussian, exact .5 ties at d=1, one outlier, zeros, tiny)
const uint32_t kQ8In[160] = {
    0xbb8c1db2u, 0xbcafa171u, 0xbe131f5du, 0x3e2626fau, 0x3bf053aeu, 0x3d864e29u, 0x3c8fbd35u, 0xbd138c2bu,
    0x3d273a11u, 0xbdd8d654u, 0x3c70be81u, 0x3ce6ffc1u, 0xbd4879ddu, 0xbd4d1683u, 0x3cea1897u, 0x3cf2a3fcu,
    0xbd69dcceu, 0xbd939a30u, 0x3dd65f5eu, 0x3cd2324au, 0x3ac10480u, 0xbd6f3aaeu, 0xbd35fcfeu, 0xbce4b34eu,
    0xbce4d806u, 0xbceae7a4u, 0x3dd2bd20u, 0x3cecd622u, 0xbd91262du, 0x3cbf0c88u, 0xbdc7dd6au, 0xbd302f55u,
    0x42fe0000u, 0xc19c0000u, 0xc18c0000u, 0xc1780000u, 0xc1580000u, 0xc1380000u, 0xc1180000u, 0xc0f00000u,
    0xc0b00000u, 0xc0600000u, 0xbfc00000u, 0x3f000000u, 0x40200000u, 0x40900000u, 0x40d00000u, 0x41080000u,
    0x41280000u, 0x41480000u, 0x41680000u, 0x41840000u, 0x41940000u, 0xbf000000u, 0x3f000000u, 0x3fc00000u,
    0xbfc00000u, 0x40200000u, 0xc0200000u, 0x42c90000u, 0xc2fd0000u, 0x40600000u, 0xc0600000u, 0x00000000u,
    0xb9c8d1fcu, 0x3a67dcdau, 0xbaa3b305u, 0xb8c7b095u, 0x38bbe44au, 0xbac4faf1u, 0xb9e70fa1u, 0xc47a0000u,
    0xb71d45dbu, 0xba4713c5u, 0xb98ad57bu, 0x3991d4deu, 0xba55fb9bu, 0xbae9943du, 0x3a8324ecu, 0xb8bbb93bu,
    0xb9cb06d3u, 0xb9ba3059u, 0x3a94e96eu, 0x38e60fcau, 0x3aa5f1fau, 0x3af218c3u, 0xbacb96fbu, 0x39953724u,
    0x39ef92adu, 0x3b127f64u, 0x39ef48f0u, 0x3aa80a22u, 0xba95482eu, 0x398ddfe8u, 0x397d9690u, 0x3a263bd1u,
    0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u,
    0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u,
    0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u,
    0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u,
    0xb5881401u, 0xb5401b51u, 0xb51f3efdu, 0xb542551fu, 0x3498c3a2u, 0x33b68f7du, 0x3517c3dbu, 0x3599d259u,
    0xb608bf89u, 0xb4935a76u, 0x34404fa5u, 0xb525bf0fu, 0xb611cd99u, 0xb5827e95u, 0xb5b10682u, 0x3493ec99u,
    0xb62980d2u, 0x34d8eb07u, 0xb5596acdu, 0xb52f4f3du, 0x35245ccau, 0xb3bf5338u, 0x358b08b5u, 0xb5cc9eb2u,
    0xb5992a1bu, 0x3490c074u, 0x34dacc4au, 0xb395e8deu, 0xb45ee660u, 0xb55d21bfu, 0x353f2cd7u, 0x3569b12cu
};
const uint8_t kQ8Out[170] = {
    0x3c, 0x15, 0xfd, 0xef, 0x90, 0x7f, 0x06, 0x33, 0x0e, 0xe4, 0x20, 0xad, 0x0c, 0x16, 0xda, 0xd9, 0x16,
    0x17, 0xd3, 0xc8, 0x52, 0x14, 0x01, 0xd2, 0xdd, 0xea, 0xea, 0xea, 0x51, 0x17, 0xc9, 0x12, 0xb4, 0xde,
    0x00, 0x3c, 0x7f, 0xec, 0xee, 0xf0, 0xf2, 0xf4, 0xf6, 0xf8, 0xfa, 0xfc, 0xfe, 0x01, 0x03, 0x05, 0x07,
    0x09, 0x0b, 0x0d, 0x0f, 0x11, 0x13, 0xff, 0x01, 0x02, 0xfe, 0x03, 0xfd, 0x65, 0x81, 0x04, 0xfc, 0x00,
    0xe0, 0x47, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x81, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xcd, 0xdc, 0xe2, 0xdc, 0x0e, 0x04, 0x1c, 0x3a, 0x9a, 0xf2, 0x09, 0xe1, 0x93, 0xcf, 0xbe,
    0x0e, 0x81, 0x14, 0xd7, 0xdf, 0x1f, 0xfc, 0x34, 0xb3, 0xc7, 0x0e, 0x14, 0xfc, 0xf6, 0xd7, 0x24, 0x2c
};
const uint32_t kF16In[64] = {
    0x3f800000u, 0x3f801000u, 0x3f803000u, 0x477fe000u, 0x477feffdu, 0x477ff000u, 0x49742400u, 0xc9742400u,
    0x33800000u, 0x33000000u, 0x33400000u, 0x32800000u, 0x387fda40u, 0xb87fda40u, 0x337ffae5u, 0x3300d959u,
    0x3dcccccdu, 0xbdcccccdu, 0x3eaaaaabu, 0x3f2aaaabu, 0x7f800000u, 0xff800000u, 0x00000000u, 0x80000000u,
    0x449a5225u, 0xb900f990u, 0x36eae18bu, 0x44fff000u, 0x45001000u, 0x45800800u, 0x0da24260u, 0x8da24260u,
    0xbfd20319u, 0xbf440cc9u, 0x3eda1cb7u, 0xbf6cbe5cu, 0x3e22ebf5u, 0xbf12083bu, 0x3fc40b50u, 0xbd76d474u,
    0x3ff004adu, 0x3e5fae61u, 0x3f3aa7a7u, 0x3e042452u, 0x3f2da47bu, 0x3f6b1134u, 0xbf61980du, 0x3f35234fu,
    0xbd8bff35u, 0xc018f8b5u, 0xbe2a0d81u, 0xbfb40134u, 0x3e54feacu, 0xbf97509cu, 0x3ea7485du, 0xbce4458fu,
    0xbed0c3a3u, 0x3efdfc68u, 0xbecc753eu, 0x3ef35e4au, 0xbfc66d2fu, 0x3db1fa3au, 0x3f3ed933u, 0xbcb6bec7u
};
const uint16_t kF16Out[64] = {
    0x3c00, 0x3c00, 0x3c02, 0x7bff, 0x7bff, 0x7c00, 0x7c00, 0xfc00, 0x0001, 0x0000, 0x0001, 0x0000, 0x03ff,
    0x83ff, 0x0001, 0x0001, 0x2e66, 0xae66, 0x3555, 0x3955, 0x7c00, 0xfc00, 0x0000, 0x8000, 0x64d3, 0x8808,
    0x0075, 0x6800, 0x6800, 0x6c00, 0x0000, 0x8000, 0xbe90, 0xba20, 0x36d1, 0xbb66, 0x3117, 0xb890, 0x3e20,
    0xabb7, 0x3f80, 0x32fd, 0x39d5, 0x3021, 0x396d, 0x3b59, 0xbb0d, 0x39a9, 0xac60, 0xc0c8, 0xb150, 0xbda0,
    0x32a8, 0xbcbb, 0x353a, 0xa722, 0xb686, 0x37f0, 0xb664, 0x379b, 0xbe33, 0x2d90, 0x39f7, 0xa5b6
};
// BF16 is checked on kF16In followed by these, the cases only bf16 rounding has to get right: NaN
// payloads, ties and near-ties, overflow of the largest finite float, subnormals.
const uint32_t kBf16OnlyIn[8] = {0x7f800001u, 0xff812345u, 0x3f808000u, 0x3f818000u,
                                 0x3f807fffu, 0x7f7fffffu, 0x0000ffffu, 0x80008000u};
const uint16_t kBf16Out[72] = {
    0x3f80, 0x3f80, 0x3f80, 0x4780, 0x4780, 0x4780, 0x4974, 0xc974, 0x3380, 0x3300, 0x3340, 0x3280, 0x3880,
    0xb880, 0x3380, 0x3301, 0x3dcd, 0xbdcd, 0x3eab, 0x3f2b, 0x7f80, 0xff80, 0x0000, 0x8000, 0x449a, 0xb901,
    0x36eb, 0x4500, 0x4500, 0x4580, 0x0da2, 0x8da2, 0xbfd2, 0xbf44, 0x3eda, 0xbf6d, 0x3e23, 0xbf12, 0x3fc4,
    0xbd77, 0x3ff0, 0x3e60, 0x3f3b, 0x3e04, 0x3f2e, 0x3f6b, 0xbf62, 0x3f35, 0xbd8c, 0xc019, 0xbe2a, 0xbfb4,
    0x3e55, 0xbf97, 0x3ea7, 0xbce4, 0xbed1, 0x3efe, 0xbecc, 0x3ef3, 0xbfc6, 0x3db2, 0x3f3f, 0xbcb7, 0x7fc0,
    0xffc1, 0x3f80, 0x3f82, 0x3f80, 0x7f80, 0x0001, 0x8000
};
static_assert(std::size(kF16In) + std::size(kBf16OnlyIn) == std::size(kBf16Out));

template <size_t N>
std::vector<float> from_bits(const uint32_t (&bits)[N]) {
  std::vector<float> v(N);
  for (size_t i = 0; i < N; ++i) v[i] = bits_to_f32(bits[i]);
  return v;
}

// The 16-bit quantizers write one little-endian word per input.
void expect_u16_words(GgmlType t, const std::vector<float>& x, const uint16_t* want) {
  const std::vector<uint8_t> q = quantize_vec(t, x);
  for (size_t i = 0; i < x.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, q.data() + 2 * i, 2);
    EXPECT_EQ(h, want[i]) << type_name(t) << " " << i << " x=" << x[i] << " bits=" << std::hex << f32_to_bits(x[i]);
  }
}
}  // namespace

TEST(QuantQuantize, Q8_0MatchesGgufPy) {
  const std::vector<float> x = from_bits(kQ8In);
  const std::vector<uint8_t> q = quantize_vec(GgmlType::Q8_0, x);
  ASSERT_EQ(q.size(), sizeof(kQ8Out));
  for (size_t i = 0; i < q.size(); ++i) EXPECT_EQ(q[i], kQ8Out[i]) << "byte " << i << " (block " << i / 34 << ")";
}

TEST(QuantQuantize, F16MatchesGgufPy) { expect_u16_words(GgmlType::F16, from_bits(kF16In), kF16Out); }

TEST(QuantQuantize, Bf16MatchesGgufPy) {
  std::vector<float> x = from_bits(kF16In);
  for (float v : from_bits(kBf16OnlyIn)) x.push_back(v);
  expect_u16_words(GgmlType::BF16, x, kBf16Out);
}

// ---- Round trips on Gaussian data. ----

struct RoundTripCase {
  GgmlType type;
  double bound;  // relative RMS error bound asserted
};

// Measured relative RMS on N(0,1) data (64 blocks of 256, seed 1234; g++ 12, x86-64):
//   F32 0, F16 2.1e-4, BF16 1.67e-3, Q8_0 0.00537, Q4_K 0.0699, Q2_K 0.2595, IQ2_XXS 0.328.
// Bounds sit ~10% above, so a regression in a search shows while noise from a new seed does not.
const RoundTripCase kRoundTrip[] = {
    {GgmlType::F32, 0.0},    {GgmlType::F16, 2.5e-4}, {GgmlType::BF16, 2e-3},     {GgmlType::Q8_0, 0.006},
    {GgmlType::Q4_K, 0.078}, {GgmlType::Q2_K, 0.29},  {GgmlType::IQ2_XXS, 0.36},
};

TEST(QuantRoundTrip, GaussianErrorBounds) {
  const std::vector<float> x = gaussian(256 * 64, 1234);
  for (const RoundTripCase& c : kRoundTrip) {
    const auto q = quantize_vec(c.type, x);
    const auto y = dequantize_vec(c.type, q, x.size());
    const double err = rel_rms(x, y);
    std::printf("  %-8s rel rms %.5f (bound %.5f)\n", type_name(c.type), err, c.bound);
    EXPECT_LE(err, c.bound) << type_name(c.type);
    // Deterministic: the same input gives the same bytes.
    EXPECT_EQ(q, quantize_vec(c.type, x)) << type_name(c.type);
  }
}

// Scale invariance of the searches: data scaled by 1e-3 or 50 quantizes about as well.
TEST(QuantRoundTrip, OtherMagnitudes) {
  for (float sigma : {1e-3f, 50.0f}) {
    const std::vector<float> x = gaussian(256 * 16, 99, sigma);
    for (const RoundTripCase& c : kRoundTrip) {
      const auto y = dequantize_vec(c.type, quantize_vec(c.type, x), x.size());
      EXPECT_LE(rel_rms(x, y), c.bound * 1.1 + 1e-6) << type_name(c.type) << " sigma " << sigma;
    }
  }
}

TEST(QuantRoundTrip, DegenerateBlocksStayFinite) {
  std::vector<std::vector<float>> cases;
  cases.push_back(std::vector<float>(256, 0.0f));
  cases.push_back(std::vector<float>(256, 0.75f));
  cases.push_back(std::vector<float>(256, -3.0f));
  std::vector<float> spike(256, 0.0f);
  spike[17] = -5.0f;
  cases.push_back(spike);
  std::vector<float> tiny = gaussian(256, 5, 1e-9f);
  cases.push_back(tiny);
  for (const auto& x : cases) {
    for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS}) {
      const auto y = dequantize_vec(t, quantize_vec(t, x), x.size());
      double maxabs = 0;
      for (float v : x) maxabs = std::max(maxabs, std::fabs(double(v)));
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_TRUE(std::isfinite(y[i])) << type_name(t);
        EXPECT_LE(std::fabs(double(y[i]) - x[i]), maxabs * 1.01 + 1e-7) << type_name(t) << " at " << i;
      }
    }
  }
  // Zeros stay exactly zero; a constant block is reproduced up to the f16 rounding of its scale.
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS})
    for (float v : dequantize_vec(t, quantize_vec(t, cases[0]), 256)) EXPECT_EQ(v, 0.0f) << type_name(t);
  for (size_t c : {1, 2})
    for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K})
      for (float v : dequantize_vec(t, quantize_vec(t, cases[c]), 256))
        EXPECT_NEAR(v, cases[c][0], std::fabs(cases[c][0]) * 1e-3) << type_name(t);
}

// Importance weights: with half the elements 400x more important, the weighted error must drop
// clearly below that of the unweighted quantization (measured: Q2_K 0.264 -> 0.213, Q4_K 0.071 ->
// 0.064, IQ2_XXS 0.330 -> 0.221).
TEST(QuantRoundTrip, ImportanceWeightsTheError) {
  const std::vector<float> x = gaussian(256 * 32, 4321);
  std::vector<float> w(x.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = (i / 3) % 2 ? 20.0f : 0.05f;
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS}) {
    const auto plain = dequantize_vec(t, quantize_vec(t, x), x.size());
    const auto weighted = dequantize_vec(t, quantize_vec(t, x, w.data()), x.size());
    const double e_plain = rel_rms(x, plain, w.data()), e_weighted = rel_rms(x, weighted, w.data());
    std::printf("  %-8s weighted rel rms: plain %.4f, with importance %.4f\n", type_name(t), e_plain, e_weighted);
    EXPECT_LT(e_weighted, 0.95 * e_plain) << type_name(t);
  }
}

// The IQ2_XXS search is exhaustive given its scales: for every 8-element sub-group, no grid point and
// even-parity sign pattern does better at the group scale the quantizer chose.
TEST(QuantRoundTrip, Iq2XxsSubgroupsAreOptimal) {
  const std::vector<float> x = gaussian(256 * 4, 777);
  const auto q = quantize_vec(GgmlType::IQ2_XXS, x);
  const auto y = dequantize_vec(GgmlType::IQ2_XXS, q, x.size());
  for (size_t b = 0; b < x.size() / 256; ++b) {
    const uint8_t* blk = q.data() + 66 * b;
    uint16_t dh;
    std::memcpy(&dh, blk, 2);
    const double d = f16_to_f32(dh);
    for (int g = 0; g < 8; ++g) {
      uint32_t s;
      std::memcpy(&s, blk + 2 + 8 * g + 4, 4);
      const double scale = d * (0.5 + (s >> 28)) * 0.25;
      for (int k = 0; k < 4; ++k) {
        const size_t base = 256 * b + 32 * g + 8 * k;
        double ours = 0;
        for (int j = 0; j < 8; ++j) ours += (double(x[base + j]) - y[base + j]) * (double(x[base + j]) - y[base + j]);
        double best = INFINITY;
        for (int e = 0; e < 256; ++e)
          for (int si = 0; si < 128; ++si) {
            double err = 0;
            for (int j = 0; j < 8; ++j) {
              const double m = double((kIq2xxsGrid[e] >> (8 * j)) & 255) * ((kIq2xsSigns[si] >> j) & 1 ? -1 : 1);
              err += (x[base + j] - scale * m) * (x[base + j] - scale * m);
            }
            best = std::min(best, err);
          }
        EXPECT_LE(ours, best * (1 + 1e-5) + 1e-12) << "block " << b << " group " << g << " sub " << k;
      }
    }
  }
}
