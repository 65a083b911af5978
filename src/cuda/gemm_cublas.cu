// Dense prefill products on cuBLASLt (gemm_cublas.h). A call dequantizes its weight rows into FP16
// terms in the scratch (a bandwidth-bound pass, small next to the products) and runs FP16 GEMMs with
// fp32 accumulation and fp32 output. Y is column-major M x N (M = weight rows, N = tokens, ld = ys):
// op(A) = W^T of the row-major [M][k8] weights, B = the row-major [N][k8] activations ("TN").
//
// Two ways to sum the term products, chosen per matrix shape (never per token count):
//  - calls: one GEMM per term pair, W_lo X_hi, then W_hi X_lo and W_hi X_hi added into Y (beta = 1),
//    small terms first. Each extra GEMM reads and writes Y again (8 bytes per output).
//  - concat: one GEMM over K' = P k8 with the pairs side by side along K, A' = [W_lo | W_hi | W_hi] and
//    B' = [X_hi | X_lo | X_hi] per row and token. to_f16 keeps a token's two terms n_tok * k8 apart, which
//    no leading dimension can address, so B' is a copy (made slab by slab into a fixed buffer).
// The concatenation wins where Y is large next to the activations (q_b: 32768 rows over 1024 columns,
// Y re-read costs 2 GB at 4096 tokens where the copy costs 40 MB); the separate calls elsewhere.
//
// Why a token's output does not depend on the token count: every shape class (rows, K, leading
// dimensions, Y's alignment) pins one algorithm, picked once by the heuristic for a large N and then
// reused for every N, with split-K 1 and no reduction scheme. A token is then one column of the output;
// the tile that holds it, its position in that tile and the order of the k steps are fixed by the
// algorithm alone, and no other column's data enters its sums (no atomics; the workspace is not used
// for reductions). Token slabs (concat) and K slices are separate GEMMs of the same classes.
#include "cuda/gemm_cublas.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <tuple>

#include "cuda/cuda_util.h"

#ifndef FLASHSTAR_HAVE_CUBLASLT
#define FLASHSTAR_HAVE_CUBLASLT 0
#endif
#if FLASHSTAR_HAVE_CUBLASLT
#include <cublasLt.h>

#include "cuda/fast_quant.cuh"
#include "cuda/pdl.cuh"
#include "cuda/weight_dispatch.h"
#endif

namespace flashstar::cuda::fast {

namespace {

constexpr size_t kWorkspaceBytes = 32ull << 20;  // what NVIDIA advises for Hopper's GEMMs
// The concatenated activations B' of one token slab: 32 MiB holds 5461 tokens of q_b's K' = 3 x 1024.
constexpr size_t kXcatBytes = 32ull << 20;
size_t align256(size_t b) { return (b + 255) / 256 * 256; }

}  // namespace

bool cublas_available() { return FLASHSTAR_HAVE_CUBLASLT != 0; }

bool cublas_enabled() {
  static const bool on = [] {
    // Opt-in: 3-4x faster than fast::gemm, but its whole-K accumulation drifts past the gate (1.75x the
    // floor on dense_q8 alone, docs/PERFORMANCE.md).
    const char* v = std::getenv("FLASHSTAR_GEMM_CUBLAS");
    return cublas_available() && v && v[0] == '1';
  }();
  return on;
}

size_t cublas_scratch_bytes(int64_t max_weights) {
  if (!cublas_available() || max_weights <= 0) return 0;
  return align256(static_cast<size_t>(max_weights) * 3 * sizeof(uint16_t)) + kXcatBytes + kWorkspaceBytes;
}

#if !FLASHSTAR_HAVE_CUBLASLT

struct CublasGemm::Impl {};
CublasGemm::CublasGemm(void*, int64_t) {}
CublasGemm::~CublasGemm() = default;
bool CublasGemm::takes(const DMat&, int64_t) const { return false; }
bool CublasGemm::gemm(const DMat&, int64_t, int64_t, const uint16_t*, int64_t, float*, int64_t, cudaStream_t) {
  return false;
}

#else

#define FS_CUBLAS_CHECK(expr)                                                              \
  do {                                                                                     \
    const cublasStatus_t fs_st_ = (expr);                                                  \
    if (fs_st_ != CUBLAS_STATUS_SUCCESS)                                                   \
      ::flashstar::fail("cuBLASLt error %d at %s:%d", int(fs_st_), __FILE__, __LINE__); \
  } while (0)

namespace {

constexpr int64_t kMinSlab = 1024;  // concatenate only where a slab holds this many tokens
constexpr int64_t kProbeN = 4096;   // the token count the heuristic picks each algorithm for

bool type_taken(GgmlType t) {
  switch (t) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: case GgmlType::Q8_0: case GgmlType::Q2_K:
    case GgmlType::Q4_K: return true;
    default: return false;  // IQ2_XXS needs its grid tables here; no dense matrix has that type
  }
}

// Where the split kernel writes a row's terms (row r at base + r * ld): hi to one or two places, lo to
// one or none (F16 weights are exact in one term and go in unscaled).
struct WDst {
  uint16_t *hi0, *hi1, *lo;
  int64_t ld;
};

template <GgmlType T>
__device__ __forceinline__ void weights4(const uint8_t* row, int64_t e, int64_t cols, float (&w)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = 0.0f;
  if constexpr (T == GgmlType::Q8_0 || T == GgmlType::Q2_K || T == GgmlType::Q4_K) {
    // cols is a whole number of blocks (a multiple of 4): a group is all in or all out
    if (e < cols) dq4<T>(row, static_cast<int>(e), w, nullptr);
  } else if constexpr (T == GgmlType::F32 || T == GgmlType::F16 || T == GgmlType::BF16) {
    const auto* h = reinterpret_cast<const uint16_t*>(row);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t c = e + i;
      if (c >= cols) continue;
      if constexpr (T == GgmlType::F32) w[i] = reinterpret_cast<const float*>(row)[c];
      else if constexpr (T == GgmlType::F16) w[i] = h2f(h[c]);
      else w[i] = __uint_as_float(static_cast<uint32_t>(h[c]) << 16);
    }
  }  // other types are refused before launch (type_taken)
}

