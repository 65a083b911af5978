#!/usr/bin/env bash
# The README's main job: make a small synthetic DeepSeek V4 model, show what is in it, and run the
# reference engine over a prompt of token ids.
set -euo pipefail
BUILD=${1:-build}
FS=$BUILD/flashstar
MODEL=${FLASHSTAR_DEMO_MODEL:-$BUILD/demo-tiny.gguf}

if [ ! -f "$MODEL" ]; then
  echo "== making a tiny synthetic model: $MODEL"
  "$FS" synth --preset tiny --seed 1 -o "$MODEL"
fi
echo "== flashstar inspect $MODEL"
"$FS" inspect "$MODEL" | head -n 40
echo "== next-token logits over 256 token ids (CPU reference engine)"
python3 - "$BUILD/demo-tokens.json" <<'PY'
import json, random, sys
random.seed(1)
json.dump({"tokens": [0] + [random.randrange(2, 1024) for _ in range(255)]}, open(sys.argv[1], "w"))
PY
"$FS" logits -m "$MODEL" --tokens "$BUILD/demo-tokens.json" -o "$BUILD/demo-logits.f32"
python3 - "$BUILD/demo-logits.f32" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
V = 1024
row = struct.unpack(f"<{V}f", data[-4 * V:])
top = sorted(range(V), key=lambda i: -row[i])[:5]
print("top-5 next tokens after the last position:", ", ".join(f"{i} ({row[i]:.3f})" for i in top))
PY
