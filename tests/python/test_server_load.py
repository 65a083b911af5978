#!/usr/bin/env python3
"""Bounded load test of `flashstar serve` on a tiny synthetic model: 8 clients x 25 requests against the
one-session FIFO engine, half of them streaming, some hanging up mid-stream. Every request that
completes must carry exactly the greedy reply its prompt gets when asked alone (so queueing, prefix
reuse and cancellations never leak state between requests), none may be lost, the server must stay
up, its cancellations must show in /metrics, and its memory must stay flat. Then a long prompt:
streamed with SSE keepalive comments while it is prefilled, and, when its client hangs up, stopped
within a prefill chunk."""
import http.client
import json
import os
import sys
import threading
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_harness as h  # noqa: E402

CLIENTS = 8
LONG = " ".join(f"Rule {i}: answer politely and keep item {i} in mind." for i in range(40))  # ~1250 tokens
PROMPTS = [f"Request topic {i}: describe item number {i * 7} briefly." for i in range(10)]


def body(prompt, stream, max_tokens):
    return json.dumps({"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "temperature": 0, "thinking": {"type": "disabled"},
                       "stream": stream})


def ask(host, port, prompt, max_tokens=8):
    c = http.client.HTTPConnection(host, port, timeout=300)
    c.request("POST", "/v1/chat/completions", body(prompt, False, max_tokens), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
    j = json.loads(data)
    return j["choices"][0]["message"]["content"], j["choices"][0]["finish_reason"]


def ask_stream(host, port, prompt, max_tokens=8, hang_up=False):
    c = http.client.HTTPConnection(host, port, timeout=300)
    c.request("POST", "/v1/chat/completions", body(prompt, True, max_tokens), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    text, finish, done = "", None, False
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip("\r\n")
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            break
        ch = json.loads(line[6:])["choices"]
        if ch:
            text += ch[0]["delta"].get("content") or ""
            finish = ch[0]["finish_reason"] or finish
        if hang_up and text:
            c.sock.close()  # the client goes away mid-generation
            c.close()
            return None
    c.close()
    if not done:
        raise RuntimeError("stream ended without [DONE]")
    return text, finish


def main():
    args = h.parse_args()
    asan = h.sanitized(args.flashstar)
    per_client = 4 if asan else 25
    model = h.make_model(args.flashstar, args.workdir)
    srv = h.Server(args.flashstar, model, args.workdir, ["--chunk", "64", "--keepalive-seconds", "1"], ctx=2048)
    u = urlparse(srv.url)
    failures = []
    t0 = time.time()
    try:
        expected = [ask(u.hostname, u.port, p) for p in PROMPTS]
        print(f"reference replies computed in {time.time() - t0:.1f} s")
        rss = []
        stats = {"ok": 0, "hung_up": 0, "wrong": 0, "errors": 0}
        lock = threading.Lock()

        def client(ci):
            for i in range(per_client):
                k = (ci * per_client + i) % len(PROMPTS)
                mode = (ci + i) % 4  # 0/1: plain, 2: streaming, 3: streaming and hanging up
                try:
                    if mode == 3 and i % 2 == 1:
                        res = ask_stream(u.hostname, u.port, PROMPTS[k], max_tokens=400, hang_up=True)
                        with lock:
                            stats["hung_up"] += 1
                        continue
                    res = ask_stream(u.hostname, u.port, PROMPTS[k]) if mode >= 2 else ask(u.hostname, u.port, PROMPTS[k])
                    with lock:
                        if res == expected[k]:
                            stats["ok"] += 1
                        else:
                            stats["wrong"] += 1
                            failures.append(f"client {ci} request {i}: {res!r} != {expected[k]!r}")
                except Exception as e:
                    with lock:
                        stats["errors"] += 1
                        failures.append(f"client {ci} request {i}: {type(e).__name__}: {e}")

        def sampler(stop):
            while not stop.is_set():
                rss.append(srv.rss_kb())
                stop.wait(0.25)

        stop = threading.Event()
        st = threading.Thread(target=sampler, args=(stop,))
        st.start()
        t1 = time.time()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        stop.set()
        st.join()
        wall = time.time() - t1
        total = CLIENTS * per_client
        print(f"{total} requests by {CLIENTS} clients in {wall:.1f} s: {stats}")
        if stats["ok"] + stats["hung_up"] != total:
            failures.append(f"lost or failed requests: {stats}")
        # Hang-ups stop their generation: the server counts them and did not generate 400 tokens each.
        time.sleep(0.5)
        m = srv.metrics()
        print(f"metrics: completed {m['flashstar_requests_completed_total']:.0f}, cancelled "
              f"{m['flashstar_requests_cancelled_total']:.0f}, generated {m['flashstar_completion_tokens_total']:.0f} tokens")
        if m["flashstar_requests_cancelled_total"] < stats["hung_up"]:
            failures.append(f"server counted {m['flashstar_requests_cancelled_total']} cancellations for "
                            f"{stats['hung_up']} hang-ups")
        cap = 8 * (total + len(PROMPTS)) + 60 * stats["hung_up"]
        if m["flashstar_completion_tokens_total"] > cap:
            failures.append(f"hung-up generations ran on: {m['flashstar_completion_tokens_total']} tokens > {cap}")
        if not srv.alive():
            failures.append("server died")
        else:
            after = ask(u.hostname, u.port, PROMPTS[0])
            if after != expected[0]:
                failures.append("server answers differently after the load")
        # A long prefill streams keepalive comments until the first token (skipped under ASan, where this
        # one prefill takes a minute).
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=300) if not asan else None
        t_req = time.time()
        comments, first_data = 0, 0.0
        if c:
            c.request("POST", "/v1/chat/completions", body(LONG, True, 2), {"Content-Type": "application/json"})
            r = c.getresponse()
            first_data = None
        while c:
            line = r.readline().decode().rstrip("\r\n")
            if line.startswith(": prefill"):
                comments += 1
            if line.startswith("data:") and first_data is None:
                first_data = time.time() - t_req
            if not line and r.isclosed() or line == "data: [DONE]":
                break
        if c:
            c.close()
        print(f"long prompt: first data after {first_data:.1f} s, {comments} keepalive comments")
        if first_data > 2.5 and comments == 0:
            failures.append("no SSE keepalive comment during a long prefill")
        # A client that hangs up during a long prefill stops it within a chunk (64 tokens).
        before = srv.metrics()
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        c.request("POST", "/v1/chat/completions", body(LONG + " again", True, 8), {"Content-Type": "application/json"})
        c.getresponse()
        time.sleep(0.4)  # let the prefill start, then go away in the middle of it
        c.sock.close()
        c.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            after = srv.metrics()
            if after["flashstar_requests_cancelled_total"] > before["flashstar_requests_cancelled_total"]:
                break
            time.sleep(0.05)
        evaluated = after["flashstar_prefill_tokens_total"] - before["flashstar_prefill_tokens_total"]
        print(f"hang-up during prefill: {evaluated:.0f} prompt tokens evaluated of ~1250")
        if after["flashstar_requests_cancelled_total"] <= before["flashstar_requests_cancelled_total"] or evaluated > 600:
            failures.append(f"prefill went on after the hang-up: {evaluated} tokens")
        # Memory: the second half of the run holds no more than the first half plus a margin.
        half = len(rss) // 2
        if half:
            first, last = max(rss[:half]), max(rss[half:])
            margin = 96 * 1024 if asan else 24 * 1024
            print(f"RSS: first half max {first / 1024:.1f} MiB, second half max {last / 1024:.1f} MiB")
            if last > first + margin:
                failures.append(f"memory grew from {first} kB to {last} kB")
    finally:
        rc = srv.stop()
    if rc != 0:
        failures.append(f"server exit status {rc}")
    for f in failures[:20]:
        print("FAIL", f)
    print(f"{'FAILED' if failures else 'passed'} in {time.time() - t0:.1f} s")
    if failures:
        print(srv.log()[-2000:])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