// A thread per four columns of a row (k8 is a multiple of 8: 8-byte stores), the k8 - cols padding zero.
template <GgmlType T>
__global__ void split_kernel(const uint8_t* W, size_t row_bytes, int64_t cols, int64_t k8, int64_t n_rows, float scale,
                             WDst d) {
  pdl_wait();
  const int64_t groups = k8 / 4, total = n_rows * groups;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < total;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = g / groups, e = (g - r * groups) * 4;
    float w[4];
    weights4<T>(W + r * row_bytes, e, cols, w);
    uint32_t h[2], l[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const F16Pair a = split_f16(w[2 * i], scale), b = split_f16(w[2 * i + 1], scale);
      h[i] = a.hi | static_cast<uint32_t>(b.hi) << 16;
      l[i] = a.lo | static_cast<uint32_t>(b.lo) << 16;
    }
    const int64_t o = r * d.ld + e;
    *reinterpret_cast<uint2*>(d.hi0 + o) = make_uint2(h[0], h[1]);
    if (d.hi1) *reinterpret_cast<uint2*>(d.hi1 + o) = make_uint2(h[0], h[1]);
    if (d.lo) *reinterpret_cast<uint2*>(d.lo + o) = make_uint2(l[0], l[1]);
  }
}

template <GgmlType T>
struct SplitLaunch {
  static void run(const DMat& W, int64_t row0, int64_t n_rows, int64_t k8, float scale, const WDst& d, cudaStream_t s) {
    const int64_t total = n_rows * (k8 / 4);
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 32));
    split_kernel<T><<<blocks, 256, 0, s>>>(W.data + row0 * static_cast<int64_t>(W.row_bytes), W.row_bytes, W.cols, k8,
                                           n_rows, scale, d);
    FS_CUDA_LAUNCH_CHECK();
  }
};

// B' rows of a token slab: segment j of token t is activation term xterm[j] (0 hi, 1 lo) of token t0 + t.
struct XSegs {
  int terms[3];
  int p;
};
__global__ void concat_kernel(const uint16_t* Xb, int64_t n_tok, int64_t k8, int64_t t0, int64_t nb, XSegs segs,
                              uint16_t* out) {
  pdl_wait();
  const int64_t vecs = k8 / 8, per_tok = segs.p * vecs, total = nb * per_tok;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / per_tok, rem = i - t * per_tok, j = rem / vecs, v = rem - j * vecs;
    const uint16_t* src = Xb + segs.terms[j] * n_tok * k8 + (t0 + t) * k8 + v * 8;
    *reinterpret_cast<uint4*>(out + t * segs.p * k8 + j * k8 + v * 8) = *reinterpret_cast<const uint4*>(src);
  }
}

