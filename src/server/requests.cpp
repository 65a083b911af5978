#include "server/requests.h"

#include <cctype>
#include <cstring>

namespace flashstar::server {

namespace {

[[noreturn]] void invalid(const std::string& why = {}) {
  throw ApiError(400, why.empty() ? "invalid JSON request" : "invalid JSON request: " + why);
}

// ---- typed field access: absent or null is "not given"; any other wrong type is a 400 ----
const ojson* field(const ojson& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return nullptr;
  return &*it;
}
std::optional<std::string> opt_string(const ojson& o, const char* key) {
  const ojson* v = field(o, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) invalid(std::string(key) + " must be a string");
  return v->get<std::string>();
}
std::optional<double> opt_number(const ojson& o, const char* key) {
  const ojson* v = field(o, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) invalid(std::string(key) + " must be a number");
  return v->get<double>();
}
std::optional<int64_t> opt_int(const ojson& o, const char* key) {
  const ojson* v = field(o, key);
  if (!v) return std::nullopt;
  if (v->is_number_integer() || v->is_number_unsigned()) return v->get<int64_t>();
  if (v->is_number_float()) {
    const double d = v->get<double>();
    // range first: converting an out-of-range double to an integer is undefined
    if (d > -9e18 && d < 9e18 && d == static_cast<double>(static_cast<int64_t>(d))) return static_cast<int64_t>(d);
  }
  invalid(std::string(key) + " must be an integer");
}
std::optional<bool> opt_bool(const ojson& o, const char* key) {
  const ojson* v = field(o, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) invalid(std::string(key) + " must be a boolean");
  return v->get<bool>();
}
const ojson* opt_array(const ojson& o, const char* key) {
  const ojson* v = field(o, key);
  if (v && !v->is_array()) invalid(std::string(key) + " must be an array");
  return v;
}
const ojson* opt_object(const ojson& o, const char* key) {
  const ojson* v = field(o, key);
  if (v && !v->is_object()) invalid(std::string(key) + " must be an object");
  return v;
}

// ---- raw JSON spans: enough of a scanner to find values in an already-validated document ----
void skip_ws(std::string_view s, size_t& i) {
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
}
void skip_string(std::string_view s, size_t& i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') ++i;
    else if (s[i] == '"') { ++i; return; }
  }
}
void skip_value(std::string_view s, size_t& i) {
  skip_ws(s, i);
  if (i >= s.size()) return;
  if (s[i] == '"') return skip_string(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    for (; i < s.size(); ++i) {
      const char c = s[i];
      if (c == '"') { skip_string(s, i); --i; }
      else if (c == '{' || c == '[') ++depth;
      else if ((c == '}' || c == ']') && --depth == 0) { ++i; return; }
    }
    return;
  }
  while (i < s.size() && !std::strchr(",}] \t\r\n", s[i])) ++i;
}

// ---- common pieces ----
std::vector<std::string> parse_stops(const ojson& o, const char* key) {
  std::vector<std::string> out;
  const ojson* v = field(o, key);
  if (!v) return out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const auto& s : *v) {
      if (!s.is_string()) invalid(std::string(key) + " must hold strings");
      out.push_back(s.get<std::string>());
    }
  } else {
    invalid(std::string(key) + " must be a string or an array");
  }
  std::erase_if(out, [](const std::string& s) { return s.empty(); });
  if (out.size() > 16) throw ApiError(400, "at most 16 stop strings");
  // every decoded token is checked against every stop string's partial suffixes: keep them short
  for (const std::string& s : out)
    if (s.size() > 1024) throw ApiError(400, std::string(key) + ": a stop string is longer than 1024 bytes");
  return out;
}

