#include "server/engine.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "common/error.h"
#include "server/reply_stream.h"

namespace flashstar::server {

namespace {

using Clock = std::chrono::steady_clock;

uint64_t micros_since(Clock::time_point t) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

class NullSink : public EventSink {};

// Reasoning / content split of a reply without a tool block. A reply cut off inside its reasoning stays
// reasoning (ds4 returns it as content in non-streaming answers; streaming clients saw it as reasoning,
// and both paths should agree).
void split_reply(const std::string& raw, bool thinking, Outcome& o) {
  if (!thinking) {
    o.content = raw;
    return;
  }
  std::string_view b = raw;
  if (b.substr(0, 7) == text::kThinkOpen) b.remove_prefix(7);
  const size_t e = b.find(text::kThinkClose);
  if (e == std::string_view::npos) {
    o.reasoning = std::string(b);
    return;
  }
  o.reasoning = std::string(b.substr(0, e));
  o.content = std::string(b.substr(e + 8));
}

}  // namespace

bool peer_gone(int fd) {
  if (fd < 0) return false;
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

Engine::Engine(const text::Tokenizer& tok, std::unique_ptr<Session> session, EngineOptions opts, DiskStore* disk)
    : tok_(tok), session_(std::move(session)), opts_(std::move(opts)), disk_(disk), tools_(opts_.tool_memory_max_ids) {
  thread_ = std::thread([this] { worker(); });
}

Engine::~Engine() { shutdown(); }

void Engine::submit(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_) {
    ++metrics_.rejected;
    throw ApiError(503, "server shutting down");
  }
  queue_.push_back(job);
  ++metrics_.requests;
  cv_.notify_one();
}

void Engine::shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

size_t Engine::queue_depth() {
  std::lock_guard<std::mutex> lk(mu_);
  return queue_.size();
}

void Engine::worker() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return !queue_.empty() || stopping_; });
      if (queue_.empty()) break;
      job = queue_.front();
      queue_.pop_front();
    }
    metrics_.busy = 1;
    try {
      run_job(*job);
    } catch (const std::exception& e) {
      // An engine failure must not take the server down: the request fails, the session starts afresh.
      log(std::string("request failed: ") + e.what());
      ++metrics_.failed;
      session_->reset();
      live_tool_ids_.clear();
      std::lock_guard<std::mutex> lk(job->mu);
      job->outcome.finish = "error";
      job->outcome.error = e.what();
      job->failed_early = true;
      if (job->sink) job->sink->fail(e.what());
    }
    metrics_.busy = 0;
    {
      std::lock_guard<std::mutex> lk(job->mu);
      job->done = true;
    }
    job->cv.notify_all();
  }
  if (disk_ && session_->tokens().size() >= disk_->min_tokens()) {
    try {
      disk_->store(*session_, tok_.decode(session_->tokens()), "shutdown", live_tool_ids_);
    } catch (const std::exception& e) {
      log(std::string("shutdown checkpoint failed: ") + e.what());
    }
  }
}

bool Engine::should_stop(Job& job) const {
  if (job.cancelled.load() || stopping_.load()) return true;
  if (peer_gone(job.fd.load())) {
    job.cancelled = true;
    return true;
  }
  return false;
}

std::vector<int32_t> Engine::reuse_prefix(Job& job, Outcome& o) {
  const std::vector<int32_t> live = session_->tokens();
  std::vector<int32_t>& ids = job.ids;
  if (!live.empty() && live.size() <= ids.size() && std::equal(live.begin(), live.end(), ids.begin())) {
    o.cache_source = "memory-token";
    o.usage.cached = live.size();
    ++metrics_.hits_memory_token;
    return {ids.begin() + static_cast<std::ptrdiff_t>(live.size()), ids.end()};
  }
  if (!live.empty()) {
    // The same conversation whose reply re-tokenizes differently: keep the exact live tokens.
    const std::string live_text = tok_.decode(live);
    if (live_text.size() <= job.rendered.size() && job.rendered.compare(0, live_text.size(), live_text) == 0) {
      std::vector<int32_t> suffix = tok_.encode_rendered(std::string_view(job.rendered).substr(live_text.size()));
      // Past the context once re-tokenized: the prompt as checked goes in whole (cold) instead.
      if (live.size() + suffix.size() < session_->options().ctx) {
        ids = live;
        ids.insert(ids.end(), suffix.begin(), suffix.end());
        o.cache_source = "memory-text";
        o.usage.cached = live.size();
        ++metrics_.hits_memory_text;
        return suffix;
      }
    }
    if (disk_ && live.size() >= disk_->min_tokens()) disk_->store(*session_, live_text, "evict", live_tool_ids_);
  }
  session_->reset();
  live_tool_ids_.clear();
  last_stored_frontier_ = 0;
  if (disk_) {
    if (auto hit = disk_->restore(job.rendered, *session_)) {
      for (const auto& [id, dsml] : hit->tool_ids) {
        tools_.remember({id}, dsml);
        live_tool_ids_.emplace_back(id, dsml);
      }
      std::vector<int32_t> suffix = tok_.encode_rendered(std::string_view(job.rendered).substr(hit->text_bytes));
      if (session_->tokens().size() + suffix.size() >= session_->options().ctx) {
        session_->reset();  // re-tokenized past the context: the prompt as checked goes in whole
        live_tool_ids_.clear();
        last_stored_frontier_ = 0;
        return ids;
      }
      ids = session_->tokens();
      ids.insert(ids.end(), suffix.begin(), suffix.end());
      o.cache_source = "disk-text";
      o.usage.cached = session_->tokens().size();
      last_stored_frontier_ = static_cast<uint32_t>(o.usage.cached);
      ++metrics_.hits_disk;
      log("kv cache hit: " + std::to_string(o.usage.cached) + " tokens from " + hit->file);
      return suffix;
    }
  }
  ++metrics_.misses;
  return ids;
}

