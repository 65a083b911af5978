// The model's tensor data to the device (weight_upload.h).
#include "cuda/weight_upload.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace flashstar::cuda {

void upload_weights(const gguf::File& f, DeviceArray<uint8_t>& dst, cudaStream_t s, bool verbose) {
  const size_t total = f.size() - f.data_offset();
  dst.resize(total);
  constexpr size_t kStage = 256ull << 20;
  void* stage[2];
  cudaEvent_t done[2];
  for (int i = 0; i < 2; ++i) {
    FS_CUDA_CHECK(cudaHostAlloc(&stage[i], kStage, cudaHostAllocDefault));
    FS_CUDA_CHECK(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming));
  }
  const bool progress = verbose || total > (2ull << 30);
  size_t off = 0;
  for (int k = 0; off < total; ++k) {
    const int b = k & 1;
    const size_t n = std::min(kStage, total - off);
    FS_CUDA_CHECK(cudaEventSynchronize(done[b]));  // the copy that last used this stage has finished
    std::memcpy(stage[b], f.base() + f.data_offset() + off, n);
    FS_CUDA_CHECK(cudaMemcpyAsync(dst.get() + off, stage[b], n, cudaMemcpyHostToDevice, s));
    FS_CUDA_CHECK(cudaEventRecord(done[b], s));
    off += n;
    if (progress)
      std::fprintf(stderr, "\rloading weights to the GPU: %5.1f%% (%.1f / %.1f GiB)", 100.0 * off / total,
                   off / double(1ull << 30), total / double(1ull << 30));
  }
  FS_CUDA_CHECK(cudaStreamSynchronize(s));
  if (progress) std::fprintf(stderr, "\n");
  for (int i = 0; i < 2; ++i) {
    cudaFreeHost(stage[i]);
    cudaEventDestroy(done[i]);
  }
}

}  // namespace flashstar::cuda