// §3.5: thinking on by default; explicit controls, then effort, then the deepseek-* model aliases.
text::ThinkMode resolve_think(const ojson& b, const std::string& model, std::optional<std::string> effort) {
  std::optional<bool> enabled;
  if (const ojson* t = field(b, "thinking")) {
    if (t->is_boolean()) {
      enabled = t->get<bool>();
    } else if (t->is_object()) {
      const auto type = opt_string(*t, "type");
      if (type == "enabled" || type == "adaptive") enabled = true;
      else if (type == "disabled") enabled = false;
      else if (type) invalid("thinking.type must be enabled or disabled");
    } else {
      invalid("thinking must be an object");
    }
  }
  if (auto t = opt_bool(b, "think")) enabled = *t;
  if (!effort) effort = opt_string(b, "reasoning_effort");
  if (!effort)
    if (const ojson* oc = opt_object(b, "output_config")) effort = opt_string(*oc, "effort");
  bool max = false;
  if (effort) {
    if (*effort == "none") enabled = false;
    else if (*effort == "max") max = true;
    else if (*effort != "xhigh" && *effort != "high" && *effort != "medium" && *effort != "low" && *effort != "minimal")
      invalid("unknown reasoning effort '" + *effort + "'");
    if (!enabled) enabled = *effort != "none";
  }
  if (!enabled) enabled = model != "deepseek-chat";
  if (!*enabled) return text::ThinkMode::None;
  return max ? text::ThinkMode::Max : text::ThinkMode::High;
}

// Sampling (§3.5): in thinking mode the client's shaping parameters are ignored; the seed always counts.
void parse_sampling(const ojson& b, GenRequest& r, bool min_p_top_k = true) {
  if (r.think == text::ThinkMode::None) {
    if (auto t = opt_number(b, "temperature")) {
      if (*t < 0 || *t > 100) throw ApiError(400, "temperature must be between 0 and 100", "", "temperature");
      r.sampling.temperature = static_cast<float>(*t);
    }
    if (auto p = opt_number(b, "top_p")) {
      if (*p < 0 || *p > 1) throw ApiError(400, "top_p must be between 0 and 1", "", "top_p");
      r.sampling.top_p = static_cast<float>(*p);
    }
    if (min_p_top_k) {
      if (auto p = opt_number(b, "min_p")) {
        if (*p < 0 || *p > 1) throw ApiError(400, "min_p must be between 0 and 1", "", "min_p");
        r.sampling.min_p = static_cast<float>(*p);
      }
    }
    if (auto k = opt_int(b, "top_k")) {
      if (*k < 0) throw ApiError(400, "top_k must be >= 0", "", "top_k");
      r.sampling.top_k = static_cast<int>(std::min<int64_t>(*k, 1024));
    }
  } else {
    // Validate the types even when the values are not used.
    opt_number(b, "temperature");
    opt_number(b, "top_p");
    opt_number(b, "min_p");
    opt_int(b, "top_k");
  }
  if (auto s = opt_int(b, "seed"); s && *s > 0) r.sampling.seed = static_cast<uint64_t>(*s);
}

void parse_max_tokens(const ojson& b, GenRequest& r, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (auto v = opt_int(b, k)) {
      if (*v < 1) throw ApiError(400, std::string(k) + " must be at least 1", "", k);
      r.max_tokens = *v;
      return;
    }
}

void parse_common(const ojson& b, GenRequest& r) {
  if (auto m = opt_string(b, "model")) r.model = *m;
  if (auto s = opt_bool(b, "stream")) r.stream = *s;
  if (auto f = opt_string(b, "flashstar_forced_reply")) r.forced_reply = *f;
}

// Text of a content value: a string, null, or an array of strings / {"text": ...} parts (others skipped).
std::string content_text(const ojson& c, const char* what) {
  if (c.is_null()) return "";
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) invalid(std::string(what) + " must be a string or an array");
  std::string out;
  for (const auto& part : c) {
    if (part.is_string()) {
      out += part.get<std::string>();
    } else if (part.is_object()) {
      if (auto t = opt_string(part, "text")) out += *t;
    } else {
      invalid(std::string(what) + " parts must be strings or objects");
    }
  }
  return out;
}

std::string arguments_text(const ojson& a) {
  if (a.is_string()) return a.get<std::string>();
  if (a.is_null()) return "{}";
  return dump(a);
}

bool known_role(const std::string& r) {
  return r == "system" || r == "developer" || r == "user" || r == "assistant" || r == "tool" || r == "function";
}

}  // namespace

