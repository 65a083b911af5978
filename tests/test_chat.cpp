// DS4 prompt rendering against golden files (written by tests/golden/chat/make_golden.py, an independent
// implementation of the same rules), DSML parse/render round trips and the decode-time DSML states.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "text/chat.h"

using namespace flashstar::text;

namespace {

const std::string kGoldenDir = std::string(FLASHSTAR_TEST_PY_DIR) + "/../golden/chat/";

std::vector<Message> messages_from(const nlohmann::json& j) {
  std::vector<Message> out;
  for (const auto& m : j) {
    Message msg;
    msg.role = m.at("role");
    msg.content = m.value("content", "");
    if (m.contains("reasoning")) msg.reasoning = m["reasoning"].get<std::string>();
    msg.tool_call_id = m.value("tool_call_id", "");
    if (m.contains("tool_calls"))
      for (const auto& c : m["tool_calls"]) msg.tool_calls.push_back({c.value("id", ""), c.at("name"), c.at("arguments")});
    out.push_back(std::move(msg));
  }
  return out;
}

ThinkMode mode_from(const std::string& s) {
  return s == "none" ? ThinkMode::None : s == "max" ? ThinkMode::Max : ThinkMode::High;
}

}  // namespace

TEST(ChatGolden, RenderMatchesGoldenFiles) {
  const auto cases = nlohmann::json::parse(flashstar::read_file(kGoldenDir + "cases.json"));
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    std::vector<std::string> tools;
    if (c.contains("tools"))
      for (const auto& t : c["tools"]) tools.push_back(t);
    const std::string got = render_chat(messages_from(c["messages"]), tools, mode_from(c["mode"]));
    const std::string want = flashstar::read_file(kGoldenDir + c["name"].get<std::string>() + ".txt");
    EXPECT_EQ(got, want) << "case " << c["name"];
  }
}

TEST(ChatGolden, ThinkMaxNeedsLargeContext) {
  EXPECT_EQ(effective_think_mode(ThinkMode::Max, 32768), ThinkMode::High);
  EXPECT_EQ(effective_think_mode(ThinkMode::Max, kThinkMaxMinContext), ThinkMode::Max);
  EXPECT_EQ(effective_think_mode(ThinkMode::None, 10), ThinkMode::None);
}

TEST(Dsml, ParseCanonicalBlock) {
  const std::string text =
      "I will read it.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"read\">\n"
      "<｜DSML｜parameter name=\"path\" string=\"true\">a &amp; b.c</｜DSML｜parameter>\n"
      "<｜DSML｜parameter name=\"limit\" string=\"false\"> { \"n\" : [1, 2] } </｜DSML｜parameter>\n"
      "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  const ParsedReply r = parse_reply(text, false);
  ASSERT_TRUE(r.ok);
  EXPECT_FALSE(r.reasoning.has_value());
  EXPECT_EQ(r.content, "I will read it.");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "read");
  EXPECT_EQ(r.tool_calls[0].arguments, "{\"path\": \"a & b.c\", \"limit\": {\"n\":[1,2]}}");
  EXPECT_EQ(r.raw_dsml, text.substr(text.find("\n\n")));
}

TEST(Dsml, ThinkingSplitsReasoningAndIgnoresDsmlInsideIt) {
  const std::string inner = "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"x\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  ParsedReply r = parse_reply("I could call " + inner + " but no.</think>Answer.", true);
  EXPECT_TRUE(r.tool_calls.empty());
  EXPECT_EQ(r.reasoning.value_or("?"), "I could call " + inner + " but no.");
  EXPECT_EQ(r.content, "Answer.");
  r = parse_reply("still thinking", true);  // truncated inside reasoning: surfaces as content (ds4 quirk)
  EXPECT_FALSE(r.reasoning.has_value());
  EXPECT_EQ(r.content, "still thinking");
}

TEST(Dsml, ShortAndPlainXmlVariants) {
  ParsedReply r = parse_reply(
      "x\n\n<DSML｜tool_calls>\n<DSML｜invoke name=\"a\">\n<DSML｜parameter name=\"k\">v</DSML｜parameter>\n"
      "</DSML｜invoke>\n</DSML｜tool_calls>",
      false);
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].arguments, "{\"k\": \"v\"}");  // no string attribute: a string
  r = parse_reply("<tool_calls><invoke name=\"b\"><parameter name=\"n\" string=\"false\">7</parameter></invoke></tool_calls>",
                  false);
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "b");
  EXPECT_EQ(r.tool_calls[0].arguments, "{\"n\": 7}");
}

