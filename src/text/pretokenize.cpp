#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pretokenize.h"

#include <pcre2.h>

#include <string>

#include "common/error.h"

namespace flashstar::text {

const char* pretokenizer_name(PreTokenizer p) { return p == PreTokenizer::Ds4 ? "ds4" : "deepseek-v3"; }

PreTokenizer parse_pretokenizer(std::string_view name) {
  if (name == "ds4") return PreTokenizer::Ds4;
  if (name == "deepseek-v3" || name == "regex" || name == "hf" || name == "deepseek3-llm" || name == "joyai-llm")
    return PreTokenizer::DeepSeekV3;
  fail("unknown pre-tokenizer '%.*s' (expected ds4 or deepseek-v3)", static_cast<int>(name.size()), name.data());
}

// ---------------------------------------------------------------------------------------------------
// ds4 rules (interfaces.md §1.4). Character stepping follows ds4: the length comes from the first byte
// alone, so malformed input is split exactly as ds4 splits it.
namespace {

bool is_alpha(uint8_t c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_newline(uint8_t c) { return c == '\n' || c == '\r'; }
bool is_punct(uint8_t c) {
  return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
}
bool is_letter_like(uint8_t c) { return c >= 0x80 || is_alpha(c); }

size_t char_len(std::string_view s, size_t pos) {
  const uint8_t c = static_cast<uint8_t>(s[pos]);
  size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
  return pos + n > s.size() ? 1 : n;
}

bool cjk_at(std::string_view s, size_t pos) {
  const uint8_t c = static_cast<uint8_t>(s[pos]);
  if (c < 0x80) return false;
  const size_t n = char_len(s, pos);
  if (n != 3) return false;  // every code point in the three ranges is a 3-byte sequence
  const uint32_t cp = (uint32_t(c & 0x0F) << 12) | (uint32_t(uint8_t(s[pos + 1]) & 0x3F) << 6) |
                      (uint8_t(s[pos + 2]) & 0x3F);
  return (cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x309F) || (cp >= 0x30A0 && cp <= 0x30FF);
}

size_t skip_letters(std::string_view s, size_t pos) {
  while (pos < s.size() && is_letter_like(static_cast<uint8_t>(s[pos]))) pos += char_len(s, pos);
  return pos;
}

}  // namespace

void pretokenize_ds4(std::string_view s, std::vector<Piece>& out) {
  const size_t n = s.size();
  auto at = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  size_t pos = 0;
  while (pos < n) {
    const size_t start = pos;
    const uint8_t c = at(pos);
    if (is_digit(c)) {
      while (pos < n && pos - start < 3 && is_digit(at(pos))) ++pos;
    } else if (cjk_at(s, pos)) {
      do pos += char_len(s, pos);
      while (pos < n && cjk_at(s, pos));
    } else if (is_punct(c) && pos + 1 < n && is_alpha(at(pos + 1))) {
      ++pos;
      while (pos < n && is_alpha(at(pos))) ++pos;
    } else if (is_letter_like(c)) {
      pos = skip_letters(s, pos);
    } else if (!is_newline(c) && !is_punct(c) && pos + 1 < n && is_letter_like(at(pos + 1))) {
      pos = skip_letters(s, pos + 1);
    } else if (c == ' ' && pos + 1 < n && is_punct(at(pos + 1))) {
      ++pos;
      while (pos < n && is_punct(at(pos))) ++pos;
      while (pos < n && is_newline(at(pos))) ++pos;
    } else if (is_punct(c)) {
      while (pos < n && is_punct(at(pos))) ++pos;
      while (pos < n && is_newline(at(pos))) ++pos;
    } else if (is_space(c)) {
      size_t p = pos, after_newline = 0;
      while (p < n && is_space(at(p))) {
        if (is_newline(at(p))) after_newline = p + 1;
        ++p;
      }
      if (after_newline) {
        pos = after_newline;
      } else if (p < n && p - pos >= 2 && (is_letter_like(at(p)) || is_punct(at(p)))) {
        pos = p - 1;  // the last blank joins the following word or punctuation run
      } else {
        pos = p;
      }
    } else {
      pos += char_len(s, pos);
    }
    if (pos == start) pos += char_len(s, pos);
    out.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(pos)});
  }
}

