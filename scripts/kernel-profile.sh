#!/usr/bin/env bash
# Per-kernel GPU time of the decode step (Nsight Compute, one metric: gpu__time_duration), on a
# full-dimension synthetic q2 model with few layers: kernels of (prefill P + D decode steps) minus those
# of (prefill P alone), grouped by kernel name. Prints a table of the top kernels per decode token; the
# prefill run's own per-kernel table goes to $OUT/prefill-kernels.txt.
set -uo pipefail
BIN=${BIN:-.gpubin}
FS=$BIN/flashstar
LAYERS=${LAYERS:-4}
P=${P:-4096}
D=${D:-8}
W=${WORK:-/dev/shm/fs-kprof}
O=${OUT:-$W}
mkdir -p "$W" "$O"
. "$(dirname "$0")/gpu-env.sh"  # .gpulib/ and cuBLASLt on LD_LIBRARY_PATH
M=${MODEL:-$W/flash.gguf}
[ -f "$M" ] || $FS synth --preset flash --layers $LAYERS --recipe q2 --seed 1 -o "$M" > /dev/null 2>&1
python3 -c "
import json, random; random.seed(4)
t=[random.randrange(129280) for _ in range($P + $D)]
json.dump({'tokens': t[:$P]}, open('$W/p.json', 'w')); json.dump({'tokens': t}, open('$W/pd.json', 'w'))"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for k in p pd; do
  extra=(); [ $k = pd ] && extra=(--decode-from $P)
  $NCU --clock-control none --metrics gpu__time_duration.sum --csv --print-units base --kernel-name-base function \
    --log-file "$O/ncu-$k.csv" $FS logits -m "$M" --tokens "$W/$k.json" -o "$W/l.f32" --last-only --backend cuda \
    ${ROUTE_ARGS:-} "${extra[@]}" > "$O/ncu-$k.log" 2>&1 || { echo "ncu $k failed"; tail -5 "$O/ncu-$k.log"; }
done
python3 - "$O/ncu-p.csv" "$O/ncu-pd.csv" "$D" "$O/last-step.txt" <<'PY'
import csv, sys, collections
def load(path):
    rows = [l for l in open(path) if l.startswith('"')]
    agg = collections.defaultdict(lambda: [0, 0.0, ''])
    for r in csv.DictReader(rows):
        if r.get('Metric Name') != 'gpu__time_duration.sum': continue
        a = agg[r['Kernel Name']]; a[0] += 1; a[1] += float(r["Metric Value"].replace(",", "")) / 1e3; a[2] = r['Grid Size'] + ' x ' + r['Block Size']
    return agg
p, pd, d = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
# the last decode step launch by launch (it starts at the token's embedding), for per-matrix times
seq = [r for r in csv.DictReader(l for l in open(sys.argv[2]) if l.startswith('"'))
       if r.get('Metric Name') == 'gpu__time_duration.sum']
start = max((i for i, r in enumerate(seq) if 'embed' in r['Kernel Name']), default=0)
with open(sys.argv[4], 'w') as f:
    for r in seq[start:]:
        f.write('%8.2f  %-40s %s x %s\n' % (float(r['Metric Value'].replace(',', '')) / 1e3, r['Kernel Name'][:40], r['Grid Size'], r['Block Size']))
rows = []
for k, (n, t, g) in pd.items():
    n0, t0, _ = p.get(k, [0, 0.0, ''])
    if n - n0 > 0: rows.append(((t - t0) / d, (n - n0) / d, k, g))
# the prefill alone (run p), per kernel name: where a P-token prefill spends its kernel time
with open(sys.argv[4].replace('last-step', 'prefill-kernels'), 'w') as f:
    ptot = sum(t for n, t, g in p.values())
    f.write(f'prefill of the p run: {ptot / 1e3:.2f} ms of kernel time in {sum(n for n, t, g in p.values())} launches\n')
    for k, (n, t, g) in sorted(p.items(), key=lambda kv: -kv[1][1])[:40]:
        f.write(f'{t / 1e3:9.3f} ms {100 * t / ptot:5.1f}% {n:5d}  {k[:90]}\n')
rows.sort(reverse=True)
tot = sum(r[0] for r in rows); launches = sum(r[1] for r in rows)
print(f'decode per token: {tot:.1f} us of kernel time in {launches:.0f} launches')
print(f'{"us/token":>9} {"launches":>8} {"us each":>8}  kernel (last grid x block)')
for t, n, k, g in rows[:30]: print(f'{t:9.1f} {n:8.1f} {t/n:8.2f}  {k[:70]} ({g})')
PY
