// The FLASHSTAR_* kernel switches checked up front (common/env_switches.h): the values each takes pass,
// any other value fails with the switch, the value and what it takes, in one line; a near-miss name
// warns with the switch it resembles; routes and other FLASHSTAR_* settings are left alone.
#include <gtest/gtest.h>

#include "common/env_switches.h"
#include "common/error.h"

using namespace flashstar;

TEST(EnvSwitches, KnownValuesPass) {
  const std::vector<std::string> env = {
      "FLASHSTAR_GEMM_WGMMA=0", "FLASHSTAR_PDL=v", "FLASHSTAR_ATTN_DECODE_V2=topk", "FLASHSTAR_DECODE_FORK=attn,idx",
      "FLASHSTAR_DECODE_FORK=all", "FLASHSTAR_ATTN_DECODE_SPLITS=24", "FLASHSTAR_GEMM_DENSE_V2=256",
      "FLASHSTAR_EXPERT_V=2", "FLASHSTAR_GEMM_CUBLAS_KSLICE=1024", "FLASHSTAR_THREADS=16", "FLASHSTAR_PROFILE=",
      "FLASHSTAR_GPU_MEMORY=80GiB", "FLASHSTAR_KTRACE=/tmp/k.csv", "FLASHSTAR_IDX_FUSED=0", "PATH=/usr/bin",
      "FLASHSTAR_ROUTE_MOE=whatever"};
  EXPECT_TRUE(check_env_switches(env).empty());
}

TEST(EnvSwitches, OtherValuesFailInOneLine) {
  const char* bad[] = {"FLASHSTAR_GEMM_WGMMA=off", "FLASHSTAR_EXPERT_V=3", "FLASHSTAR_ATTN_DECODE_SPLITS=0",
                       "FLASHSTAR_ATTN_DECODE_SPLITS=25", "FLASHSTAR_DECODE_FORK=attn,", "FLASHSTAR_DECODE_FORK=ATTN",
                       "FLASHSTAR_THREADS=-2", "FLASHSTAR_Q8_LEAN=yes", "FLASHSTAR_PDL=2",
                       "FLASHSTAR_GEMM_GROUP_WGMMA_VARIANT=3"};
  for (const char* kv : bad) {
    try {
      check_env_switches({kv});
      ADD_FAILURE() << kv << " passed";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
      EXPECT_NE(m.find(kv), std::string::npos) << m;  // the setting as given
      EXPECT_NE(m.find("expected"), std::string::npos) << m;
    }
  }
}

TEST(EnvSwitches, NearMissesWarnOthersAreLeftAlone) {
  const auto w = check_env_switches({"FLASHSTAR_GEMM_WGMA=0", "FLASHSTAR_BIN=/x", "FLASHSTAR_API_KEY=k",
                                     "FLASHSTAR_SCRIPTS_DIR=/s", "FLASHSTAR_SHARED_DIR=/d"});
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("FLASHSTAR_GEMM_WGMA"), std::string::npos);
  EXPECT_NE(w[0].find("did you mean FLASHSTAR_GEMM_WGMMA"), std::string::npos);
}
