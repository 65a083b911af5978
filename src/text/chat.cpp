#include "text/chat.h"

#include <cctype>
#include <cstring>

#include "text/utf8.h"

namespace flashstar::text {

const char* const kThinkMaxPrefix =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

const char* const kDefaultSystem = "You are a helpful assistant";

ThinkMode effective_think_mode(ThinkMode m, uint32_t ctx) {
  return m == ThinkMode::Max && ctx < kThinkMaxMinContext ? ThinkMode::High : m;
}

namespace {

const std::string_view kParamEnd = "</｜DSML｜parameter>";

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// ---- a small order-preserving JSON scanner (the renderer must keep client key order and raw values) ----
void skip_ws(std::string_view s, size_t& i) {
  while (i < s.size() && is_ws(s[i])) ++i;
}

bool parse_string(std::string_view s, size_t& i, std::string* out) {
  if (i >= s.size() || s[i] != '"') return false;
  ++i;
  while (i < s.size()) {
    const char c = s[i++];
    if (c == '"') return true;
    if (c != '\\') {
      if (out) *out += c;
      continue;
    }
    if (i >= s.size()) return false;
    const char e = s[i++];
    switch (e) {
      case '"': case '\\': case '/': if (out) *out += e; break;
      case 'b': if (out) *out += '\b'; break;
      case 'f': if (out) *out += '\f'; break;
      case 'n': if (out) *out += '\n'; break;
      case 'r': if (out) *out += '\r'; break;
      case 't': if (out) *out += '\t'; break;
      case 'u': {
        auto hex4 = [&](uint32_t& v) {
          if (i + 4 > s.size()) return false;
          v = 0;
          for (int k = 0; k < 4; ++k) {
            const char h = s[i++];
            v <<= 4;
            if (h >= '0' && h <= '9') v |= h - '0';
            else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
            else return false;
          }
          return true;
        };
        uint32_t cp = 0;
        if (!hex4(cp)) return false;
        if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < s.size() && s[i] == '\\' && s[i + 1] == 'u') {
          const size_t save = i;
          i += 2;
          uint32_t lo = 0;
          if (hex4(lo) && lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          else i = save;
        }
        if (out) utf8_append(*out, cp);
        break;
      }
      default: return false;
    }
  }
  return false;
}

bool skip_value(std::string_view s, size_t& i, int depth = 0) {
  if (depth > 256) return false;
  skip_ws(s, i);
  if (i >= s.size()) return false;
  const char c = s[i];
  if (c == '"') return parse_string(s, i, nullptr);
  if (c == '{' || c == '[') {
    const char close = c == '{' ? '}' : ']';
    ++i;
    skip_ws(s, i);
    if (i < s.size() && s[i] == close) return ++i, true;
    for (;;) {
      if (c == '{') {
        skip_ws(s, i);
        if (!parse_string(s, i, nullptr)) return false;
        skip_ws(s, i);
        if (i >= s.size() || s[i] != ':') return false;
        ++i;
      }
      if (!skip_value(s, i, depth + 1)) return false;
      skip_ws(s, i);
      if (i >= s.size()) return false;
      if (s[i] == ',') { ++i; continue; }
      if (s[i] == close) return ++i, true;
      return false;
    }
  }
  for (const char* lit : {"true", "false", "null"})
    if (s.compare(i, std::strlen(lit), lit) == 0) return i += std::strlen(lit), true;
  const size_t st = i;
  if (i < s.size() && s[i] == '-') ++i;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.' || s[i] == 'e' ||
                          s[i] == 'E' || s[i] == '+' || s[i] == '-'))
    ++i;
  return i > st && std::isdigit(static_cast<unsigned char>(s[i - 1]));
}

struct Arg {
  std::string key, value;
  bool is_string;
};

// Top-level members of a JSON object in order: strings decoded, other values minified.
bool parse_args(std::string_view s, std::vector<Arg>& out) {
  size_t i = 0;
  skip_ws(s, i);
  if (i >= s.size() || s[i] != '{') return false;
  ++i;
  skip_ws(s, i);
  while (i < s.size() && s[i] != '}') {
    Arg a;
    if (!parse_string(s, i, &a.key)) return false;
    skip_ws(s, i);
    if (i >= s.size() || s[i] != ':') return false;
    ++i;
    skip_ws(s, i);
    a.is_string = i < s.size() && s[i] == '"';
    if (a.is_string) {
      if (!parse_string(s, i, &a.value)) return false;
    } else {
      const size_t st = i;
      if (!skip_value(s, i)) return false;
      a.value = *json_minify(s.substr(st, i - st));
    }
    out.push_back(std::move(a));
    skip_ws(s, i);
    if (i < s.size() && s[i] == ',') ++i;
    skip_ws(s, i);
  }
  return i < s.size();
}

