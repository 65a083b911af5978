// The kernel timeline's CSV (common/kernel_trace_csv.h, written by FLASHSTAR_KTRACE): header, rows sorted by
// start, durations, names demangled and quoted; the file replaced atomically.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "common/file_util.h"
#include "common/kernel_trace_csv.h"

using namespace flashstar;

TEST(KernelTraceCsv, Demangles) {
  EXPECT_EQ(demangle_kernel_name("_Z6matvecPKfPfi"), "matvec(float const*, float*, int)");
  EXPECT_EQ(demangle_kernel_name("_ZN9flashstar4fast12_GLOBAL__N_17kernel1ILi64EEEvPf"),
            "void flashstar::fast::(anonymous namespace)::kernel1<64>(float*)");
  EXPECT_EQ(demangle_kernel_name("[memcpy HtoD]"), "[memcpy HtoD]");
  EXPECT_EQ(demangle_kernel_name("_Znot a name"), "_Znot a name");  // left as recorded
}

TEST(KernelTraceCsv, QuotesFields) {
  EXPECT_EQ(csv_quoted("a<b, c>"), "\"a<b, c>\"");
  EXPECT_EQ(csv_quoted("say \"hi\"\n"), "\"say \"\"hi\"\" \"");
}

TEST(KernelTraceCsv, RowsSortedByStart) {
  std::vector<KernelTraceRow> rows(3);
  rows[0].start_ns = 300, rows[0].end_ns = 450, rows[0].name = "_Z1bv", rows[0].graph_id = 7,
  rows[0].graph_node_id = 12, rows[0].stream = 13, rows[0].correlation = 99;
  rows[1].start_ns = 100, rows[1].end_ns = 250, rows[1].name = "_Z1aIiEvv", rows[1].grid_x = 132,
  rows[1].grid_y = 2, rows[1].grid_z = 1, rows[1].block_x = 256, rows[1].regs = 64, rows[1].smem_dyn = 49152,
  rows[1].smem_static = 16;
  rows[2].start_ns = 300, rows[2].end_ns = 320, rows[2].name = "[memcpy DtoH]";
  const std::string csv = kernel_trace_csv(rows);
  const std::string want = std::string(kKernelTraceColumns) + "\n" +
                           "100,250,150,0,0,0,0,132,2,1,256,64,49152,16,\"void a<int>()\"\n"
                           "300,320,20,0,0,0,0,0,0,0,0,0,0,0,\"[memcpy DtoH]\"\n"
                           "300,450,150,13,99,7,12,0,0,0,0,0,0,0,\"b()\"\n";
  EXPECT_EQ(csv, want);
  EXPECT_EQ(std::string(kKernelTraceColumns).rfind("start_ns,end_ns,duration_ns,", 0), 0u);
}

TEST(KernelTraceCsv, WritesTheFile) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("ktrace_test_" + std::to_string(::getpid()) + ".csv")).string();
  std::vector<KernelTraceRow> rows(1);
  rows[0].start_ns = 5, rows[0].end_ns = 9;
  rows[0].name.assign(1, 'k');
  write_kernel_trace_csv(path, rows);
  EXPECT_EQ(read_file(path), std::string(kKernelTraceColumns) + "\n5,9,4,0,0,0,0,0,0,0,0,0,0,0,\"k\"\n");
  write_kernel_trace_csv(path, {});  // replaced, not appended
  EXPECT_EQ(read_file(path), std::string(kKernelTraceColumns) + "\n");
  std::remove(path.c_str());
}
