#!/usr/bin/env bash
# The drift gate of the fast GPU routes (issue 6), three levels, on the GPU machine:
#  1. kernel level: every fast kernel vs its reference kernel, or vs the kernel whose bits it must equal
#     (flashstar_cuda_tests FastKernels.*, FastSmallOps.*, ExpertMma.*, Q8Matvec.*, the GEMM suites, the expert decode
#     versions, the prefill small ops, the decode attention V2);
#  2. tiny-a fixture with every route on, against the transformers logits;
#  3. full-dimension synthetic q2 model (LAYERS layers): the floor (GPU reference vs CPU engine), then
#     all routes on (prefill, and decoding the last 64 positions) and each route alone vs the GPU
#     reference, at 512 tokens; at 64 / 2k / 8k (whole and
#     chunked) all routes against the floor of the same prompt (SIZE_FLOORS=0: the 512 floor; the CPU
#     takes about 4 minutes for 8k tokens of 4 layers on 16 cores); and the same on a well-conditioned
#     synthetic model (synth --well-conditioned; all routes, prefill and decode), whose gate is absolute.
# KINDS, ROUTES, SIZES and KERNELS pick a part (e.g. ROUTES=decode SIZES= KERNELS=0 for the decode kernels).
# Prints a table last; JSON of every comparison under $OUT.
set -uo pipefail
BIN=${BIN:-.gpubin}
FS=$BIN/flashstar
LAYERS=${LAYERS:-4}
W=${WORK:-/dev/shm/fs-gate}
O=${OUT:-$W}
mkdir -p "$W" "$O"
. "$(dirname "$0")/gpu-env.sh"  # .gpulib/ and cuBLASLt on LD_LIBRARY_PATH
rows=()
row() { rows+=("$(printf '%-46s %s' "$1" "$2")"); printf '%-46s %s\n' "$1" "$2" >> "$O/gate-rows.txt"; }
summ() {  # drift summary: mean rel_rms, mean rms, mean top20_max_abs, top5 5/5 frac, top1 frac, nonfinite
  python3 -c "
import json,sys; d=json.load(open('$1')); s=d['summary']
g=lambda k: s[k]['mean'] if isinstance(s[k], dict) else s[k]
print('rel_rms %.2e rms %.2e top20abs %.3f top5full %.3f top20full %.3f top1 %.3f nonfinite %d%s' % (g('rel_rms'), g('rms'), g('top20_max_abs'),
  s['top5_full_frac'], s['top20_full_frac'], s['same_top1_frac'], s['nonfinite'], '' if d.get('pass', True) else '  GATE FAIL: ' + '; '.join(x['name'] for x in d['gates'] if not x['ok'])))" 2>/dev/null || echo "(no summary: $1)"
}
tok() { python3 -c "
import json, random; random.seed($2)
json.dump({'tokens': [random.randrange(129280) for _ in range($1)]}, open('$3', 'w'))"; }

# 1. kernel level (KERNELS=0: already run by the caller)
if [ "${KERNELS:-1}" = 1 ]; then
  $BIN/flashstar_cuda_tests --gtest_filter='FastKernels.*:FastSmallOps.*:ExpertMma.*:Q8Matvec.*:Q8Decode.*:Q8Lean.*:HcPre*:GemmInt*:GemmGroupV2*:GemmDenseV2*:GemmDenseWgmma*:GemmGroupWgmma*:ExpertFused*:ExpertVersions*:PrefillSmall*:AttentionPrefill*:IndexerPrefill*:IndexerTopk*:AttentionDecodeV2*' > "$O/kernels.log" 2>&1
  row "1 kernel level (FastKernels, FastSmallOps, ExpertMma, Q8Matvec, GemmInt)" "$(grep -c '\[       OK \]' "$O/kernels.log") ok, $(grep -c '\[  FAILED  \]' "$O/kernels.log") failed"
  grep -E "^(gemm|grouped|attention|indexer|compressor)" "$O/kernels.log" > "$O/kernel-errors.txt"
fi

# 2. tiny-a, every route on, vs transformers
if [ -d .gpudata/tiny-a ]; then
  $FS convert .gpudata/tiny-a -o "$W/a.gguf" --outtype f32 > /dev/null 2>&1
  $FS logits -m "$W/a.gguf" --tokens .gpudata/tiny-a/tokens.json -o "$W/a-fast.f32" --numerics clean --backend cuda > /dev/null 2>&1
  $FS drift .gpudata/tiny-a/logits.f32 "$W/a-fast.f32" --vocab 1024 --json "$O/tinya.json" > /dev/null 2>&1
  r=$(python3 -c "
import json; d=json.load(open('$O/tinya.json')); p=d['per_position']
ok=sum(1 for x in p if x['max_abs']<=0.05)/len(p); t1=sum(1 for x in p if x['same_top1'])/len(p)
print('max_abs<=0.05 at %.2f%%, argmax %.2f%% (bounds 99%%, 99%%)' % (100*ok, 100*t1))" 2>/dev/null)
  row "2 tiny-a all routes vs transformers" "$r"
fi

# 3. full-dimension synthetic models
for kind in ${KINDS-plain conditioned}; do
  m="$W/$kind.gguf"; extra=(); [ $kind = conditioned ] && extra=(--well-conditioned)
  [ -f "$m" ] || $FS synth --preset flash --layers $LAYERS --recipe q2 --seed 1 "${extra[@]}" -o "$m" > /dev/null 2>&1
  [ $kind = plain ] && ln -sf "$m" "$(dirname "$W")/gate-model.gguf" 2>/dev/null
  tok 512 4 "$W/t512.json"
  $FS logits -m "$m" --tokens "$W/t512.json" -o "$W/$kind-q512.f32" --backend cuda --quality > /dev/null 2>&1
  $FS logits -m "$m" --tokens "$W/t512.json" -o "$W/$kind-cpu512.f32" --backend cpu > /dev/null 2>&1
  $FS drift "$W/$kind-cpu512.f32" "$W/$kind-q512.f32" --vocab 129280 --json "$O/$kind-floor.json" > /dev/null 2>&1
  row "3 $kind FLOOR: gpu reference vs cpu (512)" "$(summ "$O/$kind-floor.json")"
  gate=(--floor "$O/$kind-floor.json" --floor-factor 1.5 --max-nonfinite 0)
  [ $kind = conditioned ] && gate=(--max-rel-rms 0.02 --min-top5-full-frac 0.95 --max-nonfinite 0)
  for r in ${ROUTES-all decode dense_q8 out_a f16_proj moe attention fused_ops}; do
    # decode: every route on, the last 64 positions one token at a time (the decode kernels and graph)
    sel=(); [ $r = decode ] && sel=(--decode-from 448)
    [ $r != all ] && [ $r != decode ] && sel=(--quality --route $r=on)
    [ $kind = conditioned ] && [ $r != all ] && [ $r != decode ] && continue
    $FS logits -m "$m" --tokens "$W/t512.json" -o "$W/$kind-$r.f32" --backend cuda "${sel[@]}" > /dev/null 2>&1
    $FS drift "$W/$kind-q512.f32" "$W/$kind-$r.f32" --vocab 129280 --json "$O/$kind-$r.json" "${gate[@]}" > /dev/null 2>&1
    row "3 $kind $r vs reference (512)" "$(summ "$O/$kind-$r.json")"
  done
  for n in ${SIZES-64 2048 8192}; do
    [ $kind = conditioned ] && [ $n = 8192 ] && continue
    tok $n 7 "$W/t$n.json"
    $FS logits -m "$m" --tokens "$W/t$n.json" -o "$W/$kind-q$n.f32" --backend cuda --quality --chunk 4096 > /dev/null 2>&1
    gate_n=("${gate[@]}")
    if [ $kind = plain ] && [ "${SIZE_FLOORS:-1}" = 1 ]; then
      # the floor of this prompt length (more positions past the indexer's start move it: 8k ~ 5x 512)
      $FS logits -m "$m" --tokens "$W/t$n.json" -o "$W/$kind-c$n.f32" --backend cpu > /dev/null 2>&1
      $FS drift "$W/$kind-c$n.f32" "$W/$kind-q$n.f32" --vocab 129280 --json "$O/$kind-floor-$n.json" > /dev/null 2>&1
      row "3 $kind FLOOR: gpu reference vs cpu ($n)" "$(summ "$O/$kind-floor-$n.json")"
      gate_n=(--floor "$O/$kind-floor-$n.json" --floor-factor 1.5 --max-nonfinite 0)
    fi
    for ch in 4096 $(( n / 3 + 1 )); do  # whole (one chunk) and three chunks
      $FS logits -m "$m" --tokens "$W/t$n.json" -o "$W/$kind-f$n-$ch.f32" --backend cuda --chunk $ch > /dev/null 2>&1
      $FS drift "$W/$kind-q$n.f32" "$W/$kind-f$n-$ch.f32" --vocab 129280 --json "$O/$kind-all-$n-$ch.json" "${gate_n[@]}" > /dev/null 2>&1
      row "3 $kind all vs reference ($n, chunk $ch)" "$(summ "$O/$kind-all-$n-$ch.json")"
    done
    c3=$(( n / 3 + 1 ))
    cmp -s "$W/$kind-f$n-4096.f32" "$W/$kind-f$n-$c3.f32" && row "3 $kind fast chunk $c3 == whole ($n)" "bitwise" || row "3 $kind fast chunk $c3 == whole ($n)" "DIFFERS"
    rm -f "$W"/$kind-*$n*.f32 "$W"/$kind-c$n.f32
  done
done
printf '%s\n' "${rows[@]}" | tee "$O/gate-table.txt"
# one archive of the comparisons' JSON (the device tool brings back a few files only)
(cd "$O" && ls *.json > /dev/null 2>&1 && tar czf gate-json.tgz *.json && rm -f *.json)
