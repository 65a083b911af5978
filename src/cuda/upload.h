// Bulk host-to-device copies of the model file's data section.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace flashstar::cuda {

// Copies total bytes from host memory (mapped file pages) to dst through two pinned staging buffers, the
// next stage filled while the previous one is copied; returns when the copy has finished. With
// progress, a percentage line on stderr.
void upload_bytes(uint8_t* dst, const uint8_t* src, size_t total, cudaStream_t s, bool progress);

}  // namespace flashstar::cuda
