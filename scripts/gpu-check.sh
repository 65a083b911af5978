#!/usr/bin/env bash
# GPU checks in one go (run on the GPU machine from the repository root): the CUDA kernel tests, the
# tiny-a fixture on the GPU, the reference path (--quality) vs CPU on a synthetic model with official
# numerics, chunk invariance and run-to-run determinism of both paths, the fast routes' drift gate
# (scripts/drift-gate.sh) and a short `flashstar bench`; with FULL=1 also the reference path on a
# full-dimension synthetic model against the CPU. A short table last.
# The build is carried from the dev machine (build-cuda) or made here with cmake + ninja.
# Time on an H200: more than 4.5 minutes with GATE=0 (2026-12-01: 15 rows in ~260 s, then 12 decode variants
# x graph / plain), 12+ with the gate (its CPU floor of 8k tokens alone takes about 4): under a 10-minute
# limit, run GATE=0 and scripts/drift-gate.sh in separate calls; KTESTS=0 skips the kernel tests.
set -uo pipefail
BUILD=${BUILD:-build-cuda}
FS=$BUILD/flashstar
FIXTURE=${FIXTURE:-.gpudata/tiny-a}
WORK=${WORK:-/dev/shm/flashstar-check}
LOG=${OUT:-$WORK}/gpu-check.log
. "$(dirname "$0")/gpu-env.sh"  # .gpulib/ and cuBLASLt on LD_LIBRARY_PATH
mkdir -p "$WORK" "$(dirname "$LOG")"
: > "$LOG"
rows=()
ROWS=${OUT:-$WORK}/gpu-check-rows.txt
: > "$ROWS"
row() { rows+=("$(printf '%-44s %-6s %s' "$1" "$2" "$3")"); printf '%-44s %-6s %s\n' "$1" "$2" "$3" >> "$ROWS"; }
run() { echo "+ $*" >> "$LOG"; "$@" >> "$LOG" 2>&1; }

if [ ! -x "$FS" ]; then
  cmake -S . -B "$BUILD" -G Ninja >> "$LOG" 2>&1 && ninja -C "$BUILD" >> "$LOG" 2>&1 || { echo "build failed"; tail -20 "$LOG"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"

export FLASHSTAR_BIN="$PWD/$FS"
# 0. the card's ceilings (once per card; PyTorch is on the GPU machine)
if [ "${CEIL:-1}" = 1 ]; then
  c=$(python3 scripts/ceilings.py 2>>"$LOG" | tee -a "$LOG")
  row "ceilings (d2d copy, bf16 gemm)" INFO "${c:-unavailable}"
fi

# 1. kernel tests (KTESTS=0 leaves them out: the drift gate's kernel level runs most of them)
if [ "${KTESTS:-1}" != 1 ]; then row "cuda kernel tests" INFO "left out (KTESTS=0)"
elif run "$BUILD/flashstar_cuda_tests"; then row "cuda kernel tests" PASS "$(grep -c '\[       OK \]' "$LOG") ok"
else row "cuda kernel tests" FAIL "see log"; fi

# 2. tiny-a on the GPU against the CPU engine and the transformers reference
if [ -d "$FIXTURE" ]; then
  run "$FS" convert "$FIXTURE" -o "$WORK/a.gguf" --outtype f32
  run "$FS" logits -m "$WORK/a.gguf" --tokens "$FIXTURE/tokens.json" -o "$WORK/a-cpu.f32" --numerics clean --backend cpu
  for mode in whole chunk64 decode200; do
    case $mode in whole) extra=();; chunk64) extra=(--chunk 64);; decode200) extra=(--decode-from 200);; esac
    run "$FS" logits -m "$WORK/a.gguf" --tokens "$FIXTURE/tokens.json" -o "$WORK/a-cuda-$mode.f32" --numerics clean \
      --backend cuda --quality "${extra[@]}"
    if run "$FS" compare "$WORK/a-cpu.f32" "$WORK/a-cuda-$mode.f32" --vocab 1024 --tol 1e-4 --tol-frac 0.995 --tol-all 1e-3; then
      row "tiny-a cuda($mode) vs cpu" PASS "$(tail -2 "$LOG" | head -1 | cut -c1-90)"
    else row "tiny-a cuda($mode) vs cpu" FAIL "$(grep positions "$LOG" | tail -1 | cut -c1-90)"; fi
    if run "$FS" compare "$FIXTURE/logits.f32" "$WORK/a-cuda-$mode.f32" --vocab 1024 --tol-all 0.06; then
      row "tiny-a cuda($mode) vs transformers" PASS "$(grep positions "$LOG" | tail -1 | cut -c1-90)"
    else row "tiny-a cuda($mode) vs transformers" FAIL "$(grep positions "$LOG" | tail -1 | cut -c1-90)"; fi
  done
