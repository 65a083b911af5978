// UTF-8 helpers shared by the tokenizer, the chat code and the CLI, plus GPT-2's byte <-> code point
// table (byte-level BPE stores every byte as a printable code point so merges work on text).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace flashstar::text {

// Length of the well-formed UTF-8 sequence starting at s[i] (1..4), or 0 when the bytes there are not
// one (stray continuation, overlong form, surrogate, > U+10FFFF, or cut short by the end of s).
size_t utf8_seq_len(std::string_view s, size_t i);
// True when s is entirely well-formed UTF-8; otherwise *bad (when given) is the first bad offset.
bool utf8_valid(std::string_view s, size_t* bad = nullptr);
// Decodes the character at s[i] and advances i. Malformed bytes decode as themselves (one byte), which
// is what a byte-oriented splitter needs: it never stalls and never reads past the end.
uint32_t utf8_next(std::string_view s, size_t& i);
void utf8_append(std::string& out, uint32_t cp);

// GPT-2 byte-level mapping: printable Latin-1 bytes keep their value, the other 68 bytes take code points
// 256, 257, ... in byte order.
uint32_t gpt2_byte_to_cp(uint8_t b);
// Inverse; -1 for a code point that no byte maps to.
int gpt2_cp_to_byte(uint32_t cp);
// The byte-encoded form of raw bytes (what tokenizer.ggml.tokens stores).
std::string gpt2_encode(std::string_view raw);

// Streams decoded token bytes as text: a multi-byte character split over several tokens is held back
// until complete, so a terminal or a JSON client never sees half a character. Bytes that can never
// become a valid character are passed through unchanged (output stays byte-exact).
class Utf8Stream {
 public:
  std::string push(std::string_view bytes);
  std::string flush();  // whatever is still held (an incomplete tail at end of generation)
  bool holding() const { return !pending_.empty(); }

 private:
  std::string pending_;
};

}  // namespace flashstar::text
