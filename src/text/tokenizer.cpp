#include "text/tokenizer.h"

#include <algorithm>
#include <limits>
#include <queue>

#include "common/error.h"
#include "gguf/gguf.h"
#include "text/utf8.h"

namespace flashstar::text {

namespace {

const std::string kEmpty;

// A token string containing U+FF5C (fullwidth vertical line) is emitted verbatim, as ds4 does; this
// covers every DeepSeek control token. Others map back through the GPT-2 byte table, dropping code points
// that no byte maps to.
std::string decode_token_text(const std::string& t) {
  if (t.find("\xEF\xBD\x9C") != std::string::npos) return t;
  std::string out;
  out.reserve(t.size());
  for (size_t i = 0; i < t.size();) {
    const uint32_t cp = utf8_next(t, i);
    const int b = gpt2_cp_to_byte(cp);
    if (b >= 0) out += static_cast<char>(b);
  }
  return out;
}

std::vector<std::string> string_array(const gguf::File& f, const char* key) {
  const gguf::Value* v = f.find(key);
  if (!v) fail("%s: no tokenizer (metadata key %s is missing)", f.path().c_str(), key);
  if (v->type != gguf::ValueType::ARRAY || v->item_type != gguf::ValueType::STRING)
    fail("%s: %s is not an array of strings", f.path().c_str(), key);
  std::vector<std::string> out;
  out.reserve(v->items.size());
  for (const auto& it : v->items) out.push_back(it.s);
  return out;
}

}  // namespace

Tokenizer::Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges, PreTokenizer pre)
    : tokens_(std::move(tokens)), pre_(pre) {
  if (tokens_.empty()) fail("tokenizer: the token list is empty");
  if (tokens_.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) fail("tokenizer: too many tokens");
  index_.reserve(tokens_.size() * 2);
  bytes_.reserve(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) {
    index_.emplace(tokens_[i], static_cast<int32_t>(i));  // first id wins for a duplicated string
    bytes_.push_back(decode_token_text(tokens_[i]));
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    utf8_append(s, gpt2_byte_to_cp(static_cast<uint8_t>(b)));
    byte_id_[b] = find(s);
  }
  // Merges are keyed by id pairs. A merge whose parts or result are not tokens could only yield symbols
  // that map to no id; such entries are skipped (real vocabularies have none).
  merges_.reserve(merges.size() * 2);
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& m = merges[r];
    const size_t sp = m.find(' ', 1);  // the left part may itself be a lone space-like char, never empty
    if (sp == std::string::npos) continue;
    const int32_t a = find(std::string_view(m).substr(0, sp)), b = find(std::string_view(m).substr(sp + 1));
    if (a < 0 || b < 0) continue;
    const int32_t c = find(m.substr(0, sp) + m.substr(sp + 1));
    if (c < 0) continue;
    const uint64_t key = (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
    merges_.emplace(key, Merge{static_cast<int32_t>(r), c});  // lowest rank wins for a duplicate pair
  }
  n_merges_ = merges.size();
  auto need = [&](const char* s) {
    const int32_t id = find(s);
    if (id < 0) fail("tokenizer: required special token %s is missing from the vocabulary", s);
    return id;
  };
  special_.bos = need(kBos);
  special_.eos = need(kEos);
  special_.user = need(kUser);
  special_.assistant = need(kAssistant);
  special_.think_open = need(kThinkOpen);
  special_.think_close = need(kThinkClose);
  special_.dsml = need(kDsml);
}

Tokenizer Tokenizer::from_gguf(const gguf::File& file, PreTokenizer pre) {
  return Tokenizer(string_array(file, "tokenizer.ggml.tokens"), string_array(file, "tokenizer.ggml.merges"), pre);
}

int32_t Tokenizer::find(std::string_view t) const {
  auto it = index_.find(std::string(t));
  return it == index_.end() ? -1 : it->second;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < bytes_.size() ? bytes_[id] : kEmpty;
}