// JSON string as ds4 writes it: " \ \n \r \t escaped, other control bytes \u00XX, the rest raw.
void json_quote(std::string& b, std::string_view s) {
  b += '"';
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') { b += '\\'; b += ch; }
    else if (c == '\n') b += "\\n";
    else if (c == '\r') b += "\\r";
    else if (c == '\t') b += "\\t";
    else if (c < 0x20) { char t[8]; std::snprintf(t, sizeof t, "\\u%04x", c); b += t; }
    else b += ch;
  }
  b += '"';
}

// Rewrites each occurrence of `tag` by replacing its leading '<' with `lt`.
std::string protect_tag(std::string_view s, std::string_view tag, std::string_view lt) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, tag.size(), tag) == 0) {
      out += lt;
      ++i;
    } else {
      out += s[i++];
    }
  }
  return out;
}

std::string attr_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

std::string entity_decode(std::string_view s) {
  static const std::pair<std::string_view, char> ents[] = {
      {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  std::string out;
  for (size_t i = 0; i < s.size();) {
    bool hit = false;
    if (s[i] == '&')
      for (const auto& [e, c] : ents)
        if (s.compare(i, e.size(), e) == 0) {
          out += c;
          i += e.size();
          hit = true;
          break;
        }
    if (!hit) out += s[i++];
  }
  return out;
}

void render_arg(std::string& b, const Arg& a) {
  b += "<｜DSML｜parameter name=\"" + attr_escape(a.key) + "\" string=\"" + (a.is_string ? "true" : "false") + "\">";
  b += a.is_string ? protect_tag(a.value, kParamEnd, "&lt;") : protect_tag(a.value, kParamEnd, "\\u003c");
  b += "</｜DSML｜parameter>\n";
}

}  // namespace

std::optional<std::string> json_minify(std::string_view json) {
  size_t i = 0;
  skip_ws(json, i);
  const size_t st = i;
  if (!skip_value(json, i)) return std::nullopt;
  const size_t en = i;
  skip_ws(json, i);
  if (i != json.size()) return std::nullopt;
  std::string out;
  bool in_str = false, esc = false;
  for (size_t k = st; k < en; ++k) {
    const char c = json[k];
    if (in_str) {
      out += c;
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
      out += c;
    } else if (!is_ws(c)) {
      out += c;
    }
  }
  return out;
}

std::string render_tools_block(const std::vector<std::string>& schemas) {
  std::string joined;
  for (size_t i = 0; i < schemas.size(); ++i) joined += (i ? "\n" : "") + schemas[i];
  if (joined.empty()) return "";
  return std::string(
             "## Tools\n\n"
             "You have access to a set of tools to help answer the user question. "
             "You can invoke tools by writing a \"<｜DSML｜tool_calls>\" block like the following:\n\n"
             "<｜DSML｜tool_calls>\n"
             "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
             "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
             "...\n"
             "</｜DSML｜invoke>\n"
             "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
             "...\n"
             "</｜DSML｜invoke>\n"
             "</｜DSML｜tool_calls>\n\n"
             "String parameters should be specified as raw text and set `string=\"true\"`. "
             "Preserve characters such as `>`, `&`, and `&&` exactly; never replace normal string characters with "
             "XML or HTML entity escapes. "
             "Only if a string value itself contains the exact closing parameter tag `</｜DSML｜parameter>`, write "
             "that tag as `&lt;/｜DSML｜parameter>` inside the value. "
             "For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set "
             "`string=\"false\"`.\n\n"
             "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
             "<think>...</think> BEFORE any tool calls or final response.\n\n"
             "Otherwise, output directly after </think> with tool calls or final response.\n\n"
             "### Available Tool Schemas\n\n") +
         joined +
         "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls. "
         "Use the exact parameter names from the schemas.";
}

std::string render_tool_calls(const std::vector<ToolCall>& calls) {
  if (calls.empty()) return "";
  std::string b = "\n\n<｜DSML｜tool_calls>\n";
  for (const ToolCall& tc : calls) {
    b += "<｜DSML｜invoke name=\"" + attr_escape(tc.name) + "\">\n";
    std::vector<Arg> args;
    if (parse_args(tc.arguments, args)) {
      for (const Arg& a : args) render_arg(b, a);
    } else {
      render_arg(b, Arg{"arguments", tc.arguments, true});
    }
    b += "</｜DSML｜invoke>\n";
  }
  return b + "</｜DSML｜tool_calls>";
}

std::string escape_tool_result(std::string_view content) { return protect_tag(content, "</tool_result>", "&lt;"); }

std::string render_chat(const std::vector<Message>& msgs, const std::vector<std::string>& tool_schemas, ThinkMode mode) {
  const bool think = mode != ThinkMode::None;
  auto is_system = [](const std::string& r) { return r == "system" || r == "developer"; };
  auto is_tool = [](const std::string& r) { return r == "tool" || r == "function"; };
  std::string system = render_tools_block(tool_schemas);
  bool tool_context = !system.empty();
  int last_user = -1;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const Message& m = msgs[i];
    if (is_system(m.role)) system += (system.empty() ? "" : "\n\n") + m.content;
    if ((m.role == "assistant" && !m.tool_calls.empty()) || is_tool(m.role)) tool_context = true;
    if (m.role == "user" || is_tool(m.role)) last_user = static_cast<int>(i);
  }
  std::string out = kBos;
  if (mode == ThinkMode::Max) out += kThinkMaxPrefix;
  out += system;
  bool pending_assistant = false, pending_tool = false;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const Message& m = msgs[i];
    if (m.role == "user") {
      out += kUser;
      out += m.content;
      pending_assistant = true;
      pending_tool = false;
    } else if (is_tool(m.role)) {
      if (!pending_tool) out += kUser;
      out += "<tool_result>" + escape_tool_result(m.content) + "</tool_result>";
      pending_assistant = pending_tool = true;
    } else if (m.role == "assistant") {
      if (pending_assistant) {
        out += kAssistant;
        // Old reasoning is dropped unless tools are in play or this turn follows the last user message.
        if (think && (tool_context || static_cast<int>(i) > last_user))
          out += std::string(kThinkOpen) + m.reasoning.value_or("") + kThinkClose;
        else
          out += kThinkClose;
      }
      out += m.content;
      if (!m.tool_calls.empty()) out += m.raw_dsml.empty() ? render_tool_calls(m.tool_calls) : m.raw_dsml;
      out += kEos;
      pending_assistant = pending_tool = false;
    }
  }
  if (pending_assistant) {
    out += kAssistant;
    out += think ? kThinkOpen : kThinkClose;
  }
  return out;
}

