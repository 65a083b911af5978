// The engine's session contract, the same for every backend: feed tokens (prefill in chunks or one at
// a time), get next-token logits, save and restore the state.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "engine/kv_state.h"
#include "engine/routes.h"
#include "model/weights.h"

namespace flashstar {

// Official numerics simulate what the released model does (FP8 KV, FP4 indexer, f16 cache rows);
// clean numerics is the plain math of the transformers reference.
enum class Numerics { Official, Clean };

// Discrete choices whose runner-up was (nearly) as good as the last pick: an indexer top-k boundary or
// an MoE routing boundary. A rounding-level change can flip such a choice and move that token's logits a
// lot, so comparisons between implementations trace every large difference to one of these.
struct NearTie {
  int64_t pos;
  uint32_t layer;
  const char* kind;  // "indexer", "router", or a rounding of a cached row / indexer query (rounding_margin.h)
  float last_in, first_out;  // score of the last selected and of the best rejected candidate; for a
                             // rounding, the scaled value and the boundary it was nearest to
  int32_t index = -1;        // rounding: the element of the row (for a block scale, the block's first)
  float scale = 0;           // rounding: the magnitude its margin is measured against (0: the larger score)
};

class TieLog {
 public:
  explicit TieLog(double rel_gap = 1e-4) : rel_gap_(rel_gap) {}
  // Records the boundary if the relative gap is within the threshold. Thread-safe.
  void consider(int64_t pos, uint32_t layer, const char* kind, float last_in, float first_out, int32_t index = -1);
  // Records a rounding of magnitude `value` whose distance to `boundary` is below kRoundingGap times
  // `magnitude`: the largest value sharing its scale (an FP8/FP4 block, or the row's rope part), because
  // summation-order noise is relative to the values a row was computed from, not to a small element.
  void rounding(int64_t pos, uint32_t layer, const char* kind, double value, double boundary, double magnitude,
                int32_t index);
  // Summation-order differences between backends are ~1e-7 of that magnitude, so a rounding that flips
  // between them had a margin far below this; a looser bound would log most cache rows.
  static constexpr double kRoundingGap = 1e-5;
  std::vector<NearTie> sorted() const;  // by position, then layer

 private:
  double rel_gap_;
  mutable std::mutex mu_;
  std::vector<NearTie> ties_;
};

struct SessionOptions {
  uint32_t ctx = 32768;   // maximum tokens the session may hold
  uint32_t chunk = 4096;  // prefill chunk size (results do not depend on it)
  Numerics numerics = Numerics::Official;
  TieLog* ties = nullptr;  // optional: collect near-ties (slower; CPU backend)
  bool verbose = false;    // print the memory plan and load progress
  RouteSet routes;         // GPU fast routes (ignored by the CPU backend)
};

class Session {
 public:
  virtual ~Session() = default;
  virtual const char* backend_name() const = 0;

  // Appends tokens. When all_logits is non-null it receives [tokens.size()][vocab] rows: row i is the
  // logits after tokens[0..i] of this call. The last row is always kept (last_logits()).
  virtual void eval(std::span<const int32_t> tokens, float* all_logits) = 0;
  void decode(int32_t token) { eval(std::span<const int32_t>(&token, 1), nullptr); }

  virtual void reset() = 0;
  virtual std::string save() const = 0;
  virtual void load(const std::string& snapshot) = 0;

  virtual const std::vector<int32_t>& tokens() const = 0;
  virtual const std::vector<float>& last_logits() const = 0;
  const SessionOptions& options() const { return opts_; }

 protected:
  SessionOptions opts_;
};

std::unique_ptr<Session> make_cpu_session(const Model& model, const SessionOptions& opts);

}  // namespace flashstar
