#!/usr/bin/env python3
"""Drift between two logits files ([T][vocab] float32): relative rms (rms of the difference / std of
the reference), max-abs, top-20 set agreement per position, argmax agreement. Prints one JSON line."""
import argparse
import json
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("cand")
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--skip", type=int, default=0, help="ignore the first N positions")
    ap.add_argument("--ties", help="near-tie log of the reference run (flashstar logits --ties): positions "
                    "beyond the bounds are matched against it")
    ap.add_argument("--rel-bound", type=float, default=1e-3, help="per-position relative rms bound")
    a = ap.parse_args()
    r = np.fromfile(a.ref, dtype="<f4").reshape(-1, a.vocab)[a.skip:].astype(np.float64)
    c = np.fromfile(a.cand, dtype="<f4").reshape(-1, a.vocab)[a.skip:].astype(np.float64)
    if r.shape != c.shape:
        print(json.dumps({"error": f"shapes differ {r.shape} vs {c.shape}"}))
        return 1
    finite = bool(np.isfinite(r).all() and np.isfinite(c).all())
    d = c - r
    rel_rms = float(np.sqrt(np.mean(d * d)) / max(np.std(r), 1e-30))
    per_pos_rel = np.sqrt(np.mean(d * d, axis=1)) / np.maximum(np.std(r, axis=1), 1e-30)
    # top-20 sets, ties broken by the lower token id (stable sort of -logit)
    tr = np.argsort(-r, axis=1, kind="stable")[:, :20]
    tc = np.argsort(-c, axis=1, kind="stable")[:, :20]
    same20 = np.array([set(x) == set(y) for x, y in zip(tr, tc)])
    out = {
        "positions": int(r.shape[0]), "finite": finite, "rel_rms": rel_rms,
        "max_abs": float(np.abs(d).max()), "argmax_agree": float(np.mean(tr[:, 0] == tc[:, 0])),
        "top20_same_frac": float(np.mean(same20)),
        "positions_rel_rms_over_1e-3": [int(i) + a.skip for i in np.nonzero(per_pos_rel > 1e-3)[0][:50]],
        "positions_top20_differ": [int(i) + a.skip for i in np.nonzero(~same20)[0][:50]],
    }
    if a.ties:
        ties = json.load(open(a.ties))
        by_pos = {}
        for t in ties:
            by_pos.setdefault(t["pos"], []).append(t)
        bad = sorted(set(int(i) + a.skip for i in np.nonzero((per_pos_rel > a.rel_bound) | ~same20)[0]))
        traced = [p for p in bad if p in by_pos]
        untraced = [p for p in bad if p not in by_pos]
        out["beyond_bounds"] = len(bad)
        out["traced_to_near_tie"] = len(traced)
        out["untraced"] = untraced[:50]
        out["untraced_count"] = len(untraced)
        out["tie_examples"] = [
            {"pos": p, "layer": t["layer"], "kind": t["kind"],
             "rel_gap": abs(t["last_in"] - t["first_out"]) / (t.get("scale") or max(abs(t["last_in"]), abs(t["first_out"]), 1e-30))}
            for p in traced[:10] for t in by_pos[p][:1]]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
