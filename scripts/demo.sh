#!/usr/bin/env bash
# The README's main job: make a small synthetic DeepSeek V4 model (random weights, a real byte-level BPE
# tokenizer), show what is in it, and generate text with `flashstar run` (GPU when present, else CPU).
set -euo pipefail
BUILD=${1:-build}
FS=$BUILD/flashstar
MODEL=${FLASHSTAR_DEMO_MODEL:-$BUILD/demo-tiny.gguf}

if [ ! -f "$MODEL" ]; then
  echo "== making a tiny synthetic model: $MODEL"
  "$FS" synth --preset tiny --seed 1 -o "$MODEL"
fi
echo "== flashstar inspect $MODEL (first lines)"
"$FS" inspect "$MODEL" | head -n 12
echo
echo "== flashstar run -m $MODEL -p 'Write a haiku about fast GPUs.' -n 48 --nothink"
echo "   (random weights: the words are noise; the pipeline is the real one)"
"$FS" run -m "$MODEL" -p "Write a haiku about fast GPUs." -n 48 --nothink --temp 0.8 --seed 1
echo
echo "== the real model: scripts/download-model.sh q2   (or q4, q2-imatrix, q4-imatrix; resumable)"
echo "   then: $FS run -m <the downloaded .gguf> -p 'Hello'"
