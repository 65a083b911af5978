#include "engine/drift.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/file_util.h"
#include "common/parallel.h"

namespace flashstar::drift {

std::vector<int32_t> top_k(std::span<const float> row, size_t k) {
  // One pass with a small sorted buffer: a partial sort of the whole vocabulary per row would
  // dominate the cost on [T][129280] inputs.
  std::vector<int32_t> best;
  best.reserve(k + 1);
  if (k == 0) return best;
  auto better = [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
  for (size_t i = 0; i < row.size(); ++i) {
    if (!std::isfinite(row[i])) continue;
    const int32_t id = static_cast<int32_t>(i);
    // Scanning in increasing id, an equal value never beats a kept one, so ">" is the lower-id tie rule.
    if (best.size() == k && !(row[i] > row[best.back()])) continue;
    auto at = std::upper_bound(best.begin(), best.end(), id, better);
    best.insert(at, id);
    if (best.size() > k) best.pop_back();
  }
  return best;
}

PositionDrift compare_row(std::span<const float> ref, std::span<const float> cand) {
  if (ref.size() != cand.size()) fail("drift: rows of %zu and %zu values", ref.size(), cand.size());
  PositionDrift d;
  const size_t V = ref.size();
  double sumsq = 0, ref_sum = 0, ref_sumsq = 0;
  size_t ref_finite = 0;
  for (size_t i = 0; i < V; ++i) {
    const bool rf = std::isfinite(ref[i]), cf = std::isfinite(cand[i]);
    if (rf) {
      ref_sum += ref[i];
      ++ref_finite;
    }
    d.nonfinite_ref += !rf;
    d.nonfinite_cand += !cf;
    if (!rf || !cf) {
      ++d.nonfinite;
      continue;
    }
    const double delta = static_cast<double>(cand[i]) - static_cast<double>(ref[i]);
    sumsq += delta * delta;
    d.max_abs = std::max(d.max_abs, std::fabs(delta));
  }
  d.rms = V ? std::sqrt(sumsq / static_cast<double>(V)) : 0.0;
  // Two-pass std: logits sit far from zero on real models, where the one-pass formula cancels.
  const double mean = ref_finite ? ref_sum / static_cast<double>(ref_finite) : 0.0;
  for (size_t i = 0; i < V; ++i)
    if (std::isfinite(ref[i])) ref_sumsq += (ref[i] - mean) * (ref[i] - mean);
  const double sd = ref_finite ? std::sqrt(ref_sumsq / static_cast<double>(ref_finite)) : 0.0;
  d.rel_rms = sd > 0 ? d.rms / sd : (d.rms == 0 ? 0.0 : INFINITY);

  const std::vector<int32_t> rt = top_k(ref, 20), ct = top_k(cand, 20);
  d.ref_top1 = rt.empty() ? -1 : rt[0];
  d.cand_top1 = ct.empty() ? -1 : ct[0];
  d.same_top1 = !rt.empty() && !ct.empty() && rt[0] == ct[0];
  auto overlap = [&](size_t n) {
    int c = 0;
    for (size_t i = 0; i < std::min(n, rt.size()); ++i)
      for (size_t j = 0; j < std::min(n, ct.size()); ++j) c += rt[i] == ct[j];
    return c;
  };
  d.top5_overlap = overlap(5);
  d.top20_overlap = overlap(20);
  for (size_t i = 0; i < rt.size(); ++i)
    for (size_t j = 0; j < ct.size(); ++j)
      if (rt[i] == ct[j])
        d.max_rank_delta = std::max(d.max_rank_delta, std::abs(static_cast<int>(i) - static_cast<int>(j)));
  auto union_abs = [&](int32_t id) {
    if (std::isfinite(ref[id]) && std::isfinite(cand[id]))
      d.top20_max_abs = std::max(d.top20_max_abs, std::fabs(static_cast<double>(cand[id]) - ref[id]));
  };
  for (int32_t id : rt) union_abs(id);
  for (int32_t id : ct) union_abs(id);
  return d;
}

Stat stat_of(std::vector<double> v) {
  Stat s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  auto quantile = [&](double q) {
    const double at = q * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(at));
    const size_t hi = std::min(lo + 1, v.size() - 1);
    const double f = at - static_cast<double>(lo);
    // Keeps an infinite order statistic infinite instead of producing inf - inf = nan.
    return f == 0 ? v[lo] : v[lo] + (v[hi] - v[lo]) * f;
  };
  s.median = quantile(0.5);
  s.p99 = quantile(0.99);
  s.max = v.back();
  return s;
}

Summary summarize(std::span<const PositionDrift> rows) {
  Summary s;
  s.positions = rows.size();
  if (rows.empty()) return s;
  auto col = [&](auto get) {
    std::vector<double> v;
    v.reserve(rows.size());
    for (const PositionDrift& r : rows) v.push_back(static_cast<double>(get(r)));
    return stat_of(std::move(v));
  };
  s.rms = col([](const PositionDrift& r) { return r.rms; });
  s.rel_rms = col([](const PositionDrift& r) { return r.rel_rms; });
  s.max_abs = col([](const PositionDrift& r) { return r.max_abs; });
  s.top20_max_abs = col([](const PositionDrift& r) { return r.top20_max_abs; });
  s.top5_overlap = col([](const PositionDrift& r) { return r.top5_overlap; });
  s.top20_overlap = col([](const PositionDrift& r) { return r.top20_overlap; });
  s.max_rank_delta = col([](const PositionDrift& r) { return r.max_rank_delta; });
  size_t top1 = 0, full5 = 0, full20 = 0;
  for (const PositionDrift& r : rows) {
    top1 += r.same_top1;
    // A row with fewer than 5 (20) finite tokens cannot reach a full overlap.
    full5 += r.top5_overlap == 5;
    full20 += r.top20_overlap == 20;
    s.nonfinite += r.nonfinite;
    s.nonfinite_ref += r.nonfinite_ref;
    s.nonfinite_cand += r.nonfinite_cand;
  }
  const double n = static_cast<double>(rows.size());
  s.same_top1_frac = top1 / n;
  s.top5_full_frac = full5 / n;
  s.top20_full_frac = full20 / n;
  return s;
}

namespace {

// JSON has no nan/inf literals; flashstar's dump prints them bare ("nan", "-inf") and ds4 writes null.
// Rewrite bare words outside strings to null so one parser reads both.
std::string sanitize_nonfinite(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  bool in_str = false, esc = false;
  for (size_t i = 0; i < in.size();) {
    const char c = in[i];
    if (in_str) {
      out += c;
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
      ++i;
      continue;
    }
    if (c == '"') {
      in_str = true;
      out += c;
      ++i;
      continue;
    }
    const bool sign = (c == '-' || c == '+') && i + 1 < in.size() && std::isalpha(static_cast<unsigned char>(in[i + 1]));
    if (sign || std::isalpha(static_cast<unsigned char>(c))) {
      size_t j = i + (sign ? 1 : 0);
      while (j < in.size() && std::isalpha(static_cast<unsigned char>(in[j]))) ++j;
      std::string word = in.substr(i + (sign ? 1 : 0), j - i - (sign ? 1 : 0));
      for (char& ch : word) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (word == "nan" || word == "inf" || word == "infinity") out += "null";
      else out.append(in, i, j - i);
      i = j;
      continue;
    }
    out += c;
    ++i;
  }
  return out;
}

void append_row(const std::string& path, const nlohmann::json& arr, Rows& r) {
  if (!arr.is_array() || arr.empty()) fail("%s: \"logits\" is not a non-empty array", path.c_str());
  if (r.vocab == 0) r.vocab = arr.size();
  if (arr.size() != r.vocab) fail("%s: logits rows of %zu and %zu values", path.c_str(), r.vocab, arr.size());
  for (const auto& v : arr) {
    if (v.is_null()) r.data.push_back(NAN);
    else if (v.is_number()) r.data.push_back(static_cast<float>(v.get<double>()));
    else fail("%s: logits hold a non-number entry", path.c_str());
  }
  ++r.n_rows;
}

}  // namespace

Rows read_dump_json(const std::string& path) {
  const std::string text = read_file(path);
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos || text[first] != '{')
    fail("%s: not a --dump-logits JSON file (float32 row files need --vocab N or -m MODEL)", path.c_str());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(sanitize_nonfinite(text));
  } catch (const nlohmann::json::exception& e) {
    fail("%s: invalid JSON: %s", path.c_str(), e.what());
  }
  if (!j.is_object() || !j.contains("logits")) fail("%s: not a --dump-logits file (no \"logits\" array)", path.c_str());
  const auto& l = j["logits"];
  Rows r;
  // Several rows ([[...], [...]]) are accepted as well, for tools that dump one row per position.
  if (l.is_array() && !l.empty() && l[0].is_array()) {
    for (const auto& row : l) append_row(path, row, r);
  } else {
    append_row(path, l, r);
  }
  if (j.contains("vocab") && j["vocab"].is_number_integer() && j["vocab"].get<int64_t>() != static_cast<int64_t>(r.vocab))
    fail("%s: \"vocab\" is %lld but the rows hold %zu logits", path.c_str(),
         static_cast<long long>(j["vocab"].get<int64_t>()), r.vocab);
  return r;
}

