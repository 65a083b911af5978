#include "text/utf8.h"

#include <array>

namespace flashstar::text {

size_t utf8_seq_len(std::string_view s, size_t i) {
  const size_t n = s.size();
  if (i >= n) return 0;
  const uint8_t c = static_cast<uint8_t>(s[i]);
  if (c < 0x80) return 1;
  auto cont = [&](size_t k) { return i + k < n && (static_cast<uint8_t>(s[i + k]) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    const uint8_t c1 = static_cast<uint8_t>(s[i + 1]);
    if (c == 0xE0 && c1 < 0xA0) return 0;   // overlong
    if (c == 0xED && c1 >= 0xA0) return 0;  // surrogates
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    const uint8_t c1 = static_cast<uint8_t>(s[i + 1]);
    if (c == 0xF0 && c1 < 0x90) return 0;   // overlong
    if (c == 0xF4 && c1 >= 0x90) return 0;  // > U+10FFFF
    return 4;
  }
  return 0;
}

bool utf8_valid(std::string_view s, size_t* bad) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_seq_len(s, i);
    if (n == 0) {
      if (bad) *bad = i;
      return false;
    }
    i += n;
  }
  return true;
}

uint32_t utf8_next(std::string_view s, size_t& i) {
  const size_t n = utf8_seq_len(s, i);
  const uint8_t c = static_cast<uint8_t>(s[i]);
  switch (n) {
    case 2:
      i += 2;
      return (uint32_t(c & 0x1F) << 6) | (uint8_t(s[i - 1]) & 0x3F);
    case 3:
      i += 3;
      return (uint32_t(c & 0x0F) << 12) | (uint32_t(uint8_t(s[i - 2]) & 0x3F) << 6) | (uint8_t(s[i - 1]) & 0x3F);
    case 4:
      i += 4;
      return (uint32_t(c & 0x07) << 18) | (uint32_t(uint8_t(s[i - 3]) & 0x3F) << 12) |
             (uint32_t(uint8_t(s[i - 2]) & 0x3F) << 6) | (uint8_t(s[i - 1]) & 0x3F);
    default:
      i += 1;
      return c;
  }
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

namespace {
bool gpt2_printable(unsigned b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

struct ByteTable {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 512> from_cp{};  // every mapped code point is < 512
  ByteTable() {
    from_cp.fill(-1);
    uint32_t next = 256;
    for (unsigned b = 0; b < 256; ++b) {
      to_cp[b] = gpt2_printable(b) ? b : next++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteTable& table() {
  static const ByteTable t;
  return t;
}
}  // namespace

uint32_t gpt2_byte_to_cp(uint8_t b) { return table().to_cp[b]; }

int gpt2_cp_to_byte(uint32_t cp) { return cp < 512 ? table().from_cp[cp] : -1; }

std::string gpt2_encode(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() * 2);
  for (char c : raw) utf8_append(out, gpt2_byte_to_cp(static_cast<uint8_t>(c)));
  return out;
}

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  // Emit everything up to the start of a trailing sequence that is a valid but incomplete prefix.
  size_t i = 0, emit = 0;
  const size_t n = pending_.size();
  while (i < n) {
    const size_t len = utf8_seq_len(pending_, i);
    if (len > 0) {
      i += len;
      emit = i;
      continue;
    }
    // Not a complete character here: is it the beginning of one that later bytes could finish?
    const uint8_t c = static_cast<uint8_t>(pending_[i]);
    const size_t want = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
    if (want > 0 && n - i < want) {
      // Check the bytes we do have are continuation bytes, with the same first-byte limits as above.
      std::string probe = pending_.substr(i);
      while (probe.size() < want) probe += '\x80';
      if (want == 3 && c == 0xE0) probe[1] = n - i > 1 ? pending_[i + 1] : '\xA0';
      if (want == 4 && c == 0xF0) probe[1] = n - i > 1 ? pending_[i + 1] : '\x90';
      if (utf8_seq_len(probe, 0) == want) break;  // hold from i
    }
    i += 1;  // a byte that can never start a character: pass it through
    emit = i;
  }
  std::string out = pending_.substr(0, emit);
  pending_.erase(0, emit);
  return out;
}

std::string Utf8Stream::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace flashstar::text