bool env_on(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && *v != '0';
}
// FLASHSTAR_GEMM_CUBLAS_KSLICE=S: each GEMM covers at most S columns of K (rounded down to a multiple of
// 64; the slices added into Y in order). 0, the default: whole K. An A/B knob for the accumulation:
// the tensor cores cut each k-step's sum toward zero, which grows with the k steps of one accumulator.
int64_t k_slice() {
  static const int64_t s = [] {
    const char* v = std::getenv("FLASHSTAR_GEMM_CUBLAS_KSLICE");
    const long long x = v ? std::atoll(v) : 0;
    return x <= 0 ? int64_t(0) : std::max<int64_t>(64, x / 64 * 64);
  }();
  return s;
}

struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  Layout(cudaDataType t, int64_t rows, int64_t cols, int64_t ld) {
    FS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, t, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
  }
  ~Layout() { cublasLtMatrixLayoutDestroy(l); }
  Layout(const Layout&) = delete;
  Layout& operator=(const Layout&) = delete;
};

// The largest power of two (up to 16) dividing a byte address and a byte stride.
uint32_t align_of(const void* p, int64_t stride_bytes) {
  uint32_t a = 16;
  while (a > 1 && (reinterpret_cast<uintptr_t>(p) % a != 0 || stride_bytes % a != 0)) a /= 2;
  return a;
}

}  // namespace

struct CublasGemm::Impl {
  cublasLtHandle_t h = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  uint16_t* wbuf = nullptr;  // 3 x max_weights FP16 terms
  uint16_t* xcat = nullptr;  // kXcatBytes
  void* work = nullptr;      // kWorkspaceBytes
  int64_t max_w = 0;
  bool log = env_on("FLASHSTAR_GEMM_CUBLAS_LOG");
  // (M, K, lda, ldb, ldc, C alignment) -> the pinned algorithm (ok false: none found, the call is refused)
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, uint32_t>;
  struct Pinned {
    cublasLtMatmulAlgo_t algo;
    bool ok = false;
  };
  std::map<Key, Pinned> algos;
  std::set<std::pair<Key, int64_t>> checked;  // (class, N) pairs AlgoCheck has accepted

