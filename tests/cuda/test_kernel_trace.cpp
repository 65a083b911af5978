// FLASHSTAR_KTRACE (cuda/kernel_trace.h): off without the variable; with it, on a machine whose CUPTI loads,
// the CSV names the copies the device made (or, where CUPTI is missing or tracing not built, one stderr line
// and no file: never a crash).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "common/file_util.h"
#include "common/kernel_trace_csv.h"
#include "cuda/cuda_session.h"
#include "cuda/cuda_util.h"
#include "cuda/kernel_trace.h"

using namespace flashstar;

TEST(KernelTrace, StartsOnceAndWritesOnFlush) {
  if (!cuda::device_available()) GTEST_SKIP() << "no CUDA device";
  const std::string path =
      (std::filesystem::temp_directory_path() / ("ktrace_cuda_" + std::to_string(::getpid()) + ".csv")).string();
  std::remove(path.c_str());
  const char* before = std::getenv("FLASHSTAR_KTRACE");
  if (before) GTEST_SKIP() << "FLASHSTAR_KTRACE is set for the whole run";
  ::setenv("FLASHSTAR_KTRACE", path.c_str(), 1);
  const bool on = cuda::kernel_trace_start();
  ::unsetenv("FLASHSTAR_KTRACE");
  EXPECT_EQ(cuda::kernel_trace_start(), on);  // the first call decides
  std::vector<float> host(1 << 16, 1.0f);
  cuda::DeviceArray<float> dev(host.size());
  FS_CUDA_CHECK(cudaMemcpy(dev.get(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  FS_CUDA_CHECK(cudaDeviceSynchronize());
  cuda::kernel_trace_flush();
  cuda::kernel_trace_flush();  // once only
  if (!on) {
    EXPECT_FALSE(std::filesystem::exists(path));
    GTEST_SKIP() << "CUPTI did not load here, or tracing was not built";
  }
  const std::string csv = read_file(path);
  EXPECT_EQ(csv.rfind(kKernelTraceColumns, 0), 0u);
  if (cuda::kernel_trace_records_copies()) {
    EXPECT_NE(csv.find("\"[memcpy HtoD]\""), std::string::npos) << csv.substr(0, 2000);
  }
  std::remove(path.c_str());
}
