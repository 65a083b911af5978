// Hopper warpgroup MMA (wgmma, sm_90a) pieces shared by the dense Q8_0 kernel (gemm_dense_wgmma.cu) and
// the grouped expert kernel (gemm_group_wgmma.cu): the shared-memory matrix descriptor, its host replay
// (the byte the tensor core reads for an operand element, after the swizzle), the fp32 accumulator
// fragment, and the device instructions. The layout functions are host-compilable so that CPU tests
// replay every address against the PTX ISA's definitions; the instructions exist only in device code.
#pragma once
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define WG_HD __host__ __device__ __forceinline__
#else
#define WG_HD inline
#endif

// wgmma exists only in the sm_90a target (CMake's default, CMAKE_CUDA_ARCHITECTURES=90a); the kernels
// compile to a trap elsewhere and their hosts check the device before launching.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FS_WGMMA 1
#else
#define FS_WGMMA 0
#endif

namespace flashstar::cuda::wgmma {

// Swizzle modes of the descriptor's bits 62-63 (PTX ISA, "matrix descriptor format"). A K-major operand
// in mode m has rows of W bytes (128 or 64) inside 8-row atoms of 8 W bytes; the 16-byte chunk c of row r
// sits at chunk position c ^ (r % 8 / (128 / W)) (address bits 4.. xor bits 7..), which is what the
// writers lay out.
constexpr uint32_t kSwizzle128B = 1, kSwizzle64B = 2;
WG_HD uint32_t swizzle_row_bytes(uint32_t mode) { return mode == kSwizzle128B ? 128u : mode == kSwizzle64B ? 64u : 32u; }

// The descriptor: bits 0-13 start address >> 4, 16-29 leading-dimension byte offset >> 4 (unused by
// swizzled K-major operands whose k16 step lies inside a row: 1 by convention), 32-45 stride-dimension
// byte offset >> 4 (sbo: the distance between 8-row atoms), 49-51 base offset (0: atoms aligned to
// their size), 62-63 swizzle mode. A k16 step at column kk starts 2 kk bytes further (+ kk / 8 in the
// start field): the hardware applies the swizzle to the address it forms, as the writer did.
WG_HD uint64_t desc(uint32_t smem_byte_addr, uint32_t sbo, uint32_t mode) {
  return static_cast<uint64_t>((smem_byte_addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>(1) << 16) |
         (static_cast<uint64_t>(sbo >> 4) << 32) | (static_cast<uint64_t>(mode) << 62);
}
// The shared-memory byte the tensor core reads for element (n, k) (k < 16) of a K-major operand given by
// descriptor d: the canonical layout's address start + (n / 8) sbo + (n % 8) W + 2 k, then the swizzle
// (bits 4.. xor bits 7.., as many bits as W has 16-byte chunks). Host replay of the PTX ISA (tests).
inline uint32_t desc_element_addr(uint64_t d, int n, int k) {
  const uint32_t start = static_cast<uint32_t>(d & 0x3FFFu) << 4;
  const uint32_t sbo = static_cast<uint32_t>((d >> 32) & 0x3FFFu) << 4;
  const uint32_t w = swizzle_row_bytes(static_cast<uint32_t>(d >> 62));
  const uint32_t a = start + static_cast<uint32_t>(n / 8) * sbo + static_cast<uint32_t>(n % 8) * w + 2u * k;
  return a ^ (((a >> 7) & (w / 16 - 1)) << 4);
}

// The m64nN fp32 accumulator (any N): element i (0 .. N / 2 - 1) of lane l in warp w of the warpgroup is
// row 16 w + l / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (l % 4) + i % 2.
WG_HD int d_row(int warp_in_wg, int lane, int i) { return 16 * warp_in_wg + (lane >> 2) + 8 * ((i >> 1) & 1); }
WG_HD int d_col(int lane, int i) { return 8 * (i >> 2) + 2 * (lane & 3) + (i & 1); }

#if FS_WGMMA
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins accumulator registers at this point of the program: the compiler may not move their reads or
// writes across it (a volatile asm claiming to modify them), so reads after a wait stay after it and
// writes before a wgmma stay before it.
template <int N>
__device__ __forceinline__ void pin(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// Shared memory written by the generic proxy (cp.async, st.shared) and read next by the tensor core (the
// async proxy): each writing thread fences before the barrier that orders the read.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// d (+)= A B, m64n128k16, FP16 operands, fp32 accumulation; A from registers (the m64k16 fragment laid
// out as mma.m16n8k16's A per warp), B K-major from shared memory by descriptor; scale_d 0 overwrites d.
__device__ __forceinline__ void mma_rs_n128(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

// d (+)= A B, m64n64k16 and m64n32k16, both operands K-major from shared memory by descriptor (no
// transposes); scale_d 0 overwrites d.
__device__ __forceinline__ void mma_ss_n64(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}
__device__ __forceinline__ void mma_ss_n32(float (&d)[16], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
      "%16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}
// m64n96k16 and m64n128k16 with both operands from shared memory (the paired grouped kernel,
// gemm_group_wgmma_pair.cu: up to 128 items a block); scale_d 0 overwrites d.
__device__ __forceinline__ void mma_ss_n96(float (&d)[48], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %50, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n96k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, "
      "%48, %49, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}
__device__ __forceinline__ void mma_ss_n128(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// The first N / 2 elements of an accumulator array of M (>= N / 2) floats: the m64nN operand that a
// narrower instruction takes from a wider array.
template <int N, int M>
__device__ __forceinline__ float (&head(float (&d)[M]))[N / 2] {
  static_assert(N / 2 <= M, "a head of the array");
  return *reinterpret_cast<float(*)[N / 2]>(&d);
}
// d (+)= A B, m64nNk16 (N = 32, 64, 96, 128) with both operands from shared memory, on the first N / 2
// elements of d; one call for the kernels that pick N at compile time.
template <int N, int M>
__device__ __forceinline__ void mma_ss(float (&d)[M], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  if constexpr (N == 128)
    mma_ss_n128(head<128>(d), desc_a, desc_b, scale_d);
  else if constexpr (N == 96)
    mma_ss_n96(head<96>(d), desc_a, desc_b, scale_d);
  else if constexpr (N == 64)
    mma_ss_n64(head<64>(d), desc_a, desc_b, scale_d);
  else
    mma_ss_n32(head<32>(d), desc_a, desc_b, scale_d);
}
// d (+)= A B, m64nNk16 (N = 32, 64, 96) with A from registers (as mma_rs_n128) and B K-major from shared
// memory by descriptor; scale_d 0 overwrites d. (The register-decoded grouped kernel, gemm_group_wgmma_reg.cu,
// picks N by its item count.)
__device__ __forceinline__ void mma_rs_n32(float (&d)[16], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
      "{%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}
__device__ __forceinline__ void mma_rs_n64(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}
__device__ __forceinline__ void mma_rs_n96(float (&d)[48], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %53, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n96k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, "
      "{%48, %49, %50, %51}, %52, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}
// d (+)= A B, m64nNk16 (N = 32, 64, 96, 128), A from registers, on the first N / 2 elements of d.
template <int N, int M>
__device__ __forceinline__ void mma_rs(float (&d)[M], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  if constexpr (N == 128)
    mma_rs_n128(head<128>(d), a, desc_b, scale_d);
  else if constexpr (N == 96)
    mma_rs_n96(head<96>(d), a, desc_b, scale_d);
  else if constexpr (N == 64)
    mma_rs_n64(head<64>(d), a, desc_b, scale_d);
  else
    mma_rs_n32(head<32>(d), a, desc_b, scale_d);
}

// f(integral_constant<N>) for a block's wgmma width N = 32 nsel (block-uniform): one k-loop per width (a
// branch per width inside one loop makes ptxas serialise the wgmma).
template <class Fn>
__device__ __forceinline__ void with_n(int nsel, Fn&& f) {
  if (nsel == 4)
    f(std::integral_constant<int, 128>{});
  else if (nsel == 3)
    f(std::integral_constant<int, 96>{});
  else if (nsel == 2)
    f(std::integral_constant<int, 64>{});
  else
    f(std::integral_constant<int, 32>{});
}
#endif  // FS_WGMMA

}  // namespace flashstar::cuda::wgmma