Rows read_f32_rows(const std::string& path, size_t vocab) {
  const std::string bytes = read_file(path);
  if (vocab == 0 || bytes.empty() || bytes.size() % (vocab * sizeof(float)) != 0)
    fail("%s: size %zu is not a whole, non-zero number of rows of %zu float32 values", path.c_str(), bytes.size(),
         vocab);
  Rows r;
  r.vocab = vocab;
  r.n_rows = bytes.size() / (vocab * sizeof(float));
  r.data.resize(r.n_rows * vocab);
  std::memcpy(r.data.data(), bytes.data(), bytes.size());
  return r;
}

std::vector<PositionDrift> compare_rows(const Rows& ref, const Rows& cand, size_t begin, size_t end) {
  if (ref.vocab != cand.vocab) fail("drift: vocabulary sizes differ (%zu vs %zu)", ref.vocab, cand.vocab);
  if (ref.n_rows != cand.n_rows) fail("drift: position counts differ (%zu vs %zu)", ref.n_rows, cand.n_rows);
  if (begin > end || end > ref.n_rows) fail("drift: positions %zu:%zu are outside 0:%zu", begin, end, ref.n_rows);
  std::vector<PositionDrift> out(end - begin);
  parallel_for(static_cast<int64_t>(out.size()), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = compare_row(ref.row(begin + i), cand.row(begin + i));
  });
  return out;
}

double pick(const Stat& s, const std::string& which) {
  if (which == "mean") return s.mean;
  if (which == "median") return s.median;
  if (which == "p99") return s.p99;
  if (which == "max") return s.max;
  fail("unknown statistic '%s' (mean, median, p99 or max)", which.c_str());
}

}  // namespace flashstar::drift