bool Engine::prefill(Job& job, const std::vector<int32_t>& todo, size_t cached, size_t& done) {
  done = 0;
  const size_t chunk = std::max<uint32_t>(1, session_->options().chunk);
  // Where a cold prefill pauses to write its checkpoint (0: no cold store).
  uint32_t cold = 0;
  if (disk_ && cached == 0) cold = disk_->cold_target(job.ids, 0).value_or(0);
  for (size_t pos = 0; pos < todo.size();) {
    if (should_stop(job)) return false;
    size_t n = std::min(chunk, todo.size() - pos);
    const size_t live = session_->tokens().size();
    if (cold > live) n = std::min<size_t>(n, cold - live);
    session_->eval(std::span<const int32_t>(todo.data() + pos, n), nullptr);
    pos += n;
    done = pos;
    const uint32_t now = static_cast<uint32_t>(session_->tokens().size());
    if (cold && now == cold) {
      disk_->store(*session_, tok_.decode(session_->tokens()), "cold", live_tool_ids_);
      last_stored_frontier_ = now;
      cold = 0;
    } else if (disk_ && disk_->continued_due(now, last_stored_frontier_, false)) {
      disk_->store(*session_, tok_.decode(session_->tokens()), "continued", live_tool_ids_);
      last_stored_frontier_ = now;
    }
  }
  return true;
}

