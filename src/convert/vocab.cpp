#include "convert/vocab.h"

#include <algorithm>
#include <unordered_set>

#include "common/error.h"
#include "gguf/writer.h"
#include "text/vocab_builder.h"

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
  // Start from the tokenizer's demo vocabulary (src/text): the same 7 specials + 256 byte tokens, then a
  // few hundred BPE merges trained on a built-in corpus, so synthetic models detokenize to words. It is
  // capped because it cannot fill a Flash-sized vocabulary; the rest is filled below.
  text::BpeVocab b = text::build_demo_vocab(std::min<uint32_t>(n_vocab, 2048));
  Vocab v;
  v.tokens = std::move(b.tokens);
  v.merges = std::move(b.merges);
  v.token_types = std::move(b.token_types);
  v.bos = b.bos;
  v.eos = b.eos;
  for (size_t i = 0; i < specials.size(); ++i)
    if (i >= v.tokens.size() || v.tokens[i] != specials[i])
      fail("placeholder vocabulary: token %zu is not ds4's special string", i);
  std::unordered_set<std::string> have(v.tokens.begin(), v.tokens.end());
  std::vector<std::string> bytes;
  for (int x = 0; x < 256; ++x) bytes.push_back(gpt2_byte_token(static_cast<uint8_t>(x)));
  // Fillers grow breadth-first: every string of the previous level extended by every byte symbol, each
  // new one added with its merge ("left byte"), so every merge is valid and every token reachable.
  // Strings already present are skipped but still extended.
  std::vector<std::string> level = bytes, next;
  while (v.tokens.size() < n_vocab) {
    next.clear();
    for (size_t l = 0; l < level.size() && v.tokens.size() < n_vocab; ++l) {
      for (int x = 0; x < 256 && v.tokens.size() < n_vocab; ++x) {
        std::string t = level[l] + bytes[x];
        if (have.insert(t).second) {
          v.tokens.push_back(t);
          v.token_types.push_back(1);
          v.merges.push_back(level[l] + " " + bytes[x]);
        }
        next.push_back(std::move(t));
      }
    }
    level.swap(next);
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
