#!/usr/bin/env python3
"""`flashstar drift`, `flashstar bench` and `synth --well-conditioned`, end to end on tiny models (CPU).

- drift between two CPU runs at different --chunk (row files and --dump-logits JSON) is exactly zero,
  for the plain and the well-conditioned model; gates pass there and fail with one line elsewhere;
- the well-conditioned model differs from the plain one, and is far less sensitive to a numerics
  change (official vs clean: FP8 KV, FP4 indexer), which is what the option is for;
- bench writes ds4-bench's CSV with monotone frontiers, from random ids and from a prompt file;
- bad inputs fail with one line and exit 1.
"""
import argparse
import csv
import json
import os
import random
import subprocess
import sys

FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)


def run(cmd, expect=0):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if expect is not None and r.returncode != expect:
        print("unexpected exit", r.returncode, ":", " ".join(cmd), "\n", r.stdout[-2000:], r.stderr[-2000:],
              file=sys.stderr)
        FAILURES.append("exit code of " + " ".join(cmd[1:3]))
    return r


def one_line_error(r):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    return r.returncode == 1 and len(lines) == 1 and lines[0].startswith("flashstar: ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashstar", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--workdir", required=True)
    a, _ = ap.parse_known_args()
    fs, wd = a.flashstar, a.workdir
    os.makedirs(wd, exist_ok=True)
    p = lambda name: os.path.join(wd, name)

    plain, wc = p("plain.gguf"), p("wc.gguf")
    run([fs, "synth", "--preset", "tiny", "--seed", "3", "-o", plain])
    run([fs, "synth", "--preset", "tiny", "--seed", "3", "--well-conditioned", "-o", wc])
    run([fs, "synth", "--preset", "tiny", "--seed", "3", "--well-conditioned", "-o", p("wc2.gguf")])
    check(open(wc, "rb").read() == open(p("wc2.gguf"), "rb").read(), "well-conditioned synth is deterministic")
    vocab = 1024
    rng = random.Random(5)
    json.dump({"tokens": [rng.randrange(vocab) for _ in range(96)]}, open(p("toks.json"), "w"))

    def logits(model, out, *extra):
        run([fs, "logits", "-m", model, "--tokens", p("toks.json"), "-o", out, "--backend", "cpu"] + list(extra))

    def drift(ref, cand, *extra, expect=0):
        js = p("drift.json")
        if os.path.exists(js):
            os.remove(js)
        r = run([fs, "drift", ref, cand, "--json", js] + list(extra), expect=expect)
        return r, (json.load(open(js)) if os.path.exists(js) else None)

    # Two CPU runs that differ only in prefill chunking: zero drift, every gate at its strictest passes.
    strict = ["--max-rms", "0", "--max-top20-abs", "0", "--max-nonfinite", "0", "--min-same-top1-frac", "1",
              "--min-top5-full-frac", "1", "--min-top20-full-frac", "1", "--gate-stat", "max"]
    for name, model in (("plain", plain), ("well-conditioned", wc)):
        tag = os.path.basename(model)
        logits(model, p(tag + ".whole.f32"))
        logits(model, p(tag + ".chunk5.f32"), "--chunk", "5")
        r, j = drift(p(tag + ".whole.f32"), p(tag + ".chunk5.f32"), "--vocab", str(vocab), *strict)
        s = j["summary"] if j else {}
        check(r.returncode == 0 and j and j["pass"], f"{name}: chunked vs whole prefill passes the strict gates")
        check(s.get("positions") == 96 and s["rms"]["max"] == 0 and s["max_abs"]["max"] == 0 and
              s["nonfinite"] == 0 and s["top20_full_frac"] == 1, f"{name}: drift is exactly zero")

    # The conditioned model is a different model ...
    r, j = drift(p("plain.gguf.whole.f32"), p("wc.gguf.whole.f32"), "-m", plain, "--max-rms", "0", expect=1)
    check(j is not None and j["summary"]["rms"]["mean"] > 0, "well-conditioned logits differ from the plain model's")
    check(one_line_error(r) and "gate failed" in r.stderr and "rms" in r.stderr, "a violated gate: exit 1, one line")

    # ... and a numerics change (official vs clean) moves its logits far less.
    rel = {}
    for model in (plain, wc):
        tag = os.path.basename(model)
        logits(model, p(tag + ".clean.f32"), "--numerics", "clean")
        _, j = drift(p(tag + ".whole.f32"), p(tag + ".clean.f32"), "--vocab", str(vocab))
        rel[tag] = j["summary"] if j else None
    if rel["plain.gguf"] and rel["wc.gguf"]:
        rp, rw = rel["plain.gguf"], rel["wc.gguf"]
        print(f"     official vs clean: mean rel_rms plain {rp['rel_rms']['mean']:.4g} well-conditioned "
              f"{rw['rel_rms']['mean']:.4g}; top5 5/5 {rp['top5_full_frac']:.3f} vs {rw['top5_full_frac']:.3f}")
        check(rw["rel_rms"]["mean"] < 0.25 * rp["rel_rms"]["mean"], "well-conditioned: 4x+ smaller drift under a numerics change")
        check(rw["rel_rms"]["mean"] <= 0.02 and rw["top5_full_frac"] >= 0.95, "well-conditioned: within the 2% / 95% gate")

    # --dump-logits JSON inputs and --positions.
    for tag, extra in (("a", []), ("b", ["--chunk", "3"])):
        run([fs, "run", "-m", plain, "-p", "hello there", "--backend", "cpu", "--dump-logits", p(tag + ".json")] + extra)
    r, j = drift(p("a.json"), p("b.json"), *strict)
    check(r.returncode == 0 and j and j["summary"]["positions"] == 1 and j["summary"]["rms"]["max"] == 0,
          "drift over two --dump-logits JSON files is zero")
    r, j = drift(p("plain.gguf.whole.f32"), p("wc.gguf.whole.f32"), "--vocab", str(vocab), "--positions", "10:20")
    check(j and j["begin"] == 10 and j["end"] == 20 and len(j["per_position"]) == 10 and
          j["per_position"][0]["pos"] == 10, "--positions selects a half-open range")

    # Bad inputs: one line, exit 1.
    check(one_line_error(run([fs, "drift", p("missing.json"), p("a.json")], expect=1)), "missing file: one line")
    check(one_line_error(run([fs, "drift", p("a.json"), p("plain.gguf.whole.f32"), "--vocab", "1000"], expect=1)),
          "row length that does not divide the file: one line")
    check(one_line_error(run([fs, "drift", p("a.json"), p("plain.gguf.whole.f32"), "--vocab", "1024"], expect=1)),
          "position count mismatch: one line")

    # bench on random ids.
    base = [fs, "bench", "-m", plain, "--backend", "cpu", "--ctx-start", "32", "--ctx-max", "96", "--step-incr", "32",
            "-n", "4"]
    r = run(base + ["--csv", p("bench.csv")])
    header = open(p("bench.csv")).readline().strip() if os.path.exists(p("bench.csv")) else ""
    check(header == "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes,backend,card,routes",
          "bench CSV header")
    rows = list(csv.DictReader(open(p("bench.csv")))) if header else []
    check([int(x["ctx_tokens"]) for x in rows] == [32, 64, 96], "bench frontiers 32, 64, 96")
    check(all(int(x["prefill_tokens"]) == 32 and int(x["gen_tokens"]) == 4 and float(x["prefill_tps"]) > 0 and
              float(x["gen_tps"]) > 0 and x["backend"] == "cpu" and x["card"].startswith("cpu (") and
              "moe=" in x["routes"] for x in rows) and len(rows) == 3, "bench rows: counts, rates, backend, card, routes")
    kv = [int(x["kvcache_bytes"]) for x in rows]
    check(kv == sorted(kv) and kv and kv[0] > 0, "kvcache_bytes grows with the context")
    check(all(len(x["prefill_tps"].split(".")[1]) == 2 for x in rows), "tok/s with two decimals")
    check("prefill t/s" in r.stderr and r.stderr.count("\n") >= 5, "bench prints a table to stderr")

    # bench from a prompt file (plain BPE through the model's tokenizer); too short a prompt fails.
    words = "the quick brown fox jumps over the lazy dog and keeps running far away".split()
    open(p("prompt.txt"), "w").write(" ".join(rng.choice(words) for _ in range(400)))
    open(p("short.txt"), "w").write("too short")
    r = run(base + ["--prompt-file", p("prompt.txt"), "--csv", p("bench2.csv")])
    check(r.returncode == 0 and len(list(csv.DictReader(open(p("bench2.csv"))))) == 3, "bench --prompt-file")
    r = run(base + ["--chat-prompt-file", p("prompt.txt"), "-sys", "Be brief.", "--csv", p("bench3.csv")])
    check(r.returncode == 0, "bench --chat-prompt-file with -sys")
    check(one_line_error(run(base + ["--prompt-file", p("short.txt")], expect=1)), "too short a prompt: one line")
    check(one_line_error(run(base[:-4] + ["--ctx-alloc", "50"], expect=1)), "bad --ctx-alloc: one line")

    # --plot: a PNG with matplotlib, else one clear line before any work.
    has_mpl = subprocess.run(["python3", "-c", "import matplotlib"], capture_output=True).returncode == 0
    r = run(base + ["--plot", p("bench.png")], expect=None)
    if has_mpl:
        check(r.returncode == 0 and os.path.getsize(p("bench.png")) > 0 and os.path.exists(p("bench.csv")),
              "--plot writes a PNG")
    else:
        check(one_line_error(r) and "matplotlib" in r.stderr, "--plot without matplotlib: one clear line")

    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