  const Pinned& pin(const Key& key) {
    auto it = algos.find(key);
    if (it != algos.end()) return it->second;
    const auto [M, K, lda, ldb, ldc, calign] = key;
    Pinned p;
    Layout a(CUDA_R_16F, K, M, lda), b(CUDA_R_16F, K, kProbeN, ldb), c(CUDA_R_32F, M, kProbeN, ldc);
    constexpr int kWant = 16;
    cublasLtMatmulHeuristicResult_t res[kWant];
    // First with the reduction-scheme mask closed (only algorithms that run K in one piece), then, should
    // that find nothing, any algorithm forced to split-K 1 without a reduction and checked again.
    for (int pass = 0; pass < 2 && !p.ok; ++pass) {
      const int n = heuristic(a.l, b.l, c.l, calign, pass == 0, res, kWant);
      for (int i = 0; i < n && !p.ok; ++i) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
        cublasLtMatmulAlgo_t algo = res[i].algo;
        const int32_t splitk = 1;
        const uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE;
        cublasLtMatmulHeuristicResult_t chk = {};
        if (cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk)) ||
            cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof(red)) ||
            cublasLtMatmulAlgoCheck(h, op, a.l, b.l, c.l, c.l, &algo, &chk) || chk.workspaceSize > kWorkspaceBytes)
          continue;
        p.algo = algo, p.ok = true;
        if (log) describe(key, algo, chk, pass, i);
      }
    }
    if (!p.ok && log)
      std::fprintf(stderr, "cublas: no algorithm for M %lld K %lld\n", static_cast<long long>(M),
                   static_cast<long long>(K));
    return algos.emplace(key, p).first->second;
  }

  // The heuristic's candidates for a TN product with A, B 16-byte and C, D calign-byte aligned, within
  // the workspace; with closed, only those without a reduction scheme. Returns how many it wrote.
  int heuristic(cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, uint32_t calign,
                bool closed, cublasLtMatmulHeuristicResult_t* res, int want) {
    cublasLtMatmulPreference_t pref = nullptr;
    FS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspaceBytes;
    const uint32_t a16 = 16, none = CUBLASLT_REDUCTION_SCHEME_NONE;
    auto set = [&](cublasLtMatmulPreferenceAttributes_t attr, const void* v, size_t bytes) {
      FS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, v, bytes));
    };
    set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    if (closed) set(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &none, sizeof(none));
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a16, sizeof(a16));
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a16, sizeof(a16));
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &calign, sizeof(calign));
    set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &calign, sizeof(calign));
    int n = 0;
    if (cublasLtMatmulAlgoGetHeuristic(h, op, a, b, c, c, pref, want, res, &n) != CUBLAS_STATUS_SUCCESS) n = 0;
    cublasLtMatmulPreferenceDestroy(pref);
    return n;
  }

  void describe(const Key& key, const cublasLtMatmulAlgo_t& algo, const cublasLtMatmulHeuristicResult_t& r, int pass,
                int rank) {
    int32_t id = 0, splitk = 0;
    uint32_t tile = 0, stages = 0, swz = 0, custom = 0, red = 0;
    uint16_t inner = 0, cluster = 0;
    size_t got = 0;
    cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &got);
    cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &got);
    cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &got);
    cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk), &got);
    cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof(red), &got);
    cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof(swz), &got);
    cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &custom, sizeof(custom), &got);
    cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, &inner, sizeof(inner), &got);
    cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof(cluster), &got);
    const auto [M, K, lda, ldb, ldc, calign] = key;
    std::fprintf(stderr,
                 "cublas: M %lld K %lld lda %lld ldb %lld ldc %lld align %u -> pass %d rank %d algo %d tile %u "
                 "stages %u splitk %d reduction %u swizzle %u custom %u inner %u cluster %u waves %.2f workspace %zu\n",
                 static_cast<long long>(M), static_cast<long long>(K), static_cast<long long>(lda),
                 static_cast<long long>(ldb), static_cast<long long>(ldc), calign, pass, rank, id, tile, stages, splitk,
                 red, swz, custom, inner, cluster, r.wavesCount, r.workspaceSize);
  }

  // The FP16 operands of one product: A (K x M) at lda and B (K x N) at ldb, both K-contiguous.
  struct Gemm {
    const uint16_t* A;
    int64_t lda;
    const uint16_t* B;
    int64_t ldb;
  };
  // Whether every K slice's class has an algorithm that takes N columns (asked before anything launches).
  bool check(int64_t M, int64_t K, int64_t lda, int64_t ldb, int64_t N, int64_t ldc, uint32_t calign) {
    const int64_t S = k_slice() > 0 ? k_slice() : K;
    for (int64_t k0 = 0; k0 < K; k0 += S) {
      const int64_t kk = std::min(S, K - k0);
      const Key key{M, kk, lda, ldb, ldc, calign};
      const Pinned& p = pin(key);
      if (!p.ok) return false;
      if (checked.count({key, N})) continue;
      Layout a(CUDA_R_16F, kk, M, lda), b(CUDA_R_16F, kk, N, ldb), c(CUDA_R_32F, M, N, ldc);
      cublasLtMatmulHeuristicResult_t chk = {};
      if (cublasLtMatmulAlgoCheck(h, op, a.l, b.l, c.l, c.l, &p.algo, &chk) != CUBLAS_STATUS_SUCCESS ||
          chk.workspaceSize > kWorkspaceBytes)
        return false;
      checked.insert({key, N});
    }
    return true;
  }
  // Y (M x N at ldc) = alpha A^T B (+ Y when accumulating), slice by slice, each slice's GEMM added in.
  void run(const Gemm& g, int64_t M, int64_t K, int64_t N, float* Y, int64_t ldc, uint32_t calign, float alpha,
           bool accumulate, cudaStream_t s) {
    const int64_t S = k_slice() > 0 ? k_slice() : K;
    for (int64_t k0 = 0; k0 < K; k0 += S) {
      const int64_t kk = std::min(S, K - k0);
      const Pinned& p = pin({M, kk, g.lda, g.ldb, ldc, calign});
      Layout a(CUDA_R_16F, kk, M, g.lda), b(CUDA_R_16F, kk, N, g.ldb), c(CUDA_R_32F, M, N, ldc);
      const float beta = accumulate || k0 > 0 ? 1.0f : 0.0f;
      FS_CUBLAS_CHECK(cublasLtMatmul(h, op, &alpha, g.A + k0, a.l, g.B + k0, b.l, &beta, Y, c.l, Y, c.l, &p.algo, work,
                                     kWorkspaceBytes, s));
    }
  }
};