std::vector<int32_t> encode_cli_prompt(const Tokenizer& tok, std::string_view system, std::string_view user,
                                       ThinkMode mode) {
  std::vector<int32_t> ids{tok.special().bos};
  if (mode == ThinkMode::Max) tok.encode_append(kThinkMaxPrefix, ids);
  if (!system.empty()) tok.encode_append(system, ids);
  append_cli_user_turn(tok, user, mode, ids);
  return ids;
}

void append_cli_user_turn(const Tokenizer& tok, std::string_view user, ThinkMode mode, std::vector<int32_t>& ids) {
  ids.push_back(tok.special().user);
  tok.encode_append(user, ids);
  ids.push_back(tok.special().assistant);
  ids.push_back(mode != ThinkMode::None ? tok.special().think_open : tok.special().think_close);
}

// ---- parsing generated text ----
namespace {

struct Syntax {
  std::string_view start, end, invoke, invoke_end, param, param_end;
};
const Syntax kSyntaxes[3] = {
    {"<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>", "<｜DSML｜invoke", "</｜DSML｜invoke>", "<｜DSML｜parameter",
     "</｜DSML｜parameter>"},
    {"<DSML｜tool_calls>", "</DSML｜tool_calls>", "<DSML｜invoke", "</DSML｜invoke>", "<DSML｜parameter",
     "</DSML｜parameter>"},
    {"<tool_calls>", "</tool_calls>", "<invoke", "</invoke>", "<parameter", "</parameter>"},
};

std::optional<std::string> attr(std::string_view tag, std::string_view name) {
  const std::string pat = std::string(name) + "=\"";
  const size_t p = tag.find(pat);
  if (p == std::string_view::npos) return std::nullopt;
  const size_t v = p + pat.size(), q = tag.find('"', v);
  if (q == std::string_view::npos) return std::nullopt;
  return entity_decode(tag.substr(v, q - v));
}

void add_arg(std::string& args, const std::string& name, const std::string& value, bool is_string) {
  if (!args.empty()) args += ", ";
  json_quote(args, name);
  args += ": ";
  if (is_string) {
    json_quote(args, value);
  } else {
    auto m = json_minify(value);
    args += m ? *m : (value.empty() ? "null" : value);
  }
}

void split_reasoning(std::string_view text, ParsedReply& r) {
  std::string_view body = text;
  if (body.substr(0, 7) == kThinkOpen) body.remove_prefix(7);
  const size_t e = body.find(kThinkClose);
  if (e != std::string_view::npos) {
    r.reasoning = std::string(body.substr(0, e));
    r.content = std::string(body.substr(e + 8));
  } else {
    r.reasoning.reset();
    r.content = std::string(text);
  }
}

// One parameter starting at p (which begins with syn.param); appends to args.
bool parse_param(std::string_view s, size_t& p, const Syntax& syn, std::string& args, bool allow_nested) {
  const size_t tag_end = s.find('>', p);
  if (tag_end == std::string_view::npos) return false;
  const std::string_view tag = s.substr(p, tag_end + 1 - p);
  const auto name = attr(tag, "name");
  const auto is_string = attr(tag, "string");
  if (!name) return false;
  size_t v = tag_end + 1;
  if (allow_nested && !is_string) {
    size_t q = v;
    skip_ws(s, q);
    if (s.compare(q, syn.param.size(), syn.param) == 0) {  // lenient: nested parameters become an object
      std::string members;
      while (s.compare(q, syn.param.size(), syn.param) == 0) {
        if (!parse_param(s, q, syn, members, false)) return false;
        skip_ws(s, q);
      }
      add_arg(args, *name, "{" + members + "}", false);
      if (s.compare(q, syn.param_end.size(), syn.param_end) == 0) q += syn.param_end.size();
      p = q;
      return true;
    }
  }
  const size_t e = s.find(syn.param_end, v);
  if (e == std::string_view::npos) return false;
  const std::string_view raw = s.substr(v, e - v);
  const bool str = !is_string || *is_string == "true";
  add_arg(args, *name, str ? entity_decode(raw) : std::string(raw), str);
  p = e + syn.param_end.size();
  return true;
}

}  // namespace