std::string_view raw_member(std::string_view s, std::string_view key) {
  size_t i = 0;
  skip_ws(s, i);
  if (i >= s.size() || s[i] != '{') return {};
  ++i;
  for (;;) {
    skip_ws(s, i);
    if (i >= s.size() || s[i] != '"') return {};
    const size_t k0 = i + 1;
    skip_string(s, i);
    const std::string_view k = s.substr(k0, i - 1 - k0);
    skip_ws(s, i);
    if (i >= s.size() || s[i] != ':') return {};
    ++i;
    skip_ws(s, i);
    const size_t v0 = i;
    skip_value(s, i);
    if (k == key) return s.substr(v0, i - v0);
    skip_ws(s, i);
    if (i >= s.size() || s[i] != ',') return {};
    ++i;
  }
}

std::vector<std::string_view> raw_elements(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  skip_ws(s, i);
  if (i >= s.size() || s[i] != '[') return out;
  ++i;
  for (;;) {
    skip_ws(s, i);
    if (i >= s.size() || s[i] == ']') return out;
    const size_t v0 = i;
    skip_value(s, i);
    out.push_back(s.substr(v0, i - v0));
    skip_ws(s, i);
    if (i >= s.size() || s[i] != ',') return out;
    ++i;
  }
}

namespace {
// The "messages" array both dialects require: present, an array, and every element an object (each
// dialect then applies its own role rules).
const ojson& message_array(const ojson& b) {
  const ojson* msgs = field(b, "messages");
  if (!msgs) throw ApiError(400, "missing messages", "", "messages");
  if (!msgs->is_array()) invalid("messages must be an array");
  for (const auto& m : *msgs)
    if (!m.is_object()) invalid("each message must be an object");
  return *msgs;
}

// Calls f(entry, raw) for each "tools" entry, raw being that entry's text in the body as received
// (nullopt when the raw scan found no such element): schemas reach the prompt byte for byte as the
// client wrote them (escapes, spacing), which a re-dump would not keep.
template <class F>
void each_tool(const ojson& b, std::string_view raw, F&& f) {
  const ojson* tools = opt_array(b, "tools");
  if (!tools) return;
  const auto raws = raw_elements(raw_member(raw, "tools"));
  for (size_t i = 0; i < tools->size(); ++i) {
    const ojson& t = (*tools)[i];
    if (!t.is_object()) invalid("tools entries must be objects");
    f(t, i < raws.size() ? std::optional<std::string_view>(raws[i]) : std::nullopt);
  }
}
}  // namespace

GenRequest parse_chat_request(const ojson& b, std::string_view raw) {
  GenRequest r;
  r.dialect = Dialect::Chat;
  parse_common(b, r);
  for (const auto& m : message_array(b)) {
    text::Message msg;
    msg.role = opt_string(m, "role").value_or("user");
    if (!known_role(msg.role)) throw ApiError(400, "unknown message role '" + msg.role + "'", "", "messages");
    if (auto it = m.find("content"); it != m.end()) msg.content = content_text(*it, "content");
    if (auto rc = opt_string(m, "reasoning_content")) msg.reasoning = *rc;
    else if (auto rc2 = opt_string(m, "reasoning")) msg.reasoning = *rc2;
    if (auto id = opt_string(m, "tool_call_id")) msg.tool_call_id = *id;
    if (const ojson* tcs = opt_array(m, "tool_calls")) {
      for (const auto& tc : *tcs) {
        if (!tc.is_object()) invalid("tool_calls entries must be objects");
        text::ToolCall call;
        call.id = opt_string(tc, "id").value_or("");
        const ojson* fn = opt_object(tc, "function");
        if (!fn) invalid("tool_calls entries need a function");
        call.name = opt_string(*fn, "name").value_or("");
        if (auto it = fn->find("arguments"); it != fn->end()) call.arguments = arguments_text(*it);
        else call.arguments = "{}";
        msg.tool_calls.push_back(std::move(call));
      }
    }
    r.messages.push_back(std::move(msg));
  }
  each_tool(b, raw, [&](const ojson& t, std::optional<std::string_view> t_raw) {
    const ojson* fn = opt_object(t, "function");
    if (!fn) invalid("tools entries need a function object");
    if (!opt_string(*fn, "name")) invalid("tools entries need a function name");
    std::string_view line = t_raw ? raw_member(*t_raw, "function") : std::string_view{};
    r.tool_schemas.push_back(line.empty() ? dump(*fn) : std::string(line));
  });
  bool tool_choice_none = false;
  if (const ojson* tc = field(b, "tool_choice")) {
    if (tc->is_string()) tool_choice_none = tc->get<std::string>() == "none";
    else if (!tc->is_object()) invalid("tool_choice must be a string or an object");
  }
  r.tools_active = !r.tool_schemas.empty() && !tool_choice_none;
  r.think = resolve_think(b, r.model, std::nullopt);
  parse_sampling(b, r);
  parse_max_tokens(b, r, {"max_completion_tokens", "max_tokens"});
  r.stops = parse_stops(b, "stop");
  if (const ojson* so = opt_object(b, "stream_options"))
    if (auto u = opt_bool(*so, "include_usage")) r.include_usage = *u;
  if (auto lp = opt_bool(b, "logprobs")) r.logprobs = *lp;
  if (auto tl = opt_int(b, "top_logprobs")) {
    if (*tl < 0 || *tl > 20) throw ApiError(400, "top_logprobs must be between 0 and 20", "", "top_logprobs");
    r.top_logprobs = static_cast<int>(*tl);
  }
  if (auto n = opt_int(b, "n"); n && *n != 1) throw ApiError(400, "only n=1 is supported", "", "n");
  return r;
}