CublasGemm::CublasGemm(void* scratch, int64_t max_weights) : p_(std::make_unique<Impl>()) {
  Impl& m = *p_;
  m.max_w = max_weights;
  auto* base = static_cast<uint8_t*>(scratch);
  m.wbuf = reinterpret_cast<uint16_t*>(base);
  base += align256(static_cast<size_t>(max_weights) * 3 * sizeof(uint16_t));
  m.xcat = reinterpret_cast<uint16_t*>(base);
  m.work = base + kXcatBytes;
  FS_CUBLAS_CHECK(cublasLtCreate(&m.h));
  FS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&m.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  FS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(m.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  FS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(m.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
}

CublasGemm::~CublasGemm() {
  if (p_->op) cublasLtMatmulDescDestroy(p_->op);
  if (p_->h) cublasLtDestroy(p_->h);
}

bool CublasGemm::takes(const DMat& W, int64_t n_rows) const {
  const int64_t k8 = (W.cols + 7) / 8 * 8;
  return type_taken(W.type) && n_rows > 0 && n_rows * k8 <= p_->max_w &&
         reinterpret_cast<uintptr_t>(W.data) % 16 == 0 && W.row_bytes % 4 == 0;
}

bool CublasGemm::gemm(const DMat& W, int64_t row0, int64_t n_rows, const uint16_t* Xb, int64_t n_tok, float* Y,
                      int64_t ys, cudaStream_t s) {
  Impl& m = *p_;
  if (!takes(W, n_rows) || ys < n_rows || reinterpret_cast<uintptr_t>(Xb) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(Y) % 4 != 0)
    return false;
  if (n_tok <= 0) return true;
  const int64_t k8 = (W.cols + 7) / 8 * 8, M = n_rows;
  const uint32_t calign = align_of(Y, ys * 4);
  // Term pairs (weight term, activation term; 0 hi, 1 lo), small products first. F16 weights are exact
  // in one term; the other types are scaled and split in two.
  const bool one = W.type == GgmlType::F16;
  const int P = one ? 2 : 3;
  const float scale = one ? 1.0f : kCublasWScale, alpha = 1.0f / scale;
  const int wt[3] = {one ? 0 : 1, 0, 0}, xt[3] = {one ? 1 : 0, one ? 0 : 1, 0};
  // Extra bytes per token: calls re-read and re-write Y (P - 1) times, 8 (P - 1) M; concat copies the
  // activations, 4 k8 read and 2 P k8 written.
  const bool concat = 8 * (P - 1) * M > (4 + 2 * P) * k8 &&
                      static_cast<size_t>(P * k8 * kMinSlab) * sizeof(uint16_t) <= kXcatBytes;
  const uint16_t* Xt[2] = {Xb, Xb + n_tok * k8};

  if (concat) {
    const int64_t K = P * k8, slab = static_cast<int64_t>(kXcatBytes / sizeof(uint16_t)) / K;
    if (!m.check(M, K, K, K, std::min(n_tok, slab), ys, calign) ||
        (n_tok > slab && n_tok % slab && !m.check(M, K, K, K, n_tok % slab, ys, calign)))
      return false;
    if (one) {
      dispatch_weight_type<SplitLaunch>(W.type, W, row0, n_rows, k8, scale, WDst{m.wbuf, m.wbuf + k8, nullptr, K}, s);
    } else {
      dispatch_weight_type<SplitLaunch>(W.type, W, row0, n_rows, k8, scale,
                                        WDst{m.wbuf + k8, m.wbuf + 2 * k8, m.wbuf, K}, s);
    }
    const XSegs segs{{xt[0], xt[1], xt[2]}, P};
    for (int64_t t0 = 0; t0 < n_tok; t0 += slab) {
      const int64_t nb = std::min(slab, n_tok - t0);
      const int64_t total = nb * P * (k8 / 8);
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 132 * 32));
      concat_kernel<<<blocks, 256, 0, s>>>(Xb, n_tok, k8, t0, nb, segs, m.xcat);
      FS_CUDA_LAUNCH_CHECK();
      m.run({m.wbuf, K, m.xcat, K}, M, K, nb, Y + t0 * ys, ys, calign, alpha, false, s);
    }
    return true;
  }

  // Separate calls. F16 weights whose rows are already 16-byte aligned FP16 rows of k8 columns are read
  // where they are.
  const bool direct = one && W.cols == k8 && W.row_bytes == static_cast<size_t>(2 * k8) && W.row_bytes % 16 == 0;
  if (!m.check(M, k8, k8, k8, n_tok, ys, calign)) return false;
  const uint16_t* Wt[2] = {m.wbuf, m.wbuf + M * k8};
  if (direct) {
    Wt[0] = reinterpret_cast<const uint16_t*>(W.data + row0 * static_cast<int64_t>(W.row_bytes));
  } else {
    dispatch_weight_type<SplitLaunch>(W.type, W, row0, n_rows, k8, scale,
                                      WDst{m.wbuf, nullptr, one ? nullptr : m.wbuf + M * k8, k8}, s);
  }
  for (int i = 0; i < P; ++i) m.run({Wt[wt[i]], k8, Xt[xt[i]], k8}, M, k8, n_tok, Y, ys, calign, alpha, i > 0, s);
  return true;
}

#endif  // FLASHSTAR_HAVE_CUBLASLT

}  // namespace flashstar::cuda::fast