// ---------------------------------------------------------------------------------------------------
// DeepSeek V3 regexes. HF `tokenizers` runs them with Oniguruma, whose Unicode \s is the White_Space
// property (it includes U+0085, which PCRE2's \s does not), so \s and \S are spelled out.
namespace {

#define FS_WS "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
const char* const kPatterns[3] = {
    "\\p{N}{1,3}",
    "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
    "|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\\r\\n]*"
    "|[" FS_WS "]*[\\r\\n]+"
    "|[" FS_WS "]+(?![^" FS_WS "])"
    "|[" FS_WS "]+",
};
#undef FS_WS

}  // namespace

struct RegexPreTokenizer::Impl {
  pcre2_code* code[3] = {nullptr, nullptr, nullptr};
  ~Impl() {
    for (auto* c : code)
      if (c) pcre2_code_free(c);
  }
};

RegexPreTokenizer::RegexPreTokenizer() : impl_(std::make_unique<Impl>()) {
  for (int k = 0; k < 3; ++k) {
    int err = 0;
    PCRE2_SIZE off = 0;
    impl_->code[k] = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPatterns[k]), PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    if (!impl_->code[k]) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail("pre-tokenizer regex %d does not compile at %zu: %s", k, static_cast<size_t>(off),
           reinterpret_cast<const char*>(msg));
    }
    // JIT is an optimisation only; the interpreter gives the same matches where JIT is unavailable.
    pcre2_jit_compile(impl_->code[k], PCRE2_JIT_COMPLETE);
  }
}

RegexPreTokenizer::~RegexPreTokenizer() = default;

void RegexPreTokenizer::split(std::string_view text, std::vector<Piece>& out) const {
  // HF "Isolated" split: every match is a piece and so is every non-empty stretch between matches; each
  // stage re-splits the pieces of the previous one, matching within the piece only (so (?!\S) succeeds
  // at a piece end and no match crosses a digit or CJK boundary).
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  if (!md) throw std::bad_alloc();
  std::vector<Piece> cur{{0, static_cast<uint32_t>(text.size())}}, next;
  if (text.empty()) cur.clear();
  for (int k = 0; k < 3; ++k) {
    next.clear();
    next.reserve(cur.size() * 2);
    for (const Piece& p : cur) {
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + p.begin);
      const PCRE2_SIZE len = p.end - p.begin;
      PCRE2_SIZE at = 0, gap = 0;
      while (at < len) {
        const int rc = pcre2_match(impl_->code[k], subject, len, at, 0, md, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          pcre2_match_data_free(md);
          fail("pre-tokenizer regex failed with PCRE2 error %d", rc);
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const PCRE2_SIZE s = ov[0], e = ov[1];
        if (e == s) {  // no pattern here matches empty, but never loop on one
          at = s + 1;
          continue;
        }
        if (s > gap) next.push_back({p.begin + static_cast<uint32_t>(gap), p.begin + static_cast<uint32_t>(s)});
        next.push_back({p.begin + static_cast<uint32_t>(s), p.begin + static_cast<uint32_t>(e)});
        gap = at = e;
      }
      if (gap < len) next.push_back({p.begin + static_cast<uint32_t>(gap), p.end});
    }
    cur.swap(next);
  }
  pcre2_match_data_free(md);
  out.insert(out.end(), cur.begin(), cur.end());
}

const RegexPreTokenizer& deepseek_v3_pretokenizer() {
  static const RegexPreTokenizer r;
  return r;
}

}  // namespace flashstar::text