TEST(Dsml, NestedParametersBecomeAnObject) {
  const ParsedReply r = parse_reply(
      "<｜DSML｜tool_calls><｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"o\">\n"
      "<｜DSML｜parameter name=\"a\" string=\"true\">1</｜DSML｜parameter>"
      "<｜DSML｜parameter name=\"b\" string=\"false\">2</｜DSML｜parameter>\n</｜DSML｜parameter>"
      "</｜DSML｜invoke></｜DSML｜tool_calls>",
      false);
  ASSERT_TRUE(r.ok);
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].arguments, "{\"o\": {\"a\":\"1\",\"b\":2}}");  // minified, as ds4 does
}

TEST(Dsml, BrokenBlockIsAFailure) {
  const ParsedReply r = parse_reply("hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"x\">\n<garbage>", false);
  EXPECT_TRUE(r.tool_block_seen);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.tool_calls.empty());
}

TEST(Dsml, RenderParseRoundTrip) {
  const std::vector<std::vector<ToolCall>> sets = {
      {{"", "read", "{\"path\": \"a.c\"}"}},
      {{"", "bash", "{\"command\": \"ls -la && echo '<done>' > x & </｜DSML｜parameter>\", \"timeout\": 10}"},
       {"", "write", "{\"obj\": {\"a\": [1, 2.5, \"s\"], \"b\": null}, \"flag\": false, \"txt\": \"日本語\\n🎉\"}"}},
      // (A string value holding a literal "&amp;" does not round-trip: rendering keeps it raw and parsing
      // decodes entities, as in ds4.)
      {{"", "odd\"name<&>", "{\"k\\\"q\": \"v & literal <b>\"}"}},
      {{"", "empty", "{}"}},
  };
  for (const auto& calls : sets) {
    const std::string dsml = render_tool_calls(calls);
    const ParsedReply r = parse_reply("content" + dsml, false);
    ASSERT_TRUE(r.ok) << dsml;
    EXPECT_EQ(r.raw_dsml, dsml);
    EXPECT_EQ(r.content, "content");
    ASSERT_EQ(r.tool_calls.size(), calls.size());
    for (size_t i = 0; i < calls.size(); ++i) {
      EXPECT_EQ(r.tool_calls[i].name, calls[i].name);
      // Parsed arguments, rendered again, give the same DSML: parse -> render is a stable cache key.
    }
    EXPECT_EQ(render_tool_calls(r.tool_calls), dsml);
  }
}

TEST(Dsml, DecodeStates) {
  const std::string open = "text\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n";
  EXPECT_EQ(dsml_state("plain text"), DsmlState::Outside);
  EXPECT_EQ(dsml_state(open), DsmlState::Structural);
  EXPECT_EQ(dsml_state(open + "<｜DSML｜parameter name=\"p\" string=\"true\">hello wor"), DsmlState::StringBody);
  EXPECT_EQ(dsml_state(open + "<｜DSML｜parameter name=\"p\" string=\"true\">hello</"), DsmlState::Structural);
  EXPECT_EQ(dsml_state(open + "<｜DSML｜parameter name=\"p\" string=\"false\">{\"a\": \"x"), DsmlState::JsonString);
  EXPECT_EQ(dsml_state(open + "<｜DSML｜parameter name=\"p\" string=\"false\">{\"a\": 1"), DsmlState::JsonStructural);
  EXPECT_EQ(dsml_state(open + "<｜DSML｜parameter name=\"p"), DsmlState::Structural);
  EXPECT_EQ(dsml_state(open + "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"), DsmlState::Outside);
  EXPECT_TRUE(dsml_greedy(DsmlState::Structural));
  EXPECT_FALSE(dsml_greedy(DsmlState::StringBody));
  EXPECT_TRUE(dsml_block_closed(open + "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"));
  EXPECT_FALSE(dsml_block_closed(open));
}

TEST(Json, Minify) {
  EXPECT_EQ(json_minify(" { \"a\" : [ 1 , \"x y\" ] } ").value(), "{\"a\":[1,\"x y\"]}");
  EXPECT_FALSE(json_minify("{\"a\":").has_value());
  EXPECT_FALSE(json_minify("1 2").has_value());
}