void Engine::run_job(Job& job) {
  GenRequest& r = job.req;
  Outcome& o = job.outcome;
  const bool chatlike = r.dialect != Dialect::Completions;
  const bool thinking = chatlike && r.think != text::ThinkMode::None;
  NullSink null_sink;
  EventSink* sink = job.sink ? job.sink.get() : &null_sink;
  auto locked = [&](auto fn) {
    std::lock_guard<std::mutex> lk(job.mu);
    fn();
  };
  auto end_early = [&](bool ok_to_answer) {
    o.finish = "error";
    o.error = stopping_ ? "server shutting down" : "client disconnected";
    if (stopping_) ++metrics_.failed;
    else ++metrics_.cancelled;
    locked([&] {
      job.failed_early = ok_to_answer;
      if (job.sink && stopping_) job.sink->fail(o.error);
    });
  };
  if (should_stop(job)) return end_early(true);

  const auto t_prefill = Clock::now();
  locked([&] { job.in_prefill = true; });
  const std::vector<int32_t> todo = reuse_prefix(job, o);
  size_t evaluated = 0;
  const bool prefilled = prefill(job, todo, o.usage.cached, evaluated);
  locked([&] { job.in_prefill = false; });
  o.usage.prompt = job.ids.size();
  const uint64_t pf_us = micros_since(t_prefill);
  metrics_.prefill_us += pf_us;
  metrics_.prefill_tokens += evaluated;
  if (evaluated && pf_us > 0) metrics_.last_prefill_tps = evaluated * 1e6 / static_cast<double>(pf_us);
  if (!prefilled) {
    log(strfmt("%s: stopped during prefill after %zu of %zu tokens (%s)", job.meta.id.c_str(), evaluated, todo.size(),
               stopping_ ? "shutdown" : "client disconnected"));
    return end_early(true);
  }
  metrics_.prompt_tokens += o.usage.prompt;
  metrics_.cached_tokens += o.usage.cached;

  std::vector<int32_t> forced;
  const bool use_forced = opts_.test_hooks && !r.forced_reply.empty();
  if (use_forced) forced = tok_.encode_rendered(r.forced_reply);
  int64_t max_new = r.max_tokens > 0 ? std::min(r.max_tokens, opts_.default_max_tokens) : opts_.default_max_tokens;
  max_new = std::min<int64_t>(max_new, static_cast<int64_t>(opts_.ctx) - static_cast<int64_t>(session_->tokens().size()));
  Sampler sampler(r.sampling);
  ReplyStream rs(thinking, chatlike && r.tools_active, r.stops, sink);
  locked([&] { sink->start(); });

  const auto t_decode = Clock::now();
  std::string finish;
  std::vector<float> lp;
  int64_t n = 0;
  const int32_t eos = tok_.special().eos;
  for (;;) {
    if (n >= max_new) {
      finish = "length";
      break;
    }
    if (should_stop(job)) {
      finish = "error";
      break;
    }
    const std::vector<float>& logits = session_->last_logits();
    // Inside a tool block, tags and JSON punctuation are sampled greedily (§2.8).
    const bool greedy = rs.block_start() != std::string::npos &&
                        text::dsml_greedy(text::dsml_state(std::string_view(rs.text()).substr(rs.block_start())));
    const int32_t id = use_forced ? (static_cast<size_t>(n) < forced.size() ? forced[n] : eos) : sampler.sample(logits, greedy);
    if (id == eos) {
      finish = "stop";
      break;
    }
    ++n;
    bool stop = false;
    locked([&] {
      if (r.logprobs) {
        log_softmax(logits, lp);
        TokenLogprob t{tok_.token_bytes(id), lp[id], {}};
        std::vector<int32_t> order(lp.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
        const size_t k = std::min<size_t>(r.top_logprobs, order.size());
        std::partial_sort(order.begin(), order.begin() + k, order.end(),
                          [&](int32_t a, int32_t b) { return lp[a] != lp[b] ? lp[a] > lp[b] : a < b; });
        for (size_t i = 0; i < k; ++i) t.top.emplace_back(tok_.token_bytes(order[i]), lp[order[i]]);
        sink->logprob(t);
        o.logprobs.push_back(std::move(t));
      }
      stop = rs.push(tok_.token_bytes(id));
    });
    if (stop) {
      finish = "stop";
      break;
    }
    if (n >= max_new || session_->tokens().size() + 1 > opts_.ctx) {
      finish = "length";
      break;
    }
    session_->decode(id);
    const uint32_t now = static_cast<uint32_t>(session_->tokens().size());
    if (disk_ && disk_->continued_due(now, last_stored_frontier_, rs.block_start() != std::string::npos)) {
      disk_->store(*session_, tok_.decode(session_->tokens()), "continued", live_tool_ids_);
      last_stored_frontier_ = now;
    }
  }
  const uint64_t dc_us = micros_since(t_decode);
  metrics_.decode_us += dc_us;
  metrics_.completion_tokens += static_cast<uint64_t>(n);
  if (n > 0 && dc_us > 0) metrics_.last_decode_tps = n * 1e6 / static_cast<double>(dc_us);

  o.usage.completion = static_cast<size_t>(n);
  o.raw = rs.text();
  if (finish == "error") o.error = stopping_ ? "server shutting down" : "client disconnected";
  bool block_ok = false;
  if (!chatlike) {
    o.content = o.raw;
  } else if (r.tools_active && rs.block_start() != std::string::npos) {
    text::ParsedReply p = text::parse_reply(o.raw, thinking);
    if (rs.block_closed() && p.ok && !p.tool_calls.empty()) {
      block_ok = true;
      o.reasoning = p.reasoning;
      o.content = p.content;
      o.calls = std::move(p.tool_calls);
      std::vector<std::string> ids;
      for (auto& c : o.calls) {
        do c.id = new_tool_call_id(r.dialect);
        while (tools_.contains(c.id));
        ids.push_back(c.id);
        live_tool_ids_.emplace_back(c.id, p.raw_dsml);
      }
      tools_.remember(ids, p.raw_dsml);
      if (finish != "error") finish = "tool_calls";
    } else {
      // ds4: an invalid block comes back as text; one never closed is an error unless the limit cut it.
      log(rs.block_closed() ? "invalid tool call: returned as text" : "unterminated tool call");
      split_reply(o.raw, thinking, o);
      if (!rs.block_closed() && finish == "stop") {
        finish = "error";
        o.error = "unterminated tool call";
      }
    }
  } else {
    split_reply(o.raw, thinking, o);
  }
  o.finish = finish;
  log(strfmt("%s: prompt %zu tokens (%zu cached, %s), %lld generated, finish %s, prefill %.1f tok/s, decode %.1f tok/s",
             job.meta.id.c_str(), o.usage.prompt, o.usage.cached, o.cache_source.c_str(), static_cast<long long>(n),
             finish.c_str(), todo.empty() ? 0.0 : todo.size() * 1e6 / std::max<uint64_t>(pf_us, 1),
             n * 1e6 / static_cast<double>(std::max<uint64_t>(dc_us, 1))));
  if (finish == "error" && job.cancelled) ++metrics_.cancelled;
  else if (finish == "error") ++metrics_.failed;
  else ++metrics_.completed;
  locked([&] {
    rs.finish(block_ok);
    sink->finish(o);
  });
}

}  // namespace flashstar::server
