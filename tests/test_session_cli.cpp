// The session options that run, serve, logits and bench share (tools/tool_util.h): parsed once, mapped
// once, and offered by every one of the four tools.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "tool_util.h"

namespace flashstar::tools {
namespace {

constexpr const char* kTools[] = {"run", "serve", "logits", "bench"};

void parse(CLI::App& app, std::vector<std::string> args) {
  std::vector<const char*> argv{"test"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
}

// stdout and stderr of a shell command, and its exit status.
std::string shell(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  *status = ::pclose(p);
  return out;
}

TEST(SessionCli, DefaultsAreTheSessionDefaults) {
  CLI::App app;
  SessionCli s;
  add_session_options(&app, s);
  parse(app, {});
  const SessionOptions so = s.options(1234), ref{};
  EXPECT_EQ(so.ctx, 1234u);
  EXPECT_EQ(so.chunk, ref.chunk);
  EXPECT_EQ(so.verbose, ref.verbose);
  EXPECT_EQ(so.numerics, ref.numerics);
  EXPECT_EQ(so.ties, nullptr);
  EXPECT_TRUE(so.routes == RouteOptions{}.resolve());
  EXPECT_EQ(s.backend, "auto");
  EXPECT_EQ(s.threads, 0);
}

TEST(SessionCli, EveryOptionReachesTheSessionOptions) {
  CLI::App app;
  SessionCli s;
  add_session_options(&app, s);
  parse(app, {"--backend", "cpu", "-t", "3", "--chunk", "17", "-v", "--quality"});
  EXPECT_EQ(s.backend, "cpu");
  EXPECT_EQ(s.threads, 3);
  const SessionOptions so = s.options(64);
  EXPECT_EQ(so.chunk, 17u);
  EXPECT_TRUE(so.verbose);
  EXPECT_TRUE(so.routes == RouteSet::quality());
}

TEST(SessionCli, RefusesBadValuesAtParseTime) {
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--chunk", "0"},
                                               std::vector<std::string>{"--backend", "tpu"}}) {
    CLI::App app;
    SessionCli s;
    add_session_options(&app, s);
    EXPECT_THROW(parse(app, args), CLI::ValidationError) << args[0];
  }
}

TEST(SessionCli, PrepareResolvesTheBackend) {
  SessionCli s;
  s.backend = "cpu";
  EXPECT_EQ(s.prepare(), "cpu");
  s.backend = "auto";
  const std::string b = s.prepare();
  EXPECT_TRUE(b == "cpu" || b == "cuda") << b;
  s.backend = "tpu";
  EXPECT_THROW(s.prepare(), Error);
}

TEST(SessionCli, AllFourToolsOfferTheSharedOptions) {
  for (const char* tool : kTools) {
    int status = 0;
    const std::string help = shell(std::string(FLASHSTAR_BINARY) + " " + tool + " --help", &status);
    EXPECT_EQ(status, 0) << tool;
    for (const char* opt : {"--backend", "-t,--threads", "--chunk", "-v,--verbose", "--route", "--quality"})
      EXPECT_NE(help.find(opt), std::string::npos) << tool << " lacks " << opt;
  }
}

// An unusable backend must fail before the model (possibly tens of GiB) is read, in every tool.
TEST(SessionCli, AllFourToolsRefuseAnUnusableBackendFirst) {
  const std::string bin = FLASHSTAR_BINARY, missing = "/nonexistent/flashstar-test-model.gguf";
  int status = 0;
  if (shell(bin + " run -m " + missing + " -p hi --backend cuda", &status).find("no CUDA backend") == std::string::npos)
    GTEST_SKIP() << "this flashstar has a CUDA backend";
  for (const char* tool : kTools) {
    std::string cmd = bin + " " + tool + " -m " + missing + " --backend cuda";
    if (std::string(tool) == "run") cmd += " -p hi";
    if (std::string(tool) == "logits") cmd += " --tokens /nonexistent/tokens.json -o /nonexistent/out.f32";
    const std::string out = shell(cmd, &status);
    EXPECT_NE(status, 0) << tool;
    EXPECT_NE(out.find("no CUDA backend"), std::string::npos) << tool << ": " << out;
  }
}

}  // namespace
}  // namespace flashstar::tools
