// Dense prefill products on cuBLASLt (gemm_cublas.cu): the same contract as fast::gemm, for the layer
// projections (never the routed experts: their weights stay quantized in device memory). The weight rows
// of one call are dequantized into a transient FP16 scratch as two terms, W = (W_hi + W_lo) / 2^10, and
// Y = W_lo X_hi + W_hi X_lo + W_hi X_hi runs on FP16 tensor cores with fp32 accumulation and fp32 output,
// as three GEMMs or one over the terms side by side along K (gemm_cublas.cu says which where). F16
// weights are exact in one term: two products. One cuBLASLt algorithm is pinned per shape class, so a
// token's output does not depend on how many tokens share the product. Built as a stub that takes
// nothing when the toolkit has no cuBLASLt (FLASHSTAR_HAVE_CUBLASLT unset).
#pragma once
#include <cuda_runtime.h>
#ifdef __CUDACC__
#include <cuda_fp16.h>
#endif

#include <cstdint>
#include <memory>

#include "common/half.h"
#include "cuda/ref_kernels.h"

namespace flashstar::cuda::fast {

// Weights are scaled by 2^10 before the split (and the products back by alpha = 2^-10, exactly):
// dequantized weights are small, and their low FP16 term would otherwise fall among the subnormals
// (2^-24 steps). The scaled weight must stay below 65504: |w| < 64.
constexpr float kCublasWScale = 1024.0f;

// The two FP16 terms of a scaled weight, hi = fp16(w s), lo = fp16(w s - hi): hi + lo keeps w s to
// about 2^-22 relative (the subtraction is exact in fp32). Round to nearest even on both sides (the
// device's converter, or half.h's bit-exact one on the host), so CPU tests replay the device split.
struct F16Pair {
  uint16_t hi, lo;
};
FS_HD F16Pair split_f16(float w, float scale) {
  const float v = w * scale;
#ifdef __CUDA_ARCH__
  const __half hi = __float2half_rn(v);
  return {__half_as_ushort(hi), __half_as_ushort(__float2half_rn(v - __half2float(hi)))};
#else
  const uint16_t hi = f32_to_f16(v);
  return {hi, f32_to_f16(v - f16_to_f32(hi))};
#endif
}

// Whether this build has cuBLASLt (false: the stub), and whether the session should use it: built with
// it and FLASHSTAR_GEMM_CUBLAS is not 0 (the A/B switch against the custom tensor-core kernel).
bool cublas_available();
bool cublas_enabled();
// Device memory a CublasGemm needs for weight slices of up to max_weights (rows x k8) elements: two FP16
// terms and the fixed cuBLASLt workspace. 0 in the stub.
size_t cublas_scratch_bytes(int64_t max_weights);

// One cuBLASLt handle, its pinned algorithms and its scratch (caller-owned device memory of
// cublas_scratch_bytes(max_weights) bytes, 256-byte aligned, alive as long as this object).
class CublasGemm {
 public:
  CublasGemm(void* scratch, int64_t max_weights);
  ~CublasGemm();
  CublasGemm(const CublasGemm&) = delete;
  CublasGemm& operator=(const CublasGemm&) = delete;
  // Whether W's type is taken and n_rows rows fit the scratch; depends only on the matrix, so every
  // product with W takes the same path whatever its token count.
  bool takes(const DMat& W, int64_t n_rows) const;
  // Y[t][r] = W.row(row0 + r) . X[t] (t < n_tok, r < n_rows; Y row-major, stride ys) from to_f16's copy
  // Xb of X (hi terms [n_tok][k8], lo terms after them). False, launching nothing, when it does not take
  // the call (type, size, alignment, no algorithm); the caller then runs another kernel.
  bool gemm(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y, int64_t ys,
            cudaStream_t s);

 private:
  struct Impl;
  std::unique_ptr<Impl> p_;
};

// fast::gemm's contract with the session's cuBLASLt context.
inline bool gemm_cublas(CublasGemm& g, const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok,
                        float* Y, int64_t ys, cudaStream_t s) {
  return g.gemm(W, row0, n_rows, Xb, n_tok, Y, ys, s);
}

}  // namespace flashstar::cuda::fast
