#include "cuda/stream_lanes.h"

#include "common/error.h"

namespace flashstar::cuda {
namespace {

struct ForkState {
  bool open = false;
  cudaStream_t main = nullptr, side = nullptr;
};
thread_local ForkState t_fork;

}  // namespace

int ticket_lane(cudaStream_t s) {
  if (!t_fork.open) return 0;  // one stream at a time: every launch is ordered after the previous one
  if (s == t_fork.side) return 1;
  if (s == t_fork.main) return 0;
  fail("internal: a ticket kernel launched on a stream outside the open decode fork");
}

TicketFork::TicketFork(cudaStream_t main, cudaStream_t side) {
  if (t_fork.open) fail("internal: decode forks do not nest");
  if (main == side) fail("internal: a decode fork needs two distinct streams");
  t_fork = {true, main, side};
}

TicketFork::~TicketFork() { t_fork = {}; }

}  // namespace flashstar::cuda
