// Uploading the model file's tensor data (everything after the GGUF header) to one device array: two
// pinned 256 MiB stages in turn, the host copy into one overlapping the device copy of the other, a
// progress line when verbose or above 2 GiB. (The CUDA session's; in its own file to keep that one short.)
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cuda_util.h"
#include "gguf/gguf.h"

namespace flashstar::cuda {

void upload_weights(const gguf::File& f, DeviceArray<uint8_t>& dst, cudaStream_t s, bool verbose);

}  // namespace flashstar::cuda
