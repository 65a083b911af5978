#!/usr/bin/env bash
# Per-SASS-line profile of one decode kernel launch (Nsight Compute source page, cold L2) on a 4-layer
# full-dimension synthetic q2 model, summarised by scripts/ncu_source_summary.py. KERNEL: a regex of the
# kernel name; SKIP: launches of it to skip (decode starts after a 1 024-token prefill; the prefill's head
# may be one q8_mma_stream launch). Also the full section set of that launch (SOL, occupancy, warp
# states). Outputs under $OUT.
# P: prefill tokens before the decode (default 1 024; 8 192 puts the indexer on the ratio-4 layer), then 6 decoded.
#   KERNEL=q8_mma_stream SKIP=5 BIN=.gx bash scripts/ncu-source.sh
set -uo pipefail
BIN=${BIN:-.gpubin}
FS=$PWD/$BIN/flashstar
O=${OUT:-/dev/shm/fs-ncu}
W=${WORK:-/dev/shm/fs-ncu-work}
mkdir -p "$O" "$W"
. "$(dirname "$0")/gpu-env.sh"  # .gpulib/ and cuBLASLt on LD_LIBRARY_PATH
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
M=${MODEL:-$W/m4.gguf}
[ -f "$M" ] || $FS synth --preset flash --layers 4 --recipe q2 --seed 1 -o "$M" > /dev/null 2>&1
python3 -c "
import json, random; random.seed(7)
json.dump({'tokens': [random.randrange(129280) for _ in range(${P:-1024} + 6)]}, open('$W/t.json', 'w'))"
tag=${TAG:-$(echo "$KERNEL" | tr -c 'a-zA-Z0-9_' '_')-$SKIP}
for page in source details; do
  extra=(--page "$page"); [ $page = source ] && extra+=(--print-source sass --section SourceCounters --section WarpStateStats)
  [ $page = details ] && extra+=(--set full)
  timeout 120 "$NCU" --cache-control all --clock-control none -k "regex:$KERNEL" --launch-skip "$SKIP" --launch-count 1 \
    --csv --print-units base "${extra[@]}" --log-file "$O/$tag-$page.csv" \
    "$FS" logits -m "$M" --tokens "$W/t.json" -o "$W/l.f32" --last-only --decode-from ${P:-1024} --backend cuda \
    > "$O/$tag-$page.log" 2>&1 || echo "ncu $page failed (see $O/$tag-$page.log)"
done
python3 "$(dirname "$0")/ncu_source_summary.py" "$O/$tag-source.csv" | tee "$O/$tag-summary.txt"
grep -E '"(Duration|DRAM Throughput|SM Active Cycles|Elapsed Cycles|Issued Instructions|Warp Cycles Per Issued Instruction|Registers Per Thread|Achieved Occupancy)"' \
  "$O/$tag-details.csv" | awk -F'","' '{print $13 " = " $15}' | tee -a "$O/$tag-summary.txt"
gzip -f "$O/$tag-source.csv"
