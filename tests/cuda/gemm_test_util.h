// The fixture of the GEMM kernel tests (dense: test_gemm_dense_v2.cpp, test_gemm_dense_wgmma.cpp;
// grouped: test_gemm_group_v2.cpp, test_gemm_group_wgmma.cpp): one copy of their dense problems, the
// reading of a product's poisoned output buffer, and the device MoE plan, so that the suites that compare
// kernels build their inputs the same way.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/fast_kernels.h"
#include "cuda_test_fixture.h"

namespace flashstar::cuda_test {

class GemmKernelTest : public CudaKernelTest {
 protected:
  // The dense Q8_0 products of one layer of the full-size model, for the timing tests: out_a is `groups`
  // row groups of one matrix, each on its own input; per_layer counts the shared expert's gate and up.
  struct LayerShape {
    const char* name;
    int64_t rows, cols;
    int groups, per_layer;
  };
  static constexpr LayerShape kLayerDenseShapes[] = {
      {"q_a", 1024, 4096, 1, 1},   {"kv", 512, 4096, 1, 1},     {"q_b", 32768, 1024, 1, 1},
      {"out_a", 1024, 4096, 8, 1}, {"out_b", 4096, 8192, 1, 1}, {"gate/up_sh", 2048, 4096, 1, 2},
      {"down_sh", 4096, 2048, 1, 1}};

  // Weights of `total` rows (wq: their raw bytes), the activations and their FP16 copy (xb); products of
  // rows [row0, row0 + rows) into outputs of ys >= rows floats a token and 2 spare token rows.
  struct Problem {
    GgmlType t;
    int64_t rows, cols, n_tok, row0, ys, total;
    std::vector<uint8_t> wq;
    cuda::DeviceArray<uint8_t> w;
    cuda::DMat W;
    std::vector<float> x;
    cuda::DeviceArray<uint16_t> xb;
  };
  Problem make(GgmlType t, int64_t rows, int64_t cols, int64_t n_tok, int64_t row0, int64_t pad) {
    Problem p{t, rows, cols, n_tok, row0, rows + pad, row0 + rows + 5, {}, {}, {}, {}, {}};
    p.wq = random_weights(t, p.total, cols);
    p.w = up(p.wq);
    p.W = cuda::DMat{t, p.w.get(), cols, p.total, row_bytes(t, cols)};
    p.x = tailed_acts(static_cast<size_t>(n_tok * cols));
    to_f16(p);
    return p;
  }
  // Tokens [first, first + n) of `all` on the same weights (all.W; no host copy of them).
  Problem slice(const Problem& all, int64_t first, int64_t n) {
    Problem part{all.t, all.rows, all.cols, n, all.row0, all.ys, all.total, {}, {}, all.W, {}, {}};
    part.x.assign(all.x.begin() + first * all.cols, all.x.begin() + (first + n) * all.cols);
    to_f16(part);
    return part;
  }
  // Token-major [n_tok][rows] outputs from the poisoned buffer; counts writes outside them.
  static std::vector<float> outputs(const Problem& p, const std::vector<float>& y, int64_t& stray) {
    std::vector<float> out;
    stray = 0;
    for (int64_t j = 0; j < p.n_tok + 2; ++j)
      for (int64_t r = 0; r < p.ys; ++r) {
        const float v = y[j * p.ys + r];
        if (j < p.n_tok && r < p.rows) out.push_back(v);
        else stray += f32_to_bits(v) != 0xffffffffu;
      }
    return out;
  }

  // A device plan for the routing `sel` (expert of each item), with the plan order on the host.
  struct Plan {
    cuda::DeviceArray<int32_t> sel, ints;
    cuda::fast::MoePlan p{};
    std::vector<int32_t> order;
  };
  Plan plan(const std::vector<int32_t>& sel, int n_exp) {
    Plan pl;
    const int64_t items = static_cast<int64_t>(sel.size());
    pl.sel = up(sel);
    const int max_tiles = cuda::fast::moe_max_tiles(items, n_exp);
    pl.ints = cuda::DeviceArray<int32_t>(static_cast<size_t>(n_exp + n_exp + 1 + items + max_tiles + 1));
    auto& p = pl.p;
    p.count = pl.ints.get(), p.offset = p.count + n_exp, p.items = p.offset + n_exp + 1;
    p.tiles = p.items + items, p.n_tiles = p.tiles + max_tiles, p.max_tiles = max_tiles;
    cuda::fast::moe_plan(pl.sel.get(), items, n_exp, p, nullptr);
    pl.order.resize(static_cast<size_t>(items));
    FS_CUDA_CHECK(cudaDeviceSynchronize());
    FS_CUDA_CHECK(cudaMemcpy(pl.order.data(), p.items, items * 4, cudaMemcpyDeviceToHost));
    return pl;
  }


 private:
  // p.xb: the FP16 hi and lo terms of p.x (fast::to_f16).
  void to_f16(Problem& p) {
    auto dx = up(p.x);
    p.xb = cuda::DeviceArray<uint16_t>(static_cast<size_t>(2 * p.n_tok * p.cols));
    cuda::fast::to_f16(dx.get(), p.n_tok, p.cols, p.cols, p.xb.get(), nullptr);
  }
};

}  // namespace flashstar::cuda_test
