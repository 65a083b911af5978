#!/usr/bin/env python3
"""Bounded fuzz of `flashstar serve`'s JSON endpoints: a few hundred malformed bodies (random bytes,
truncations, byte mutations of valid requests, wrong types in every field, deep nesting, invalid
UTF-8, oversized bodies, broken HTTP). Malformed input must get a 4xx in the dialect's error shape;
mutations that happen to stay valid may get a 200. The server must never answer 5xx, drop a
connection, or die, and must still serve a normal request at the end (run under ASan in CI)."""
import http.client
import json
import os
import random
import socket
import sys
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_harness as h  # noqa: E402

MSG = [{"role": "user", "content": "hi"}]
VALID = {
    "/v1/chat/completions": {"model": "deepseek-v4-flash", "messages": MSG, "max_tokens": 1},
    "/v1/completions": {"model": "deepseek-v4-flash", "prompt": "hi", "max_tokens": 1},
    "/v1/messages": {"model": "deepseek-v4-flash", "messages": MSG, "max_tokens": 1, "system": "s"},
    "/v1/messages/count_tokens": {"model": "deepseek-v4-flash", "messages": MSG},
    "/v1/responses": {"model": "deepseek-v4-flash", "input": [{"role": "user", "content": "hi"}],
                      "max_output_tokens": 1},
}
# The valid bases carry no tools: the tools block is ~900 tokens of prefill, and every accepted
# mutation runs a generation.
BAD_VALUES = [None, 1, -1, 1e308, "x", "", True, [], [1], [None], {}, {"a": 1}, [{}], [[]], "\u0000", 2 ** 70]
FIELDS = ["model", "messages", "prompt", "input", "max_tokens", "max_output_tokens", "max_completion_tokens",
          "temperature", "top_p", "top_k", "min_p", "seed", "stream", "stop", "stop_sequences", "tools",
          "tool_choice", "thinking", "reasoning_effort", "reasoning", "system", "instructions", "logprobs",
          "top_logprobs", "stream_options", "previous_response_id", "output_config", "n", "think"]
NESTED = [
    {"messages": [{"role": 5, "content": "x"}]},
    {"messages": [{"role": "user", "content": {"a": 1}}]},
    {"messages": [{"role": "user", "content": [1, 2]}]},
    {"messages": [{"role": "robot", "content": "x"}]},
    {"messages": [{"role": "assistant", "tool_calls": [{"function": 1}]}]},
    {"messages": [{"role": "assistant", "tool_calls": "x"}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": 5}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_use", "input": "x", "id": 3}]}]},
    {"input": [{"type": "bogus"}]},
    {"input": [{"type": "message", "role": "user", "content": [{"type": "input_image"}]}]},
    {"input": [{"type": "message", "status": "in_progress", "content": "x"}]},
    {"input": [{"type": "reasoning", "summary": "x"}]},
    {"input": [5]},
    {"tools": [{"type": "function", "function": {"name": 5}}]},
    {"tools": [{"type": "namespace", "tools": [5]}]},
    {"tool_choice": {"type": "function"}},
    {"thinking": {"type": "sideways"}},
    {"reasoning_effort": "extreme"},
    {"stream_options": {"include_usage": "yes"}},
    {"top_logprobs": 99},
    {"model": "gpt-17"},
    {"messages": [{"role": "user", "content": "word " * 3000}], "prompt": "word " * 3000,
     "input": "word " * 3000},
]


def post(u, path, data, headers=None):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    try:
        c.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def raw_http(u, payload):
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


