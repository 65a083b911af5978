// Pre-tokenizers: split text into pieces; BPE never merges across a piece boundary.
//
// Two rule sets exist because the two references disagree outside ASCII:
//  - DeepSeekV3: the model's own tokenizer.json (DeepSeek V3, reused unchanged by V4 Flash, whose GGUF
//    says tokenizer.ggml.pre = "joyai-llm"; llama.cpp maps that name to the same three regexes):
//      Sequence[Split(\p{N}{1,3}), Split([一-龥぀-ゟ゠-ヿ]+), Split(<main regex>)], all "Isolated",
//    then ByteLevel without its own regex. Run here with PCRE2 (UTF + Unicode properties, JIT).
//  - Ds4: ds4's hand-written byte rules (interfaces.md §1.4). They agree with the regexes on ASCII
//    text and code, but count every non-ASCII byte as a letter and only ASCII as digits/punctuation,
//    so they differ on e.g. "a 中文" (ds4: "a"," 中文"; HF: "a"," ","中文"), "x中" (one piece vs two),
//    emoji and CJK punctuation (letters for ds4, \p{S}/\p{P} for HF) and non-ASCII digits.
// Ds4 is the default (ds4 --dump-tokens, KV-cache keys and the official-logit vectors were matched with
// it); DeepSeekV3 is selectable and is what the HF `tokenizers` cross-check verifies id for id.
#pragma once
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace flashstar::text {

enum class PreTokenizer { Ds4, DeepSeekV3 };
const char* pretokenizer_name(PreTokenizer p);
// "ds4" or "deepseek-v3" (also accepts "regex", "hf", "deepseek3-llm", "joyai-llm"); throws Error.
PreTokenizer parse_pretokenizer(std::string_view name);

struct Piece {
  uint32_t begin = 0, end = 0;
};

// ds4's rules. Works on arbitrary bytes (malformed UTF-8 advances one byte at a time).
void pretokenize_ds4(std::string_view text, std::vector<Piece>& out);

// The DeepSeek V3 regex cascade. Malformed UTF-8 is tolerated (PCRE2_MATCH_INVALID_UTF): such bytes never
// match and so end up in the gap pieces between matches.
class RegexPreTokenizer {
 public:
  RegexPreTokenizer();
  ~RegexPreTokenizer();
  RegexPreTokenizer(const RegexPreTokenizer&) = delete;
  RegexPreTokenizer& operator=(const RegexPreTokenizer&) = delete;
  void split(std::string_view text, std::vector<Piece>& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The shared instance (compiling the three patterns costs a few milliseconds).
const RegexPreTokenizer& deepseek_v3_pretokenizer();

}  // namespace flashstar::text
