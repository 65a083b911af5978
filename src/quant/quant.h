// Block formats: dequantize, reference quantize, dot products. Layouts: shared/spec/model.md §3.
// Everything here is the plain, readable CPU reference: the arbiter for every GPU kernel.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/half.h"
#include "quant/types.h"

namespace flashstar::quant {

constexpr int QK8_0 = 32;
constexpr int QK_K = 256;

#pragma pack(push, 1)
struct BlockQ8_0 {
  uint16_t d;  // f16
  int8_t qs[QK8_0];
};
struct BlockQ2_K {
  uint8_t scales[QK_K / 16];  // low nibble scale, high nibble min
  uint8_t qs[QK_K / 4];
  uint16_t d;     // f16
  uint16_t dmin;  // f16
};
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[QK_K / 2];
};
struct BlockIQ2_XXS {
  uint16_t d;
  uint16_t qs[QK_K / 8];
};
struct BlockQ8_K {  // activation-only format
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];
};
struct BlockQ8_1 {  // activation-only: d and d*sum(q)
  uint16_t d;
  uint16_t s;
  int8_t qs[QK8_0];
};
#pragma pack(pop)
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockIQ2_XXS) == 66);
static_assert(sizeof(BlockQ8_K) == 292);
static_assert(sizeof(BlockQ8_1) == 36);

// IQ2_XXS lookup tables (data from the published format: 256-entry grid, 128 sign patterns).
extern const uint64_t kIq2xxsGrid[256];
extern const uint8_t kIq2xsSigns[128];

// True when this engine can dequantize / quantize tensors of type t.
bool can_dequantize(GgmlType t);
bool can_quantize(GgmlType t);

// Dequantize n elements (n a multiple of the block size). Bit-identical to gguf-py's numpy code.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);

// Reference quantizer. `importance` (optional, n weights) biases the per-block scale search the way
// an imatrix does. Deterministic. IQ2_XXS performs the full grid search.
void quantize_row(GgmlType t, const float* src, void* dst, int64_t n, const float* importance = nullptr);

// Dequantize `nrows` consecutive rows of `ncols` elements each (rows split across worker threads).
void dequantize_rows(GgmlType t, const void* src, float* dst, int64_t nrows, int64_t ncols);

// Type-specific quantizers behind quantize_row. Q8_0 is bit-identical to gguf-py (round half away
// from zero, d = amax/127 stored as f16) and ignores importance; the others search scales.
void quantize_row_q8_0(const float* x, BlockQ8_0* dst, int64_t n);
void quantize_row_q2_K(const float* x, BlockQ2_K* dst, int64_t n, const float* importance = nullptr);
void quantize_row_q4_K(const float* x, BlockQ4_K* dst, int64_t n, const float* importance = nullptr);
void quantize_row_iq2_xxs(const float* x, BlockIQ2_XXS* dst, int64_t n, const float* importance = nullptr);

// Q4_K's packed 6-bit (scale, min) of sub-block j (0..7) from its 12 scale bytes.
FS_HD void q4_K_scale_min(const uint8_t* scales, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4);
    *m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

// Dot product of one stored row with an fp32 vector, accumulated in fp32 block by block
// (dequantize a block, multiply-add). The reference for every GPU matvec. Fixed order: element i is
// added into lane i % 8, lanes combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)).
float dot_row_f32(GgmlType t, const void* row, const float* x, int64_t n);

// Activation quantization (ds4's scheme; spec/model.md §3 "Q8_K" and "activation quantization").
void quantize_row_q8_0_act(const float* x, BlockQ8_0* dst, int64_t n);  // d = amax/127, round-half-even
void quantize_row_q8_K(const float* x, BlockQ8_K* dst, int64_t n);
// ds4 keeps the Q8_0 activation scale in f32 (never rounded to f16): this pair reproduces that exactly.
// q gets n int8 values, d gets n/32 scales.
void quantize_row_q8_0_act_f32(const float* x, int8_t* q, float* d, int64_t n);
float vec_dot_q8_0_q8_0_f32(const BlockQ8_0* w, const int8_t* xq, const float* xd, int64_t n);
// Integer dot products against quantized activations (the ds4-compatible path). n = elements.
// Blocks are summed in order into one float: Q8_0 adds (d_w*d_x)*isum per block; the K formats add
// (d_x*d_w)*isum - (d_x*dmin_w)*Σ m·bsum per block; IQ2_XXS adds (d_w*d_x)*Σ(2s+1)·isum and scales
// the total by 0.125 at the end.
float vec_dot_q8_0_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, int64_t n);
float vec_dot_q2_K_q8_K(const BlockQ2_K* w, const BlockQ8_K* x, int64_t n);
float vec_dot_q4_K_q8_K(const BlockQ4_K* w, const BlockQ8_K* x, int64_t n);
float vec_dot_iq2_xxs_q8_K(const BlockIQ2_XXS* w, const BlockQ8_K* x, int64_t n);

}  // namespace flashstar::quant