fi

# 3. synthetic tiny model, official numerics: CUDA vs CPU, chunk invariance, determinism
run "$FS" synth --preset tiny --seed 5 -o "$WORK/tiny.gguf"
python3 -c "
import json, random; random.seed(9)
json.dump({'tokens': [random.randrange(1024) for _ in range(301)]}, open('$WORK/r301.json', 'w'))"
run "$FS" logits -m "$WORK/tiny.gguf" --tokens "$WORK/r301.json" -o "$WORK/t-cpu.f32" --backend cpu
run "$FS" logits -m "$WORK/tiny.gguf" --tokens "$WORK/r301.json" -o "$WORK/t-cuda.f32" --backend cuda --quality
run "$FS" logits -m "$WORK/tiny.gguf" --tokens "$WORK/r301.json" -o "$WORK/t-cuda2.f32" --backend cuda --quality
run "$FS" logits -m "$WORK/tiny.gguf" --tokens "$WORK/r301.json" -o "$WORK/t-cuda-c7.f32" --backend cuda --quality --chunk 7
run "$FS" logits -m "$WORK/tiny.gguf" --tokens "$WORK/r301.json" -o "$WORK/t-cuda-d150.f32" --backend cuda --quality --decode-from 150
d=$(python3 scripts/drift.py "$WORK/t-cpu.f32" "$WORK/t-cuda.f32" --vocab 1024 | tee -a "$LOG")
row "tiny synth official: cuda vs cpu" INFO "$(echo "$d" | cut -c1-110)"
if cmp -s "$WORK/t-cuda.f32" "$WORK/t-cuda2.f32"; then row "cuda run-to-run bit-identical" PASS ""; else row "cuda run-to-run bit-identical" FAIL ""; fi
if cmp -s "$WORK/t-cuda.f32" "$WORK/t-cuda-c7.f32"; then row "cuda chunk 7 == whole (bitwise)" PASS ""; else row "cuda chunk 7 == whole (bitwise)" FAIL ""; fi
if cmp -s "$WORK/t-cuda.f32" "$WORK/t-cuda-d150.f32"; then row "cuda decode == prefill (bitwise)" PASS ""; else row "cuda decode == prefill (bitwise)" FAIL ""; fi
# the fast routes: run-to-run bitwise; chunk sizes above the matrix-vector cutoff (8 tokens) bitwise
run "$FS" logits -m "$WORK/tiny.gguf" --tokens "$WORK/r301.json" -o "$WORK/t-fast.f32" --backend cuda
run "$FS" logits -m "$WORK/tiny.gguf" --tokens "$WORK/r301.json" -o "$WORK/t-fast2.f32" --backend cuda
run "$FS" logits -m "$WORK/tiny.gguf" --tokens "$WORK/r301.json" -o "$WORK/t-fast-c43.f32" --backend cuda --chunk 43
if cmp -s "$WORK/t-fast.f32" "$WORK/t-fast2.f32"; then row "fast routes run-to-run bit-identical" PASS ""; else row "fast routes run-to-run bit-identical" FAIL ""; fi
if cmp -s "$WORK/t-fast.f32" "$WORK/t-fast-c43.f32"; then row "fast routes chunk 43 == whole (bitwise)" PASS ""; else row "fast routes chunk 43 == whole (bitwise)" FAIL ""; fi
# the decode step as a CUDA graph against the same kernels launched one by one (full-dimension shapes:
# the graph needs the decode attention kernels): steps from the window fill on, across compressor
# boundaries of both ratios and the indexer's start (position 2052)
[ -f "$WORK/flash4.gguf" ] || run "$FS" synth --preset flash --layers 4 --recipe q2 --seed 3 -o "$WORK/flash4.gguf"
python3 -c "
import json, random; random.seed(11)
json.dump({'tokens': [random.randrange(129280) for _ in range(2100)]}, open('$WORK/r2100.json', 'w'))"
# and the decode fork (FLASHSTAR_DECODE_FORK=1: the step's independent chains on a second stream) in
# both against the serial graph
for g in 1 0; do for f in 0 1; do
  FLASHSTAR_CUDA_GRAPH=$g FLASHSTAR_DECODE_FORK=$f run "$FS" logits -m "$WORK/flash4.gguf" --tokens "$WORK/r2100.json" \
    -o "$WORK/g-$g-$f.f32" --backend cuda --decode-from 1980 --chunk 1000
