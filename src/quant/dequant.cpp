// Dequantization and the fp32 reference dot. Every formula below follows gguf-py's numpy code
// operation by operation (float32 throughout, same association), so results are bit-identical to
// gguf.quants.dequantize for any block bytes; -ffp-contract=off keeps the compiler from fusing.
#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "common/half.h"
#include "common/parallel.h"
#include "quant/quant.h"

namespace flashstar::quant {
namespace {

// Block bytes may sit at any address (GGUF tensors inside a mapping, packed structs), so multi-byte
// fields are read with memcpy.
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Same bits as f16_to_f32 for all 65536 inputs (tested exhaustively) but without its normalisation
// loop, so F16 rows vectorise. Subnormals: m * 2^-24 is exact in float and never itself subnormal.
inline float f16_to_f32_branchless(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 31u, m = h & 0x3ffu;
  const uint32_t normal = ((e + 112u) << 23) | (m << 13);
  const uint32_t infnan = 0x7f800000u | (m << 13);
  const uint32_t sub = f32_to_bits(static_cast<float>(static_cast<int32_t>(m)) * 5.9604644775390625e-8f);
  const uint32_t is_sub = 0u - static_cast<uint32_t>(e == 0), is_top = 0u - static_cast<uint32_t>(e == 31);
  return bits_to_f32(sign | (sub & is_sub) | (infnan & is_top) | (normal & ~(is_sub | is_top)));
}

// gguf-py: x.astype(f32) * d.
void dequant_block_q8_0(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  for (int i = 0; i < QK8_0; ++i) y[i] = static_cast<float>(static_cast<int8_t>(b[2 + i])) * d;
}

// gguf-py: dl = d*sc; ml = dmin*m; y = dl*q - ml.
void dequant_block_q2_K(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = f16_to_f32(load_u16(b + 80));
  const float dmin = f16_to_f32(load_u16(b + 82));
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        const uint8_t s = scales[8 * h + 2 * j + half];
        const float dl = d * static_cast<float>(s & 15);
        const float ml = dmin * static_cast<float>(s >> 4);
        const uint8_t* q = qs + 32 * h + 16 * half;
        float* out = y + 128 * h + 32 * j + 16 * half;
        for (int l = 0; l < 16; ++l) out[l] = dl * static_cast<float>((q[l] >> (2 * j)) & 3) - ml;
      }
    }
  }
}

// gguf-py: d' = d*sc; dm = dmin*m; y = d'*q - dm.
void dequant_block_q4_K(const uint8_t* b, float* y) {
  const float d = f16_to_f32(load_u16(b));
  const float dmin = f16_to_f32(load_u16(b + 2));
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int c = 0; c < 4; ++c) {
    for (int hi = 0; hi < 2; ++hi) {
      int sc, m;
      q4_K_scale_min(scales, 2 * c + hi, &sc, &m);
      const float dl = d * static_cast<float>(sc);
      const float ml = dmin * static_cast<float>(m);
      const int shift = 4 * hi;
      float* out = y + 64 * c + 32 * hi;
      for (int l = 0; l < 32; ++l) out[l] = dl * static_cast<float>((qs[32 * c + l] >> shift) & 15) - ml;
    }
  }
}

// IQ2_XXS decode tables as floats / sign-bit masks, so a sub-group is 8 multiplies and 8 xors that
// the compiler vectorises (instead of shifting bytes out of the packed u64 grid per element).
struct Iq2Tables {
  alignas(32) float grid[256][8];
  alignas(32) uint32_t sign[128][8];
};

const Iq2Tables& iq2_tables() {
  static const Iq2Tables t = [] {
    Iq2Tables r;
    for (int e = 0; e < 256; ++e)
      for (int j = 0; j < 8; ++j) r.grid[e][j] = static_cast<float>((kIq2xxsGrid[e] >> (8 * j)) & 255);
    for (int i = 0; i < 128; ++i)
      for (int j = 0; j < 8; ++j) r.sign[i][j] = ((kIq2xsSigns[i] >> j) & 1u) << 31;
    return r;
  }();
  return t;
}

