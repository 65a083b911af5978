#include <algorithm>
#include <cmath>

#include "engine/session.h"

namespace flashstar {

void TieLog::consider(int64_t pos, uint32_t layer, const char* kind, float last_in, float first_out, int32_t index) {
  const double gap = std::fabs(static_cast<double>(last_in) - first_out);
  const double scale = std::max({std::fabs(static_cast<double>(last_in)), std::fabs(static_cast<double>(first_out)), 1e-30});
  if (gap > rel_gap_ * scale) return;
  std::lock_guard<std::mutex> lk(mu_);
  ties_.push_back({pos, layer, kind, last_in, first_out, index});
}

void TieLog::rounding(int64_t pos, uint32_t layer, const char* kind, double value, double boundary, double magnitude,
                      int32_t index) {
  if (!(std::fabs(value - boundary) < kRoundingGap * magnitude)) return;
  std::lock_guard<std::mutex> lk(mu_);
  ties_.push_back({pos, layer, kind, static_cast<float>(value), static_cast<float>(boundary), index,
                   static_cast<float>(magnitude)});
}

std::vector<NearTie> TieLog::sorted() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<NearTie> v = ties_;
  std::sort(v.begin(), v.end(), [](const NearTie& a, const NearTie& b) {
    return a.pos != b.pos ? a.pos < b.pos : a.layer != b.layer ? a.layer < b.layer : a.index < b.index;
  });
  return v;
}

}  // namespace flashstar