def main():
    args = h.parse_args()
    rnd = random.Random(1234)
    model = h.make_model(args.flashstar, args.workdir)
    # -n 4: a body whose token limit was fuzzed away still generates only a few tokens.
    srv = h.Server(args.flashstar, model, args.workdir, ["--max-body-mb", "1", "-n", "4"], ctx=1024)
    u = urlparse(srv.url)
    failures, counts = [], {}
    t0 = time.time()

    def expect(path, data, allow_ok=False, why=""):
        try:
            st, body = post(u, path, data)
        except Exception as e:
            failures.append(f"{path} {why}: {type(e).__name__}: {e}")
            return
        counts[st] = counts.get(st, 0) + 1
        if st == 200 and allow_ok:
            return
        if not 400 <= st < 500:
            failures.append(f"{path} {why}: HTTP {st} {body[:200]!r} for {data[:120]!r}")
            return
        try:
            j = json.loads(body)
            shape_ok = (j.get("type") == "error" and "message" in j["error"]) if "/messages" in path else \
                "message" in j["error"]
        except Exception:
            shape_ok = False
        if not shape_ok:
            failures.append(f"{path} {why}: error body {body[:200]!r}")

    try:
        for path, valid in VALID.items():
            base = json.dumps(valid).encode()
            for _ in range(8):  # random bytes
                expect(path, bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200))), why="random bytes")
            for _ in range(6):  # truncations
                expect(path, base[:rnd.randrange(len(base))], why="truncated")
            for top in (b"[]", b"1", b'"x"', b"null", b"", b"{}", b"\xff\xfe{}", b'{"messages": "\xff"}'):
                expect(path, top, why="top-level")
            for f in FIELDS:  # one bad type per field
                v = rnd.choice(BAD_VALUES)
                expect(path, json.dumps({**valid, f: v}).encode(), allow_ok=True, why=f"field {f}={v!r}")
            for extra in NESTED:
                expect(path, json.dumps({**valid, **extra}).encode(), allow_ok=True, why=f"nested {list(extra)}")
            for _ in range(14):  # byte mutations of a valid body
                b = bytearray(base)
                for _ in range(rnd.randrange(1, 4)):
                    op, i = rnd.randrange(3), rnd.randrange(len(b))
                    if op == 0:
                        b[i] = rnd.randrange(256)
                    elif op == 1:
                        del b[i]
                    else:
                        b.insert(i, rnd.choice(b'{}[]",:0\\'))
                expect(path, bytes(b), allow_ok=True, why="mutation")
            expect(path, b"[" * 100000 + b"]" * 100000, why="deep nesting")
            expect(path, b'{"a":' * 50000 + b"1" + b"}" * 50000, why="deep objects")
        expect("/v1/chat/completions", b'{"messages":[{"content":"' + b"x" * (2 << 20) + b'"}]}', why="oversized")
        # Nesting deep inside an accepted field (serialized again later), numbers past int64, huge stops.
        deep_args = b'{"messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f",' \
            b'"arguments":' + b"[" * 300000 + b"]" * 300000 + b'}}]},{"role":"user","content":"hi"}]}'
        expect("/v1/chat/completions", deep_args, why="deep tool arguments")
        for f in ("max_tokens", "top_k", "seed"):
            expect("/v1/chat/completions", json.dumps({**VALID["/v1/chat/completions"], f: 1e30}).encode(), why=f"{f}=1e30")
        expect("/v1/chat/completions", json.dumps({**VALID["/v1/chat/completions"], "stop": ["a" * 100000]}).encode(),
               why="100 kB stop string")
        # Broken HTTP: the server answers 4xx or closes; either way it keeps serving.
        for payload in (b"GARBAGE\r\n\r\n",
                        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"10\r\n" + b"{" * 16 + b"\r\n0\r\n\r\n",
                        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}", b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{",
                        b"POST /v1/chat/completions HTTP/1.1\r\n" + b"X-A: " + b"a" * 70000 + b"\r\n\r\n",
                        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"):
            try:
                resp = raw_http(u, payload)
                if resp.startswith(b"HTTP/1.1 5"):
                    failures.append(f"raw HTTP got {resp[:40]!r}")
            except OSError:
                pass
        st, _ = post(u, "/v1/chat/completions", json.dumps(VALID["/v1/chat/completions"]).encode())
        if st != 200 or not srv.alive():
            failures.append(f"server no longer serves: HTTP {st}, alive {srv.alive()}")
    finally:
        rc = srv.stop()
    log = srv.log()
    if rc != 0 or "AddressSanitizer" in log or "runtime error" in log:
        failures.append(f"server exit {rc}; sanitizer output: {'AddressSanitizer' in log or 'runtime error' in log}")
    n = sum(counts.values())
    print(f"{n} bodies in {time.time() - t0:.1f} s; status counts {dict(sorted(counts.items()))}")
    for f in failures[:20]:
        print("FAIL", f)
    if failures:
        print(log[-2000:])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
