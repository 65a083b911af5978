// Activations as four signed base-256 digits for the INT8 tensor-core kernels (fast_expert_mma.cu,
// fast_matvec_q8_mma.cu): per 256-column piece an exponent E of its largest |x|, Y = rint(x 2^(29-E))
// (|Y| <= 2^30), each byte of Y + 0x80808080 xor 0x80 a signed digit, so the int32 sums of digit
// products are exact. Also the bit tools and block-scale loads the integer kernels share (fast_gemm too). Host-compilable, so that CPU tests can replay
// the lane mappings.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/half.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define I8D_HD __host__ __device__ __forceinline__
#define I8D_UNROLL _Pragma("unroll")
#else
#define I8D_HD inline
#define I8D_UNROLL
#endif

namespace flashstar::cuda::digits {

constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: x + kMagic holds rint(x) in its low mantissa bits

I8D_HD uint32_t as_u32(float f) { return __builtin_bit_cast(uint32_t, f); }
I8D_HD float as_f32(uint32_t u) { return __builtin_bit_cast(float, u); }
// A 4-byte aligned load (the host side reads through memcpy).
I8D_HD uint32_t ld32(const uint8_t* p) {
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const uint32_t*>(p);
#else
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
#endif
}
// A 2-byte aligned load of a little-endian 16-bit value.
I8D_HD uint32_t ld16(const uint8_t* p) {
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const uint16_t*>(p);
#else
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8);
#endif
}
// The float of FP16 bits (block scales).
I8D_HD float half_f32(uint32_t h) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
#else
  return f16_to_f32(static_cast<uint16_t>(h));
#endif
}
// PRMT: byte i of the result is byte (s >> 4i) & 7 of (b:a). Every selector the kernels use has bit 3 of
// each nibble clear (no sign replication), so the raw instruction is used: __byte_perm masks the selector.
I8D_HD uint32_t prmt(uint32_t a, uint32_t b, uint32_t s) {
#ifdef __CUDA_ARCH__
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(s));
  return r;
#else
  const uint64_t v = (static_cast<uint64_t>(b) << 32) | a;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((v >> (8 * ((s >> (4 * i)) & 7))) & 255) << (8 * i);
  return r;
#endif
}

// E of a piece's largest |x|, floored (at `floor`) so that every scale the kernel forms from it is a
// normal float.
I8D_HD int exponent_of(float amax, int floor) {
  const int e = static_cast<int>((as_u32(amax) >> 23) & 255) - 127;
  return e < floor ? floor : e;
}
// Digits of 8 values: lo[k] / hi[k] pack digit k of elements 0..3 / 4..7 (byte i = element i). Y is built
// from rint(x 2^(13-E)) and the exact remainder, each within the magic number's 2^22 range.
I8D_HD void lane_digits(const float (&x)[8], int E, uint32_t (&lo)[4], uint32_t (&hi)[4]) {
  const float mh = as_f32(static_cast<uint32_t>(140 - E) << 23), m = as_f32(static_cast<uint32_t>(156 - E) << 23);
  const float back = -as_f32(static_cast<uint32_t>(114 + E) << 23);
  uint32_t z[8];
  I8D_UNROLL
  for (int i = 0; i < 8; ++i) {
    const float hb = fmaf(x[i], mh, kMagic);
    const float r = fmaf(hb - kMagic, back, x[i]);
    const float lb = fmaf(r, m, kMagic);
    // (hi << 16) + lo + 0x80808080; the magic's bits vanish from hb << 16 and cancel from lb.
    z[i] = as_u32(hb) * 65536u + as_u32(lb) + 0x35408080u;
  }
  I8D_UNROLL
  for (int h = 0; h < 2; ++h) {
    const uint32_t* q = z + 4 * h;
    const uint32_t p0 = prmt(q[0], q[1], 0x5140), p1 = prmt(q[0], q[1], 0x7362);
    const uint32_t p2 = prmt(q[2], q[3], 0x5140), p3 = prmt(q[2], q[3], 0x7362);
    uint32_t* d = h ? hi : lo;
    d[0] = prmt(p0, p2, 0x5410) ^ 0x80808080u, d[1] = prmt(p0, p2, 0x7632) ^ 0x80808080u;
    d[2] = prmt(p1, p3, 0x5410) ^ 0x80808080u, d[3] = prmt(p1, p3, 0x7632) ^ 0x80808080u;
  }
}

#if defined(__CUDACC__)
// The exponent of a piece whose 256 values lie 8 per lane across the warp, and whether all are finite
// (when not, E = 0 and the kernel makes the piece's scale NaN, as the reference's sums would be).
__device__ __forceinline__ int warp_exponent(const float (&x)[8], int floor, bool& all_finite) {
  float amax = 0.0f;
  bool finite = true;
  I8D_UNROLL
  for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(x[i])), finite &= fabsf(x[i]) <= 3.4028235e38f;
  I8D_UNROLL
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  all_finite = __all_sync(0xffffffffu, finite);
  return all_finite ? exponent_of(amax, floor) : 0;
}
#endif

}  // namespace flashstar::cuda::digits
