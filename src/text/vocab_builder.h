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

// Reads an HF tokenizer.json (BPE model: vocab, merges as "a b" strings or [a, b] pairs, added_tokens) into
// GGUF form: tokens by id (holes become "<｜unused_N｜>"), merges in rank order, added special tokens typed
// control. For `flashstar convert` to embed a checkpoint's real tokenizer. Throws Error on a malformed file.
BpeVocab vocab_from_tokenizer_json(const std::string& path);

}  // namespace flashstar::text
