// The HTTP face of `flashstar serve` (interfaces.md §3.2-3.11): routes, API key, body limit, dialect
// error shapes, SSE streaming with keepalive comments, and hang-up detection that cancels the job.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "server/engine.h"

namespace flashstar::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (printed at start)
  std::string api_key;
  size_t max_body_bytes = 64ull << 20;
  bool cors = false;
  std::string model_id = "deepseek-v4-flash";
  std::vector<std::string> aliases;  // more accepted model names; "*" accepts any
  int keepalive_seconds = 5;         // SSE comment while nothing else was written for this long
  bool exact_dsml_replay = true;
  int threads = 64;  // connection threads
};

class HttpServer {
 public:
  HttpServer(Engine& engine, ServerOptions opts);
  ~HttpServer();
  // Binds the socket; returns the port. Throws Error when it cannot.
  int bind();
  // Serves until stop().
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flashstar::server
