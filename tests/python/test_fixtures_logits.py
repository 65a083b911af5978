#!/usr/bin/env python3
"""End-to-end check against reference logits from an independent implementation (transformers).

For every fixture under shared/fixtures/ that holds config.json, tokens.json and logits.f32:
convert the checkpoint (f32 and q8_0), compute logits with clean numerics as a whole prefill, in
chunks of 64, and decoding from position 200, then `flashstar compare` against the reference.
Bounds (shared/fixtures/README.md): max-abs <= 1e-3 at >= 99.5% of positions, <= 0.05 at all,
argmax equal at >= 99.5%. A position beyond the 0.05 bound passes only when the engine traced an exact
tie at an indexer top-k or routing boundary at that position (the reference breaks such ties its own
way: torch.topk order; the engine keeps the lower index as ds4 does). Q8_0 weights loosen the bound; the measured figure is printed and held to
the bound below.
"""
import argparse
import json
import os
import subprocess
import sys
import time

# Q8_0 matrices (every matrix but the router and HC mixers) on tiny-a, measured 2026-11-25: max-abs per
# position 0.09..0.48 (median ~0.17), <= 0.35 at 97.7% of positions, argmax equal at 91.5%. The random
# tiny model is chaotic (MoE routing and indexer picks flip under weight rounding); hold it to these.
Q8_BOUNDS = dict(tol=0.35, tol_frac=0.97, tol_all=0.6, argmax_frac=0.90)
F32_BOUNDS = dict(tol=1e-3, tol_frac=0.995, tol_all=0.05, argmax_frac=0.995)


def run(cmd):
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.time() - t0
    if r.returncode != 0:
        print("FAILED:", " ".join(cmd), "\n", r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
    return r, dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashstar", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--workdir", required=True)
    args, _ = ap.parse_known_args()
    os.makedirs(args.workdir, exist_ok=True)
    root = os.path.join(args.shared, "fixtures")
    if not os.path.isdir(root):
        print("SKIP: no fixtures at", root)
        return 0
    fixtures = sorted(d for d in os.listdir(root)
                      if all(os.path.exists(os.path.join(root, d, f)) for f in ("config.json", "tokens.json", "logits.f32")))
    if not fixtures:
        print("SKIP: no complete fixtures")
        return 0
    failures = 0
    for name in fixtures:
        fx = os.path.join(root, name)
        vocab = json.load(open(os.path.join(fx, "config.json")))["vocab_size"]
        ntok = len(json.load(open(os.path.join(fx, "tokens.json")))["tokens"])
        for outtype, bounds in (("f32", F32_BOUNDS), ("q8_0", Q8_BOUNDS)):
            gguf = os.path.join(args.workdir, f"{name}-{outtype}.gguf")
            r, dt = run([args.flashstar, "convert", fx, "-o", gguf, "--outtype", outtype])
            if r.returncode != 0:
                failures += 1
                continue
            print(f"[{name} {outtype}] convert {dt:.1f}s")
            modes = [("whole", []), ("chunk64", ["--chunk", "64"]), ("decode200", ["--decode-from", str(min(200, ntok - 1))])]
            if outtype != "f32":
                modes = modes[:1]
            for mode, extra in modes:
                out = os.path.join(args.workdir, f"{name}-{outtype}-{mode}.f32")
                ties_file = out + ".ties.json"
                r, dt = run([args.flashstar, "logits", "-m", gguf, "--tokens", os.path.join(fx, "tokens.json"),
                             "-o", out, "--numerics", "clean", "--backend", "cpu", "--ties", ties_file] + extra)
                if r.returncode != 0:
                    failures += 1
                    continue
                cmp = [args.flashstar, "compare", os.path.join(fx, "logits.f32"), out, "--vocab", str(vocab), "--json",
                       "--tol", str(bounds["tol"]), "--tol-frac", str(bounds["tol_frac"]),
                       "--tol-all", "1e30", "--argmax-frac", str(bounds["argmax_frac"]), "--per-position"]
                r, _ = run(cmp)
                try:
                    summary = json.loads(r.stdout)
                except json.JSONDecodeError:
                    summary = {"pass": False, "raw": r.stdout}
                # The every-position bound, with exact ties traced by the engine as the only exception.
                exact_ties = {t["pos"]: t for t in json.load(open(ties_file)) if t["last_in"] == t["first_out"]}
                for pos, m in enumerate(summary.get("per_position", [])):
                    if m > bounds["tol_all"]:
                        if pos in exact_ties:
                            t = exact_ties[pos]
                            print(f"  pos {pos}: max_abs {m:.6f} > {bounds['tol_all']}: exact {t['kind']} tie in layer "
                                  f"{t['layer']} (score {t['last_in']} == {t['first_out']}); reference tie order differs")
                        else:
                            print(f"  pos {pos}: max_abs {m:.6f} > {bounds['tol_all']} with no traced tie")
                            summary["pass"] = False
                summary.pop("per_position", None)
                print(f"[{name} {outtype} {mode}] logits {dt:.1f}s: max_abs {summary.get('max_abs')} "
                      f"within {summary.get('frac_within_tol')} argmax {summary.get('frac_argmax_agree')} "
                      f"first_over {summary.get('first_over_tol')} -> {'PASS' if summary.get('pass') else 'FAIL'}")
                if not summary.get("pass"):
                    failures += 1
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
