#!/usr/bin/env python3
"""Writes the expected renderings for cases.json: a second, independent implementation of the DS4 server
rendering rules (interfaces.md §2.3-2.6, ds4_server.c render_chat_prompt_text), so the C++ renderer is
checked against text produced without it. Re-run only when a case is added; review the diff by eye.
"""
import json
import os
import sys

BOS, EOS, U, A = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"
MAX = ("Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
       "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, "
       "rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n"
       "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
       "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n")
D = "｜DSML｜"
TOOLS_HEAD = (
    "## Tools\n\nYou have access to a set of tools to help answer the user question. You can invoke tools by writing a "
    f"\"<{D}tool_calls>\" block like the following:\n\n"
    f"<{D}tool_calls>\n<{D}invoke name=\"$TOOL_NAME\">\n"
    f"<{D}parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</{D}parameter>\n...\n</{D}invoke>\n"
    f"<{D}invoke name=\"$TOOL_NAME2\">\n...\n</{D}invoke>\n</{D}tool_calls>\n\n"
    "String parameters should be specified as raw text and set `string=\"true\"`. Preserve characters such as `>`, `&`, "
    "and `&&` exactly; never replace normal string characters with XML or HTML entity escapes. Only if a string value "
    f"itself contains the exact closing parameter tag `</{D}parameter>`, write that tag as `&lt;/{D}parameter>` inside "
    "the value. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set "
    "`string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> "
    "BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n### Available Tool Schemas\n\n")
TOOLS_TAIL = ("\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls. "
              "Use the exact parameter names from the schemas.")
PEND = f"</{D}parameter>"


def attr(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def dsml(calls):
    out = f"\n\n<{D}tool_calls>\n"
    for c in calls:
        out += f"<{D}invoke name=\"{attr(c['name'])}\">\n"
        try:
            args = json.loads(c["arguments"])  # dicts keep the client's key order
            assert isinstance(args, dict)
            args = list(args.items())
        except Exception:
            args = None
        if args is None:
            val = c["arguments"].replace(PEND, "&lt;" + PEND[1:])
            out += f"<{D}parameter name=\"arguments\" string=\"true\">{val}{PEND}\n"
        else:
            for k, v in args:
                if isinstance(v, str):
                    val = v.replace(PEND, "&lt;" + PEND[1:])
                    out += f"<{D}parameter name=\"{attr(k)}\" string=\"true\">{val}{PEND}\n"
                else:
                    # minified raw JSON (these cases use no floats whose text json.dumps would change)
                    raw = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
                    raw = raw.replace(PEND, "\\u003c" + PEND[1:])
                    out += f"<{D}parameter name=\"{attr(k)}\" string=\"false\">{raw}{PEND}\n"
        out += f"</{D}invoke>\n"
    return out + f"</{D}tool_calls>"


def render(case):
    mode = case["mode"]
    think = mode != "none"
    msgs = case["messages"]
    tools = case.get("tools", [])
    system = (TOOLS_HEAD + "\n".join(tools) + TOOLS_TAIL) if tools else ""
    tool_ctx = bool(tools)
    last_user = -1
    for i, m in enumerate(msgs):
        if m["role"] in ("system", "developer"):
            system += ("\n\n" if system else "") + m.get("content", "")
        if (m["role"] == "assistant" and m.get("tool_calls")) or m["role"] in ("tool", "function"):
            tool_ctx = True
        if m["role"] in ("user", "tool", "function"):
            last_user = i
    out = BOS + (MAX if mode == "max" else "") + system
    pa = pt = False
    for i, m in enumerate(msgs):
        r, c = m["role"], m.get("content", "")
        if r == "user":
            out += U + c
            pa, pt = True, False
        elif r in ("tool", "function"):
            if not pt:
                out += U
            out += "<tool_result>" + c.replace("</tool_result>", "&lt;/tool_result>") + "</tool_result>"
            pa = pt = True
        elif r == "assistant":
            if pa:
                out += A
                if think and (tool_ctx or i > last_user):
                    out += "<think>" + m.get("reasoning", "") + "</think>"
                else:
                    out += "</think>"
            out += c
            if m.get("tool_calls"):
                out += dsml(m["tool_calls"])
            out += EOS
            pa = pt = False
    if pa:
        out += A + ("<think>" if think else "</think>")
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    cases = json.load(open(os.path.join(here, "cases.json"), encoding="utf-8"))
    for case in cases:
        with open(os.path.join(here, case["name"] + ".txt"), "w", encoding="utf-8", newline="") as f:
            f.write(render(case))
    print(f"wrote {len(cases)} golden renderings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