GenRequest parse_completions_request(const ojson& b) {
  GenRequest r;
  r.dialect = Dialect::Completions;
  parse_common(b, r);
  const ojson* p = field(b, "prompt");
  if (!p) throw ApiError(400, "missing prompt", "", "prompt");
  if (p->is_string()) {
    r.prompt = p->get<std::string>();
  } else if (p->is_array() && !p->empty() && (*p)[0].is_string()) {
    r.prompt = (*p)[0].get<std::string>();
  } else {
    invalid("prompt must be a string or an array of strings");
  }
  r.think = resolve_think(b, r.model, std::nullopt);
  parse_sampling(b, r);
  parse_max_tokens(b, r, {"max_tokens"});
  r.stops = parse_stops(b, "stop");
  if (const ojson* so = opt_object(b, "stream_options"))
    if (auto u = opt_bool(*so, "include_usage")) r.include_usage = *u;
  return r;
}

GenRequest parse_anthropic_request(const ojson& b, std::string_view raw) {
  GenRequest r;
  r.dialect = Dialect::Anthropic;
  parse_common(b, r);
  if (const ojson* sys = field(b, "system")) {
    text::Message m;
    m.role = "system";
    m.content = content_text(*sys, "system");
    if (!m.content.empty()) r.messages.push_back(std::move(m));
  }
  for (const auto& m : message_array(b)) {
    text::Message msg;
    msg.role = opt_string(m, "role").value_or("user");
    if (msg.role != "user" && msg.role != "assistant")
      throw ApiError(400, "message role must be user or assistant", "", "messages");
    const ojson* c = field(m, "content");
    if (!c) {
    } else if (c->is_string()) {
      msg.content = c->get<std::string>();
    } else if (c->is_array()) {
      for (const auto& blk : *c) {
        if (!blk.is_object()) invalid("content blocks must be objects");
        const std::string type = opt_string(blk, "type").value_or("");
        if (type == "text") {
          msg.content += opt_string(blk, "text").value_or("");
        } else if (type == "thinking") {
          msg.reasoning = msg.reasoning.value_or("") + opt_string(blk, "thinking").value_or("");
        } else if (type == "tool_use") {
          text::ToolCall call;
          call.id = opt_string(blk, "id").value_or("");
          call.name = opt_string(blk, "name").value_or("");
          auto it = blk.find("input");
          call.arguments = it == blk.end() ? "{}" : arguments_text(*it);
          msg.tool_calls.push_back(std::move(call));
        } else if (type == "tool_result") {
          // ds4 appends tool results to the user turn's text.
          std::string body;
          if (auto it = blk.find("content"); it != blk.end()) body = content_text(*it, "tool_result content");
          msg.content += "<tool_result>" + text::escape_tool_result(body) + "</tool_result>";
        }
      }
    } else {
      invalid("content must be a string or an array");
    }
    r.messages.push_back(std::move(msg));
  }
  each_tool(b, raw, [&](const ojson& t, std::optional<std::string_view> t_raw) {
    if (!opt_string(t, "name")) invalid("tools entries need a name");
    // Server tools (web_search_..., bash_...) carry a type and no schema; the model cannot call them.
    if (!t.contains("input_schema")) return;
    r.tool_schemas.push_back(t_raw ? std::string(*t_raw) : dump(t));
  });
  bool none = false;
  if (const ojson* tc = opt_object(b, "tool_choice")) none = opt_string(*tc, "type") == "none";
  r.tools_active = !r.tool_schemas.empty() && !none;
  r.think = resolve_think(b, r.model, std::nullopt);
  parse_sampling(b, r, false);
  parse_max_tokens(b, r, {"max_tokens"});
  r.stops = parse_stops(b, "stop_sequences");
  return r;
}

