// Tokenizer unit tests on the built-in demo vocabulary; the id-for-id comparison with HF `tokenizers` is
// tests/python/test_tokenizer_hf.py.
#include <gtest/gtest.h>

#include <chrono>

#include "common/error.h"
#include "common/file_util.h"
#include "text/tokenizer.h"
#include "text/utf8.h"
#include "text/vocab_builder.h"

using namespace flashstar::text;

namespace {

const Tokenizer& demo(PreTokenizer pre = PreTokenizer::Ds4) {
  static const BpeVocab v = build_demo_vocab(4096);
  static const Tokenizer ds4(v.tokens, v.merges, PreTokenizer::Ds4);
  static const Tokenizer hf(v.tokens, v.merges, PreTokenizer::DeepSeekV3);
  return pre == PreTokenizer::Ds4 ? ds4 : hf;
}

std::vector<std::string> pieces(std::string_view s, PreTokenizer pre) {
  std::vector<Piece> p;
  if (pre == PreTokenizer::Ds4)
    pretokenize_ds4(s, p);
  else
    deepseek_v3_pretokenizer().split(s, p);
  std::vector<std::string> out;
  for (const Piece& x : p) out.emplace_back(s.substr(x.begin, x.end - x.begin));
  return out;
}

using V = std::vector<std::string>;

}  // namespace

TEST(Utf8, ByteTableIsABijection) {
  for (int b = 0; b < 256; ++b) EXPECT_EQ(gpt2_cp_to_byte(gpt2_byte_to_cp(static_cast<uint8_t>(b))), b);
  EXPECT_EQ(gpt2_byte_to_cp(' '), 0x120u);  // 'Ġ'
  EXPECT_EQ(gpt2_byte_to_cp('A'), static_cast<uint32_t>('A'));
}