ParsedReply parse_reply(std::string_view text, bool thinking) {
  ParsedReply r;
  size_t search = 0;
  if (thinking) {
    const size_t e = text.rfind(kThinkClose);
    if (e == std::string_view::npos) {
      split_reasoning(text, r);
      return r;
    }
    search = e + 8;
  }
  const std::string_view tail = text.substr(search);
  size_t start = std::string_view::npos;
  const Syntax* syn = nullptr;
  for (const Syntax& s : kSyntaxes) {
    size_t at = tail.find("\n\n" + std::string(s.start));
    if (at == std::string_view::npos) at = tail.find(s.start);
    if (at != std::string_view::npos) {
      start = search + at;
      syn = &s;
      break;
    }
  }
  if (!syn) {
    split_reasoning(text, r);
    return r;
  }
  r.tool_block_seen = true;
  size_t content_end = start;
  while (content_end > 0 && is_ws(text[content_end - 1])) --content_end;
  size_t p = text.find(syn->start, start) + syn->start.size();
  for (;;) {
    skip_ws(text, p);
    if (text.compare(p, syn->end.size(), syn->end) == 0) {
      r.raw_dsml = std::string(text.substr(start, p + syn->end.size() - start));
      split_reasoning(text.substr(0, content_end), r);
      return r;
    }
    if (text.compare(p, syn->invoke.size(), syn->invoke) != 0) break;
    const size_t tag_end = text.find('>', p);
    if (tag_end == std::string_view::npos) break;
    const auto name = attr(text.substr(p, tag_end + 1 - p), "name");
    if (!name) break;
    p = tag_end + 1;
    std::string args;
    bool ok = true;
    for (;;) {
      skip_ws(text, p);
      if (text.compare(p, syn->invoke_end.size(), syn->invoke_end) == 0) {
        p += syn->invoke_end.size();
        break;
      }
      if (text.compare(p, syn->param.size(), syn->param) != 0 || !parse_param(text, p, *syn, args, true)) {
        ok = false;
        break;
      }
    }
    if (!ok) break;
    r.tool_calls.push_back(ToolCall{"", *name, "{" + args + "}"});
  }
  // Structural failure: the caller decides (ds4 returns the raw text as content).
  r.ok = false;
  r.tool_calls.clear();
  split_reasoning(text, r);
  return r;
}

