#!/usr/bin/env python3
"""`flashstar serve` driven by the official Python SDKs (openai, anthropic) on a tiny synthetic model:
chat streaming and not, a tool-call round trip (with exact DSML replay reusing the live KV), thinking
on and off, logprobs, Anthropic messages and count_tokens, Responses streaming and not, legacy
completions, and the API key. Replies are forced with the server's --test-hooks so the parsers see
real reasoning, text and tool calls; everything else (rendering, tokenizing, prefill, streaming,
parsing) is the production path."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_harness as h  # noqa: E402

KEY = "test-key"
DSML = ('\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n'
        '<｜DSML｜parameter name="city" string="true">Paris & Co</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
        '</｜DSML｜invoke>\n</｜DSML｜tool_calls>')
WEATHER_ARGS = {"city": "Paris & Co", "days": 3}
OA_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather forecast",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}]
NOTHINK = {"thinking": {"type": "disabled"}}

failures = []


def check(name, cond, detail=""):
    if cond:
        print(f"ok   {name}")
    else:
        failures.append(name)
        print(f"FAIL {name} {detail}")


def forced(text, **extra):
    return {"flashstar_forced_reply": text, **extra}


def openai_tests(openai, srv):
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    # Models and auth.
    check("models list", [m.id for m in c.models.list().data] == ["deepseek-v4-flash"])
    try:
        openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0).models.list()
        check("wrong key -> 401", False)
    except openai.AuthenticationError:
        check("wrong key -> 401", True)
    # Plain chat, thinking off, sampled (seeded) -> deterministic.
    kw = dict(model="deepseek-v4-flash", messages=[{"role": "user", "content": "Say hi"}], max_tokens=12,
              temperature=0.7, seed=5, extra_body=NOTHINK)
    a, b = c.chat.completions.create(**kw), c.chat.completions.create(**kw)
    check("chat non-stream parses", a.choices[0].message.role == "assistant" and a.usage.completion_tokens > 0,
          a.model_dump_json())
    check("chat seeded is deterministic", a.choices[0].message.content == b.choices[0].message.content)
    # Streaming with usage; the concatenated deltas equal the non-streamed text.
    chunks = list(c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    fins = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    check("chat stream parses", text == a.choices[0].message.content and fins == [a.choices[0].finish_reason],
          f"{text!r} vs {a.choices[0].message.content!r}")
    check("chat stream usage", chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == a.usage.completion_tokens)
    # Thinking on: reasoning_content separate from content, streamed and not.
    r = c.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "Think"}],
                                  extra_body=forced("Let me think.</think>The answer is 4."))
    m = r.choices[0].message
    check("thinking on: reasoning", (m.model_extra or {}).get("reasoning_content") == "Let me think." and
          m.content == "The answer is 4." and r.choices[0].finish_reason == "stop", m.model_dump_json())
    chunks = list(c.chat.completions.create(model="deepseek-v4-flash", stream=True,
                                            messages=[{"role": "user", "content": "Think"}],
                                            extra_body=forced("Let me think.</think>The answer is 4.")))
    reas = "".join((ch.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for ch in chunks if ch.choices)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check("thinking on: stream", reas == "Let me think." and text == "The answer is 4.", f"{reas!r} {text!r}")
    r = c.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "No think"}],
                                  extra_body=forced("Plain answer.", **NOTHINK))
    check("thinking off", r.choices[0].message.content == "Plain answer." and
          not (r.choices[0].message.model_extra or {}).get("reasoning_content"))
    r = c.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "x"}],
                                  extra_body=forced("alias off"))
    check("deepseek-chat alias disables thinking", r.choices[0].message.content == "alias off")
    # Tool call round trip.
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather in Paris?"}]
    r = c.chat.completions.create(model="deepseek-v4-flash", messages=msgs, tools=OA_TOOLS,
                                  extra_body=forced(DSML, **NOTHINK))
    tc = r.choices[0].message.tool_calls or []
    ok = (r.choices[0].finish_reason == "tool_calls" and len(tc) == 1 and tc[0].function.name == "get_weather"
          and json.loads(tc[0].function.arguments) == WEATHER_ARGS and tc[0].id.startswith("call_")
          and len(tc[0].id) == 37)
    check("tool call parsed", ok, r.model_dump_json())
    if ok:
        msgs2 = msgs + [r.choices[0].message.model_dump(exclude_none=True),
                        {"role": "tool", "tool_call_id": tc[0].id, "content": "Sunny, 21C"}]
        r2 = c.chat.completions.create(model="deepseek-v4-flash", messages=msgs2, tools=OA_TOOLS,
                                       extra_body=forced("It is sunny.", **NOTHINK))
        cached = r2.usage.prompt_tokens_details.cached_tokens
        check("tool result round trip", r2.choices[0].message.content == "It is sunny." and
              r2.choices[0].finish_reason == "stop")
        check("exact DSML replay keeps the live prefix", cached >= r.usage.prompt_tokens,
              f"cached={cached} first prompt={r.usage.prompt_tokens}")
    chunks = list(c.chat.completions.create(model="deepseek-v4-flash", messages=msgs, tools=OA_TOOLS, stream=True,
                                            extra_body=forced("Checking." + DSML, **NOTHINK)))
    calls = [t for ch in chunks if ch.choices for t in (ch.choices[0].delta.tool_calls or [])]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check("tool call streamed", len(calls) == 1 and calls[0].function.name == "get_weather" and
          json.loads(calls[0].function.arguments) == WEATHER_ARGS and text == "Checking." and
          chunks[-1].choices[0].finish_reason == "tool_calls", f"{text!r} {calls}")
    # Logprobs.
    r = c.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "lp"}],
                                  max_tokens=4, temperature=0, logprobs=True, top_logprobs=3, extra_body=NOTHINK)
    lp = r.choices[0].logprobs.content
    check("logprobs", len(lp) == r.usage.completion_tokens and all(len(t.top_logprobs) == 3 for t in lp) and
          all(t.logprob <= 0 for t in lp) and lp[0].logprob == lp[0].top_logprobs[0].logprob)
    # Stop strings.
    r = c.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "s"}],
                                  stop=["STOP"], extra_body=forced("before STOP after", **NOTHINK))
    check("stop string", r.choices[0].message.content == "before " and r.choices[0].finish_reason == "stop",
          repr(r.choices[0].message.content))
    # Legacy completions.
    r = c.completions.create(model="deepseek-v4-flash", prompt="Once", max_tokens=5)
    check("completions", r.choices[0].finish_reason in ("length", "stop") and r.usage.completion_tokens <= 5)
    text = "".join(x.choices[0].text for x in c.completions.create(model="deepseek-v4-flash", prompt="Once",
                                                                      max_tokens=5, stream=True) if x.choices)
    check("completions stream", isinstance(text, str))
    # Errors come back as the SDK's exceptions.
    try:
        c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        check("unknown model -> 404", False)
    except openai.NotFoundError:
        check("unknown model -> 404", True)
    try:
        c.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "word " * 5000}])
        check("prompt beyond context -> 400", False)
    except openai.BadRequestError as e:
        check("prompt beyond context -> 400", e.body.get("code") == "context_length_exceeded", str(e.body))


def responses_tests(openai, srv):
    c = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    events = list(c.responses.create(model="deepseek-v4-flash", input="Hello", stream=True,
                                     reasoning={"effort": "high", "summary": "auto"},
                                     extra_body=forced("Pondering.</think>Hi there!")))
    types = [e.type for e in events]
    seqs = [e.sequence_number for e in events]
    final = events[-1].response if events else None
    check("responses stream parses", types[0] == "response.created" and types[-1] == "response.completed" and
          "response.output_text.delta" in types and "response.reasoning_summary_text.delta" in types and
          seqs == list(range(len(seqs))), str(types))
    check("responses stream final", final is not None and final.output_text == "Hi there!" and
          final.usage.output_tokens > 0, final.model_dump_json() if final else "")
    with c.responses.stream(model="deepseek-v4-flash", input="Hello again",
                            extra_body=forced("Streamed helper.", reasoning={"effort": "none"})) as st:
        for _ in st:
            pass
        fr = st.get_final_response()
    check("responses stream helper", fr.output_text == "Streamed helper.", fr.model_dump_json())
    tools = [{"type": "function", "name": "get_weather", "description": "Weather",
              "parameters": OA_TOOLS[0]["function"]["parameters"]}]
    r = c.responses.create(model="deepseek-v4-flash", input=[{"role": "user", "content": "Weather?"}], tools=tools,
                           reasoning={"effort": "none"}, extra_body=forced(DSML))
    calls = [o for o in r.output if o.type == "function_call"]
    ok = len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == WEATHER_ARGS
    check("responses tool call", ok, r.model_dump_json())
    if ok:
        inp = [{"role": "user", "content": "Weather?"},
               {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
                "arguments": calls[0].arguments},
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny"}]
        r2 = c.responses.create(model="deepseek-v4-flash", input=inp, tools=tools, reasoning={"effort": "none"},
                                extra_body=forced("Sunny today."))
        check("responses tool round trip", r2.output_text == "Sunny today." and
              r2.usage.input_tokens_details.cached_tokens > 0, r2.model_dump_json())
    try:
        c.responses.create(model="deepseek-v4-flash", input="x", previous_response_id="resp_1")
        check("previous_response_id -> 400", False)
    except openai.BadRequestError:
        check("previous_response_id -> 400", True)


def anthropic_tests(anthropic, srv):
    c = anthropic.Anthropic(base_url=srv.url, api_key=KEY, max_retries=0)
    r = c.messages.create(model="deepseek-v4-flash", max_tokens=64, messages=[{"role": "user", "content": "Hi"}],
                          thinking={"type": "enabled", "budget_tokens": 1024},
                          extra_body=forced("Hmm.</think>Hello!"))
    types = [b.type for b in r.content]
    check("anthropic thinking on", types == ["thinking", "text"] and r.content[0].thinking == "Hmm." and
          r.content[1].text == "Hello!" and r.stop_reason == "end_turn", r.model_dump_json())
    r = c.messages.create(model="deepseek-v4-flash", max_tokens=64, messages=[{"role": "user", "content": "Hi"}],
                          thinking={"type": "disabled"}, extra_body=forced("Plain."))
    check("anthropic thinking off", [b.type for b in r.content] == ["text"] and r.content[0].text == "Plain.")
    with c.messages.stream(model="deepseek-v4-flash", max_tokens=64, system="Be brief.",
                           messages=[{"role": "user", "content": "Hi"}],
                           thinking={"type": "enabled", "budget_tokens": 1024},
                           extra_body=forced("Streaming thoughts.</think>Streamed reply.")) as st:
        text = "".join(st.text_stream)
        fm = st.get_final_message()
    check("anthropic stream", text == "Streamed reply." and fm.content[0].type == "thinking" and
          fm.content[0].thinking == "Streaming thoughts." and fm.content[1].text == "Streamed reply.",
          fm.model_dump_json())
    tools = [{"name": "get_weather", "description": "Weather",
              "input_schema": OA_TOOLS[0]["function"]["parameters"]}]
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    with c.messages.stream(model="deepseek-v4-flash", max_tokens=256, messages=msgs, tools=tools,
                           thinking={"type": "disabled"}, extra_body=forced("Let me check." + DSML)) as st:
        for _ in st:
            pass
        r = st.get_final_message()
    uses = [b for b in r.content if b.type == "tool_use"]
    ok = (r.stop_reason == "tool_use" and len(uses) == 1 and uses[0].input == WEATHER_ARGS and
          uses[0].id.startswith("toolu_"))
    check("anthropic tool_use (stream)", ok, r.model_dump_json())
    if ok:
        msgs2 = msgs + [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
                        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                      "content": "Sunny"}]}]
        r2 = c.messages.create(model="deepseek-v4-flash", max_tokens=64, messages=msgs2, tools=tools,
                               thinking={"type": "disabled"}, extra_body=forced("It is sunny."))
        check("anthropic tool_result round trip", r2.content[-1].text == "It is sunny." and
              r2.usage.cache_read_input_tokens > 0, r2.model_dump_json())
    n = c.messages.count_tokens(model="deepseek-v4-flash", messages=msgs, tools=tools)
    check("anthropic count_tokens", n.input_tokens > 20, str(n))
    try:
        c.messages.create(model="deepseek-v4-flash", max_tokens=5, messages="nope")
        check("anthropic bad request -> 400", False)
    except anthropic.BadRequestError as e:
        check("anthropic bad request -> 400", e.body.get("type") == "error", str(e.body))


def main():
    args = h.parse_args()
    mods = h.sdk_modules()
    if mods is None:
        print("SKIP: the openai/anthropic SDKs could not be installed with pip")
        return 0
    openai, anthropic = mods
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}")
    model = h.make_model(args.flashstar, args.workdir)
    srv = h.Server(args.flashstar, model, args.workdir, ["--api-key", KEY])
    t0 = time.time()
    try:
        for fn, mod in ((openai_tests, openai), (responses_tests, openai), (anthropic_tests, anthropic)):
            try:
                fn(mod, srv)
            except Exception as e:  # an SDK parse error is a failure, with its traceback
                import traceback
                traceback.print_exc()
                check(f"{fn.__name__} raised {type(e).__name__}: {e}", False)
        check("server alive", srv.alive())
    finally:
        rc = srv.stop()
    print(f"{len(failures)} failed checks; {time.time() - t0:.1f} s; server exit {rc}")
    if failures:
        print(srv.log()[-3000:])
    return 1 if failures or rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
