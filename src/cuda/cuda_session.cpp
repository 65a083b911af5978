// CUDA session on the reference kernels: weights uploaded once, KV state resident on the device, the
// forward pass layer-major over prefill chunks exactly as the CPU engine computes it.
#include "cuda/cuda_session.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "common/error.h"
#include "cpu/ops.h"
#include "cuda/cuda_util.h"
#include "cuda/decode_fork.h"
#include "cuda/fast_expert_mma.h"
#include "cuda/fast_hc_pre.h"
#include "cuda/fast_kernels.h"
#include "cuda/fast_matvec_float.h"
#include "cuda/fast_matvec_q8_mma.h"
#include "cuda/gemm_cublas.h"
#include "cuda/kernel_trace.h"
#include "cuda/pdl_graph.h"
#include "cuda/prefill_small.h"
#include "cuda/ref_kernels.h"
#include "cuda/session_layer.h"
#include "cuda/session_plan.h"
#include "cuda/stage_profiler.h"
#include "cuda/weight_upload.h"

namespace flashstar::cuda {

bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

namespace {

using namespace plan;

class CudaSession final : public Session {
 public:
  CudaSession(const Model& m, const SessionOptions& o)
      : m_(m), c_(m.config()), d_(m.config(), o), routes_(o.routes), prof_(StageProfiler::requested()) {
    opts_ = o;
    if (opts_.chunk == 0) fail("prefill chunk size must be positive");
    if (opts_.ctx < 2) fail("context size must be at least 2");
    if (!device_available()) fail("no CUDA device is available (use --backend cpu)");
    const MemoryPlan plan = plan_memory(m, o);
    size_t free_b = 0, total_b = 0;
    FS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    cap_memory(free_b, total_b);
    if (o.verbose) {
      std::fprintf(stderr, "%s\n", plan.describe(free_b, total_b).c_str());
      std::fprintf(stderr, "GPU routes: %s\n", describe_routes(routes_).c_str());
    }
    if (plan.total() + (256ull << 20) > free_b)
      fail("the model does not fit this GPU: %s (try a smaller --ctx or --chunk)", plan.describe(free_b, total_b).c_str());
    const unsigned fork_parts = DecodeFork::requested();
    main_priority_ = DecodeFork::main_priority(fork_parts);  // 0: the default priority
    FS_CUDA_CHECK(cudaStreamCreateWithPriority(&s_, cudaStreamNonBlocking, main_priority_));
    fork_ = std::make_unique<DecodeFork>(fork_parts);
    split_br_ = std::make_unique<SideBranch>(split_branch_requested(), false);
    window_br_ = std::make_unique<SideBranch>(window_branch_requested(), true);
    init_quant_tables();
    fast::init_tables();
    upload_weights(m_.file(), weights_, s_, opts_.verbose);
    upload_vectors();
    alloc_state_and_scratch();
    graphs_on_ = cuda_graphs_requested();
    {  // every position-dependent kernel of a decode step reads the position from the device
      AttentionArgs a;
      a.n = 1, a.n_head = int(d_.H), a.head_dim = int(d_.HD);
      graph_kernels_ = fast::attention_decode_path(a) && fast::indexer_supported(int(d_.NIH), int(d_.IHD), 1) &&
                       d_.HD <= 8192 && d_.IHD <= 8192;
    }
    ratios_ = distinct_ratios(c_);
    d_pos_.resize(1);
    FS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_pos_), sizeof(int64_t), cudaHostAllocDefault));
    FS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_tok_), sizeof(int32_t), cudaHostAllocDefault));
    FS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&h_logits_), f32b(c_.n_vocab), cudaHostAllocDefault));
    reset();
  }
  ~CudaSession() override {
    graphs_.clear();  // before the pinned buffers and the stream its nodes name
    if (group_ids_) fast::q8_constant_items(group_ids_, false);
    if (h_pos_) cudaFreeHost(h_pos_);
    if (h_tok_) cudaFreeHost(h_tok_);
    if (h_logits_) cudaFreeHost(h_logits_);
    if (s_) cudaStreamDestroy(s_);
  }

  const char* backend_name() const override { return "cuda"; }

  void reset() override {
    tokens_.clear();
    logits_.clear();
    KvState empty;
    empty.init(c_);
    upload_state(empty);
  }

  void eval(std::span<const int32_t> tokens, float* all_logits) override {
    for (int32_t t : tokens)
      if (t < 0 || static_cast<uint32_t>(t) >= c_.n_vocab) fail("token id %d is outside the vocabulary (%u)", t, c_.n_vocab);
    if (tokens_.size() + tokens.size() >= opts_.ctx)
      fail("%zu tokens do not fit the context of %u", tokens_.size() + tokens.size(), opts_.ctx);
    for (size_t i = 0; i < tokens.size(); i += static_cast<size_t>(d_.C)) {
      const size_t n = std::min<size_t>(d_.C, tokens.size() - i);
      run_chunk(tokens.subspan(i, n), all_logits ? all_logits + i * c_.n_vocab : nullptr);
    }
  }

  std::string save() const override {
    KvState st = download_state();
    return save_snapshot(c_, st, SnapshotInfo{opts_.ctx, opts_.chunk, static_cast<uint32_t>(std::min<int64_t>(c_.n_swa, opts_.ctx))});
  }
  void load(const std::string& snapshot) override {
    KvState st;
    load_snapshot(c_, snapshot, opts_.ctx, st);
    upload_state(st);
    tokens_ = st.tokens;
    logits_ = st.logits;
  }
  const std::vector<int32_t>& tokens() const override { return tokens_; }
  const std::vector<float>& last_logits() const override { return logits_; }

 private:
  DMat dev(const Matrix& mat) const {
    DMat d;
    if (!mat.present()) return d;
    d.type = mat.type;
    d.data = weights_.get() + (mat.data - m_.file().base() - m_.file().data_offset());
    d.cols = mat.cols;
    d.rows = mat.rows;
    d.row_bytes = mat.row_bytes;
    return d;
  }

  void upload_vectors() {
    VectorBlob b;
    auto addf = [&](const std::vector<float>& v, const float** dst) { b.add(v, dst); };
    layers_.resize(c_.n_layer);
    for (uint32_t il = 0; il < c_.n_layer; ++il)
      bind_layer(layers_[il], m_.layers[il], [this](const Matrix& mat) { return dev(mat); }, b);
    addf(m_.output_hc_scale, &out_hc_scale_), addf(m_.output_hc_base, &out_hc_base_), addf(m_.output_norm, &out_norm_);
    const cpu::Rope rp = cpu::Rope::make(c_, false), rc = cpu::Rope::make(c_, true);
    b.add(rp.freq.data(), rp.freq.size() * 8, reinterpret_cast<const void**>(&freq_plain_));
    b.add(rc.freq.data(), rc.freq.size() * 8, reinterpret_cast<const void**>(&freq_comp_));
    b.upload(vectors_);
    out_hc_fn_ = dev(m_.output_hc_fn);
    output_ = dev(m_.output);
    embd_ = dev(m_.token_embd);
  }

  void alloc_state_and_scratch() {
    size_t total = 0;
    for (uint32_t il = 0; il < c_.n_layer; ++il) total += layer_state_floats(c_, opts_, il, d_.C);
    state_.resize(total);
    float* p = state_.get();
    for (uint32_t il = 0; il < c_.n_layer; ++il) p = place_layer_state(layers_[il], c_, opts_, il, d_.C, p);
    scratch_.resize(d_.scratch_floats());
    float* q = scratch_.get();
    float* const q_end = q + d_.scratch_floats();
    int pieces = 0;
    auto take = [&](int64_t n) {
      float* r = q;
      q += (n + Dims::kScratchAlign - 1) / Dims::kScratchAlign * Dims::kScratchAlign;
      if (++pieces > int(Dims::kScratchPieces) || q > q_end) fail("internal: scratch plan too small");
      return r;
    };
    const int64_t C = d_.C;
    X_ = take(C * d_.HC), flat_ = take(C * d_.HC), mix_ = take(C * d_.MIX), split_ = take(C * d_.SPLIT);
    xin_ = take(C * d_.D), an_ = take(C * d_.D), out_ = take(C * d_.D), fn_ = take(C * d_.D), shared_ = take(C * d_.D);
    qr_ = take(C * d_.QL), q_ = take(C * d_.QD), heads_ = take(C * d_.QD);
    ckv_ = take(C * 2 * d_.HD), cg_ = take(C * 2 * d_.HD), ikv_ = take(C * 2 * d_.IHD), ig_ = take(C * 2 * d_.IHD);
    iq_ = take(C * d_.NIH * d_.IHD), iw_ = take(C * d_.NIH), low_ = take(C * d_.OL), rl_ = take(C * d_.E);
    wsel_ = take(C * d_.K), G_ = take(C * d_.K * d_.FF), U_ = take(C * d_.K * d_.FF), slot_ = take(C * d_.K * d_.D);
    SG_ = take(C * d_.FF), SU_ = take(C * d_.FF), idx_scratch_ = take(C * d_.IDXCAP);
    att_scratch_ = take(C * d_.H * d_.MAXROWS), head_logits_ = take(kHeadRows * d_.V), head_mix_ = take(C * d_.NHC);
    hist_tmp_ = take(d_.SWA * d_.HD);
    wplan_ = take(C * d_.K);
    tsum_ = take(C * d_.K * d_.TSUM);  // the routed down product's Q2_K token sums (gemm_set_group_q2k_sums)
    comp_tmp_ = take(2 * d_.STATE);
    mv_work_ = take(kMvWork);
    side_work_ = take(kMvWork);  // the decode fork's side lane: its split products never share mv_work_
    const int64_t n_group_ids = kSmallN * c_.n_out_group;
    ints_.resize(static_cast<size_t>(C * (2 * d_.K + 1 + c_.idx_top_k) + d_.MOE_INTS + n_group_ids));
    sel_ = ints_.get(), tok_ = sel_ + C * d_.K, idx_sel_ = tok_ + C;
    int32_t* pi = idx_sel_ + C * c_.idx_top_k;
    plan_.count = pi, pi += d_.E;
    plan_.offset = pi, pi += d_.E + 1;
    plan_.items = pi, pi += C * d_.K;
    plan_.max_tiles = fast::moe_max_tiles(C * d_.K, static_cast<int>(d_.E));
    plan_.tiles = pi, pi += plan_.max_tiles;
    plan_.n_tiles = pi, pi += 1;
    // item i of a decode step's grouped attn_output_a product uses group i % n_out_group
    group_ids_ = pi;
    std::vector<int32_t> gid(static_cast<size_t>(n_group_ids));
    for (size_t i = 0; i < gid.size(); ++i) gid[i] = static_cast<int32_t>(i % c_.n_out_group);
    FS_CUDA_CHECK(cudaMemcpy(group_ids_, gid.data(), gid.size() * 4, cudaMemcpyHostToDevice));
    fast::q8_constant_items(group_ids_, true);  // taken back in ~CudaSession
    landed_for_nonblocking_streams();
    xb_buf_.resize(static_cast<size_t>(d_.XB) * 2);  // hi and lo terms
    xb_ = xb_buf_.get();
    if (const size_t cb = cublas_bytes(d_, opts_)) {
      cublas_buf_.resize(cb);
      cublas_ = std::make_unique<fast::CublasGemm>(cublas_buf_.get(), d_.DENSE_W);
    }
  }

  void upload_state(const KvState& st) {
    FS_CUDA_CHECK(cudaStreamSynchronize(s_));  // work still queued on s_ may write these rows
    for (uint32_t il = 0; il < c_.n_layer; ++il) upload_layer_state(layers_[il], st.layers[il], d_.HD);
    landed_for_nonblocking_streams();
  }

  KvState download_state() const {
    FS_CUDA_CHECK(cudaStreamSynchronize(s_));
    KvState st;
    st.init(c_);
    st.tokens = tokens_;
    st.logits = logits_;
    const int64_t N = static_cast<int64_t>(tokens_.size());
    for (uint32_t il = 0; il < c_.n_layer; ++il) download_layer_state(layers_[il], st.layers[il], N, d_.HD, d_.IHD);
    return st;
  }

  // FP16 copy of X for the tensor-core products that follow, when one of `rs` will take that path.
  const uint16_t* prep(const float* X, int64_t n, int64_t k, int64_t xs, std::initializer_list<Route> rs) {
    if (n <= kSmallN) return nullptr;
    if (X == xb_of_) return xb_of_ = nullptr, xb_;  // hc_pre's prefill path made it
    for (Route r : rs)
      if (routes_[r]) {
        fast::to_f16(X, n, k, xs, xb_, s_);
        return xb_;
      }
    return nullptr;
  }

  // One matrix product through route r's fast kernel when the route is on and takes the shape, else the
  // reference kernel. xb: FP16 copy of X made by prep() (null: made here if needed). Above the matrix-vector
  // cutoff the cuBLASLt path (when on) comes first: whether it takes a matrix depends on the matrix alone,
  // so every chunk size runs the same kernels.
  void mm(Route r, const DMat& W, int64_t row0, int64_t n_rows, const float* X, int64_t n, int64_t xs, float* Y,
          int64_t ys, const uint16_t* xb = nullptr) {
    if (routes_[r]) {
      if (n <= kSmallN || n_rows < kMinGemmRows) {
        if (fast::matvec(W, row0, n_rows, X, n, xs, Y, ys, s_, mv_work_, kMvWork)) return;
      } else if (fast::gemm_supports(W) || (cublas_ && cublas_->takes(W, n_rows))) {
        if (!xb) {
          fast::to_f16(X, n, W.cols, xs, xb_, s_);
          xb = xb_;
        }
        if (cublas_ && fast::gemm_cublas(*cublas_, W, row0, n_rows, xb, n, Y, ys, s_)) return;
        if (fast::gemm(W, row0, n_rows, xb, n, Y, ys, s_)) return;
      }
    }
    matmul(W, row0, n_rows, X, n, xs, Y, ys, s_);
  }

  // The small ops with a row-parallel fast version (fused_ops); the reference kernel otherwise.
  void norm_rows(const float* x, int64_t xs, const float* w, float* y, int64_t ys, int64_t rows, int64_t dim, float eps) {
    if (routes_[Route::FusedOps] && fast::rms_norm_rows(x, xs, w, y, ys, rows, dim, eps, s_)) return;
    rms_norm_rows(x, xs, w, y, ys, rows, dim, eps, s_);
  }
  void finish(float* x, int64_t rows, int64_t stride, int64_t dim, int n_rot, RowKind kind, bool official) {
    if (routes_[Route::FusedOps] && fast::finish_rows(x, rows, stride, dim, n_rot, kind, official, s_)) return;
    finish_rows(x, rows, stride, dim, n_rot, kind, official, s_);
  }
  void qat(float* x, int64_t n_vec, int64_t dim) {
    if (routes_[Route::FusedOps] && fast::indexer_qat(x, n_vec, dim, s_)) return;
    indexer_qat(x, n_vec, dim, s_);
  }

  void compress(const CompressorArgs& a) {
    // One token that completes no row only appends to the slot state: the reference's single small launch
    // is cheaper there than the parallel version's row and state kernels.
    const bool completes = (a.pos0 + a.n) / a.ratio > a.pos0 / a.ratio;
    if (routes_[Route::FusedOps] && (a.n > 1 || completes) && fast::compressor_supported(a))
      fast::compressor_chunk(a, comp_tmp_, s_);
    else compressor_chunk(a, s_);
  }

  // Whether this pass runs chain `p` of a layer on the fork's side stream (decode_fork.h): one token only
  // (prefill keeps its serial order), and not under the profiler, which times one stream's stages.
  bool forking(DecodeFork::Part p, int64_t n) const { return fork_->on(p) && n == 1 && !prof_.on(); }
  // Enqueues f's launches on the side stream with the side lane's split workspace (the helpers launch
  // on s_ and split into mv_work_), then puts the main lane back, also when f throws.
  template <class F>
  void on_side(F&& f) {
    if (!fork_->is_open()) fail("internal: a side branch outside an open decode fork");
    struct Back {
      CudaSession* me;
      cudaStream_t s;
      float* w;
      ~Back() { me->s_ = s, me->mv_work_ = w; }
    } back{this, s_, mv_work_};
    s_ = fork_->side(), mv_work_ = side_work_;
    f();
  }

  // The compressor's (and on ratio-4 layers the indexer's) projections of an_: at decode one launch for
  // all of them (the same input, latency-bound products), else one per matrix.
  void compressor_proj(const DLayer& L, int64_t n, const uint16_t* an_b) {
    const uint32_t r = L.ratio;
    const int64_t W_ = c_.compressor_width(r, c_.head_dim), IW = r == 4 ? c_.compressor_width(4, c_.idx_head_dim) : 0;
    const fast::MatvecOut proj[] = {{&L.comp_kv, 0, W_, ckv_, W_}, {&L.comp_gate, 0, W_, cg_, W_},
                                    {&L.idx_comp_kv, 0, IW, ikv_, IW}, {&L.idx_comp_gate, 0, IW, ig_, IW},
                                    {&L.idx_proj, 0, d_.NIH, iw_, d_.NIH}};
    auto joint = [&](int first, int count) {
      return routes_[Route::F16Proj] && n <= kSmallN &&
             fast::float_matvec_multi(proj + first, count, an_, n, d_.D, s_, mv_work_, kMvWork);
    };
    const bool all_joint = r == 4 && joint(0, 5);
    if (!all_joint && !joint(0, 2)) {
      mm(Route::F16Proj, L.comp_kv, 0, W_, an_, n, d_.D, ckv_, W_, an_b);
      mm(Route::F16Proj, L.comp_gate, 0, W_, an_, n, d_.D, cg_, W_, an_b);
    }
    if (r == 4 && !all_joint && !joint(2, 3)) {
      mm(Route::F16Proj, L.idx_comp_kv, 0, IW, an_, n, d_.D, ikv_, IW, an_b);
      mm(Route::F16Proj, L.idx_comp_gate, 0, IW, an_, n, d_.D, ig_, IW, an_b);
      mm(Route::F16Proj, L.idx_proj, 0, d_.NIH, an_, n, d_.D, iw_, d_.NIH, an_b);
    }
  }
  // The chunk's compressed rows and slot states (L.comp; on ratio-4 layers also L.idx) from the projections.
  void compress_rows(DLayer& L, int64_t pos0, int64_t n, int n_rot, float eps, bool official) {
    const uint32_t r = L.ratio;
    const int64_t W_ = c_.compressor_width(r, c_.head_dim), IW = r == 4 ? c_.compressor_width(4, c_.idx_head_dim) : 0;
    compress({L.comp_kv_st, L.comp_sc_st, ckv_, cg_, L.comp_ape, L.comp_norm, freq_comp_, L.comp, pos0, n, int(r),
              int(d_.HD), int(W_), n_rot, eps, RowKind::Attention, official, pos_dev_});
    if (r == 4)
      compress({L.idx_kv_st, L.idx_sc_st, ikv_, ig_, L.idx_comp_ape, L.idx_comp_norm, freq_comp_, L.idx, pos0, n, 4,
                int(d_.IHD), int(IW), n_rot, eps, RowKind::Indexer, official, pos_dev_});
  }

  // The indexer's queries from qr_: projection, RoPE and (official numerics) the FP4 simulation, into iq_;
  // at decode (idx_fused) the projection alone, the indexer's scores launch doing the rest.
  bool idx_fused(int64_t n, int n_rot) const {
    return routes_[Route::Attention] && fast::indexer_fused(int(d_.NIH), int(d_.IHD), n, n_rot);
  }
  void indexer_query(const DLayer& L, int64_t pos0, int64_t n, int n_rot, const double* freq, bool official) {
    mm(Route::F16Proj, L.idx_q_b, 0, d_.NIH * d_.IHD, qr_, n, d_.QL, iq_, d_.NIH * d_.IHD);
    if (idx_fused(n, n_rot)) return;
    if (!small_prefill(n) || !fast::rope_prefill(iq_, n, d_.NIH * d_.IHD, int(d_.NIH), d_.IHD, n_rot, freq, pos0, 1,
                                                 false, s_))
      rope(iq_, n, d_.NIH * d_.IHD, int(d_.NIH), d_.IHD, n_rot, freq, pos0, 1, false, s_, pos_dev_);
    if (official) qat(iq_, n * d_.NIH, d_.IHD);
  }

  // At decode a half-layer's hyper-connection post is left pending (pending_) and applied by the next
  // hc_pre's one launch (fast_hc_pre.h); the same condition as that launch's route. Whatever reads X_
  // otherwise (the reference hc_pre, the output head) flushes it first with the kernels it replaces.
  // Prefill (FLASHSTAR_PREFILL_SMALL, default on) defers it too, to fast::hc_pre_prefill's first launch.
  bool fold_post(int64_t n) const {
    return routes_[Route::FusedOps] && routes_[Route::F16Proj] && (n <= fast::hcp::kMaxTok || small_prefill(n)) &&
           c_.n_hc == 4 && d_.MIX == fast::hcp::kMix && d_.SPLIT == fast::hcp::kMix;
  }
  bool small_prefill(int64_t n) const { return prefill_small_ && n > kSmallN; }
  void flush_post(int64_t n) {
    split_br_->join(s_);  // the post reads the split
    const fast::HcPost q = pending_;
    pending_ = {};
    const int n_hc = int(c_.n_hc);
    if (q.kind == fast::HcPost::Kind::Plain) hc_post(q.f, X_, q.split, n_hc, d_.D, n, s_);
    if (q.kind != fast::HcPost::Kind::Slots) return;
    if (routes_[Route::FusedOps] && fast::sum_slots_post(q.f, q.shared, q.k, X_, q.split, n_hc, d_.D, n, s_)) return;
    sum_slots(q.f, q.shared, n, q.k, d_.D, out_, s_);
    hc_post(out_, X_, q.split, n_hc, d_.D, n, s_);
  }

  // The hyper-connection pre step and the sublayer's input norm: out = sum of the pre-weighted streams,
  // normed = RMS norm of out with norm_w. At decode one launch (fast_hc_pre.cu) does all of it, the pending
  // post first, when the fused ops and the F16 projections are on (it replaces their kernels for the
  // mixer); mv_work_ is free here (every user of it is a single launch on this stream).
  void hc_pre(const DMat& fn, const float* scale, const float* base, const float* norm_w, int64_t n, float* out,
              float* normed) {
    const int n_hc = int(c_.n_hc), iters = int(c_.hc_sinkhorn_iter);
    const float eps = float(c_.hc_eps), rms_eps = float(c_.rms_eps);
    split_br_->join(s_);  // the pending post reads the previous split, and this step writes it
    auto split_of_mix = [&](cudaStream_t st) {  // split_ from mix_: the fused route's kernel, else the reference
      if (!routes_[Route::FusedOps] || !fast::hc_split(mix_, d_.MIX, scale, base, n_hc, iters, eps, split_, n, st))
        hc_split(mix_, d_.MIX, scale, base, n_hc, iters, eps, split_, n, st);
    };
    if (routes_[Route::FusedOps] && routes_[Route::F16Proj]) {
      fast::HcPreArgs a;
      a.fn = fn, a.X = X_, a.post = pending_, a.scale = scale, a.base = base, a.norm_w = norm_w;
      a.mix = mix_, a.split = split_, a.xin = out, a.normed = normed;
      a.n_tok = n, a.d = d_.D, a.n_hc = n_hc, a.iters = iters, a.norm_eps = rms_eps, a.hc_eps = eps;
      a.work = mv_work_, a.work_floats = kMvWork;
      a.split_later = split_br_->on() && n <= 2 && !prof_.on();
      if (d_.MIX == fast::hcp::kMix && d_.SPLIT == fast::hcp::kMix && fast::hc_pre(a, s_)) {
        pending_ = {};
        if (a.split_later) split_of_mix(split_br_->open(s_));  // off the critical path (SideBranch)
        return;
      }
      fast::HcPrefillArgs b;  // prefill: the same outputs, and the FP16 copy of normed that prep() returns
      b.fn = fn, b.X = X_, b.post = pending_, b.scale = scale, b.base = base, b.norm_w = norm_w, b.mix = mix_;
      b.split = split_, b.xin = out, b.normed = normed, b.xb = xb_, b.row_scale = flat_, b.n = n, b.d = d_.D;
      b.iters = iters, b.norm_eps = rms_eps, b.hc_eps = eps;
      if (small_prefill(n) && fold_post(n) && fast::hc_pre_prefill(b, s_)) {
        pending_ = {}, xb_of_ = normed;
        return;
      }
    }
    flush_post(n);
    norm_rows(X_, d_.HC, nullptr, flat_, d_.HC, n, d_.HC, rms_eps);
    mm(Route::F16Proj, fn, 0, d_.MIX, flat_, n, d_.HC, mix_, d_.MIX);
    if (!routes_[Route::FusedOps] ||
        !fast::hc_split_sum(mix_, d_.MIX, scale, base, n_hc, iters, eps, split_, X_, d_.D, out, n, s_)) {
      split_of_mix(s_);
      hc_weighted_sum(X_, split_, n_hc, d_.D, out, n, s_);
    }
    norm_rows(out, d_.D, norm_w, normed, d_.D, n, d_.D, rms_eps);
  }

  void attention_half(uint32_t il, int64_t pos0, int64_t n) {
    DLayer& L = layers_[il];
    const uint32_t r = c_.ratio(il);
    const double* freq = r ? freq_comp_ : freq_plain_;
    const float eps = float(c_.rms_eps);
    const bool official = opts_.numerics == Numerics::Official;
    const int n_rot = int(c_.n_rot);
    prof_.stage("hc", s_);
    hc_pre(L.hc_attn_fn, L.hc_attn_scale, L.hc_attn_base, L.attn_norm, n, xin_, an_);
    prof_.stage("attn.proj", s_);
    const uint16_t* an_b = prep(an_, n, d_.D, d_.D, {Route::DenseQ8, Route::F16Proj});
    float* kv = L.hist + L.n_raw * d_.HD;  // the chunk's raw rows follow the saved window
    const bool use_indexer = r == 4 && (pos0 + n) / 4 > static_cast<int64_t>(c_.idx_top_k);
    // Decode fork: the compressor chain (its projections of an_, then the compressed rows and slot states
    // of L.comp and L.idx) reads only an_ and writes only ckv_, cg_, ikv_, ig_, iw_, comp_tmp_ and the
    // layer's compressor state, none of which the q / kv path reads or writes; the join comes before the
    // first reader (the indexer's pick, else the attention core).
    const bool fork = r && forking(DecodeFork::kAttn, n);
    // and the indexer's queries (from qr_ alone, written by q_b; they write only iq_, which nothing reads
    // before the indexer's pick) beside norm+RoPE of the heads and the kv row
    const bool fork_idx = use_indexer && forking(DecodeFork::kIdx, n);
    if (fork) {
      fork_->open(s_);
      on_side([&] {
        compressor_proj(L, n, an_b);
        compress_rows(L, pos0, n, n_rot, eps, official);
      });
    }
    // Decode: q_a and kv in one launch, and q_a_norm applied inside q_b's product, which reads q_a's raw
    // rows from heads_ (free until the attention core) and writes the normed rows to qr_ for the indexer.
    const bool dq8 = routes_[Route::DenseQ8], fuse_qb = dq8 && routes_[Route::FusedOps] && n <= 2;
    float* const q_raw = fuse_qb ? heads_ : qr_;
    if (!dq8 || !fast::q8_decode_pair(L.q_a, d_.QL, q_raw, d_.QL, L.kv, d_.HD, kv, d_.HD, an_, n, d_.D, s_)) {
      mm(Route::DenseQ8, L.q_a, 0, d_.QL, an_, n, d_.D, q_raw, d_.QL, an_b);
      mm(Route::DenseQ8, L.kv, 0, d_.HD, an_, n, d_.D, kv, d_.HD, an_b);
    }
    if (r && !fork) compressor_proj(L, n, an_b);
    fast::Q8Act qn;
    qn.kind = fast::Q8Act::Kind::RmsNorm, qn.w = L.q_a_norm, qn.eps = eps, qn.out = qr_, qn.out_stride = d_.QL;
    if (!fuse_qb || !fast::q8_decode_act(L.q_b, d_.QD, q_raw, n, d_.QL, qn, q_, d_.QD, s_)) {
      norm_rows(q_raw, d_.QL, L.q_a_norm, qr_, d_.QL, n, d_.QL, eps);
      mm(Route::DenseQ8, L.q_b, 0, d_.QD, qr_, n, d_.QL, q_, d_.QD);
    }
    if (fork_idx) {
      if (fork) fork_->side_waits(s_);  // after the compressor chain, once q_b is done
      else fork_->open(s_);
      on_side([&] { indexer_query(L, pos0, n, n_rot, freq, official); });
    }
    const bool fused = routes_[Route::FusedOps];
    // the query heads and the cached kv row: one launch (each row as its own norm_rope_rows call)
    fast::NormRopeJob qj, kvj;
    qj.x = q_, qj.rows = n * d_.H, qj.rows_per_pos = int(d_.H);
    kvj.x = kv, kvj.rows = n, kvj.w = L.kv_a_norm, kvj.fp8 = official;
    if (!fused || !(small_prefill(n) ? fast::norm_rope_pair_prefill(qj, kvj, d_.HD, eps, n_rot, freq, pos0, s_)
                                      : fast::norm_rope_pair(qj, kvj, d_.HD, eps, n_rot, freq, pos0, pos_dev_, s_))) {
      norm_rows(q_, d_.HD, nullptr, q_, d_.HD, n * d_.H, d_.HD, eps);
      rope(q_, n, d_.QD, int(d_.H), d_.HD, n_rot, freq, pos0, 1, false, s_, pos_dev_);
      norm_rows(kv, d_.HD, L.kv_a_norm, kv, d_.HD, n, d_.HD, eps);
      rope(kv, n, d_.HD, 1, d_.HD, n_rot, freq, pos0, 1, false, s_, pos_dev_);
      finish(kv, n, d_.HD, d_.HD, n_rot, RowKind::Attention, official);
    }
    prof_.stage("attn.compress", s_);
    if (r && !fork) compress_rows(L, pos0, n, n_rot, eps, official);
    prof_.stage("attn.indexer", s_);
    if (use_indexer && !fork_idx) indexer_query(L, pos0, n, n_rot, freq, official);
    if (fork || fork_idx) fork_->join(s_);
    if (use_indexer) {
      const float wscale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d_.IHD * d_.NIH)));
      const fast::IndexerQueryPrep prep{n_rot, freq, official};
      if (routes_[Route::Attention] && fast::indexer_supported(int(d_.NIH), int(d_.IHD), n))
        fast::indexer_select(iq_, iw_, wscale, L.idx, int(d_.NIH), int(d_.IHD), pos0, n, 4, int(c_.idx_top_k),
                             idx_scratch_, d_.IDXCAP, idx_sel_, s_, pos_dev_, idx_fused(n, n_rot) ? &prep : nullptr);
      else
        indexer_select(iq_, iw_, wscale, L.idx, int(d_.NIH), int(d_.IHD), pos0, n, 4, int(c_.idx_top_k), idx_scratch_,
                       d_.IDXCAP, idx_sel_, s_);
    }
    prof_.stage("attn.core", s_);
    AttentionArgs a;
    a.q = q_, a.hist = L.hist, a.hist_pos0 = pos0 - L.n_raw, a.comp = L.comp, a.sel = use_indexer ? idx_sel_ : nullptr;
    a.top_k = int(c_.idx_top_k), a.sinks = L.sinks, a.out = heads_, a.pos0 = pos0, a.n = n, a.n_head = int(d_.H);
    a.head_dim = int(d_.HD), a.n_swa = int(c_.n_swa), a.ratio = int(r);
    a.pos_dev = pos_dev_, a.hist_lag = L.n_raw;
    a.out_rope_freq = freq, a.out_rope_n_rot = n_rot;
    bool roped = false;
    if (routes_[Route::Attention] && fast::attention_supported(a))
      roped = fast::sink_attention(a, att_scratch_, d_.MAXROWS, s_, d_.C * d_.H * d_.MAXROWS);
    else sink_attention(a, att_scratch_, d_.MAXROWS, s_);
    if (!roped && (!small_prefill(n) || !fast::rope_prefill(heads_, n, d_.QD, int(d_.H), d_.HD, n_rot, freq, pos0, 1,
                                                            true, s_)))
      rope(heads_, n, d_.QD, int(d_.H), d_.HD, n_rot, freq, pos0, 1, true, s_, pos_dev_);
    prof_.stage("attn.out", s_);
    const int64_t GD = c_.group_dim();
    // At decode all groups in one launch: item t * groups + g is token t's group g (rows of heads_ and
    // low_ are contiguous by group).
    const bool one_launch = routes_[Route::OutA] && n <= kSmallN && d_.QD == GD * c_.n_out_group &&
                            d_.OL == int64_t(c_.o_lora) * c_.n_out_group &&
                            fast::matvec_items(L.out_a, c_.o_lora, group_ids_, 1, heads_, GD, n * c_.n_out_group, low_,
                                               c_.o_lora, s_);
    for (uint32_t g = 0; !one_launch && g < c_.n_out_group; ++g)
      mm(Route::OutA, L.out_a, int64_t(g) * c_.o_lora, c_.o_lora, heads_ + g * GD, n, d_.QD, low_ + g * c_.o_lora, d_.OL);
    mm(Route::DenseQ8, L.out_b, 0, d_.D, low_, n, d_.OL, out_, d_.D);
    if (fold_post(n)) {  // out_ is read by nothing else before the FFN half's hc_pre
      pending_.kind = fast::HcPost::Kind::Plain, pending_.f = out_, pending_.split = split_;
    } else {
      split_br_->join(s_);
      hc_post(out_, X_, split_, int(c_.n_hc), d_.D, n, s_);
    }

    // Keep the newest n_swa raw rows at the front of the window buffer.
    const int64_t total = L.n_raw + n, keep = std::min<int64_t>(c_.n_swa, total);
    if (keep < total) {  // only this layer's next pass reads the window: off the main chain (decode_fork.h)
      const cudaStream_t ws = window_br_->on() ? window_br_->open(s_) : s_;
      FS_CUDA_CHECK(cudaMemcpyAsync(hist_tmp_, L.hist + (total - keep) * d_.HD, f32b(keep * d_.HD),
                                    cudaMemcpyDeviceToDevice, ws));
      FS_CUDA_CHECK(cudaMemcpyAsync(L.hist, hist_tmp_, f32b(keep * d_.HD), cudaMemcpyDeviceToDevice, ws));
    }
    L.n_raw = keep;
  }

  void ffn_half(uint32_t il, int64_t n) {
    DLayer& L = layers_[il];
    const float lim = c_.swiglu_clamp[il];
    prof_.stage("hc", s_);
    hc_pre(L.hc_ffn_fn, L.hc_ffn_scale, L.hc_ffn_base, L.ffn_norm, n, xin_, fn_);
    // Decode fork: the shared expert reads only fn_ and writes only SG_, SU_ and shared_, which the
    // router, route and routed experts never touch; the join comes before the slot sum reads shared_.
    const bool fork = c_.n_expert_shared && forking(DecodeFork::kFfn, n);
    if (fork) {
      fork_->open(s_);
      on_side([&] {
        shared_gate_up(L, n, nullptr);  // one token: no FP16 copy of fn_ (prep)
        shared_down(L, n, lim);
      });
    }
    prof_.stage("ffn.router", s_);
    const uint16_t* fn_b = prep(fn_, n, d_.D, d_.D, {Route::DenseQ8, Route::F16Proj, Route::Moe});
    const int32_t* hash = c_.is_hash_layer(il) ? L.tid2eid : nullptr;
    if (!router_one_launch(L, n, hash)) {
      mm(Route::F16Proj, L.gate_inp, 0, d_.E, fn_, n, d_.D, rl_, d_.E, fn_b);
      if (routes_[Route::FusedOps] && fast::route_supported(int(d_.E), int(d_.K)))
        fast::route(rl_, L.exp_probs_b, hash, tok_, n, int(d_.E), int(d_.K), c_.expert_weights_norm,
                    float(c_.expert_weights_scale), sel_, wsel_, s_);
      else
        route(rl_, L.exp_probs_b, hash, tok_, n, int(d_.E), int(d_.K), c_.expert_weights_norm,
              float(c_.expert_weights_scale), sel_, wsel_, s_);
    }
    const int64_t items = n * d_.K;
    // The shared expert first: its gate/up read the same FP16 copy of fn_ as the routed gate/up.
    // (the down projections overwrite that copy, so they come after every gate/up).
    prof_.stage("ffn.shared", s_);
    if (c_.n_expert_shared && !fork) shared_gate_up(L, n, fn_b);
    prof_.stage("ffn.moe", s_);
    routed_experts(L, n, items, lim, fn_b);
    prof_.stage("ffn.shared", s_);
    if (c_.n_expert_shared && !fork) shared_down(L, n, lim);
    if (fork) fork_->join(s_);
    const float* shared = c_.n_expert_shared ? shared_ : nullptr;
    prof_.stage("ffn.sum", s_);
    if (fold_post(n)) {  // slot_ and shared_ are read by nothing else before the next hc_pre
      pending_.kind = fast::HcPost::Kind::Slots, pending_.f = slot_, pending_.shared = shared;
      pending_.k = int(d_.K), pending_.split = split_;
      return;
    }
    split_br_->join(s_);
    if (routes_[Route::FusedOps] && fast::sum_slots_post(slot_, shared, int(d_.K), X_, split_, int(c_.n_hc), d_.D, n, s_))
      return;
    sum_slots(slot_, shared, n, int(d_.K), d_.D, out_, s_);
    hc_post(out_, X_, split_, int(c_.n_hc), d_.D, n, s_);
  }

  // Decode (FLASHSTAR_ROUTER_FUSED=1): the router's product and its picks in one launch, where both routes
  // would take the fast kernels (fast_matvec_float.h: the same logits, picks and weights).
  bool router_one_launch(const DLayer& L, int64_t n, const int32_t* hash) {
    if (!fast::router_fused() || !routes_[Route::F16Proj] || !routes_[Route::FusedOps] || n > kSmallN ||
        !fast::route_supported(int(d_.E), int(d_.K)))
      return false;
    fast::RouterArgs r;
    r.bias = L.exp_probs_b, r.tid2eid = hash, r.tokens = tok_, r.k = int(d_.K), r.norm = c_.expert_weights_norm;
    r.scale = float(c_.expert_weights_scale), r.sel = sel_, r.weights = wsel_;
    return fast::float_matvec_route(L.gate_inp, fn_, n, d_.D, rl_, r, s_, mv_work_, kMvWork);
  }

  // The shared expert's gate and up rows (SG_, SU_) of fn_, and its down product (shared_).
  void shared_gate_up(const DLayer& L, int64_t n, const uint16_t* fn_b) {
    if (!routes_[Route::DenseQ8] ||
        !fast::q8_decode_pair(L.gate_sh, d_.FF, SG_, d_.FF, L.up_sh, d_.FF, SU_, d_.FF, fn_, n, d_.D, s_)) {
      mm(Route::DenseQ8, L.gate_sh, 0, d_.FF, fn_, n, d_.D, SG_, d_.FF, fn_b);
      mm(Route::DenseQ8, L.up_sh, 0, d_.FF, fn_, n, d_.D, SU_, d_.FF, fn_b);
    }
  }
  void shared_down(const DLayer& L, int64_t n, float lim) {
    // Decode: the swiglu inside the down product's activation digits (SG_ is read by nothing after).
    fast::Q8Act sw;
    sw.kind = fast::Q8Act::Kind::Swiglu, sw.lim = lim, sw.up = SU_, sw.up_stride = d_.FF;
    const bool dq8 = routes_[Route::DenseQ8];
    if (!dq8 || !fast::q8_decode_act(L.down_sh, d_.D, SG_, n, d_.FF, sw, shared_, d_.D, s_)) {
      // prefill: the SwiGLU writes the down product's FP16 copy too (bitwise to_f16's)
      const bool f16 = small_prefill(n) && dq8 && fast::swiglu_f16(SG_, SU_, n, d_.FF, lim, nullptr, SG_, xb_, s_);
      if (!f16) swiglu(SG_, SU_, n, d_.FF, lim, nullptr, s_);
      mm(Route::DenseQ8, L.down_sh, 0, d_.D, SG_, n, d_.FF, shared_, d_.D, f16 ? xb_ : nullptr);
    }
  }

  void routed_experts(const DLayer& L, int64_t n, int64_t items, float lim, const uint16_t* fn_b) {
    const bool grouped = routes_[Route::Moe] && n > kSmallN && fn_b && fast::gemm_supports(L.gate_exps) &&
                         fast::gemm_supports(L.up_exps) && fast::gemm_supports(L.down_exps) &&
                         plan_.max_tiles <= 65535;
    if (grouped) {
      const int64_t D8 = (d_.D + 7) / 8 * 8, F8 = (d_.FF + 7) / 8 * 8;
      fast::moe_plan(sel_, items, static_cast<int>(d_.E), plan_, s_);
      fast::gemm_grouped(L.gate_exps, d_.FF, plan_, fn_b, D8, n, true, int32_t(d_.K), false, G_, d_.FF, s_);
      fast::gemm_grouped(L.up_exps, d_.FF, plan_, fn_b, D8, n, true, int32_t(d_.K), false, U_, d_.FF, s_);
      fast::moe_gather(wsel_, plan_, items, wplan_, s_);
      // With the Q2_K token sums precomputed (gemm_set_group_q2k_sums) the SwiGLU's FP16 copy writes them
      // too (bitwise group_token_sums'); otherwise the down product's call forms them from xb_.
      float* const tsum = fast::gemm_group_q2k_sums() && F8 == d_.FF ? tsum_ : nullptr;
      const bool ready = prefill_small_ && fast::swiglu_f16(G_, U_, items, d_.FF, lim, wplan_, nullptr, xb_, s_, tsum);
      if (!ready) {
        swiglu(G_, U_, items, d_.FF, lim, wplan_, s_);
        fast::to_f16(G_, items, d_.FF, d_.FF, xb_, s_);
      }
      fast::gemm_grouped(L.down_exps, d_.D, plan_, xb_, F8, items, false, 1, true, slot_, d_.D, s_, tsum_,
                         ready && tsum);
      return;
    }
    auto items_mm = [&](const DMat& W, int64_t rows, int32_t div, const float* X, int64_t xs, float* Y, int64_t ys) {
      if (routes_[Route::Moe] && fast::matvec_items(W, rows, sel_, div, X, xs, items, Y, ys, s_, mv_work_, kMvWork)) return;
      matmul_items(W, rows, sel_, div, X, xs, items, Y, ys, s_);
    };
    fast::expert_gate_up_swiglu(routes_[Route::Moe], L.gate_exps, L.up_exps, d_.FF, sel_, int32_t(d_.K), fn_, d_.D,
                                items, lim, wsel_, G_, U_, s_, mv_work_, kMvWork);
    items_mm(L.down_exps, d_.D, 1, G_, d_.FF, slot_, d_.D);
  }

  void run_chunk(std::span<const int32_t> toks, float* all_logits) {
    const int64_t n = static_cast<int64_t>(toks.size());
    const int64_t pos0 = static_cast<int64_t>(tokens_.size());
    if (graph_eligible(n)) {
      run_graph(toks[0], pos0, all_logits);
    } else {
      std::vector<float> last(c_.n_vocab);
      FS_CUDA_CHECK(cudaMemcpyAsync(tok_, toks.data(), toks.size() * 4, cudaMemcpyHostToDevice, s_));
      forward(n, pos0, all_logits, last.data(), false);
      logits_ = std::move(last);
    }
    tokens_.insert(tokens_.end(), toks.begin(), toks.end());
  }

  // The forward pass of the n tokens in tok_: embedding, layers, output head. Logits of every row go to
  // all_logits (when set), the last row's to `last`. Under capture nothing waits for the device.
  void forward(int64_t n, int64_t pos0, float* all_logits, float* last, bool capturing) {
    prof_.set_prefix(n == 1 ? "dec " : "pre ");
    prof_.stage("embed", s_);
    pending_ = {}, xb_of_ = nullptr;  // (a pass cut short by an error) the embedding rewrites X_
    fork_->abandon();
    split_br_->abandon();
    window_br_->abandon();
    embed(embd_, tok_, n, int(c_.n_hc), X_, s_);
    for (uint32_t il = 0; il < c_.n_layer; ++il) {
      attention_half(il, pos0, n);
      ffn_half(il, n);
    }
    prof_.stage("ffn.sum", s_);
    flush_post(n);  // the head reads X_
    // Output head over the requested rows, kHeadRows at a time.
    const int64_t first = all_logits ? 0 : n - 1;
    prof_.stage("head", s_);
    for (int64_t r0 = first; r0 < n; r0 += kHeadRows) {
      const int64_t m = std::min<int64_t>(kHeadRows, n - r0);
      const float* Xr = X_ + r0 * d_.HC;
      norm_rows(Xr, d_.HC, nullptr, flat_, d_.HC, m, d_.HC, float(c_.rms_eps));
      mm(Route::F16Proj, out_hc_fn_, 0, d_.NHC, flat_, m, d_.HC, head_mix_, d_.NHC);
      hc_head(Xr, head_mix_, out_hc_scale_, out_hc_base_, int(c_.n_hc), d_.D, float(c_.hc_eps), out_, m, s_);
      norm_rows(out_, d_.D, out_norm_, fn_, d_.D, m, d_.D, float(c_.rms_eps));
      mm(Route::DenseQ8, output_, 0, d_.V, fn_, m, d_.D, head_logits_, d_.V);
      if (r0 + m == n) window_br_->join(s_);  // before the pass's last copy and wait: the next pass writes it
      if (all_logits && !capturing)
        FS_CUDA_CHECK(cudaMemcpyAsync(all_logits + r0 * d_.V, head_logits_, f32b(m * d_.V), cudaMemcpyDeviceToHost, s_));
      if (r0 + m == n)
        FS_CUDA_CHECK(cudaMemcpyAsync(last, head_logits_ + (m - 1) * d_.V, f32b(d_.V), cudaMemcpyDeviceToHost, s_));
      if (!capturing) FS_CUDA_CHECK(cudaStreamSynchronize(s_));  // the head buffer is reused by the next pass
    }
    prof_.stop(s_);
    prof_.collect();
  }

  // A decode step as one CUDA graph. The graph reads the position and the token from pinned host memory
  // (copied in by its first nodes), so one capture serves every step with the same shape: the windows
  // are full (all raw rows kept) and the same layers close a compressed row and use the indexer. The
  // kernels and their order are those of the plain launch path, so the logits are bitwise the same.
  bool graph_eligible(int64_t n) const {
    if (n != 1 || !graphs_on_ || !graph_kernels_ || prof_.on() || !routes_[Route::Attention] ||
        !routes_[Route::FusedOps])
      return false;
    for (const DLayer& L : layers_)
      if (L.n_raw != static_cast<int64_t>(c_.n_swa)) return false;
    return true;
  }
  void run_graph(int32_t tok, int64_t pos0, float* all_logits) {
    const uint64_t key = plan::decode_graph_key(ratios_, c_.idx_top_k, pos0);
    *h_pos_ = pos0;
    *h_tok_ = tok;
    auto enqueue = [&] {
      pos_dev_ = d_pos_.get();
      FS_CUDA_CHECK(cudaMemcpyAsync(d_pos_.get(), h_pos_, sizeof(int64_t), cudaMemcpyHostToDevice, s_));
      FS_CUDA_CHECK(cudaMemcpyAsync(tok_, h_tok_, sizeof(int32_t), cudaMemcpyHostToDevice, s_));
      forward(1, pos0, nullptr, h_logits_, true);
      pos_dev_ = nullptr;
    };
    // An open fork's side stream joins the capture's origin first: the capture then ends cleanly (an
    // unjoined side stream would leave the end failing and the stream's capture state unclear).
    auto unwind = [&] {
      pos_dev_ = nullptr;
      join_or_abandon(s_, fork_.get(), {split_br_.get(), window_br_.get()});
    };
    const cudaGraphExec_t e = graphs_.get(key, s_, pdl_on_, main_priority_ != 0, enqueue, unwind);
    FS_CUDA_CHECK(cudaGraphLaunch(e, s_));
    FS_CUDA_CHECK(cudaStreamSynchronize(s_));
    logits_.assign(h_logits_, h_logits_ + c_.n_vocab);
    if (all_logits) std::memcpy(all_logits, h_logits_, f32b(c_.n_vocab));
  }

  const Model& m_;
  const ModelConfig& c_;
  Dims d_;
  RouteSet routes_;
  StageProfiler prof_;
  cudaStream_t s_ = nullptr;  // the session's stream; the fork's side stream while on_side runs
  DeviceArray<uint16_t> xb_buf_;
  uint16_t* xb_ = nullptr;
  DeviceArray<uint8_t> cublas_buf_;            // declared before cublas_, which uses it until destroyed
  std::unique_ptr<fast::CublasGemm> cublas_;  // null: the cuBLASLt path is off
  fast::MoePlan plan_{};
  float* wplan_ = nullptr;
  float* tsum_ = nullptr;
  float* comp_tmp_ = nullptr;
  float* mv_work_ = nullptr;    // the current lane's split workspace: the main lane's, or side_work_ in on_side
  float* side_work_ = nullptr;
  std::unique_ptr<DecodeFork> fork_;  // the decode fork's side stream (FLASHSTAR_DECODE_FORK)
  std::unique_ptr<SideBranch> split_br_;   // the hyper-connection split's branch (FLASHSTAR_HC_SPLIT_SIDE)
  std::unique_ptr<SideBranch> window_br_;  // the window buffers' shifts (FLASHSTAR_WINDOW_SIDE)
  int main_priority_ = 0;             // s_'s priority (DecodeFork::main_priority)
  DeviceArray<uint8_t> weights_, vectors_;
  DeviceArray<float> state_, scratch_;
  DeviceArray<int32_t> ints_;
  std::vector<DLayer> layers_;
  DMat out_hc_fn_, output_, embd_;
  const float *out_hc_scale_ = nullptr, *out_hc_base_ = nullptr, *out_norm_ = nullptr;
  const double *freq_plain_ = nullptr, *freq_comp_ = nullptr;
  float *X_, *flat_, *mix_, *split_, *xin_, *an_, *out_, *fn_, *shared_, *qr_, *q_, *heads_, *ckv_, *cg_, *ikv_, *ig_;
  float *iq_, *iw_, *low_, *rl_, *wsel_, *G_, *U_, *slot_, *SG_, *SU_, *idx_scratch_, *att_scratch_, *head_logits_;
  float *head_mix_, *hist_tmp_;
  int32_t *sel_, *tok_, *idx_sel_, *group_ids_ = nullptr;
  // decode graphs: one per step shape (graph_key); the position and token they read, the logits they write
  bool graphs_on_ = true, graph_kernels_ = false, pdl_on_ = pdl_requested();
  const bool prefill_small_ = fast::prefill_small_requested();  // FLASHSTAR_PREFILL_SMALL=0: the old kernels
  const float* xb_of_ = nullptr;  // the activations xb_ holds the FP16 copy of, made ahead of prep()
  std::vector<uint32_t> ratios_;  // the distinct compression ratios of the layers
  fast::HcPost pending_;          // the post the next hc_pre applies (decode), or none
  DecodeGraphs graphs_;
  DeviceArray<int64_t> d_pos_;
  const int64_t* pos_dev_ = nullptr;  // set while a graph is captured
  int64_t* h_pos_ = nullptr;
  int32_t* h_tok_ = nullptr;
  float* h_logits_ = nullptr;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_;
};

}  // namespace

std::unique_ptr<Session> make_cuda_session(const Model& model, const SessionOptions& opts) {
  kernel_trace_start();  // FLASHSTAR_KTRACE: before the session's first kernel and graph
  return std::make_unique<CudaSession>(model, opts);
}

}  // namespace flashstar::cuda
