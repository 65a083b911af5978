// The CPU reference session: layer-major prefill over chunks, one-token decode as a chunk of one.
#include <algorithm>

#include "common/error.h"
#include "common/parallel.h"
#include "cpu/layers.h"
#include "quant/quant.h"

namespace flashstar {
namespace {

class CpuSession final : public Session {
 public:
  CpuSession(const Model& m, const SessionOptions& opts) : m_(m), c_(m.config()) {
    opts_ = opts;
    if (opts_.chunk == 0) fail("prefill chunk size must be positive");
    if (opts_.ctx < 2) fail("context size must be at least 2");
    rope_plain_ = cpu::Rope::make(c_, false);
    rope_comp_ = cpu::Rope::make(c_, true);
    reset();
  }

  const char* backend_name() const override { return "cpu"; }

  void reset() override { st_.init(c_); }

  void eval(std::span<const int32_t> tokens, float* all_logits) override {
    for (int32_t t : tokens)
      if (t < 0 || static_cast<uint32_t>(t) >= c_.n_vocab) fail("token id %d is outside the vocabulary (%u)", t, c_.n_vocab);
    if (st_.tokens.size() + tokens.size() >= opts_.ctx)
      fail("%zu tokens do not fit the context of %u", st_.tokens.size() + tokens.size(), opts_.ctx);
    for (size_t i = 0; i < tokens.size(); i += opts_.chunk) {
      const size_t n = std::min<size_t>(opts_.chunk, tokens.size() - i);
      run_chunk(tokens.subspan(i, n), all_logits ? all_logits + i * c_.n_vocab : nullptr);
    }
  }

  std::string save() const override {
    return save_snapshot(c_, st_, SnapshotInfo{opts_.ctx, opts_.chunk, std::min(c_.n_swa, opts_.ctx)});
  }
  void load(const std::string& snapshot) override { load_snapshot(c_, snapshot, opts_.ctx, st_); }

  const std::vector<int32_t>& tokens() const override { return st_.tokens; }
  const std::vector<float>& last_logits() const override { return st_.logits; }

 private:
  void run_chunk(std::span<const int32_t> toks, float* all_logits) {
    const int64_t n = static_cast<int64_t>(toks.size()), D = c_.n_embd, HC = c_.hc_dim();
    cpu::Chunk ch{toks.data(), n, static_cast<int64_t>(st_.tokens.size())};

    // Embedding copied into every hyper-connection stream.
    std::vector<float> X(static_cast<size_t>(n * HC));
    parallel_for(n, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        float* x = X.data() + t * HC;
        quant::dequantize_row(m_.token_embd.type, m_.token_embd.row(toks[t]), x, D);
        for (uint32_t s = 1; s < c_.n_hc; ++s) std::copy_n(x, D, x + s * D);
      }
    });

    for (uint32_t il = 0; il < c_.n_layer; ++il) {
      cpu::LayerContext L{c_, m_.layers[il], st_.layers[il], c_.ratio(il) ? rope_comp_ : rope_plain_, opts_.numerics, il, opts_.ties};
      cpu::attention_half(L, ch, X.data());
      cpu::ffn_half(L, ch, X.data());
    }

    // Output head: only the rows someone asked for (every row, or just the last).
    const int64_t first = all_logits ? 0 : n - 1;
    const int64_t m = n - first;
    std::vector<float> zn(static_cast<size_t>(m * D));
    head_inputs(X.data() + first * HC, m, zn.data());
    std::vector<float> logits(static_cast<size_t>(m) * c_.n_vocab);
    cpu::matmul(m_.output, zn.data(), m, D, logits.data(), c_.n_vocab);
    if (all_logits) std::copy(logits.begin(), logits.end(), all_logits);
    st_.logits.assign(logits.end() - c_.n_vocab, logits.end());
    st_.tokens.insert(st_.tokens.end(), toks.begin(), toks.end());
  }

  // Collapses the streams of m tokens with the output HC weights (no Sinkhorn), then the final norm.
  // The HC projection goes through matmul so its rows are dequantized once per chunk, not per token.
  void head_inputs(const float* X, int64_t m, float* zn) const {
    const int64_t D = c_.n_embd, HC = c_.hc_dim(), NH = c_.n_hc;
    std::vector<float> flat(static_cast<size_t>(m * HC)), mix(static_cast<size_t>(m * NH));
    for (int64_t t = 0; t < m; ++t) cpu::rms_norm(X + t * HC, nullptr, flat.data() + t * HC, HC, float(c_.rms_eps));
    cpu::matmul(m_.output_hc_fn, flat.data(), m, HC, mix.data(), NH);
    std::vector<float> pre(static_cast<size_t>(NH)), z(static_cast<size_t>(D));
    for (int64_t t = 0; t < m; ++t) {
      const float* x = X + t * HC;
      for (int64_t h = 0; h < NH; ++h)
        pre[h] = cpu::sigmoid(mix[t * NH + h] * m_.output_hc_scale[0] + m_.output_hc_base[h]) + float(c_.hc_eps);
      for (int64_t i = 0; i < D; ++i) {
        float acc = 0;
        for (int64_t h = 0; h < NH; ++h) acc += pre[h] * x[h * D + i];
        z[i] = acc;
      }
      cpu::rms_norm(z.data(), m_.output_norm.data(), zn + t * D, D, float(c_.rms_eps));
    }
  }

  const Model& m_;
  const ModelConfig& c_;
  KvState st_;
  cpu::Rope rope_plain_, rope_comp_;
};

}  // namespace

std::unique_ptr<Session> make_cpu_session(const Model& model, const SessionOptions& opts) {
  return std::make_unique<CpuSession>(model, opts);
}

}  // namespace flashstar
