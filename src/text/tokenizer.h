// Byte-level BPE tokenizer read from GGUF metadata (tokenizer.ggml.tokens / tokenizer.ggml.merges), with
// the DeepSeek special tokens and the two entry points ds4 has (interfaces.md §1.7): plain text, where
// special strings are ordinary text, and rendered chat, where the 7 special strings become their ids.
//
// Encoding is O(n log n) in the input: the pre-tokenizer is linear, and BPE runs per piece over a linked
// list of symbols with a heap of candidate merges keyed by rank then position, which yields exactly the
// "lowest rank, leftmost first" order of the naive algorithm (and of HF `tokenizers`).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/pretokenize.h"

namespace flashstar {
namespace gguf {
class File;
}

namespace text {

// ds4's special strings, in the order the rendered-chat scan tries them.
inline constexpr const char* kBos = "<｜begin▁of▁sentence｜>";
inline constexpr const char* kEos = "<｜end▁of▁sentence｜>";
inline constexpr const char* kUser = "<｜User｜>";
inline constexpr const char* kAssistant = "<｜Assistant｜>";
inline constexpr const char* kThinkOpen = "<think>";
inline constexpr const char* kThinkClose = "</think>";
inline constexpr const char* kDsml = "｜DSML｜";

struct SpecialIds {
  int32_t bos = -1, eos = -1, user = -1, assistant = -1, think_open = -1, think_close = -1, dsml = -1;
};

class Tokenizer {
 public:
  // tokens[i] is the byte-encoded string of id i; merges[r] is "left right" with rank r. Throws Error
  // when a special string is missing (ds4 refuses such a vocabulary too).
  Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
            PreTokenizer pre = PreTokenizer::Ds4);
  // Reads only the tokenizer keys, so a file whose tensors are absent or huge is fine.
  static Tokenizer from_gguf(const gguf::File& file, PreTokenizer pre = PreTokenizer::Ds4);

  // Plain text: pre-tokenize + BPE; special strings are not recognised.
  std::vector<int32_t> encode(std::string_view text) const;
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;
  // Rendered chat: the 7 special strings (wherever they occur) become their ids, and the text between
  // them is encoded as plain text, each span on its own.
  std::vector<int32_t> encode_rendered(std::string_view text) const;

  // Raw bytes of one token (specials verbatim); "" for an id out of range.
  const std::string& token_bytes(int32_t id) const;
  // The vocabulary string as stored (byte-encoded form, e.g. "Ġthe").
  const std::string& token_text(int32_t id) const;
  std::string decode(std::span<const int32_t> ids) const;
  int32_t find(std::string_view token_text) const;  // -1 when absent

  size_t n_vocab() const { return tokens_.size(); }
  size_t n_merges() const { return n_merges_; }
  const SpecialIds& special() const { return special_; }
  bool is_special(int32_t id) const;
  PreTokenizer pretokenizer() const { return pre_; }
  void set_pretokenizer(PreTokenizer p) { pre_ = p; }

 private:
  void bpe_piece(std::string_view raw, std::vector<int32_t>& out) const;

  struct Merge {
    int32_t rank, result;
  };
  std::vector<std::string> tokens_;
  std::vector<std::string> bytes_;  // decoded bytes per id
  std::unordered_map<std::string, int32_t> index_;
  std::unordered_map<uint64_t, Merge> merges_;  // key: (left id << 32) | right id
  size_t n_merges_ = 0;
  int32_t byte_id_[256];
  SpecialIds special_;
  PreTokenizer pre_;
};

}  // namespace text
}  // namespace flashstar