// ---- decode-time state inside DSML (§2.8) ----
namespace {

bool partial_at(std::string_view s, size_t pos, std::string_view lit, size_t min_len) {
  const size_t avail = s.size() - pos;
  return avail < lit.size() && avail >= min_len && lit.substr(0, avail) == s.substr(pos);
}
bool suffix_partial(std::string_view s, std::string_view lit, size_t min_len) {
  for (size_t n = min_len; n < lit.size() && n <= s.size(); ++n)
    if (s.substr(s.size() - n) == lit.substr(0, n)) return true;
  return false;
}

}  // namespace

DsmlState dsml_state(std::string_view s) {
  size_t pos = std::string_view::npos;
  const Syntax* syn = nullptr;
  for (const Syntax& x : kSyntaxes) {
    const size_t at = s.find(x.start);
    if (at != std::string_view::npos && at < pos) {
      pos = at;
      syn = &x;
    }
  }
  if (!syn) return DsmlState::Outside;
  pos += syn->start.size();
  for (;;) {
    skip_ws(s, pos);
    if (pos >= s.size()) return DsmlState::Structural;
    if (s.compare(pos, syn->end.size(), syn->end) == 0) return DsmlState::Outside;
    if (s.compare(pos, syn->invoke_end.size(), syn->invoke_end) == 0) {
      pos += syn->invoke_end.size();
      continue;
    }
    if (s.compare(pos, syn->invoke.size(), syn->invoke) == 0) {
      const size_t te = s.find('>', pos);
      if (te == std::string_view::npos) return DsmlState::Structural;
      pos = te + 1;
      continue;
    }
    if (s.compare(pos, syn->param.size(), syn->param) == 0) {
      const size_t te = s.find('>', pos);
      if (te == std::string_view::npos) return DsmlState::Structural;
      const auto str = attr(s.substr(pos, te + 1 - pos), "string");
      pos = te + 1;
      if (str && *str == "true") {
        const size_t e = s.find(syn->param_end, pos);
        if (e == std::string_view::npos)
          return suffix_partial(s, syn->param_end, 2) ? DsmlState::Structural : DsmlState::StringBody;
        pos = e + syn->param_end.size();
        continue;
      }
      bool in_str = false, esc = false;
      size_t q = pos;
      bool closed = false;
      while (q < s.size()) {
        if (!in_str && s.compare(q, syn->param_end.size(), syn->param_end) == 0) {
          closed = true;
          break;
        }
        const char c = s[q++];
        if (in_str) {
          if (esc) esc = false;
          else if (c == '\\') esc = true;
          else if (c == '"') in_str = false;
        } else if (c == '"') {
          in_str = true;
        }
      }
      if (closed) {
        pos = q + syn->param_end.size();
        continue;
      }
      if (!in_str && suffix_partial(s, syn->param_end, 2)) return DsmlState::Structural;
      return in_str ? DsmlState::JsonString : DsmlState::JsonStructural;
    }
    for (const Syntax& x : kSyntaxes)
      if (partial_at(s, pos, x.end, 1) || partial_at(s, pos, x.invoke, 1) || partial_at(s, pos, x.invoke_end, 1) ||
          partial_at(s, pos, x.param, 1) || partial_at(s, pos, x.param_end, 1))
        return DsmlState::Structural;
    return DsmlState::Structural;
  }
}

bool dsml_block_closed(std::string_view s) {
  for (const Syntax& x : kSyntaxes) {
    const size_t a = s.find(x.start);
    if (a != std::string_view::npos && s.find(x.end, a) != std::string_view::npos) return true;
  }
  return false;
}

}  // namespace flashstar::text