done; done
# the default fork (attn,idx) and the indexer queries' fork alone (opened after q_b), in the graph
for f in attn,idx idx; do
  FLASHSTAR_DECODE_FORK=$f run "$FS" logits -m "$WORK/flash4.gguf" --tokens "$WORK/r2100.json" \
    -o "$WORK/g-1-${f/,/-}.f32" --backend cuda --decode-from 1980 --chunk 1000
done
if cmp -s "$WORK/g-1-0.f32" "$WORK/g-0-0.f32"; then row "decode CUDA graph == plain launches (bitwise)" PASS "120 steps"
else row "decode CUDA graph == plain launches (bitwise)" FAIL ""; fi
if cmp -s "$WORK/g-1-0.f32" "$WORK/g-1-1.f32" && cmp -s "$WORK/g-1-0.f32" "$WORK/g-0-1.f32" &&
   cmp -s "$WORK/g-1-0.f32" "$WORK/g-1-attn-idx.f32" && cmp -s "$WORK/g-1-0.f32" "$WORK/g-1-idx.f32"; then
  row "decode fork == serial, graph and plain (bitwise)" PASS "120 steps; all, attn+idx, idx"
else row "decode fork == serial, graph and plain (bitwise)" FAIL ""; fi
# the decode kernel variants against the defaults, each alone and together, graph and plain: the split in
# hc_pre, the Q8_0 and hc_pre kernels before their lean versions, the float products' weights after the PDL
# wait, the window shifts on the main stream and the indexer query's RoPE and FP4 simulation in launches of
# their own (each =0, off), the router in one launch and out_a's stages before the wait (=1, on), the split
# inside hc_pre and the shifts on the main stream beside every decode fork
for v in "FLASHSTAR_HC_SPLIT_SIDE=0" "FLASHSTAR_HC_SPLIT_SIDE=0 FLASHSTAR_DECODE_FORK=1" "FLASHSTAR_Q8_LEAN=0" \
         "FLASHSTAR_HC_PRE_LEAN=0" "FLASHSTAR_ROUTER_FUSED=1" "FLASHSTAR_MV_EARLY=0" "FLASHSTAR_Q8_CONST_ITEMS=1" \
         "FLASHSTAR_WINDOW_SIDE=0" "FLASHSTAR_WINDOW_SIDE=0 FLASHSTAR_DECODE_FORK=1" "FLASHSTAR_IDX_FUSED=0" \
         "FLASHSTAR_HC_SPLIT_SIDE=0 FLASHSTAR_Q8_LEAN=0 FLASHSTAR_HC_PRE_LEAN=0 FLASHSTAR_ROUTER_FUSED=1 FLASHSTAR_MV_EARLY=0 FLASHSTAR_WINDOW_SIDE=0 FLASHSTAR_IDX_FUSED=0"; do
  for g in 1 0; do
    rm -f "$WORK/g-v.f32"
    if env FLASHSTAR_CUDA_GRAPH=$g $v "$FS" logits -m "$WORK/flash4.gguf" --tokens "$WORK/r2100.json" \
         -o "$WORK/g-v.f32" --backend cuda --decode-from 1980 --chunk 1000 >> "$LOG" 2>&1 &&
       cmp -s "$WORK/g-1-0.f32" "$WORK/g-v.f32"; then row "variant == default: $v, graph $g" PASS "120 steps"
    else row "variant == default: $v, graph $g" FAIL "the run failed or gave other bits"; fi
  done
done
# the kernel trace (FLASHSTAR_KTRACE) must not change the bits; INFO where CUPTI is not there to load
rm -f "$WORK/g-v.f32" "$WORK/kt.csv"
if env FLASHSTAR_KTRACE="$WORK/kt.csv" "$FS" logits -m "$WORK/flash4.gguf" --tokens "$WORK/r2100.json" \
     -o "$WORK/g-v.f32" --backend cuda --decode-from 1980 --chunk 1000 >> "$LOG" 2>&1 &&
   cmp -s "$WORK/g-1-0.f32" "$WORK/g-v.f32"; then
  if [ -s "$WORK/kt.csv" ]; then row "kernel trace: same bits, records written" PASS "$(($(wc -l < "$WORK/kt.csv") - 1)) records"
  else row "kernel trace: same bits, records written" INFO "no trace (CUPTI did not load: see the log)"; fi
