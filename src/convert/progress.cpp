#include "convert/progress.h"

#include <unistd.h>

#include <cstdio>

namespace flashstar {

Progress::Progress(const char* verb, uint64_t total_bytes, bool enabled)
    : verb_(verb), total_(total_bytes), enabled_(enabled), tty_(::isatty(2) != 0),
      start_(std::chrono::steady_clock::now()), last_(start_) {}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::set_label(const std::string& label) {
  std::lock_guard<std::mutex> lk(mu_);
  label_ = label;
}

void Progress::add(uint64_t bytes) {
  done_ += bytes;
  if (!enabled_) return;
  // A terminal gets a live line; a log gets one line every few seconds.
  const auto interval = std::chrono::milliseconds(tty_ ? 250 : 5000);
  std::unique_lock<std::mutex> lk(mu_, std::try_to_lock);
  if (!lk.owns_lock()) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < interval) return;
  last_ = now;
  print(false);
}

void Progress::print(bool final) {
  const double s = seconds();
  const double gb = static_cast<double>(done_.load()) / 1e9, tot = static_cast<double>(total_) / 1e9;
  const double rate = s > 0 ? gb / s : 0;
  std::fprintf(stderr, "%s%s %.2f / %.2f GB (%.0f%%), %.2f GB/s, %.1f s%s%s%s", tty_ ? "\r\033[K" : "", verb_, gb, tot,
               tot > 0 ? 100.0 * gb / tot : 100.0, rate, s, label_.empty() || final ? "" : "  ",
               final ? "" : label_.c_str(), tty_ && !final ? "" : "\n");
  std::fflush(stderr);
}

void Progress::finish() {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lk(mu_);
  print(true);
}

}  // namespace flashstar