namespace {

// Responses input items (§3.4) appended to r.messages.
void responses_items(const ojson& input, GenRequest& r) {
  std::optional<std::string> pending_reasoning;
  auto assistant = [&](bool allow_merge) -> text::Message& {
    if (allow_merge && !r.messages.empty() && r.messages.back().role == "assistant" && !pending_reasoning)
      return r.messages.back();
    text::Message m;
    m.role = "assistant";
    if (pending_reasoning) m.reasoning = std::move(pending_reasoning);
    pending_reasoning.reset();
    r.messages.push_back(std::move(m));
    return r.messages.back();
  };
  auto tool_output = [&](const ojson& it) {
    text::Message m;
    m.role = "tool";
    m.tool_call_id = opt_string(it, "call_id").value_or("");
    if (auto o = it.find("output"); o != it.end()) m.content = o->is_string() ? o->get<std::string>() : content_text(*o, "output");
    r.messages.push_back(std::move(m));
  };
  for (const auto& it : input) {
    if (!it.is_object()) invalid("input items must be objects");
    const std::string type = opt_string(it, "type").value_or("message");
    if (auto st = opt_string(it, "status"); st && *st != "completed")
      throw ApiError(400, "input item status '" + *st + "' is not supported", "", "input");
    if (type == "message") {
      const std::string role = opt_string(it, "role").value_or("user");
      if (role != "user" && role != "assistant" && role != "system" && role != "developer")
        throw ApiError(400, "unknown message role '" + role + "'", "", "input");
      std::string content;
      if (const ojson* c = field(it, "content")) {
        if (c->is_string()) {
          content = c->get<std::string>();
        } else if (c->is_array()) {
          for (const auto& blk : *c) {
            if (!blk.is_object()) invalid("content blocks must be objects");
            const std::string bt = opt_string(blk, "type").value_or("");
            if (bt != "input_text" && bt != "output_text" && bt != "text" && bt != "summary_text" && bt != "reasoning_text")
              throw ApiError(400, "content type '" + bt + "' is not supported", "", "input");
            content += opt_string(blk, "text").value_or("");
          }
        } else {
          invalid("message content must be a string or an array");
        }
      }
      if (role == "assistant") {
        text::Message& m = assistant(false);
        m.content += content;
      } else {
        text::Message m;
        m.role = role;
        m.content = std::move(content);
        r.messages.push_back(std::move(m));
      }
    } else if (type == "function_call" || type == "custom_tool_call") {
      text::ToolCall call;
      call.id = opt_string(it, "call_id").value_or(opt_string(it, "id").value_or(""));
      call.name = opt_string(it, "namespace").value_or("") + opt_string(it, "name").value_or("");
      if (auto a = it.find("arguments"); a != it.end()) call.arguments = arguments_text(*a);
      else if (auto in = it.find("input"); in != it.end()) call.arguments = arguments_text(*in);
      else call.arguments = "{}";
      assistant(true).tool_calls.push_back(std::move(call));
    } else if (type == "local_shell_call" || type == "web_search_call" || type == "tool_search_call" ||
               type == "image_generation_call") {
      text::ToolCall call;
      call.id = opt_string(it, "call_id").value_or(opt_string(it, "id").value_or(""));
      call.name = type == "local_shell_call" ? "local_shell" : type == "tool_search_call" ? "tool_search" : type;
      auto a = it.find("action");
      if (a == it.end()) a = it.find("arguments");
      call.arguments = a == it.end() ? "{}" : arguments_text(*a);
      assistant(true).tool_calls.push_back(std::move(call));
    } else if (type == "function_call_output" || type == "custom_tool_call_output" || type == "local_shell_call_output" ||
               type == "web_search_call_output" || type == "tool_search_output" || type == "image_generation_call_output") {
      tool_output(it);
    } else if (type == "reasoning") {
      std::string text;
      for (const char* key : {"summary", "content"})
        if (const ojson* a = opt_array(it, key))
          for (const auto& s : *a)
            if (s.is_object())
              if (auto t = opt_string(s, "text")) text += (text.empty() ? "" : "\n\n") + *t;
      pending_reasoning = pending_reasoning.value_or("") + text;
    } else if (type == "compaction" || type == "context_compaction" || type == "item_reference") {
    } else {
      throw ApiError(400, "input item type '" + type + "' is not supported", "", "input");
    }
  }
  if (pending_reasoning) assistant(false);
}

}  // namespace

