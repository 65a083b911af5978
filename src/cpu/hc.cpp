#include "common/parallel.h"
#include "cpu/layers.h"

namespace flashstar::cpu {

std::vector<HcSplit> hc_pre_batch(const ModelConfig& c, const Matrix& fn, const std::vector<float>& scale,
                                  const std::vector<float>& base, const float* X, int64_t n, float* out) {
  const int64_t HC = c.hc_dim(), D = c.n_embd, MIX = c.hc_mix();
  std::vector<float> flat(static_cast<size_t>(n * HC)), mix(static_cast<size_t>(n * MIX));
  parallel_for(n, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) rms_norm(X + t * HC, nullptr, flat.data() + t * HC, HC, float(c.rms_eps));
  });
  matmul(fn, flat.data(), n, HC, mix.data(), MIX);
  std::vector<HcSplit> splits(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    splits[t] = hc_split(mix.data() + t * MIX, scale, base, int(c.n_hc), int(c.hc_sinkhorn_iter), float(c.hc_eps));
    hc_weighted_sum(X + t * HC, splits[t].pre, int(c.n_hc), D, out + t * D);
  }
  return splits;
}

void hc_post_batch(const ModelConfig& c, const std::vector<HcSplit>& splits, const float* f, float* X, int64_t n) {
  const int64_t HC = c.hc_dim(), D = c.n_embd;
  parallel_for(n, [&](int64_t t0, int64_t t1) {
    std::vector<float> next(static_cast<size_t>(HC));
    for (int64_t t = t0; t < t1; ++t) {
      hc_post(f + t * D, X + t * HC, splits[t], int(c.n_hc), D, next.data());
      std::copy(next.begin(), next.end(), X + t * HC);
    }
  });
}

}  // namespace flashstar::cpu
