#include "cuda/decode_fork.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "common/error.h"
#include "cuda/cuda_util.h"

namespace flashstar::cuda {

unsigned DecodeFork::requested() {
  // Default: the attention half's chains (the FFN's shared-expert branch gained less on the H200).
  const char* v = std::getenv("FLASHSTAR_DECODE_FORK");
  if (!v || !*v) return kAttn | kIdx;
  if (std::strcmp(v, "0") == 0) return 0;
  if (std::strcmp(v, "1") == 0 || std::strcmp(v, "all") == 0) return kAttn | kIdx | kFfn;
  // A comma list of parts; anything else is refused rather than read as some other set of forks.
  unsigned parts = 0;
  const std::string list(v);
  for (size_t b = 0; b <= list.size();) {
    const size_t e = std::min(list.find(',', b), list.size());
    const std::string name = list.substr(b, e - b);
    if (name == "attn") parts |= kAttn;
    else if (name == "idx") parts |= kIdx;
    else if (name == "ffn") parts |= kFfn;
    else fail("FLASHSTAR_DECODE_FORK=%s: expected 0, 1 (all) or a comma list of attn, idx, ffn", v);
    b = e + 1;
  }
  return parts;
}

int DecodeFork::main_priority(unsigned parts) {
  const char* v = std::getenv("FLASHSTAR_DECODE_FORK_PRIO");
  if (!parts || !v || std::strcmp(v, "1") != 0) return 0;
  int least = 0, greatest = 0;
  FS_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  return greatest;
}

void SideStream::create() {
  FS_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
  FS_CUDA_CHECK(cudaEventCreateWithFlags(&fork_ev_, cudaEventDisableTiming));
  FS_CUDA_CHECK(cudaEventCreateWithFlags(&join_ev_, cudaEventDisableTiming));
}

SideStream::~SideStream() {
  if (fork_ev_) cudaEventDestroy(fork_ev_);
  if (join_ev_) cudaEventDestroy(join_ev_);
  if (s_) cudaStreamDestroy(s_);
}

// The event's state is taken at the wait, so one event serves every fork of the step.
void SideStream::fork_from(cudaStream_t main) {
  FS_CUDA_CHECK(cudaEventRecord(fork_ev_, main));
  FS_CUDA_CHECK(cudaStreamWaitEvent(s_, fork_ev_, 0));
}

void SideStream::join_to(cudaStream_t main) {
  FS_CUDA_CHECK(cudaEventRecord(join_ev_, s_));
  FS_CUDA_CHECK(cudaStreamWaitEvent(main, join_ev_, 0));
}

DecodeFork::DecodeFork(unsigned parts) : parts_(parts) {
  if (!parts_) return;  // nothing to fork: no second stream
  side_.create();
  FS_CUDA_CHECK(cudaEventCreateWithFlags(&mid_ev_, cudaEventDisableTiming));
}

DecodeFork::~DecodeFork() {
  if (mid_ev_) cudaEventDestroy(mid_ev_);
}

void DecodeFork::open(cudaStream_t main) {
  if (!side_.get()) fail("internal: a decode fork opened with the fork switched off");
  if (lanes_) fail("internal: decode forks do not nest");
  side_.fork_from(main);
  lanes_.emplace(main, side_.get());
}

void DecodeFork::side_waits(cudaStream_t main) {
  if (!lanes_) fail("internal: a decode fork's side branch waits outside the fork");
  FS_CUDA_CHECK(cudaEventRecord(mid_ev_, main));
  FS_CUDA_CHECK(cudaStreamWaitEvent(side_.get(), mid_ev_, 0));
}

void DecodeFork::join(cudaStream_t main) {
  if (!lanes_) fail("internal: a decode fork joined without being opened");
  side_.join_to(main);
  lanes_.reset();
}

bool split_branch_requested() { return env_choice("FLASHSTAR_HC_SPLIT_SIDE", 0, 1, 1) == 1; }
bool window_branch_requested() { return env_choice("FLASHSTAR_WINDOW_SIDE", 0, 1, 1) == 1; }

SideBranch::SideBranch(bool on, bool stacking) : stacking_(stacking) {
  if (on) side_.create();
}

cudaStream_t SideBranch::open(cudaStream_t main) {
  if (!side_.get()) fail("internal: a side branch opened with its switch off");
  if (open_ && !stacking_) fail("internal: a side branch opened twice without a join");
  side_.fork_from(main);
  open_ = true;
  return side_.get();
}

void SideBranch::join(cudaStream_t main) {
  if (!open_) return;
  side_.join_to(main);
  open_ = false;
}

void join_or_abandon(cudaStream_t main, DecodeFork* fork, std::initializer_list<SideBranch*> branches) {
  if (fork && fork->is_open()) {
    try {
      fork->join(main);
    } catch (...) {
      fork->abandon();
    }
  }
  for (SideBranch* b : branches) {
    try {
      b->join(main);
    } catch (...) {
      b->abandon();
    }
  }
}

}  // namespace flashstar::cuda
