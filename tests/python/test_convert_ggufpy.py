#!/usr/bin/env python3
"""Cross-check `flashstar convert` and `flashstar synth` with code nobody here wrote.

convert: the tiny-a checkpoint is read with a few lines of numpy (safetensors' documented layout) and
every GGUF tensor, read back with gguf-py, must equal it: exactly for f32; for q8_0, byte for byte
what gguf-py's own Q8_0 quantizer makes of the same values.
synth: the tiny preset must open in gguf-py, every tensor must dequantize (gguf-py's numpy code) to
finite values, and tid2eid rows must hold distinct expert ids.
Skips (exit 0) when gguf-py or the fixture is missing.
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as Q
except ImportError:
    print("SKIP: gguf-py not installed")
    sys.exit(0)


def load_safetensors(d):
    """name -> numpy array (bf16 widened to f32), straight from the shards."""
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for fn in files:
        raw = open(os.path.join(d, fn), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        base = 8 + n
        for name, e in header.items():
            if name == "__metadata__":
                continue
            b, en = e["data_offsets"]
            buf = raw[base + b: base + en]
            dt = e["dtype"]
            if dt == "BF16":
                a = (np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(buf, dtype={"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}[dt])
            out[name] = a.reshape(e["shape"])
    return out


GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "head.weight": "output.weight",
          "model.norm.weight": "output_norm.weight", "model.hc_head.hc_fn": "output_hc_fn.weight",
          "model.hc_head.hc_base": "output_hc_base.weight", "model.hc_head.hc_scale": "output_hc_scale.weight"}
LAYER = {"hc_attn_fn": "hc_attn_fn.weight", "hc_attn_base": "hc_attn_base.weight", "hc_attn_scale": "hc_attn_scale.weight",
         "hc_ffn_fn": "hc_ffn_fn.weight", "hc_ffn_base": "hc_ffn_base.weight", "hc_ffn_scale": "hc_ffn_scale.weight",
         "attn_norm.weight": "attn_norm.weight", "ffn_norm.weight": "ffn_norm.weight",
         "attn.wq_a.weight": "attn_q_a.weight", "attn.q_norm.weight": "attn_q_a_norm.weight",
         "attn.wq_b.weight": "attn_q_b.weight", "attn.wkv.weight": "attn_kv.weight",
         "attn.norm.weight": "attn_kv_a_norm.weight", "attn.attn_sink": "attn_sinks.weight",
         "attn.wo_a.weight": "attn_output_a.weight", "attn.wo_b.weight": "attn_output_b.weight",
         "attn.compressor.ape": "attn_compressor_ape.weight", "attn.compressor.wkv.weight": "attn_compressor_kv.weight",
         "attn.compressor.wgate.weight": "attn_compressor_gate.weight",
         "attn.compressor.norm.weight": "attn_compressor_norm.weight",
         "attn.indexer.wq_b.weight": "indexer.attn_q_b.weight", "attn.indexer.weights_proj.weight": "indexer.proj.weight",
         "attn.indexer.compressor.ape": "indexer_compressor_ape.weight",
         "attn.indexer.compressor.wkv.weight": "indexer_compressor_kv.weight",
         "attn.indexer.compressor.wgate.weight": "indexer_compressor_gate.weight",
         "attn.indexer.compressor.norm.weight": "indexer_compressor_norm.weight",
         "ffn.gate.weight": "ffn_gate_inp.weight", "ffn.gate.bias": "exp_probs_b.bias",
         "ffn.gate.tid2eid": "ffn_gate_tid2eid.weight", "ffn.shared_experts.w1.weight": "ffn_gate_shexp.weight",
         "ffn.shared_experts.w3.weight": "ffn_up_shexp.weight", "ffn.shared_experts.w2.weight": "ffn_down_shexp.weight"}
EXPERT = {"w1": "ffn_gate_exps.weight", "w3": "ffn_up_exps.weight", "w2": "ffn_down_exps.weight"}


def expected_tensors(src):
    """GGUF name -> array in PyTorch order (experts stacked on a new leading axis)."""
    out, experts = {}, {}
    for name, a in src.items():
        if name in GLOBAL:
            out[GLOBAL[name]] = a
            continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.ffn\.experts\.(\d+)\.(w[123])\.weight", name)
        if m:
            experts.setdefault(f"blk.{m[1]}.{EXPERT[m[3]]}", {})[int(m[2])] = a
            continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
        assert m and m[2] in LAYER, name
        out[f"blk.{m[1]}.{LAYER[m[2]]}"] = a
    for name, by_e in experts.items():
        out[name] = np.stack([by_e[e] for e in range(len(by_e))])
    return out


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("FAILED:", " ".join(cmd), r.stdout, r.stderr, file=sys.stderr)
    return r.returncode == 0


def check_convert(args, fx):
    failures = 0
    want = expected_tensors(load_safetensors(fx))
    for outtype in ("f32", "q8_0"):
        path = os.path.join(args.workdir, f"tiny-a-{outtype}.gguf")
        if not run([args.flashstar, "convert", fx, "-o", path, "--outtype", outtype]):
            return 1
        r = gguf.GGUFReader(path)
        got = {t.name: t for t in r.tensors}
        if set(got) != set(want):
            print(f"[{outtype}] tensor sets differ: missing {set(want) - set(got)}, extra {set(got) - set(want)}")
            failures += 1
        bad = []
        for name, a in want.items():
            t = got.get(name)
            if t is None:
                continue
            if list(t.shape) != list(reversed(a.shape)) and not (a.ndim == 1 and list(t.shape) == [a.shape[0]]):
                bad.append(f"{name}: shape {list(t.shape)} vs {list(a.shape)}")
                continue
            if t.tensor_type == Q.I32:
                ok = np.array_equal(np.asarray(t.data).reshape(a.shape), a.astype(np.int32))
            elif t.tensor_type == Q.F32:
                ok = np.array_equal(np.asarray(t.data, dtype=np.float32).reshape(a.shape), a.astype(np.float32))
            elif t.tensor_type == Q.Q8_0:
                ref = gguf.quants.quantize(a.astype(np.float32), Q.Q8_0)
                ok = np.asarray(t.data).tobytes() == ref.tobytes()
            else:
                ok = False
            if not ok:
                bad.append(f"{name} ({t.tensor_type.name}) differs")
        if bad:
            print(f"[{outtype}] {len(bad)} mismatches, e.g. {bad[:3]}")
            failures += 1
        else:
            print(f"[{outtype}] {len(want)} tensors match")
    return failures


def check_synth(args):
    path = os.path.join(args.workdir, "synth-tiny.gguf")
    if not run([args.flashstar, "synth", "--preset", "tiny", "--seed", "5", "-o", path]):
        return 1
    r = gguf.GGUFReader(path)
    failures = 0
    for t in r.tensors:
        if t.tensor_type == Q.I32:
            ids = np.asarray(t.data).reshape(-1, 6)
            if not all(len(set(row)) == 6 for row in ids.tolist()) or ids.min() < 0 or ids.max() >= 8:
                print(f"synth: {t.name} rows are not 6 distinct ids in [0, 8)")
                failures += 1
            continue
        v = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        if not np.all(np.isfinite(v)):
            print(f"synth: {t.name} ({t.tensor_type.name}) holds non-finite values")
            failures += 1
    arch = r.fields["general.architecture"]
    if bytes(arch.parts[arch.data[0]]).decode() != "deepseek4":
        failures += 1
    print(f"synth: {len(r.tensors)} tensors read back by gguf-py, {failures} problems")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashstar", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--workdir", required=True)
    args, _ = ap.parse_known_args()
    os.makedirs(args.workdir, exist_ok=True)
    failures = check_synth(args)
    fx = os.path.join(args.shared, "fixtures", "tiny-a")
    if os.path.exists(os.path.join(fx, "config.json")):
        failures += check_convert(args, fx)
    else:
        print("SKIP convert: no fixture at", fx)
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
