// The serve pieces that need no model: streamed reasoning/content/tool-block splitting with its
// hold-backs, raw JSON spans for tool schemas, and request validation.
#include <gtest/gtest.h>

#include "server/reply_stream.h"
#include "server/requests.h"

namespace flashstar::server {
namespace {

struct Collect : EventSink {
  std::string reasoning_text, content_text;
  std::vector<std::string> content_pieces;
  void reasoning(std::string_view s) override { reasoning_text += s; }
  void content(std::string_view s) override {
    content_text += s;
    content_pieces.emplace_back(s);
  }
};

TEST(ServerStream, ThinkingSplitsAndHoldsPartialClose) {
  Collect c;
  ReplyStream rs(true, false, {}, &c);
  for (const char* t : {"I ", "think", "</th"}) EXPECT_FALSE(rs.push(t));
  EXPECT_EQ(c.reasoning_text, "I think");  // "</th" may still become </think>
  rs.push("ink>");
  rs.push("Hello");
  rs.finish(true);
  EXPECT_EQ(c.reasoning_text, "I think");
  EXPECT_EQ(c.content_text, "Hello");
}

TEST(ServerStream, ToolBlockIsNotStreamedAsContent) {
  Collect c;
  ReplyStream rs(false, true, {}, &c);
  const char* toks[] = {"Checking.", "\n\n", "<", "｜DSML｜", "tool_calls>\n<", "｜DSML｜", "invoke name=\"f\">\n</",
                        "｜DSML｜", "invoke>\n</", "｜DSML｜", "tool_calls"};
  for (const char* t : toks) EXPECT_FALSE(rs.push(t)) << t;
  EXPECT_TRUE(rs.push(">"));  // the closed block ends generation
  rs.finish(true);
  EXPECT_EQ(c.content_text, "Checking.");
  EXPECT_NE(rs.block_start(), std::string::npos);
}

TEST(ServerStream, InvalidToolBlockIsReleasedAsText) {
  Collect c;
  ReplyStream rs(false, true, {}, &c);
  rs.push("a <tool_calls> broken");
  rs.finish(false);
  EXPECT_EQ(c.content_text, "a <tool_calls> broken");
}

TEST(ServerStream, StopStringAcrossTokens) {
  Collect c;
  ReplyStream rs(false, false, {"STOP"}, &c);
  EXPECT_FALSE(rs.push("ab"));
  EXPECT_FALSE(rs.push("cST"));
  EXPECT_EQ(c.content_text, "abc");  // "ST" held back
  EXPECT_TRUE(rs.push("OPxyz"));
  rs.finish(true);
  EXPECT_EQ(c.content_text, "abc");
  EXPECT_EQ(rs.text(), "abc");
}

TEST(ServerStream, Utf8CharacterSplitOverTokens) {
  Collect c;
  ReplyStream rs(false, false, {}, &c);
  rs.push("x\xe4\xbd");
  rs.push("\xa0y");
  rs.finish(true);
  ASSERT_EQ(c.content_pieces.size(), 2u);
  EXPECT_EQ(c.content_pieces[0], "x");
  EXPECT_EQ(c.content_pieces[1], "\xe4\xbd\xa0y");
}

TEST(ServerRequests, ToolSchemasKeepTheirRawBytes) {
  const std::string raw =
      R"({"messages":[{"role":"user","content":"hi"}],"tools":[ {"type":"function", "function": {"name":"f","description":"caf\u00e9",  "parameters":{}} } ]})";
  const GenRequest r = parse_chat_request(ojson::parse(raw), raw);
  ASSERT_EQ(r.tool_schemas.size(), 1u);
  EXPECT_EQ(r.tool_schemas[0], R"({"name":"f","description":"caf\u00e9",  "parameters":{}})");
  EXPECT_TRUE(r.tools_active);
  EXPECT_EQ(r.think, text::ThinkMode::High);
}

TEST(ServerRequests, BadInputIsA400) {
  auto status = [](const std::string& body) {
    try {
      parse_chat_request(ojson::parse(body), body);
      return 200;
    } catch (const ApiError& e) {
      return e.status;
    }
  };
  EXPECT_EQ(status(R"({})"), 400);
  EXPECT_EQ(status(R"({"messages":5})"), 400);
  EXPECT_EQ(status(R"({"messages":[{"role":"user","content":{}}]})"), 400);
  EXPECT_EQ(status(R"({"messages":[],"max_tokens":"5"})"), 400);
  EXPECT_EQ(status(R"({"messages":[],"temperature":-1,"thinking":{"type":"disabled"}})"), 400);
  EXPECT_EQ(status(R"({"messages":[],"stop":[1]})"), 400);
  EXPECT_EQ(status(R"({"messages":[],"reasoning_effort":"none"})"), 200);
}

TEST(ServerRequests, ThinkingResolution) {
  auto mode = [](const std::string& body) { return parse_chat_request(ojson::parse(body), body).think; };
  EXPECT_EQ(mode(R"({"messages":[],"model":"deepseek-chat"})"), text::ThinkMode::None);
  EXPECT_EQ(mode(R"({"messages":[],"model":"deepseek-reasoner"})"), text::ThinkMode::High);
  EXPECT_EQ(mode(R"({"messages":[],"reasoning_effort":"max"})"), text::ThinkMode::Max);
  EXPECT_EQ(mode(R"({"messages":[],"think":false})"), text::ThinkMode::None);
  EXPECT_EQ(mode(R"({"messages":[],"model":"deepseek-chat","thinking":{"type":"enabled"}})"), text::ThinkMode::High);
}

}  // namespace
}  // namespace flashstar::server
