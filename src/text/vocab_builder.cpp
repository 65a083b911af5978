#include "text/vocab_builder.h"

#include <nlohmann/json.hpp>

#include <map>
#include <unordered_map>

#include "common/error.h"
#include "common/file_util.h"
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

BpeVocab vocab_from_tokenizer_json(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("%s: not valid JSON (%s)", path.c_str(), e.what());
  }
  const auto& model = j.contains("model") ? j["model"] : nlohmann::json();
  if (!model.is_object() || model.value("type", "BPE") != "BPE" || !model.contains("vocab") || !model["vocab"].is_object())
    fail("%s: not a BPE tokenizer.json (model.vocab missing)", path.c_str());
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;
  for (const auto& [tok, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24))
      fail("%s: bad id for token %s", path.c_str(), tok.c_str());
    by_id[id.get<int64_t>()] = {tok, 1};
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const auto& t : j["added_tokens"]) {
      const int64_t id = t.value("id", int64_t{-1});
      if (id < 0 || id > (1 << 24)) fail("%s: bad added token id", path.c_str());
      by_id[id] = {t.value("content", std::string()), t.value("special", false) ? 3 : 1};
    }
  BpeVocab v;
  const int64_t n = by_id.empty() ? 0 : by_id.rbegin()->first + 1;
  v.tokens.resize(static_cast<size_t>(n));
  v.token_types.assign(static_cast<size_t>(n), 1);
  for (int64_t i = 0; i < n; ++i) {
    auto it = by_id.find(i);
    if (it == by_id.end()) {
      v.tokens[i] = strfmt("<｜unused_%lld｜>", static_cast<long long>(i));
      v.token_types[i] = 5;  // unused
    } else {
      v.tokens[i] = it->second.first;
      v.token_types[i] = it->second.second;
    }
  }
  if (model.contains("merges") && model["merges"].is_array())
    for (const auto& m : model["merges"]) {
      if (m.is_string()) v.merges.push_back(m.get<std::string>());
      else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
        v.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      else fail("%s: a merge is neither \"a b\" nor [a, b]", path.c_str());
    }
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    if (v.tokens[i] == kBos) v.bos = static_cast<uint32_t>(i);
    if (v.tokens[i] == kEos) v.eos = static_cast<uint32_t>(i);
  }
  return v;
}

}  // namespace flashstar::text
