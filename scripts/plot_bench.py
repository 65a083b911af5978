#!/usr/bin/env python3
"""Plot a `flashstar bench` CSV: prefill and decode tok/s against context size.

Usage: plot_bench.py CSV OUT.png
The title names the card, backend and route set taken from the CSV's own columns.
"""
import csv
import sys


def main():
    if len(sys.argv) != 3:
        print("usage: plot_bench.py CSV OUT.png", file=sys.stderr)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display on servers
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_bench.py: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 1
    src, out = sys.argv[1], sys.argv[2]
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"plot_bench.py: {src} has no rows", file=sys.stderr)
        return 1
    ctx = [int(r["ctx_tokens"]) for r in rows]
    prefill = [float(r["prefill_tps"]) for r in rows]
    gen = [float(r["gen_tps"]) for r in rows]
    card = rows[0].get("card", "?")
    backend = rows[0].get("backend", "?")
    routes = rows[0].get("routes", "?")

    fig, ax1 = plt.subplots(figsize=(9, 5))
    ax1.plot(ctx, prefill, "o-", color="tab:blue", label="prefill tok/s")
    ax1.set_xlabel("context tokens")
    ax1.set_ylabel("prefill tok/s", color="tab:blue")
    ax1.set_ylim(bottom=0)
    ax2 = ax1.twinx()  # decode is one to two orders of magnitude below prefill
    ax2.plot(ctx, gen, "s-", color="tab:red", label="decode tok/s")
    ax2.set_ylabel("decode tok/s", color="tab:red")
    ax2.set_ylim(bottom=0)
    ax1.grid(True, alpha=0.3)
    lines = ax1.get_lines() + ax2.get_lines()
    ax1.legend(lines, [l.get_label() for l in lines], loc="upper right")
    # Long route lists wrap onto a second title line.
    ax1.set_title(f"flashstar bench: {card} ({backend})\nroutes: {routes}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
