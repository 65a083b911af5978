#!/usr/bin/env bash
# Per-stage profile of the reference path and the fast routes on a full-dimension synthetic q2 model
# with few layers, plus their drift, on the GPU machine. Writes logs under $OUT (or /dev/shm).
set -uo pipefail
BIN=${BIN:-.gpubin}
FS=$BIN/flashstar
LAYERS=${LAYERS:-4}
NPRE=${NPRE:-8128}
NDEC=${NDEC:-64}
W=/dev/shm/fs-probe
O=${OUT:-$W}
mkdir -p $W
. "$(dirname "$0")/gpu-env.sh"  # .gpulib/ and cuBLASLt on LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "${TESTS:-1}" = 1 ]; then
  $BIN/flashstar_cuda_tests > $O/cuda-tests.log 2>&1; echo "cuda tests rc=$? $(grep -c '\[       OK \]' $O/cuda-tests.log) ok, $(grep -c '\[  FAILED  \]' $O/cuda-tests.log) failed"
  grep -E "^(gemm|grouped)|FAILED|Failure|rel err|Expected|Which is" $O/cuda-tests.log | head -40
fi
[ -f $W/flash.gguf ] || $FS synth --preset flash --layers $LAYERS --recipe q2 --seed 1 -o $W/flash.gguf > $O/synth.log 2>&1
python3 -c "
import json, random; random.seed(4)
json.dump({'tokens': [random.randrange(129280) for _ in range($((NPRE+NDEC)))]}, open('$W/tok.json', 'w'))
json.dump({'tokens': [random.randrange(129280) for _ in range(${NDRIFT:-512})]}, open('$W/tok-drift.json', 'w'))"
for mode in ${MODES:-quality fast}; do
  extra=(); [ $mode = quality ] && extra=(--quality)
  FLASHSTAR_PROFILE=1 timeout ${TMO:-300} $FS logits -m $W/flash.gguf --tokens $W/tok.json -o $W/l-$mode.f32 --last-only \
    --decode-from $NPRE --backend cuda "${extra[@]}" > $O/prof-$mode.log 2>&1
  echo "== $mode rc=$?"; grep -E "logits:|^  " $O/prof-$mode.log | head -30
done
if [ "${DRIFT:-1}" = 1 ]; then
  for num in official clean; do
    $FS logits -m $W/flash.gguf --tokens $W/tok-drift.json -o $W/d-q-$num.f32 --backend cuda --quality --numerics $num > /dev/null 2>&1
    $FS logits -m $W/flash.gguf --tokens $W/tok-drift.json -o $W/d-f-$num.f32 --backend cuda --numerics $num > /dev/null 2>&1
    $FS logits -m $W/flash.gguf --tokens $W/tok-drift.json -o $W/d-f2-$num.f32 --backend cuda --numerics $num --chunk 100 > /dev/null 2>&1
    if [ "${FLOOR:-1}" = 1 ]; then
      $FS logits -m $W/flash.gguf --tokens $W/tok-drift.json -o $W/d-cpu-$num.f32 --backend cpu --numerics $num > /dev/null 2>&1
      echo "$num FLOOR quality vs cpu: $(python3 scripts/drift.py $W/d-cpu-$num.f32 $W/d-q-$num.f32 --vocab 129280 | cut -c1-200)"
      echo "$num fast vs cpu: $(python3 scripts/drift.py $W/d-cpu-$num.f32 $W/d-f-$num.f32 --vocab 129280 | cut -c1-200)"
    fi
    echo "$num fast vs quality: $(python3 scripts/drift.py $W/d-q-$num.f32 $W/d-f-$num.f32 --vocab 129280 | cut -c1-200)"
    cmp -s $W/d-f-$num.f32 $W/d-f2-$num.f32 && echo "$num fast chunk100 == whole bitwise" || echo "$num fast chunk100 != whole: $(python3 scripts/drift.py $W/d-f-$num.f32 $W/d-f2-$num.f32 --vocab 129280 | cut -c1-200)"
  done
fi
