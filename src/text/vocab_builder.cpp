#include "text/vocab_builder.h"

#include <map>
#include <unordered_map>

#include "common/error.h"
#include "text/pretokenize.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace flashstar::text {

namespace {

const char* const kCorpus[] = {
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. "
    "Once upon a time, in a small village by the sea, there lived an old fisherman and his wife. Every morning "
    "he went out in his boat, and every evening he came back with the fish he had caught. The people of the "
    "village liked him, because he was kind and always ready to help.",
    "Hello! How can I help you today? I am a helpful assistant. I can answer questions, write code, explain "
    "ideas, and help you think through problems. Let me know what you would like to do, and I will do my best.",
    "The model reads the prompt, thinks about the question, and then writes an answer. Thinking carefully "
    "before answering usually gives better results, especially for mathematics, programming and logic. "
    "First, we look at what is given. Then we decide what we want to find. Finally, we check the result.",
    "Science is the study of the natural world through observation and experiment. The sun is a star, and the "
    "earth moves around it once every year. Water boils at one hundred degrees and freezes at zero degrees.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
    "for i in range(10):\n    print(i, fibonacci(i))\n",
    "#include <stdio.h>\n\nint main(void) {\n    int total = 0;\n    for (int i = 0; i < 100; i++) {\n"
    "        total += i;\n    }\n    printf(\"total = %d\\n\", total);\n    return 0;\n}\n",
    "The answer is 42. In 2024 there were 365 days, 12 months and 52 weeks. Call 555-0100 or visit "
    "https://example.com/docs for more information about the project.",
    "Yes, that is right. No, I do not think so. Maybe we should try again later? Thank you very much for your "
    "question. Here is a short summary of the main points, followed by a longer explanation.",
    "你好，世界。我们今天学习中文。日本語のテキストです。こんにちは。",
};

struct Word {
  std::vector<int32_t> syms;
  int64_t count;
};

}  // namespace

BpeVocab build_demo_vocab(uint32_t n_vocab) {
  static const char* const specials[7] = {kBos, kEos, kUser, kAssistant, kThinkOpen, kThinkClose, kDsml};
  if (n_vocab < 7 + 256) fail("a demo vocabulary needs at least 263 tokens (asked for %u)", n_vocab);
  BpeVocab v;
  std::unordered_map<std::string, int32_t> index;
  auto add = [&](const std::string& t, int32_t type) {
    const int32_t id = static_cast<int32_t>(v.tokens.size());
    v.tokens.push_back(t);
    v.token_types.push_back(type);
    index.emplace(t, id);
    return id;
  };
  for (const char* s : specials) add(s, 3);
  for (int b = 0; b < 256; ++b) {
    std::string t;
    utf8_append(t, gpt2_byte_to_cp(static_cast<uint8_t>(b)));
    add(t, 1);
  }
  // Word counts over the ds4 pre-tokenizer's pieces; std::map keeps the order deterministic.
  std::map<std::string, int64_t> counts;
  std::vector<Piece> pieces;
  for (const char* text : kCorpus) {
    const std::string_view s(text);
    pieces.clear();
    pretokenize_ds4(s, pieces);
    for (const Piece& p : pieces) counts[std::string(s.substr(p.begin, p.end - p.begin))]++;
  }
  std::vector<Word> words;
  for (const auto& [w, c] : counts) {
    Word word{{}, c};
    for (char ch : w) word.syms.push_back(7 + static_cast<uint8_t>(ch));
    words.push_back(std::move(word));
  }
  // Classic BPE training: merge the most frequent adjacent pair (ties: lowest id pair) until full.
  while (v.tokens.size() < n_vocab) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pairs;
    for (const Word& w : words)
      for (size_t i = 0; i + 1 < w.syms.size(); ++i) pairs[{w.syms[i], w.syms[i + 1]}] += w.count;
    std::pair<int32_t, int32_t> best{-1, -1};
    int64_t best_n = 0;
    for (const auto& [pr, n] : pairs)
      if (n > best_n) {
        best = pr;
        best_n = n;
      }
    if (best_n < 2) break;  // pairs seen once would just memorise the corpus
    const std::string merged = v.tokens[best.first] + v.tokens[best.second];
    if (index.count(merged)) break;
    const int32_t id = add(merged, 1);
    v.merges.push_back(v.tokens[best.first] + " " + v.tokens[best.second]);
    for (Word& w : words) {
      std::vector<int32_t> out;
      for (size_t i = 0; i < w.syms.size(); ++i) {
        if (i + 1 < w.syms.size() && w.syms[i] == best.first && w.syms[i + 1] == best.second) {
          out.push_back(id);
          ++i;
        } else {
          out.push_back(w.syms[i]);
        }
      }
      w.syms.swap(out);
    }
  }
  // Filler: concatenations of learned tokens, skipping any string already present.
  const size_t learned_end = v.tokens.size();
  for (size_t a = 7 + 256; v.tokens.size() < n_vocab; ++a) {
    const size_t la = 7 + 256 + (a - 7 - 256) % std::max<size_t>(1, learned_end - 7 - 256);
    const size_t lb = 7 + 32 + (a * 7919) % (learned_end - 7 - 32);  // pseudo-random partner, deterministic
    const std::string t = v.tokens[std::min(la, learned_end - 1)] + v.tokens[lb];
    if (!index.count(t)) add(t, 1);
    if (a > 64ull * n_vocab) fail("demo vocabulary: cannot fill %u tokens", n_vocab);
  }
  return v;
}

}  // namespace flashstar::text
