// The DS4 prompt format (interfaces.md §2) and DSML tool calls. Template bytes are data copied from
// ds4 (ds4.c DS4_REASONING_EFFORT_MAX_PREFIX, ds4_server.c append_tools_prompt_text), which follows
// DeepSeek's official V4 encoding; any byte change alters tokenization and cache keys.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"

namespace flashstar::text {

enum class ThinkMode { None, High, Max };
// Think Max is only applied with at least this much context (ds4 DS4_THINK_MAX_MIN_CONTEXT).
inline constexpr uint32_t kThinkMaxMinContext = 393216;
extern const char* const kThinkMaxPrefix;
extern const char* const kDefaultSystem;  // ds4 CLI default: "You are a helpful assistant" (no period)
// Max downgrades to High below kThinkMaxMinContext.
ThinkMode effective_think_mode(ThinkMode m, uint32_t ctx);

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text (normally an object)
};

struct Message {
  std::string role;  // system, developer, user, assistant, tool, function
  std::string content;
  std::optional<std::string> reasoning;
  std::vector<ToolCall> tool_calls;
  std::string raw_dsml;  // exact sampled DSML block, replayed instead of the canonical rendering
  std::string tool_call_id;
};

// "## Tools ..." block for the given schema lines (each one JSON object, raw bytes as received).
std::string render_tools_block(const std::vector<std::string>& schemas);
// Canonical JSON -> DSML for history (§2.6): "\n\n<｜DSML｜tool_calls>\n...</｜DSML｜tool_calls>".
std::string render_tool_calls(const std::vector<ToolCall>& calls);
std::string escape_tool_result(std::string_view content);

// The server rendering algorithm (§2.3): tools first, system/developer text joined by "\n\n", turns,
// the old-reasoning drop rule, and the trailing assistant prefix. Tokenize with encode_rendered().
std::string render_chat(const std::vector<Message>& messages, const std::vector<std::string>& tool_schemas,
                        ThinkMode mode);

// The CLI one-shot prompt as ids (ds4_encode_chat_prompt): special markers are ids, the system and user
// texts are plain-tokenized (a "<think>" typed by the user stays text).
std::vector<int32_t> encode_cli_prompt(const Tokenizer& tok, std::string_view system, std::string_view user,
                                       ThinkMode mode);
// One REPL turn appended to an existing transcript: <｜User｜>text<｜Assistant｜><think>|</think>.
void append_cli_user_turn(const Tokenizer& tok, std::string_view user, ThinkMode mode, std::vector<int32_t>& ids);

// A completion split into reasoning, content and tool calls (§2.7).
struct ParsedReply {
  std::optional<std::string> reasoning;
  std::string content;
  std::vector<ToolCall> tool_calls;  // arguments: {"k": v, "k2": v2}
  std::string raw_dsml;              // exact bytes of the block, leading "\n\n" included
  bool tool_block_seen = false;      // a start marker was found
  bool ok = true;                    // false: structural failure inside a started block
};
// thinking: the prompt ended in <think>, so tool calls count only after the last </think>.
ParsedReply parse_reply(std::string_view text, bool thinking);

// Position classes while decoding inside a DSML block (§2.8): structural positions are sampled greedily.
enum class DsmlState { Outside, Structural, StringBody, JsonStructural, JsonString };
DsmlState dsml_state(std::string_view generated);
inline bool dsml_greedy(DsmlState s) { return s == DsmlState::Structural || s == DsmlState::JsonStructural; }
// True once a complete tool_calls block has been closed (generation stops there).
bool dsml_block_closed(std::string_view generated);

// Minifies a JSON value (whitespace outside strings removed); nullopt when it is not one JSON value.
std::optional<std::string> json_minify(std::string_view json);

}  // namespace flashstar::text
