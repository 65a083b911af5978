#!/usr/bin/env bash
# Nsight Compute sections (speed of light, memory, occupancy, warp stalls) of the decode matrix kernels:
# the first routed-expert gate/up/down, q_b (third Q8_0 launch) and the first float matrix-vector (HC mixer),
# on a 4-layer full-dimension q2 model, one token at a time. Text reports under $OUT.
set -u
OUT=${OUT:-.}
. "$(dirname "$0")/gpu-env.sh"  # .gpulib/ and cuBLASLt on LD_LIBRARY_PATH
W=/dev/shm/pf; mkdir -p $W
FS=.gpubin/flashstar
$FS synth --preset flash --layers 4 --recipe q2 --seed 3 -o $W/f.gguf >/dev/null 2>&1
python3 -c "
import json, random; random.seed(4)
json.dump({'tokens': [random.randrange(129280) for _ in range(10)]}, open('$W/t.json','w'))"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis"
$NCU $S -k regex:expert_mma -c 3 $FS logits -m $W/f.gguf --tokens $W/t.json -o $W/l.f32 --last-only --backend cuda --decode-from 1 > $OUT/ncu-expert.txt 2>&1
$NCU $S -k regex:q8_mma_stream --launch-skip 2 -c 1 $FS logits -m $W/f.gguf --tokens $W/t.json -o $W/l.f32 --last-only --backend cuda --decode-from 1 > $OUT/ncu-q8.txt 2>&1
$NCU $S -k regex:mv_float -c 1 $FS logits -m $W/f.gguf --tokens $W/t.json -o $W/l.f32 --last-only --backend cuda --decode-from 1 > $OUT/ncu-mvf.txt 2>&1