const std::string& Tokenizer::token_text(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < tokens_.size() ? tokens_[id] : kEmpty;
}

bool Tokenizer::is_special(int32_t id) const {
  const SpecialIds& s = special_;
  return id == s.bos || id == s.eos || id == s.user || id == s.assistant || id == s.think_open ||
         id == s.think_close || id == s.dsml;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

void Tokenizer::bpe_piece(std::string_view raw, std::vector<int32_t>& out) const {
  const size_t n = raw.size();
  if (n == 1) {
    const int32_t id = byte_id_[static_cast<uint8_t>(raw[0])];
    if (id >= 0) out.push_back(id);
    return;
  }
  // Symbols form a doubly linked list over positions; id -1 marks a byte missing from the vocabulary
  // (it takes part in no merge and is dropped on output, as ds4 drops it).
  struct Sym {
    int32_t id;
    int32_t prev, next;
  };
  std::vector<Sym> sym(n);
  for (size_t i = 0; i < n; ++i)
    sym[i] = {byte_id_[static_cast<uint8_t>(raw[i])], static_cast<int32_t>(i) - 1,
              i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
  struct Cand {
    int32_t rank, pos, left, right;  // left/right: ids the pair had when queued (stale check)
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto consider = [&](int32_t pos) {
    if (pos < 0) return;
    const int32_t nx = sym[pos].next;
    if (nx < 0 || sym[pos].id < 0 || sym[nx].id < 0) return;
    auto it = merges_.find((uint64_t(uint32_t(sym[pos].id)) << 32) | uint32_t(sym[nx].id));
    if (it != merges_.end()) heap.push({it->second.rank, pos, sym[pos].id, sym[nx].id});
  };
  for (size_t i = 0; i + 1 < n; ++i) consider(static_cast<int32_t>(i));
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& l = sym[c.pos];
    if (l.id != c.left || l.next < 0 || sym[l.next].id != c.right) continue;  // stale
    const int32_t r = l.next;
    l.id = merges_.at((uint64_t(uint32_t(c.left)) << 32) | uint32_t(c.right)).result;
    l.next = sym[r].next;
    if (l.next >= 0) sym[l.next].prev = c.pos;
    sym[r].id = -2;  // unlinked
    consider(l.prev);
    consider(c.pos);
  }
  for (int32_t p = 0; p >= 0; p = sym[p].next)
    if (sym[p].id >= 0) out.push_back(sym[p].id);
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  if (text.size() > std::numeric_limits<uint32_t>::max()) fail("tokenizer: text longer than 4 GiB");
  std::vector<Piece> pieces;
  pieces.reserve(text.size() / 3 + 1);
  if (pre_ == PreTokenizer::Ds4)
    pretokenize_ds4(text, pieces);
  else
    deepseek_v3_pretokenizer().split(text, pieces);
  out.reserve(out.size() + pieces.size() + pieces.size() / 4);
  for (const Piece& p : pieces) bpe_piece(text.substr(p.begin, p.end - p.begin), out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  encode_append(text, out);
  return out;
}

std::vector<int32_t> Tokenizer::encode_rendered(std::string_view text) const {
  static const std::string_view names[7] = {kBos, kEos, kUser, kAssistant, kThinkOpen, kThinkClose, kDsml};
  const int32_t ids[7] = {special_.bos,        special_.eos,         special_.user, special_.assistant,
                          special_.think_open, special_.think_close, special_.dsml};
  std::vector<int32_t> out;
  size_t pending = 0;
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    int hit = -1;
    if (c == '<' || c == '\xEF') {  // every special string starts with '<' or with U+FF5C
      for (int k = 0; k < 7; ++k)
        if (text.compare(i, names[k].size(), names[k]) == 0) {
          hit = k;
          break;
        }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    if (i > pending) encode_append(text.substr(pending, i - pending), out);
    out.push_back(ids[hit]);
    i += names[hit].size();
    pending = i;
  }
  if (pending < text.size()) encode_append(text.substr(pending), out);
  return out;
}

}  // namespace flashstar::text
