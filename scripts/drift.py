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
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
