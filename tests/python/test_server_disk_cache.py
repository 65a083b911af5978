#!/usr/bin/env python3
"""`flashstar serve --kv-disk-dir`: a conversation's KV state survives a restart. The first server writes
checkpoints (cold at the system prompt, shutdown on SIGTERM); a restarted server resumes the continued
conversation from disk (reported as cached tokens in usage and as a disk hit in /metrics) and gives the
same greedy reply as a server that prefilled everything. Truncated and foreign files are then skipped
with a log line, never trusted, and the server still answers correctly."""
import glob
import json
import os
import shutil
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_harness as h  # noqa: E402

# ~500 tokens: long enough for a cold checkpoint at the system prompt, short enough for ASan runs.
SYSTEM = " ".join(f"Rule {i}: answer politely and keep item {i} in mind." for i in range(16))
FIRST = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell me about caching."}]
SECOND = FIRST + [{"role": "assistant", "content": "Caching keeps work."},
                  {"role": "user", "content": "And after a restart?"}]
DISK = ["--kv-cache-min-tokens", "64", "--kv-disk-space-mb", "64", "--kv-cache-boundary-align-tokens", "64"]


def chat(srv, messages, forced=None):
    body = {"model": "deepseek-v4-flash", "messages": messages, "max_tokens": 8, "temperature": 0,
            "thinking": {"type": "disabled"}}
    if forced:
        body["flashstar_forced_reply"] = forced
    req = urllib.request.Request(srv.url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        j = json.loads(r.read())
    return j["choices"][0]["message"]["content"], j["usage"]


def main():
    args = h.parse_args()
    model = h.make_model(args.flashstar, args.workdir)
    kv = os.path.join(args.workdir, "kv")
    shutil.rmtree(kv, ignore_errors=True)
    failures = []

    def check(name, cond, detail=""):
        shown = detail if not cond else detail[:160]
        print(("ok   " if cond else "FAIL ") + name + (f" ({shown})" if shown else ""))
        if not cond:
            failures.append(name)

    t0 = time.time()
    # Reference: the second turn prefilled from scratch, no disk cache.
    ref = h.Server(args.flashstar, model, args.workdir, [], name="ref", ctx=2048)
    want, ref_usage = chat(ref, SECOND)
    ref.stop()
    print(f"reference reply {want!r}, prompt {ref_usage['prompt_tokens']} tokens")

    a = h.Server(args.flashstar, model, args.workdir, ["--kv-disk-dir", kv, *DISK], name="first", ctx=2048)
    _, u1 = chat(a, FIRST, forced="Caching keeps work.")
    rc = a.stop()
    files = sorted(glob.glob(os.path.join(kv, "*.kv")))
    check("first server exits cleanly", rc == 0, f"rc={rc}")
    check("checkpoints written (cold + shutdown)", len(files) >= 2, f"{len(files)} files" + ("" if len(files) >= 2 else a.log()[-600:]))

    b = h.Server(args.flashstar, model, args.workdir, ["--kv-disk-dir", kv, *DISK], name="second", ctx=2048)
    got, u2 = chat(b, SECOND)
    m = b.metrics()
    b.stop()
    cached = u2["prompt_tokens_details"]["cached_tokens"]
    check("restart resumes from disk (usage)", cached >= u1["prompt_tokens"],
          f"cached {cached} of {u2['prompt_tokens']}, first prompt {u1['prompt_tokens']}")
    check("disk hit in /metrics", m.get('flashstar_cache_hits_total{source="disk"}', 0) >= 1 and
          m.get("flashstar_kv_disk_hits_total", 0) >= 1)
    check("resumed reply equals a full prefill", got == want, f"{got!r} vs {want!r}")

    # Damage every checkpoint: truncate each to half, and add a foreign file with a valid name.
    for f in glob.glob(os.path.join(kv, "*.kv")):
        size = os.path.getsize(f)
        with open(f, "r+b") as fh:
            fh.truncate(size // 2)
    with open(os.path.join(kv, "0" * 40 + ".kv"), "wb") as fh:
        fh.write(b"KVC\x01" + os.urandom(200))
    c = h.Server(args.flashstar, model, args.workdir, ["--kv-disk-dir", kv, *DISK], name="third", ctx=2048)
    got3, u3 = chat(c, SECOND)
    m3 = c.metrics()
    alive = c.alive()
    rc3 = c.stop()
    log = c.log()
    check("damaged files skipped, reply still right", got3 == want and u3["prompt_tokens_details"]["cached_tokens"] == 0,
          f"{got3!r}, cached {u3['prompt_tokens_details']['cached_tokens']}")
    check("damage reported in /metrics", m3.get("flashstar_kv_disk_corrupt_skipped_total", 0) >= 1, str(
        {k: v for k, v in m3.items() if "kv_disk" in k}))
    lines = [l for l in log.splitlines() if any(w in l.lower() for w in ("corrupt", "truncat", "ignor", "invalid"))]
    check("damage logged", bool(lines), "" if lines else log[-800:])
    if lines:
        print("   log:", lines[0])
    check("server survived", alive and rc3 == 0, f"rc={rc3}")
    print(f"{'FAILED' if failures else 'passed'} in {time.time() - t0:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
