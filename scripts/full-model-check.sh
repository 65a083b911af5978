#!/usr/bin/env bash
# The whole 43-layer q2 synthetic model on one GPU (H200 class: it does not fit an H100): write it into
# /dev/shm, check its size against spec/model.md §2.7, then prefill 8k tokens and decode 64 at context
# 32768 with the memory plan printed and the GPU's memory use sampled. Also a 4-layer file through
# inspect and logits, and the refusal an 80 GB card (H100) must give (FLASHSTAR_GPU_MEMORY caps what the
# planner sees). Run from the repository root on the GPU machine; prints a short table last.
set -uo pipefail
FS=${FS:-.gpubin/flashstar}
W=${WORK:-/dev/shm/fs-full}
LOG=${OUT:-$W}/full-model-check.log
. "$(dirname "$0")/gpu-env.sh"  # .gpulib/ and cuBLASLt on LD_LIBRARY_PATH
mkdir -p "$W" "$(dirname "$LOG")"
: > "$LOG"
rows=()
row() { rows+=("$(printf '%-40s %s' "$1" "$2")"); }
run() { echo "+ $*" >> "$LOG"; "$@" >> "$LOG" 2>&1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$LOG"

python3 -c "
import json, random; random.seed(8)
json.dump({'tokens': [random.randrange(129280) for _ in range(8256)]}, open('$W/t8256.json', 'w'))
json.dump({'tokens': [random.randrange(129280) for _ in range(16)]}, open('$W/t16.json', 'w'))"

# 4 layers: inspect + logits on both backends
s=$(date +%s); run "$FS" synth --preset flash --layers 4 --recipe q2 --seed 2 -o "$W/f4.gguf"
row "synth flash 4L q2" "$(( $(date +%s) - s )) s, $(stat -c %s "$W/f4.gguf") B"
run "$FS" inspect "$W/f4.gguf" && row "inspect 4L" "exit 0" || row "inspect 4L" "FAILED"
run "$FS" logits -m "$W/f4.gguf" --tokens "$W/t16.json" -o "$W/f4-cuda.f32" --backend cuda && row "logits 4L cuda (16 tok)" "exit 0" || row "logits 4L cuda" "FAILED"
run "$FS" logits -m "$W/f4.gguf" --tokens "$W/t16.json" -o "$W/f4-cpu.f32" --backend cpu && row "logits 4L cpu (16 tok)" "exit 0" || row "logits 4L cpu" "FAILED"
row "4L cuda vs cpu" "$(python3 scripts/drift.py "$W/f4-cpu.f32" "$W/f4-cuda.f32" --vocab 129280 | cut -c1-120)"
rm -f "$W/f4.gguf"

# 43 layers
run "$FS" synth --preset flash --recipe q2 --dry-run -o "$W/f43.gguf"
row "planned (dry run)" "$(grep -i -m1 'tensor data\|bytes' "$LOG" | tail -1 | cut -c1-100)"
s=$(date +%s); run "$FS" synth --preset flash --recipe q2 --seed 1 -o "$W/f43.gguf"
row "synth flash 43L q2" "$(( $(date +%s) - s )) s, $(stat -c %s "$W/f43.gguf") B"
row "tensor data (spec: 86714777664)" "$(python3 -c "
import gguf; r = gguf.GGUFReader('$W/f43.gguf'); print(sum(int(t.n_bytes) for t in r.tensors), 'in', len(r.tensors), 'tensors')" 2>&1 | tail -1)"
( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$W/mem.txt"; sleep 1; done ) &
mon=$!
s=$(date +%s); run "$FS" logits -m "$W/f43.gguf" --tokens "$W/t8256.json" -o "$W/f43.f32" --backend cuda --ctx 32768 \
  --decode-from 8192 --last-only -v
rc=$?
kill $mon 2>/dev/null
row "43L cuda: prefill 8192 + decode 64" "rc $rc, $(( $(date +%s) - s )) s"
row "memory plan" "$(grep -m1 'GPU memory plan' "$LOG" | cut -c1-160)"
row "speeds" "$(grep '^logits:' "$LOG" | tail -1 | cut -c1-160)"
row "peak GPU memory used" "$(sort -n "$W/mem.txt" | tail -1) MiB"
# The same file on an H100 80GB (81559 MiB): the planner must refuse it in one line, before uploading.
FLASHSTAR_GPU_MEMORY=${SMALL_CARD:-81559MiB} "$FS" logits -m "$W/f43.gguf" --tokens "$W/t16.json" -o "$W/x.f32" \
  --backend cuda --ctx 32768 > "$W/small.txt" 2>&1
rc=$?; cat "$W/small.txt" >> "$LOG"
if [ $rc -ne 0 ] && [ "$(wc -l < "$W/small.txt")" -eq 1 ] && grep -q "does not fit" "$W/small.txt"; then
  row "as an 80 GB card (${SMALL_CARD:-81559MiB})" "refused, rc $rc: $(cut -c1-110 "$W/small.txt")"
else row "as an 80 GB card (${SMALL_CARD:-81559MiB})" "NOT REFUSED CLEANLY (rc $rc)"; fi
echo
echo "== full-model check (log: $LOG)"
printf '%s\n' "${rows[@]}"
