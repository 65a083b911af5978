#!/usr/bin/env python3
"""Cross-check `flashstar inspect` against files written by gguf-py (PyPI `gguf`), an independent writer.

Writes GGUFs holding metadata of every value type (nested arrays, arrays of strings) and tensors of every
type the engine supports, then checks that `flashstar inspect FILE --tensors --json` reports every key's
type/value and every tensor's name, type and shape, and that the plain text form also exits 0.
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np

try:
    import gguf
except ImportError:
    print("gguf-py is not installed; skipping")
    sys.exit(0)

T = gguf.GGMLQuantizationType
V = gguf.GGUFValueType

# (name, type, numpy shape) -- numpy order is the reverse of GGML order.
TENSORS = [
    ("token_embd.weight", T.F16, (3, 64)),
    ("blk.0.attn_norm.weight", T.F32, (7,)),
    ("blk.0.attn_q_a.weight", T.BF16, (2, 2, 3)),
    ("blk.0.attn_q_b.weight", T.Q8_0, (3, 64)),
    ("blk.0.ffn_down_exps.weight", T.Q2_K, (2, 1, 256)),
    ("blk.0.ffn_up_exps.weight", T.Q4_K, (2, 512)),
    ("blk.0.ffn_gate_exps.weight", T.IQ2_XXS, (4, 256)),
    ("blk.0.ffn_gate_tid2eid", T.I32, (5, 6)),
]

META = [  # key, value type, value, array item type
    ("t.u8", V.UINT8, 255, None),
    ("t.i8", V.INT8, -128, None),
    ("t.u16", V.UINT16, 65535, None),
    ("t.i16", V.INT16, -32768, None),
    ("t.u32", V.UINT32, 4294967295, None),
    ("t.i32", V.INT32, -2147483648, None),
    ("t.f32", V.FLOAT32, 1.5e-6, None),
    ("t.u64", V.UINT64, 2**64 - 1, None),
    ("t.i64", V.INT64, -(2**63), None),
    ("t.f64", V.FLOAT64, math.pi, None),
    ("t.bool", V.BOOL, True, None),
    ("t.str", V.STRING, "h\u00e9llo \u2581world", None),
    ("tokenizer.ggml.tokens", V.ARRAY, ["<s>", "</s>", "\u2581the", "x" * 200] + [f"tok{i}" for i in range(100)],
     V.STRING),
    ("t.arr_u32", V.ARRAY, [0, 0, 4, 128], V.UINT32),
    ("t.arr_i32", V.ARRAY, [-1, 2, 3], V.INT32),
    ("t.arr_f32", V.ARRAY, [10.0, -0.5], V.FLOAT32),
    ("t.arr_f64", V.ARRAY, [1e300, 2.5], V.FLOAT64),
    ("t.arr_u8", V.ARRAY, [1, 2, 255], V.UINT8),
    ("t.arr_i64", V.ARRAY, [-(2**40)], V.INT64),
    ("t.arr_bool", V.ARRAY, [True, False], V.BOOL),
    ("t.nested", V.ARRAY, [[1, 2], [3]], None),
]

TYPE_NAMES = {V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32", V.INT32: "i32",
              V.FLOAT32: "f32", V.BOOL: "bool", V.STRING: "string", V.ARRAY: "array", V.UINT64: "u64",
              V.INT64: "i64", V.FLOAT64: "f64"}


def make_tensor(rng, qtype, shape):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        return rng.standard_normal(shape).astype(np.float32), None
    if qtype == T.F16:
        return rng.standard_normal(shape).astype(np.float16), None
    if qtype == T.I32:
        return rng.integers(-1000, 1000, size=shape, dtype=np.int32), None
    # Raw blocks: a uint8 array whose last dimension is the row's byte count.
    assert shape[-1] % block == 0
    byte_shape = (*shape[:-1], shape[-1] // block * size)
    return rng.integers(0, 256, size=byte_shape, dtype=np.uint8), qtype


def write_file(path, alignment=None):
    rng = np.random.default_rng(1234)
    w = gguf.GGUFWriter(path, "deepseek4")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, vtype, value, sub in META:
        w.add_key_value(key, value, vtype, sub_type=sub)
    for name, qtype, shape in TENSORS:
        arr, raw = make_tensor(rng, qtype, shape)
        w.add_tensor(name, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run(flashstar, *args):
    return subprocess.run([flashstar, "inspect", *args], capture_output=True, text=True)


def check_value(key, vtype, value, sub, got, errors):
    if got["type"] != TYPE_NAMES[vtype]:
        errors.append(f"{key}: type {got['type']} != {TYPE_NAMES[vtype]}")
        return
    if vtype == V.ARRAY:
        if got["count"] != len(value):
            errors.append(f"{key}: count {got['count']} != {len(value)}")
        if sub is not None and got["item_type"] != TYPE_NAMES[sub]:
            errors.append(f"{key}: item_type {got['item_type']} != {TYPE_NAMES[sub]}")
        items = got["items"]
        expect = value[:len(items)]
        if sub is None:  # nested lists of ints (gguf-py picks i32)
            expect = [{"item_type": "i32", "count": len(v), "items": v, "truncated": False} for v in expect]
        if items != expect and not all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(items, expect)
                                       if isinstance(a, float)):
            errors.append(f"{key}: items {items[:5]} != {expect[:5]}")
        if got["truncated"] != (len(items) < len(value)):
            errors.append(f"{key}: truncated flag wrong")
        return
    v = got["value"]
    ok = math.isclose(v, value, rel_tol=1e-6) if vtype in (V.FLOAT32, V.FLOAT64) else v == value
    if not ok:
        errors.append(f"{key}: value {v!r} != {value!r}")


def check(flashstar, path, alignment):
    errors = []
    r = run(flashstar, path, "--tensors", "--json")
    if r.returncode != 0:
        return [f"inspect --json exited {r.returncode}: {r.stderr.strip()}"]
    doc = json.loads(r.stdout)
    if doc["version"] != 3:
        errors.append(f"version {doc['version']}")
    if doc["alignment"] != alignment:
        errors.append(f"alignment {doc['alignment']} != {alignment}")
    if doc["file_size"] != os.path.getsize(path):
        errors.append("file_size mismatch")
    meta = doc["metadata"]
    if meta.get("general.architecture", {}).get("value") != "deepseek4":
        errors.append("general.architecture missing")
    for key, vtype, value, sub in META:
        if key not in meta:
            errors.append(f"metadata {key} missing")
        else:
            check_value(key, vtype, value, sub, meta[key], errors)

    tensors = doc.get("tensors", [])
    if len(tensors) != len(TENSORS) or doc["tensor_count"] != len(TENSORS):
        errors.append(f"{len(tensors)} tensors listed, expected {len(TENSORS)}")
    # Independent reader: gguf-py's own GGUFReader gives offsets to compare with.
    reader = gguf.GGUFReader(path)
    offsets = {t.name: int(t.data_offset) for t in reader.tensors}
    for (name, qtype, shape), t in zip(TENSORS, tensors):
        if t["name"] != name:
            errors.append(f"tensor name {t['name']} != {name}")
        if t["type"].lower() != qtype.name.lower() or t["type_id"] != int(qtype):
            errors.append(f"{name}: type {t['type']}/{t['type_id']} != {qtype.name}/{int(qtype)}")
        if t["shape"] != list(reversed(shape)):
            errors.append(f"{name}: shape {t['shape']} != {list(reversed(shape))}")
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        if t["bytes"] != math.prod(shape) // block * size:
            errors.append(f"{name}: bytes {t['bytes']}")
        if offsets.get(name) != t["offset"]:
            errors.append(f"{name}: offset {t['offset']} != gguf-py's {offsets.get(name)}")

    r = run(flashstar, path)
    if r.returncode != 0:
        errors.append(f"inspect (text) exited {r.returncode}: {r.stderr.strip()}")
    elif "tokenizer.ggml.tokens" not in r.stdout or "[array of string, 104 items:" not in r.stdout:
        errors.append("text output lacks the tokens summary")
    r = run(flashstar, path, "--tensors")
    if r.returncode != 0 or "blk.0.ffn_gate_exps.weight" not in r.stdout:
        errors.append(f"inspect --tensors failed: {r.returncode}")
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashstar", required=True)
    ap.add_argument("--workdir", default=".")
    args, _ = ap.parse_known_args()
    os.makedirs(args.workdir, exist_ok=True)
    failures = []
    for alignment in (None, 64):
        path = os.path.join(args.workdir, f"ggufpy_{alignment or 32}.gguf")
        write_file(path, alignment)
        for e in check(args.flashstar, path, alignment or 32):
            failures.append(f"{os.path.basename(path)}: {e}")
    for f in failures:
        print("FAIL", f)
    if failures:
        return 1
    print("ok: flashstar inspect agrees with gguf-py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
