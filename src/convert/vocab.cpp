#include "convert/vocab.h"

#include "common/error.h"
#include "gguf/writer.h"

namespace flashstar {
namespace {

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xc0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    s += static_cast<char>(0xe0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return s;
}

}  // namespace

const std::vector<std::string>& ds4_special_tokens() {
  // Byte-exact copies of shared/spec/interfaces.md §1.6 (fullwidth bar U+FF5C, lower one-eighth block U+2581).
  static const std::vector<std::string> k = {
      "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
      "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
      "<\xef\xbd\x9cUser\xef\xbd\x9c>",
      "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>",
      "<think>",
      "</think>",
      "\xef\xbd\x9c" "DSML\xef\xbd\x9c",
  };
  return k;
}

std::string gpt2_byte_token(uint8_t b) {
  // Bytes 33-126, 161-172, 174-255 keep their code point; the other 68 map to 256, 257, ... in order.
  auto printable = [](int x) { return (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255); };
  if (printable(b)) return utf8(b);
  uint32_t n = 0;
  for (int x = 0; x < b; ++x)
    if (!printable(x)) ++n;
  return utf8(256 + n);
}

Vocab placeholder_vocab(uint32_t n_vocab) {
  const auto& specials = ds4_special_tokens();
  if (n_vocab < specials.size() + 256)
    fail("vocabulary of %u tokens is too small for the placeholder tokenizer (needs at least %zu)", n_vocab,
         specials.size() + 256);
  Vocab v;
  v.tokens.reserve(n_vocab);
  v.token_types.reserve(n_vocab);
  for (const auto& s : specials) {
    v.tokens.push_back(s);
    v.token_types.push_back(3);
  }
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) {
    bytes.push_back(gpt2_byte_token(static_cast<uint8_t>(b)));
    v.tokens.push_back(bytes.back());
    v.token_types.push_back(1);
  }
  // Fillers grow breadth-first: each token of the previous level extended by every byte symbol. They
  // are distinct by construction; the shortest that could spell "<think>" would be 7 symbols long,
  // far beyond any real vocabulary, and the other specials hold U+FF5C, which no byte maps to.
  size_t level_begin = specials.size(), level_end = v.tokens.size();
  while (v.tokens.size() < n_vocab) {
    for (size_t left = level_begin; left < level_end && v.tokens.size() < n_vocab; ++left) {
      for (int b = 0; b < 256 && v.tokens.size() < n_vocab; ++b) {
        v.tokens.push_back(v.tokens[left] + bytes[b]);
        v.token_types.push_back(1);
        v.merges.push_back(v.tokens[left] + " " + bytes[b]);
      }
    }
    level_begin = level_end;
    level_end = v.tokens.size();
  }
  return v;
}

void write_vocab(gguf::Writer& w, const Vocab& v) {
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_array_string("tokenizer.ggml.tokens", v.tokens);
  w.add_array_i32("tokenizer.ggml.token_type", v.token_types);
  w.add_array_string("tokenizer.ggml.merges", v.merges);
  w.add_u32("tokenizer.ggml.bos_token_id", v.bos);
  w.add_u32("tokenizer.ggml.eos_token_id", v.eos);
}

uint64_t vocab_metadata_bytes(const Vocab& v) {
  auto key = [](const char* k) { return 8 + std::string(k).size() + 4; };  // key string + value type
  auto str_array = [](const std::vector<std::string>& a) {
    uint64_t n = 4 + 8;  // item type + count
    for (const auto& s : a) n += 8 + s.size();
    return n;
  };
  uint64_t n = 0;
  n += key("tokenizer.ggml.model") + 8 + 4;
  n += key("tokenizer.ggml.tokens") + str_array(v.tokens);
  n += key("tokenizer.ggml.token_type") + 12 + 4 * v.token_types.size();
  n += key("tokenizer.ggml.merges") + str_array(v.merges);
  n += key("tokenizer.ggml.bos_token_id") + 4;
  n += key("tokenizer.ggml.eos_token_id") + 4;
  return n;
}

}  // namespace flashstar
