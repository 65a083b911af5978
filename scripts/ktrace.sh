#!/usr/bin/env bash
# In-situ kernel timeline of decode (and prefill) on the GPU machine: FLASHSTAR_KTRACE (CUPTI's activity
# records: every kernel's start and end inside the CUDA graph, with PDL and the side stream as they run; no
# serialisation, no cache flush, unlike ncu). `flashstar logits` prefills P random tokens, then decodes D steps
# one token at a time, on a synthetic q2 model of LAYERS layers (43: /dev/shm/flash43.gguf); the summary of
# scripts/ktrace_summary.py goes to $OUT/decode.txt and $OUT/prefill.txt, the raw CSV to $OUT/ktrace.csv.gz.
# The binary loads libcupti at run time: put libcupti.so.13 (from the toolkit's lib64, 4 MB) into .gpulib/ when
# the machine has none. Other FLASHSTAR_* switches pass through the environment.
#   LAYERS=43 P=8192 D=32 BIN=.gx bash scripts/ktrace.sh
set -uo pipefail
BIN=${BIN:-.gpubin}
FS=$PWD/$BIN/flashstar
O=${OUT:-/dev/shm/fs-ktrace}
W=${WORK:-/dev/shm/fs-ktrace-work}
L=${LAYERS:-4}
P=${P:-8192}
D=${D:-32}
mkdir -p "$O" "$W"
. "$(dirname "$0")/gpu-env.sh"  # .gpulib/ and cuBLASLt on LD_LIBRARY_PATH
if ! ldconfig -p 2>/dev/null | grep -q 'libcupti\.so\.13 ' && [ ! -e .gpulib/libcupti.so.13 ]; then
  wheels=$(for py in python3 /opt/torch/.venv/bin/python3; do "$py" -c '
import glob, os, nvidia  # a CUPTI wheel (nvidia-cuda-cupti, as torch installs it) in a Python environment
hits = [h for r in nvidia.__path__ for h in glob.glob(r + "/**/libcupti.so.13", recursive=True)]
print(" ".join(sorted({os.path.dirname(h) for h in hits})))
' 2>/dev/null; done)
  for d in ${CUDA_HOME:-/usr/local/cuda}/extras/CUPTI/lib64 ${CUDA_HOME:-/usr/local/cuda}/lib64 $wheels; do
    [ -e "$d/libcupti.so.13" ] && export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH" && break
  done
fi
if [ "$L" = 43 ]; then
  M=/dev/shm/flash43.gguf
else
  M=$W/m$L.gguf
fi
[ -f "$M" ] || $FS synth --preset flash --layers "$L" --recipe q2 --seed 1 -o "$M" > /dev/null 2>&1
python3 -c "
import json, random; random.seed(7)
json.dump({'tokens': [random.randrange(129280) for _ in range($P + $D)]}, open('$W/t.json', 'w'))"
rm -f "$O/ktrace.csv"
FLASHSTAR_KTRACE=$O/ktrace.csv $FS logits -m "$M" --tokens "$W/t.json" -o "$W/l.f32" --last-only --decode-from "$P" \
  --backend cuda > "$O/logits.log" 2>&1
echo "logits rc=$?: $(grep -E 'kernel trace|KTRACE|^logits:' "$O/logits.log" | tr '\n' ' ')"
[ -s "$O/ktrace.csv" ] || { tail -5 "$O/logits.log"; exit 1; }
S="$(dirname "$0")/ktrace_summary.py"
python3 "$S" "$O/ktrace.csv" --list "${LIST:-120}" --layers "$L" > "$O/decode.txt" 2>&1
python3 "$S" "$O/ktrace.csv" --prefill --step-marker embed_kernel --list "${LIST:-120}" --layers "$L" \
  > "$O/prefill.txt" 2>&1
python3 "$S" "$O/ktrace.csv" --full --top 80 > "$O/decode-full.txt" 2>&1
gzip -f "$O/ktrace.csv"
head -60 "$O/decode.txt"
echo "prefill: $(sed -n 2,3p "$O/prefill.txt" | tr '\n' ' ')"
