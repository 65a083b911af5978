// A small but real byte-level BPE vocabulary for synthetic models: trained deterministically at run time on
// a built-in corpus (English prose, code, a little CJK), so a synthetic model's ids tokenize and detokenize
// like a real model's and demo output is readable words rather than byte soup.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flashstar::text {

struct BpeVocab {
  std::vector<std::string> tokens;   // GPT-2 byte-encoded strings; ids 0..6 are ds4's special strings
  std::vector<std::string> merges;   // "left right", rank = index
  std::vector<int32_t> token_types;  // 1 normal, 3 control (llama.cpp numbering)
  uint32_t bos = 0, eos = 1;
};

// Exactly n_vocab tokens (n_vocab >= 7 + 256): 7 specials, 256 byte tokens, then learned merges; when the
// corpus runs out of pairs, the rest are concatenations of learned tokens (valid text, never produced by
// encoding). Same n_vocab, same result, on every machine.
BpeVocab build_demo_vocab(uint32_t n_vocab);

}  // namespace flashstar::text
