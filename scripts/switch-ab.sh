#!/usr/bin/env bash
# A/B of kernel switches on the GPU machine: for each setting in SWITCHES (space-separated; one setting is
# VAR=value[,VAR=value...], "-" the defaults), 4-layer logits `cmp`-equal to the defaults' (the same bits:
# prefill of 4 100 random tokens then 60 decoded), and `flashstar bench` at 4k / 8k on 4 layers (ROUNDS
# rounds, interleaved) and, with L43=1, on all 43 layers. Optional kernel tests first (TESTS, a gtest
# filter; TIMING, a filter of DISABLED_ timing tests). Outputs under $OUT; a table last.
#   SWITCHES="FLASHSTAR_Q8_LEAN=0 FLASHSTAR_MV_EARLY=0 FLASHSTAR_Q8_LEAN=0,FLASHSTAR_MV_EARLY=0" \
#   TESTS='Q8Lean.*:FloatMatvec.*' TIMING='Q8Lean.DISABLED_DecodeLaunchTiming' BIN=.gx bash scripts/switch-ab.sh
set -uo pipefail
BIN=${BIN:-.gpubin}
FS=$BIN/flashstar
O=${OUT:-/dev/shm/fs-ab}
W=${WORK:-/dev/shm/fs-ab-work}
mkdir -p "$O" "$W"
. "$(dirname "$0")/gpu-env.sh"  # .gpulib/ and cuBLASLt on LD_LIBRARY_PATH
s=$(date +%s)
el() { echo "$(( $(date +%s) - s ))s"; }
if [ -n "${TESTS:-}" ]; then
  $BIN/flashstar_cuda_tests --gtest_filter="$TESTS" > "$O/tests.log" 2>&1
  echo "tests ($TESTS) rc=$? $(grep -c '\[       OK \]' "$O/tests.log") ok, $(grep -c '\[  FAILED  \]' "$O/tests.log") failed $(el)"
fi
if [ -n "${TIMING:-}" ]; then
  $BIN/flashstar_cuda_tests --gtest_also_run_disabled_tests --gtest_filter="$TIMING" > "$O/timing.log" 2>&1
  echo "timing rc=$? $(el)"; grep -vE '^\[|^Note:|^Running|^$' "$O/timing.log" | head -40
fi
M=$W/m4.gguf
[ -f "$M" ] || $FS synth --preset flash --layers 4 --recipe q2 --seed 1 -o "$M" > /dev/null 2>&1
python3 -c "
import json, random; random.seed(7)
json.dump({'tokens': [random.randrange(129280) for _ in range(4160)]}, open('$W/t.json', 'w'))"
settings=("-" ${SWITCHES:-})
envs() { [ "$1" = - ] && echo "X_FS_DEFAULTS=1" || echo "${1//,/ }"; }
rows=()
for i in "${!settings[@]}"; do
  st=${settings[$i]}
  env $(envs "$st") $FS logits -m "$M" --tokens "$W/t.json" -o "$W/l-$i.f32" --decode-from 4100 --backend cuda \
    > "$O/logits-$i.log" 2>&1
  rc=$?
  if [ $i = 0 ]; then bits="(reference)"; elif [ $rc != 0 ]; then bits="FAILED rc=$rc"; else
    bits=$(cmp -s "$W/l-0.f32" "$W/l-$i.f32" && echo "same bits" || echo "OTHER BITS"); fi
  rows[$i]="$bits"
done
echo "logits $(el)"
bench() {  # model, tag, setting index
  env $(envs "${settings[$3]}") $FS bench -m "$1" --backend cuda --random-tokens 1 --ctx-start 4096 --ctx-max 8192 \
    --step-incr 4096 -n 32 --csv "$O/b-$2-$3.csv" > /dev/null 2>&1
  tail -2 "$O/b-$2-$3.csv" | cut -d, -f3,5 | tr '\n' ' '
}
declare -A b4 b43
for r in $(seq 1 "${ROUNDS:-2}"); do
  for i in "${!settings[@]}"; do b4[$i]+="$(bench "$M" 4L-r$r "$i")| "; done
done
echo "4L bench $(el)"
if [ "${L43:-0}" = 1 ]; then
  M43=/dev/shm/flash43.gguf
  [ -f $M43 ] || $FS synth --preset flash --layers 43 --recipe q2 --seed 1 -o $M43 > /dev/null 2>&1
  for i in "${!settings[@]}"; do b43[$i]="$(bench $M43 43L "$i")"; done
  echo "43L bench $(el)"
fi
echo
echo "== switch A/B (prefill tok/s, decode tok/s at ctx 4096 and 8192; 4L rounds separated by |)"
for i in "${!settings[@]}"; do
  printf '%-60s %-12s 4L: %s\n' "${settings[$i]}" "${rows[$i]}" "${b4[$i]:-}"
  [ -n "${b43[$i]:-}" ] && printf '%-60s %-12s 43L: %s\n' "" "" "${b43[$i]}"
done | tee "$O/switch-ab.txt"
