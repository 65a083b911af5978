// A decode step's independent chains as parallel branches (FLASHSTAR_DECODE_FORK).
//
// One token's step is a chain of latency-bound launches (~5 us of ramp and tail each). Where a chain of
// kernels depends only on what the main stream has already computed and nothing on the main stream
// reads its outputs until a later point, the session runs it on a side stream between open() and
// join(): open() makes the side stream wait for everything enqueued on the main stream so far, join()
// makes the main stream wait for everything enqueued on the side stream. Under stream capture the two
// become the decode graph's fork and join edges; in plain launches they are ordinary event waits. The
// kernels and their inputs are those of the serial order, so the results are bitwise the same; only
// the schedule changes.
//
// Shared state while a fork is open: every process-wide ticket array has a copy per stream
// (stream_lanes.h, set up here), and the side branch uses its own split-product workspace (the
// session's side lane). Forks do not nest, and every open() is followed by join() or abandon().
#pragma once
#include <cuda_runtime.h>

#include <initializer_list>
#include <optional>

#include "cuda/stream_lanes.h"

namespace flashstar::cuda {

// A second stream and the two events that fork it from a main stream and join it back: the edges of the
// decode graph's parallel branches (DecodeFork, SideBranch). Off (no stream) until create().
class SideStream {
 public:
  SideStream() = default;
  ~SideStream();
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;
  void create();
  cudaStream_t get() const { return s_; }
  void fork_from(cudaStream_t main);  // the side stream waits for everything enqueued on main so far
  void join_to(cudaStream_t main);    // main waits for everything enqueued on the side stream so far

 private:
  cudaStream_t s_ = nullptr;
  cudaEvent_t fork_ev_ = nullptr, join_ev_ = nullptr;
};

class DecodeFork {
 public:
  // The chains the switch forks: unset attn,idx (the default), 0 none, 1 all, else a comma-separated
  // list of attn (the compressor chain), idx (the indexer's queries) and ffn (the shared expert).
  enum Part : unsigned { kAttn = 1, kFfn = 2, kIdx = 4 };
  static unsigned requested();
  // FLASHSTAR_DECODE_FORK_PRIO=1 (default 0, an A/B switch): the main stream, whose branch is the longer
  // one in both halves, gets the device's greatest stream priority and the decode graph keeps it per node
  // (cudaGraphInstantiateFlagUseNodePriority), so the block scheduler serves the critical path first when
  // both branches have blocks waiting. 0 when the fork is off.
  static int main_priority(unsigned parts);

  explicit DecodeFork(unsigned parts);
  ~DecodeFork();
  DecodeFork(const DecodeFork&) = delete;
  DecodeFork& operator=(const DecodeFork&) = delete;

  bool on(Part p) const { return (parts_ & p) != 0; }
  cudaStream_t side() const { return side_.get(); }
  bool is_open() const { return lanes_.has_value(); }
  void open(cudaStream_t main);
  void join(cudaStream_t main);
  // Inside an open fork: what is enqueued on the side stream from now on also waits for everything
  // enqueued on the main stream so far (the side branch goes on with work that needs the main's results).
  void side_waits(cudaStream_t main);
  void abandon() { lanes_.reset(); }  // a pass cut short by an error (the streams are synchronized by the caller)

 private:
  unsigned parts_ = 0;
  SideStream side_;
  cudaEvent_t mid_ev_ = nullptr;
  std::optional<TicketFork> lanes_;
};

// A branch of one kind of work on a side stream of its own, whose results only a later point reads, so
// the main stream's chain does not wait for it. Its work takes no ticket (stream_lanes.h), so the branch
// needs no ticket lane and may stay open across a DecodeFork. Two are used:
// - the hyper-connection split of a decode half-layer (FLASHSTAR_HC_SPLIT_SIDE, default 1; =0 off). hc_pre's
//   last block otherwise waits for the split's Sinkhorn walk (39 dependent normalisations, its longest
//   chain), whose result only the next hc_pre reads: with split_later (fast_hc_pre.h) the session enqueues
//   fast::hc_split of the stored mix on this branch after hc_pre and joins it before the next reader;
// - the attention window buffer's shift (FLASHSTAR_WINDOW_SIDE, default 1; =0 off): once the window is full,
//   each pass copies the newest rows of a layer's raw window to its front (two device copies through a
//   scratch buffer). Only that layer's next pass reads the buffer, so every layer's copies go on this
//   branch after the attention output, and the branch joins once at the end of the pass. On the main
//   stream the two copy nodes broke the programmatic chain from the attention output's product to the
//   next hc_pre (copies take full edges) and took ~3 us a layer on it. The copies of all layers share the
//   scratch buffer: they run in layer order on the one branch stream.
// stacking: open() may be called again before join() (the newer work also waits for main's newer work).
class SideBranch {
 public:
  SideBranch(bool on, bool stacking);

  bool on() const { return side_.get() != nullptr; }
  // The branch's stream, made to wait for everything enqueued on main so far.
  cudaStream_t open(cudaStream_t main);
  // main waits for everything enqueued on the branch; nothing when it is not open.
  void join(cudaStream_t main);
  bool is_open() const { return open_; }
  void abandon() { open_ = false; }  // a pass cut short by an error (the caller synchronizes the streams)

 private:
  SideStream side_;
  bool stacking_ = false, open_ = false;
};
// A capture cut short by an error: every open branch joins main (so the capture can end), or, where the
// join itself fails, is dropped. fork may be null.
void join_or_abandon(cudaStream_t main, DecodeFork* fork, std::initializer_list<SideBranch*> branches);

bool split_branch_requested();   // FLASHSTAR_HC_SPLIT_SIDE
bool window_branch_requested();  // FLASHSTAR_WINDOW_SIDE

}  // namespace flashstar::cuda
