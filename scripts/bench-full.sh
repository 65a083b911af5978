#!/usr/bin/env bash
# flashstar bench on the whole 43-layer q2 synthetic model (H200), all routes, context 2k..64k (x2 steps
# by default), then the stage profile of one 8k prefill + 32 decode steps (the profile launches kernels
# one by one: FLASHSTAR_PROFILE turns the decode graph off). Outputs under $OUT.
set -uo pipefail
BIN=${BIN:-.gpubin}
. "$(dirname "$0")/gpu-env.sh"  # .gpulib/ and cuBLASLt on LD_LIBRARY_PATH
M=/dev/shm/flash43.gguf
O=${OUT:-/dev/shm}
s=$(date +%s)
[ -f $M ] || $BIN/flashstar synth --preset flash --layers ${LAYERS:-43} --recipe q2 --seed 1 -o $M > $O/synth43.log 2>&1
echo "synth: $(( $(date +%s) - s )) s"
steps=(--step-mul ${STEPMUL:-2}); [ -n "${STEP:-}" ] && steps=(--step-incr $STEP)
$BIN/flashstar bench -m $M --backend cuda --random-tokens 1 --ctx-start 2048 --ctx-max ${CTXMAX:-65536} "${steps[@]}" \
  -n ${NGEN:-32} --csv $O/bench-h200-43L.csv --plot $O/bench-h200-43L.png > $O/bench43.log 2>&1
echo "bench rc=$?"; cut -d, -f1-6 $O/bench-h200-43L.csv
[ "${NPROF:-8192}" = 0 ] && exit 0  # no stage profile
python3 -c "
import json, random; random.seed(4)
json.dump({'tokens': [random.randrange(129280) for _ in range(${NPROF:-8192} + 32)]}, open('/dev/shm/t8k.json', 'w'))"
FLASHSTAR_PROFILE=1 $BIN/flashstar logits -m $M --tokens /dev/shm/t8k.json -o /dev/shm/l.f32 --last-only --decode-from ${NPROF:-8192} \
  --backend cuda -v > $O/prof43.log 2>&1
grep -E "logits:|^  " $O/prof43.log
