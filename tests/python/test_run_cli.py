#!/usr/bin/env python3
"""`flashstar run` end to end on a synthetic tiny model: bad input gives one clear line and a non-zero exit,
the same seed gives the same text, and the debug dumps (--dump-tokens, --dump-logits, --dump-logprobs)
have the documented shapes."""
import argparse
import json
import os
import subprocess
import sys


def run(args, **kw):
    return subprocess.run(args, capture_output=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashstar", required=True)
    ap.add_argument("--workdir", required=True)
    args, _ = ap.parse_known_args()
    os.makedirs(args.workdir, exist_ok=True)
    fs = args.flashstar
    model = os.path.join(args.workdir, "tiny.gguf")
    r = run([fs, "synth", "--preset", "tiny", "-o", model])
    if r.returncode != 0:
        print("FAIL: synth:", r.stderr.decode(errors="replace"))
        return 1
    failures = 0

    def expect_error(name, argv, stdin=None):
        nonlocal failures
        r = run([fs, "run", "-m", model] + argv, input=stdin)
        lines = [l for l in r.stderr.decode(errors="replace").splitlines() if l.strip()]
        if r.returncode == 0 or len(lines) != 1:
            failures += 1
            print(f"FAIL [{name}]: rc={r.returncode} stderr={lines}")
        else:
            print(f"ok [{name}]: {lines[0]}")

    bad = os.path.join(args.workdir, "bad.txt")
    with open(bad, "wb") as f:
        f.write(b"hello \xff\xfe world")
    empty = os.path.join(args.workdir, "empty.txt")
    open(empty, "wb").close()
    expect_error("invalid utf-8", ["--prompt-file", bad])
    expect_error("invalid utf-8 dump-tokens", ["--dump-tokens", "--prompt-file", bad])
    expect_error("empty prompt file", ["--prompt-file", empty])
    expect_error("empty -p", ["-p", ""])
    expect_error("prompt longer than ctx", ["-p", "word " * 200, "--ctx", "64"])
    expect_error("unknown flag", ["-p", "hi", "--no-such-flag"])
    expect_error("missing prompt", [])
    expect_error("missing prompt file", ["--prompt-file", os.path.join(args.workdir, "nope.txt")])
    expect_error("conflicting modes", ["-p", "hi", "--think", "--nothink"])

    gen = ["-p", "Tell me a story", "-n", "12", "--seed", "7", "--temp", "0.8"]
    a, b = run([fs, "run", "-m", model] + gen), run([fs, "run", "-m", model] + gen)
    if a.returncode or b.returncode or a.stdout != b.stdout or not a.stdout:
        failures += 1
        print("FAIL: the same seed must give the same text", a.stdout, b.stdout, a.stderr)
    if b"tok/s" not in a.stderr:
        failures += 1
        print("FAIL: no speed report")

    r = run([fs, "run", "-m", model, "--dump-tokens", "-p", "<｜User｜>hi there<｜Assistant｜>"])
    first = r.stdout.decode().splitlines()[0] if r.returncode == 0 else ""
    ids = json.loads(first) if first else []
    if not ids or len(r.stdout.decode().splitlines()) != len(ids) + 1:
        failures += 1
        print("FAIL: --dump-tokens", r.stdout, r.stderr)

    lj = os.path.join(args.workdir, "logits.json")
    r = run([fs, "run", "-m", model, "-p", "hi", "--nothink", "--dump-logits", lj])
    d = json.load(open(lj)) if r.returncode == 0 else {}
    if set(d) != {"model", "backend", "prompt_tokens", "ctx", "vocab", "argmax", "logits"} or len(d["logits"]) != d["vocab"]:
        failures += 1
        print("FAIL: --dump-logits", r.stderr)
    elif max(range(len(d["logits"])), key=lambda i: (d["logits"][i], -i)) != d["argmax"]:
        failures += 1
        print("FAIL: --dump-logits argmax")

    lp = os.path.join(args.workdir, "logprobs.json")
    r = run([fs, "run", "-m", model, "-p", "hi", "--dump-logprobs", lp, "-n", "4", "--logprobs-top-k", "5"])
    d = json.load(open(lp)) if r.returncode == 0 else {}
    steps = d.get("steps", [])
    if not steps or any(len(s["top_logprobs"]) != 5 or s["selected"]["id"] != s["top_logprobs"][0]["token"]["id"]
                        for s in steps):
        failures += 1
        print("FAIL: --dump-logprobs", r.stderr)

    r = run([fs, "run", "-m", model, "--chat", "-n", "4", "--seed", "1"], input=b"hello\n/quit\n", timeout=120)
    if r.returncode != 0:
        failures += 1
        print("FAIL: --chat with piped input", r.stderr)
    print("failures:", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