TEST(Utf8, Validation) {
  size_t bad = 0;
  EXPECT_TRUE(utf8_valid("héllo 日本 🎉"));
  EXPECT_FALSE(utf8_valid("ab\xC3", &bad));
  EXPECT_EQ(bad, 2u);
  EXPECT_FALSE(utf8_valid("\xC0\xAF"));          // overlong
  EXPECT_FALSE(utf8_valid("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(utf8_valid("\xF4\x90\x80\x80"));  // > U+10FFFF
}

TEST(Utf8, StreamHoldsBackSplitCharacters) {
  Utf8Stream s;
  const std::string emoji = "🎉";  // F0 9F 8E 89
  EXPECT_EQ(s.push("a" + emoji.substr(0, 1)), "a");
  EXPECT_EQ(s.push(emoji.substr(1, 2)), "");
  EXPECT_EQ(s.push(emoji.substr(3) + "b"), emoji + "b");
  EXPECT_EQ(s.push("\xFF"), "\xFF");  // can never start a character: passed through
  EXPECT_EQ(s.push("\xE6\x97"), "");
  EXPECT_EQ(s.flush(), "\xE6\x97");
}

TEST(PreTokenizer, Ds4Rules) {
  const auto P = PreTokenizer::Ds4;
  EXPECT_EQ(pieces("12345", P), (V{"123", "45"}));
  EXPECT_EQ(pieces("    int x;", P), (V{"   ", " int", " x", ";"}));
  EXPECT_EQ(pieces("a >;\nb", P), (V{"a", " >;\n", "b"}));
  EXPECT_EQ(pieces(".foo_bar(int", P), (V{".foo", "_bar", "(int"}));
  EXPECT_EQ(pieces("\t{", P), (V{"\t", "{"}));
  EXPECT_EQ(pieces("x  \n\n  y", P), (V{"x", "  \n\n", " ", " y"}));
  EXPECT_EQ(pieces("中文abc", P), (V{"中文", "abc"}));
  EXPECT_EQ(pieces("abc中文", P), (V{"abc中文"}));  // ds4: a Latin run swallows CJK
  EXPECT_EQ(pieces("a 中文", P), (V{"a", " 中文"}));
}

TEST(PreTokenizer, DeepSeekV3Regexes) {
  const auto P = PreTokenizer::DeepSeekV3;
  EXPECT_EQ(pieces("12345", P), (V{"123", "45"}));
  EXPECT_EQ(pieces("    int x;", P), (V{"   ", " int", " x", ";"}));
  EXPECT_EQ(pieces("a >;\nb", P), (V{"a", " >;\n", "b"}));
  EXPECT_EQ(pieces("abc中文", P), (V{"abc", "中文"}));
  EXPECT_EQ(pieces("a 中文", P), (V{"a", " ", "中文"}));
  EXPECT_EQ(pieces("hi 🎉!", P), (V{"hi", " 🎉!"}));
  EXPECT_EQ(pieces("١٢٣٤", P), (V{"١٢٣", "٤"}));
}

TEST(Tokenizer, SpecialTokensAndEntryPoints) {
  const Tokenizer& t = demo();
  const SpecialIds& s = t.special();
  EXPECT_EQ(s.bos, 0);
  EXPECT_EQ(s.eos, 1);
  const std::string chat = std::string(kBos) + "sys" + kUser + "hi <think>" + kAssistant + kThinkOpen;
  const auto ids = t.encode_rendered(chat);
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids.front(), s.bos);
  EXPECT_EQ(ids.back(), s.think_open);
  EXPECT_EQ(ids[ids.size() - 2], s.assistant);
  EXPECT_EQ(t.decode(ids), chat);
  // Plain text never produces control ids, whatever it contains.
  for (int32_t id : t.encode(chat)) EXPECT_FALSE(t.is_special(id));
  EXPECT_EQ(t.decode(t.encode(chat)), chat);
}

TEST(Tokenizer, RoundTripsArbitraryBytes) {
  const Tokenizer& t = demo();
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  for (auto pre : {PreTokenizer::Ds4, PreTokenizer::DeepSeekV3}) {
    const Tokenizer& tk = demo(pre);
    for (const std::string& s : {std::string("The quick brown fox jumps over the lazy dog."),
                                 std::string("def f(x):\n    return x  # c\n\n\n"), std::string("日本語 中文 🎉 ñ"), all,
                                 std::string(" \t\r\n\v\f  ")})
      EXPECT_EQ(tk.decode(tk.encode(s)), s);
  }
  EXPECT_LT(t.encode("The quick brown fox jumps over the lazy dog.").size(), 30u);  // merges do apply
}

TEST(Tokenizer, LinearTimeOnHugeInputs) {
  std::string big;
  while (big.size() < 400000) {
    big += "int main(void) {\n    return fibonacci(10) + 42;\n}\n";
    big += std::string(2000, ' ') + "x" + std::string(500, '\t') + "\n";
    big += "日本語のテキストです。中文文本。" + std::string(3000, 'a') + " ";
  }
  for (auto pre : {PreTokenizer::Ds4, PreTokenizer::DeepSeekV3}) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = demo(pre).encode(big);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GT(ids.size(), 50000u);
    EXPECT_LT(s, 2.0) << "pre-tokenizer " << pretokenizer_name(pre);  // generous for sanitizer builds
  }
}

TEST(VocabBuilder, DeterministicAndComplete) {
  const BpeVocab a = build_demo_vocab(1000), b = build_demo_vocab(1000);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.merges, b.merges);
  ASSERT_EQ(a.tokens.size(), 1000u);
  EXPECT_GT(a.merges.size(), 200u);
  EXPECT_EQ(a.tokens[0], kBos);
  EXPECT_EQ(a.tokens[6], kDsml);
  EXPECT_THROW(build_demo_vocab(100), flashstar::Error);
}

TEST(VocabBuilder, ReadsHfTokenizerJson) {
  const std::string path = ::testing::TempDir() + "/fs_tokenizer_test.json";
  std::string j = R"({"model":{"type":"BPE","vocab":{"a":7,"b":8,"ab":9},"merges":[["a","b"]]},"added_tokens":[)";
  const char* sp[7] = {kBos, kEos, kUser, kAssistant, kThinkOpen, kThinkClose, kDsml};
  for (int i = 0; i < 7; ++i)
    j += std::string(i ? "," : "") + "{\"id\":" + std::to_string(i) + ",\"content\":\"" + sp[i] + "\",\"special\":true}";
  j += "]}";
  flashstar::write_file_atomic(path, j);
  const BpeVocab v = vocab_from_tokenizer_json(path);
  ASSERT_EQ(v.tokens.size(), 10u);
  EXPECT_EQ(v.tokens[9], "ab");
  EXPECT_EQ(v.merges, std::vector<std::string>{"a b"});
  EXPECT_EQ(v.token_types[0], 3);
  EXPECT_EQ(v.token_types[8], 1);
  const Tokenizer t(v.tokens, v.merges);
  EXPECT_EQ(t.encode("ab"), std::vector<int32_t>{9});
}