GenRequest parse_responses_request(const ojson& b, std::string_view raw) {
  GenRequest r;
  r.dialect = Dialect::Responses;
  parse_common(b, r);
  for (const char* k : {"previous_response_id", "conversation"})
    if (field(b, k))
      throw ApiError(400, std::string(k) + " is not supported; replay full input instead", "", k);
  if (auto ins = opt_string(b, "instructions"); ins && !ins->empty()) r.messages.push_back({"system", *ins, {}, {}, "", ""});
  const ojson* input = field(b, "input");
  if (!input) throw ApiError(400, "missing input", "", "input");
  if (input->is_string()) {
    r.messages.push_back({"user", input->get<std::string>(), {}, {}, "", ""});
  } else if (input->is_array()) {
    responses_items(*input, r);
  } else {
    invalid("input must be a string or an array");
  }
  each_tool(b, raw, [&](const ojson& t, std::optional<std::string_view> t_raw) {
    const std::string type = opt_string(t, "type").value_or("function");
    if (type == "function") {
      const auto name = opt_string(t, "name");
      if (!name) invalid("function tools need a name");
      r.tool_schemas.push_back(t_raw ? std::string(*t_raw) : dump(t));
      r.wire_names.push_back({*name, *name, ""});
    } else if (type == "namespace") {
      const std::string ns = opt_string(t, "name").value_or("");
      if (const ojson* members = opt_array(t, "tools"))
        for (const auto& m : *members) {
          if (!m.is_object()) invalid("namespace tools must be objects");
          const std::string name = opt_string(m, "name").value_or("");
          ojson line = ojson::object();
          line["name"] = ns + name;
          if (auto d = m.find("description"); d != m.end()) line["description"] = *d;
          if (auto p = m.find("parameters"); p != m.end()) line["parameters"] = *p;
          r.tool_schemas.push_back(dump(line));
          r.wire_names.push_back({ns + name, name, ns});
        }
    }
    // Hosted tools (web_search, file_search, ...) run on OpenAI's side; nothing to offer the model.
  });
  if (const ojson* tc = field(b, "tool_choice")) {
    if (tc->is_object()) throw ApiError(400, "forced tool_choice not supported", "", "tool_choice");
    if (!tc->is_string()) invalid("tool_choice must be a string");
    const std::string v = tc->get<std::string>();
    if (v != "none" && v != "auto") throw ApiError(400, "tool_choice=" + v + " not supported", "", "tool_choice");
    if (v == "none") r.tool_schemas.clear();
  }
  r.tools_active = !r.tool_schemas.empty();
  std::optional<std::string> effort;
  if (const ojson* rs = opt_object(b, "reasoning")) {
    effort = opt_string(*rs, "effort");
    const auto summary = opt_string(*rs, "summary");
    r.reasoning_summary = summary == "auto" || summary == "concise" || summary == "detailed";
  }
  r.think = resolve_think(b, r.model, effort);
  parse_sampling(b, r, false);
  parse_max_tokens(b, r, {"max_output_tokens", "max_tokens"});
  return r;
}

}  // namespace flashstar::server
