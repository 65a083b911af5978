// Sizes of a CUDA session before allocation (session_plan.h) and the memory plan reported from them.
#include "cuda/session_plan.h"

#include <cstdlib>
#include <string>

#include "common/error.h"
#include "cuda/cuda_util.h"
#include "cuda/fast_kernels.h"
#include "cuda/gemm_cublas.h"

namespace flashstar::cuda {
namespace plan {

Dims::Dims(const ModelConfig& c, const SessionOptions& o) {
  C = std::min<int64_t>(o.chunk, o.ctx);
  SWA = c.n_swa, D = c.n_embd, HC = c.hc_dim(), MIX = c.hc_mix(), NHC = c.n_hc;
  SPLIT = 2 * NHC + NHC * NHC;
  QL = c.q_lora, QD = c.q_dim(), HD = c.head_dim, H = c.n_head, OL = c.out_low_dim();
  E = c.n_expert, K = c.n_expert_used, FF = c.n_ff_exp, NIH = c.n_idx_head, IHD = c.idx_head_dim;
  IDXCAP = o.ctx / 4 + 2;
  int64_t max_comp = 0;
  for (uint32_t il = 0; il < c.n_layer; ++il) {
    const uint32_t r = c.ratio(il);
    if (r == 4) max_comp = std::max<int64_t>(max_comp, std::min<int64_t>(c.idx_top_k, o.ctx / 4 + 1));
    else if (r) max_comp = std::max<int64_t>(max_comp, o.ctx / r + 1);
  }
  MAXROWS = c.n_swa + max_comp;
  V = c.n_vocab;
  TSUM = fast::group_token_sums_floats(1, (FF + 15) / 16 * 16);
  auto r8 = [](int64_t k) { return (k + 7) / 8 * 8; };
  // FP16 activations of the widest tensor-core product input: the routed down projection's input.
  XB = C * std::max({K * r8(FF), r8(OL), r8(D), r8(QL), r8(c.group_dim()), r8(FF), r8(QD)});
  STATE = 0;  // the largest compressor slot state (rows x width)
  for (uint32_t il = 0; il < c.n_layer; ++il) {
    const uint32_t r = c.ratio(il);
    if (r) STATE = std::max<int64_t>(STATE, int64_t(r == 4 ? 8 : r) * c.compressor_width(r, c.head_dim));
    if (r == 4) STATE = std::max<int64_t>(STATE, 8 * int64_t(c.compressor_width(4, c.idx_head_dim)));
  }
  MOE_INTS = E + (E + 1) + C * K + fast::moe_max_tiles(C * K, static_cast<int>(E)) + 1;
  // q_a, kv, q_b, one output group of out_a, out_b, the shared expert, the compressor and indexer
  // projections, the router.
  int64_t cw = 0;
  for (uint32_t il = 0; il < c.n_layer; ++il) {
    const uint32_t r = c.ratio(il);
    if (r) cw = std::max<int64_t>(cw, c.compressor_width(r, c.head_dim));
    if (r == 4) cw = std::max<int64_t>(cw, c.compressor_width(4, c.idx_head_dim));
  }
  DENSE_W = std::max({QL * r8(D), HD * r8(D), QD * r8(QL), int64_t(c.o_lora) * r8(c.group_dim()), D * r8(OL),
                      FF * r8(D), D * r8(FF), cw * r8(D), NIH * IHD * r8(QL), NIH * r8(D), E * r8(D)});
}

size_t cublas_bytes(const Dims& d, const SessionOptions& o) {
  const bool dense = o.routes[Route::DenseQ8] || o.routes[Route::OutA] || o.routes[Route::F16Proj];
  return dense && fast::cublas_enabled() ? fast::cublas_scratch_bytes(d.DENSE_W) : 0;
}

size_t Dims::scratch_floats() const {
  return static_cast<size_t>(C * HC * 2 + C * MIX + C * SPLIT + C * D * 5 + C * QL + C * QD * 2 + C * 2 * 2 * HD +
                             C * 2 * 2 * IHD + C * NIH * IHD + C * NIH + C * OL + C * E + C * K + C * K * FF * 2 +
                             C * K * D + C * FF * 2 + C * IDXCAP + C * H * MAXROWS + kHeadRows * V + C * NHC +
                             SWA * HD + C * K + C * K * TSUM + 2 * STATE + 2 * kMvWork) +
         kScratchPieces * kScratchAlign;
}

size_t layer_state_floats(const ModelConfig& c, const SessionOptions& o, uint32_t il, int64_t C) {
  const uint32_t r = c.ratio(il);
  size_t n = static_cast<size_t>((c.n_swa + C) * c.head_dim);
  if (r) {
    const size_t w = c.compressor_width(r, c.head_dim), rows = (r == 4 ? 2 : 1) * r;
    n += static_cast<size_t>(o.ctx / r + 2) * c.head_dim + 2 * rows * w;
  }
  if (r == 4) n += static_cast<size_t>(o.ctx / 4 + 2) * c.idx_head_dim + 2 * 8 * c.compressor_width(4, c.idx_head_dim);
  return n;
}

void cap_memory(size_t& free_b, size_t& total_b) {
  const char* v = std::getenv("FLASHSTAR_GPU_MEMORY");
  if (!v || !*v) return;
  char* end = nullptr;
  const double x = std::strtod(v, &end);
  const std::string unit(end);
  const double mul = unit.empty() ? 1.0 : unit == "KiB" ? 1024.0 : unit == "MiB" ? 1048576.0
                   : unit == "GiB" ? 1073741824.0 : unit == "GB" ? 1e9 : -1.0;
  if (!(x > 0) || mul < 0) fail("FLASHSTAR_GPU_MEMORY=%s: expected a size such as 80GiB, 81559MiB or 85899345920", v);
  const size_t cap = static_cast<size_t>(x * mul), used = total_b - free_b;
  total_b = std::min(total_b, cap);
  free_b = total_b > used ? std::min(free_b, total_b - used) : 0;
}

std::vector<uint32_t> distinct_ratios(const ModelConfig& c) {
  std::vector<uint32_t> r;
  for (uint32_t il = 0; il < c.n_layer; ++il)
    if (c.ratio(il) && std::find(r.begin(), r.end(), c.ratio(il)) == r.end()) r.push_back(c.ratio(il));
  return r;
}

uint64_t decode_graph_key(std::span<const uint32_t> ratios, uint32_t idx_top_k, int64_t pos0) {
  uint64_t key = 0;
  for (size_t i = 0; i < ratios.size() && i < 62; ++i) key |= uint64_t((pos0 + 1) % ratios[i] == 0) << i;
  const bool indexer = (pos0 + 1) / 4 > static_cast<int64_t>(idx_top_k);
  return key | (uint64_t(indexer) << 62);
}

}  // namespace plan

using plan::Dims;
using plan::f32b;
using plan::layer_state_floats;

std::string MemoryPlan::describe(size_t free_bytes, size_t total_bytes) const {
  auto gib = [](size_t b) { return static_cast<double>(b) / (1ull << 30); };
  return strfmt("GPU memory plan: weights %.2f GiB, vectors %.3f GiB, KV %.3f GiB (%zu B/token), scratch %.2f GiB "
                "(cuBLAS %.2f GiB); total %.2f GiB of %.2f GiB free (%.2f GiB card)",
                gib(weights), gib(vectors), gib(kv_total), kv_per_token, gib(scratch), gib(cublas), gib(total()),
                gib(free_bytes), gib(total_bytes));
}

MemoryPlan plan_memory(const Model& m, const SessionOptions& o) {
  const ModelConfig& c = m.config();
  MemoryPlan p;
  p.weights = m.file().size() - m.file().data_offset();
  for (const auto& L : m.layers)
    p.vectors += f32b(L.hc_attn_scale.size() + L.hc_attn_base.size() + L.attn_norm.size() + L.q_a_norm.size() +
                      L.kv_a_norm.size() + L.sinks.size() + L.comp_ape.size() + L.comp_norm.size() +
                      L.idx_comp_ape.size() + L.idx_comp_norm.size() + L.hc_ffn_scale.size() + L.hc_ffn_base.size() +
                      L.ffn_norm.size() + L.exp_probs_b.size()) +
                 L.tid2eid.size() * sizeof(int32_t);
  const Dims d(c, o);
  for (uint32_t il = 0; il < c.n_layer; ++il) {
    const uint32_t r = c.ratio(il);
    if (r) p.kv_per_token += f32b(c.head_dim) / r;
    if (r == 4) p.kv_per_token += f32b(c.idx_head_dim) / 4;
    p.kv_total += f32b(static_cast<int64_t>(layer_state_floats(c, o, il, d.C)));
  }
  p.scratch = f32b(static_cast<int64_t>(d.scratch_floats())) + static_cast<size_t>(d.C) * (d.K * 4 + 4 + d.K * 4) +
              static_cast<size_t>(d.C) * c.idx_top_k * 4 + static_cast<size_t>(d.XB) * 4 +
              static_cast<size_t>(d.MOE_INTS) * 4;
  p.cublas = plan::cublas_bytes(d, o);
  p.scratch += p.cublas;
  return p;
}

}  // namespace flashstar::cuda
