#!/usr/bin/env python3
"""Summary of an Nsight Compute source page (`ncu --page source --csv --print-source sass`): instructions
executed and warp-stall samples per block of SASS lines, with the commonest opcodes of each block, then the
lines holding the most stall samples. Where a kernel's time goes when it is latency-bound (issue rate,
bookkeeping before the first load, a fence or a barrier).

  python3 scripts/ncu_source_summary.py src.csv[.gz] [--block 150] [--top 15]
"""
import argparse
import csv
import gzip
import sys


def rows_of(path):
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt') as f:
        lines = [l for l in f if l.startswith('"')]
    r = list(csv.reader(lines))
    hdr = next(i for i, x in enumerate(r) if 'Source' in x and 'Address' in x)
    h = r[hdr]
    isrc, ist, iex = h.index('Source'), h.index('Warp Stall Sampling (All Samples)'), h.index('Instructions Executed')
    out = []
    for x in r[hdr + 1:]:
        if len(x) <= max(isrc, ist, iex):
            continue
        try:
            out.append((x[isrc].strip(), float(x[ist] or 0), float(x[iex] or 0)))
        except ValueError:
            continue
    return out


def opcode(sass):
    parts = sass.split()
    if not parts:
        return '?'
    op = parts[1] if parts[0].startswith('@') and len(parts) > 1 else parts[0]
    return op.split('.')[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('csv')
    ap.add_argument('--block', type=int, default=150)
    ap.add_argument('--top', type=int, default=15)
    a = ap.parse_args()
    rows = rows_of(a.csv)
    if not rows:
        sys.exit('no SASS lines in ' + a.csv)
    S = sum(r[1] for r in rows) or 1.0
    E = sum(r[2] for r in rows) or 1.0
    print(f'{len(rows)} SASS lines, {S:.0f} stall samples, {E:.0f} warp instructions executed')
    for b in range(0, len(rows), a.block):
        ch = rows[b:b + a.block]
        st, ex = sum(r[1] for r in ch), sum(r[2] for r in ch)
        if ex == 0 and st == 0:
            continue
        ops = {}
        for s, _, e in ch:
            ops[opcode(s)] = ops.get(opcode(s), 0) + e
        top = sorted(ops.items(), key=lambda kv: -kv[1])[:6]
        print(f'{b:5d}-{b + len(ch) - 1:5d}  samples {100 * st / S:5.1f}%  instr {100 * ex / E:5.1f}%  '
              + ' '.join(f'{k}:{100 * v / E:.1f}%' for k, v in top))
    print('lines with the most stall samples:')
    for i, (s, st, ex) in sorted(enumerate(rows), key=lambda kv: -kv[1][1])[:a.top]:
        print(f'{i:5d}  {100 * st / S:5.1f}%  executed {ex:9.0f}  {s[:90]}')


if __name__ == '__main__':
    main()