else row "kernel trace: same bits, records written" FAIL "the traced run failed or gave other bits"; fi
rm -f "$WORK"/g-*.f32 "$WORK/kt.csv"
# a short prompt at a context that is no multiple of anything (scratch buffers sized by it): prefill then
# decode on the full-dimension shapes, fast routes and reference path
python3 -c "
import json, random; random.seed(12)
json.dump({'tokens': [random.randrange(129280) for _ in range(261)]}, open('$WORK/r261.json', 'w'))"
ok=1
for q in "" --quality; do
  run "$FS" logits -m "$WORK/flash4.gguf" --tokens "$WORK/r261.json" -o "$WORK/o$q.f32" --backend cuda --decode-from 200 $q || ok=0
done
if [ $ok = 1 ]; then row "decode at context 262 (fast, reference)" PASS "$("$FS" drift "$WORK/o--quality.f32" "$WORK/o.f32" --vocab 129280 2>&1 | grep -m1 -o 'rel_rms[^,]*' | head -1)"
else row "decode at context 262 (fast, reference)" FAIL "see log"; fi
rm -f "$WORK"/o*.f32

# 4. full-dimension synthetic model (slow: the CPU reference runs the same prompt)
if [ "${FULL:-0}" = 1 ]; then
  NTOK=${NTOK:-3000}
  run "$FS" synth --preset flash --layers "${LAYERS:-6}" --recipe q2 --seed 1 -o "$WORK/flash.gguf"
  python3 -c "
import json, random; random.seed(4)
json.dump({'tokens': [random.randrange(129280) for _ in range($NTOK)]}, open('$WORK/rf.json', 'w'))"
  for num in ${FULL_NUMERICS:-official clean}; do
    s=$(date +%s); run "$FS" logits -m "$WORK/flash.gguf" --tokens "$WORK/rf.json" -o "$WORK/f-cuda-$num.f32" --backend cuda -v --numerics $num
    row "flash-${LAYERS:-6}L $num cuda ($NTOK tok)" INFO "$(( $(date +%s) - s )) s"
    s=$(date +%s); run "$FS" logits -m "$WORK/flash.gguf" --tokens "$WORK/rf.json" -o "$WORK/f-cpu-$num.f32" --backend cpu \
      --numerics $num --ties "$WORK/f-ties-$num.json"
    row "flash-${LAYERS:-6}L $num cpu ($NTOK tok)" INFO "$(( $(date +%s) - s )) s"
    d=$(python3 scripts/drift.py "$WORK/f-cpu-$num.f32" "$WORK/f-cuda-$num.f32" --vocab 129280 --ties "$WORK/f-ties-$num.json" | tee -a "$LOG")
    row "flash $num cuda vs cpu" INFO "$(echo "$d" | python3 -c 'import json,sys; d=json.load(sys.stdin); print({k: d[k] for k in ("rel_rms","max_abs","argmax_agree","top20_same_frac","beyond_bounds","traced_to_near_tie","untraced_count")})')"
  done
fi

# 5. the fast routes' drift gate (three levels) and a short bench on a 4-layer full-dimension model
if [ "${GATE:-1}" = 1 ]; then
  # the kernel level of the gate is the kernel test run above (FastKernels.* and FastSmallOps.*)
  G=${OUT:-$WORK}/gate
  BIN=$(dirname "$FS") WORK="$WORK/gatework" OUT="$G" KERNELS=0 bash scripts/drift-gate.sh >> "$LOG" 2>&1
  while IFS= read -r l; do rows+=("$l"); done < "$G/gate-rows.txt"
  run "$FS" bench -m "$WORK/gate-model.gguf" --backend cuda --random-tokens 1 --ctx-start 2048 --ctx-max 8192 \
    --step-incr 2048 -n 16 --csv "$WORK/bench.csv" 2>/dev/null || true
  [ -f "$WORK/bench.csv" ] && row "bench 4L (ctx,prefill_tps,gen_tps)" INFO "$(tail -n +2 "$WORK/bench.csv" | cut -d, -f1,3,5 | tr '\n' ' ')"
fi

echo
echo "== gpu-check summary (log: $LOG)"
printf '%s\n' "${rows[@]}"
