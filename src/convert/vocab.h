// The placeholder tokenizer written by both `convert` (until tokenizer.json import exists) and `synth`.
// ds4 refuses a file without tokenizer.ggml.tokens / merges or without its 7 special strings, so every
// file gets a structurally valid GPT-2 byte-level vocabulary of exactly n_vocab tokens.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flashstar {
namespace gguf {
class Writer;
}

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<std::string> merges;
  std::vector<int32_t> token_types;  // 1 normal, 3 control (llama.cpp numbering)
  uint32_t bos = 0, eos = 1;
};

// ds4's special strings in lookup order: BOS, EOS, User, Assistant, <think>, </think>, DSML.
const std::vector<std::string>& ds4_special_tokens();

// GPT-2 byte → unicode mapping: the token string of byte b.
std::string gpt2_byte_token(uint8_t b);

// ids 0..6: the special strings; then the 256 byte tokens; then the demo BPE merges of
// text::build_demo_vocab and unique byte-level fillers, each with its merge. Requires n_vocab >= 263.
Vocab placeholder_vocab(uint32_t n_vocab);

// tokenizer.ggml.{model,tokens,token_type,merges,bos_token_id,eos_token_id}.
void write_vocab(gguf::Writer& w, const Vocab& v);
// Bytes those keys take in the GGUF metadata section (for size plans).
uint64_t vocab_metadata_bytes(const Vocab& v);

}  // namespace flashstar