// gguf-py: db = d*(0.5+s)*0.25 (left to right); y = db*grid*sign. Multiplying by -1 is exact, so
// flipping the sign bit gives the same bits (NaN aside, whose sign nobody defines).
void dequant_block_iq2_xxs(const uint8_t* b, float* y) {
  const Iq2Tables& tab = iq2_tables();
  const float d = f16_to_f32(load_u16(b));
  for (int g = 0; g < 8; ++g) {
    const uint32_t a = load_u32(b + 2 + 8 * g);
    const uint32_t s = load_u32(b + 2 + 8 * g + 4);
    const float db = d * (0.5f + static_cast<float>(s >> 28)) * 0.25f;
    for (int k = 0; k < 4; ++k) {
      const float* grid = tab.grid[(a >> (8 * k)) & 255];
      const uint32_t* sign = tab.sign[(s >> (7 * k)) & 127];
      float* out = y + 32 * g + 8 * k;
      for (int j = 0; j < 8; ++j) out[j] = bits_to_f32(f32_to_bits(db * grid[j]) ^ sign[j]);
    }
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn block_fn(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0: return dequant_block_q8_0;
    case GgmlType::Q2_K: return dequant_block_q2_K;
    case GgmlType::Q4_K: return dequant_block_q4_K;
    case GgmlType::IQ2_XXS: return dequant_block_iq2_xxs;
    default: return nullptr;
  }
}

// Plain types are handled in chunks of this many elements (a multiple of 8, see accumulate()).
constexpr int64_t kPlainChunk = 256;

void dequant_plain(GgmlType t, const uint8_t* src, float* dst, int64_t n) {
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); break;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32_branchless(load_u16(src + 2 * i));
      break;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(src + 2 * i));
      break;
    default: break;
  }
}

void check_row(const char* what, GgmlType t, int64_t n) {
  if (!can_dequantize(t)) fail("%s: tensor type %s is not supported", what, type_name(t));
  const uint32_t be = type_info(t).block_elems;
  if (n < 0 || n % be != 0)
    fail("%s: %lld elements is not a multiple of the %s block size %u", what, static_cast<long long>(n),
         type_name(t), be);
}

// Element i goes to lane i % 8 (chunks always start at a multiple of 8), so the order of every
// addition is fixed: the compiler vectorises the lanes without changing the result.
inline void accumulate(float* acc, const float* a, const float* x, int64_t len) {
  int64_t i = 0;
  for (; i + 8 <= len; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * x[i + k];
  for (int k = 0; i < len; ++i, ++k) acc[k] += a[i] * x[i];
}

}  // namespace

bool can_dequantize(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q2_K:
    case GgmlType::Q4_K:
    case GgmlType::IQ2_XXS: return true;
    default: return false;
  }
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  check_row("dequantize", t, n);
  const auto* p = static_cast<const uint8_t*>(src);
  if (BlockFn fn = block_fn(t)) {
    const TypeInfo& ti = type_info(t);
    for (int64_t b = 0; b < n / ti.block_elems; ++b) fn(p + b * ti.block_bytes, dst + b * ti.block_elems);
  } else {
    dequant_plain(t, p, dst, n);
  }
}

void dequantize_rows(GgmlType t, const void* src, float* dst, int64_t nrows, int64_t ncols) {
  check_row("dequantize", t, ncols);
  if (nrows <= 0) return;
  const size_t rb = row_bytes(t, ncols);
  const auto* p = static_cast<const uint8_t*>(src);
  // ~64K elements per task so small tensors stay on the calling thread.
  const int64_t min_rows = ncols > 0 ? std::max<int64_t>(1, (int64_t{1} << 16) / ncols) : nrows;
  parallel_for(
      nrows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) dequantize_row(t, p + static_cast<size_t>(r) * rb, dst + r * ncols, ncols);
      },
      min_rows);
}

// Sum order: 8 lane accumulators (element i into lane i % 8, ascending i), then
// ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)).
float dot_row_f32(GgmlType t, const void* row, const float* x, int64_t n) {
  check_row("dot_row_f32", t, n);
  const auto* p = static_cast<const uint8_t*>(row);
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  alignas(64) float buf[QK_K];
  if (BlockFn fn = block_fn(t)) {
    const TypeInfo& ti = type_info(t);
    const int64_t be = ti.block_elems;
    for (int64_t b = 0; b < n / be; ++b) {
      fn(p + b * ti.block_bytes, buf);
      accumulate(acc, buf, x + b * be, be);
    }
  } else {
    const int64_t eb = type_info(t).block_bytes;
    for (int64_t i0 = 0; i0 < n; i0 += kPlainChunk) {
      const int64_t len = std::min(kPlainChunk, n - i0);
      dequant_plain(t, p + i0 * eb, buf, len);
      accumulate(acc, buf, x + i0, len);
    }
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

}  // namespace flashstar::quant
