#!/usr/bin/env python3
"""Cross-check flashstar's dequantizers against gguf-py (PyPI `gguf`), an implementation nobody here wrote.

For every supported type, a tensor of fresh random blocks (random payload bytes, random finite f16
scales including negative, subnormal, zero and huge ones) is written with gguf.GGUFWriter, dumped with
`flashstar dump-tensor`, and compared bit for bit with gguf.quants.dequantize. NaN positions (possible
for F32/F16/BF16 payloads and inf*0 products) only have to be NaN on both sides.
Exit 0 = pass. The seed changes every run and is printed; --seed reproduces a run.
"""
import argparse
import os
import secrets
import subprocess
import sys

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as QT
    from gguf.quants import dequantize
except ImportError as e:  # the cross-check cannot run without its reference
    print(f"test_quant_ggufpy: gguf-py not importable ({e})", file=sys.stderr)
    sys.exit(1)

# type -> (block elements, block bytes, byte offsets of f16 scales inside a block)
TYPES = {
    QT.F32: (1, 4, []),
    QT.F16: (1, 2, []),
    QT.BF16: (1, 2, []),
    QT.Q8_0: (32, 34, [0]),
    QT.Q2_K: (256, 84, [80, 82]),
    QT.Q4_K: (256, 144, [0, 2]),
    QT.IQ2_XXS: (256, 66, [0]),
}


def random_f16_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite f16 bit patterns: mostly a realistic weight-scale range, plus the awkward corners."""
    kind = rng.integers(0, 10, size=n)
    realistic = np.float16(rng.normal(0.0, 1e-2, size=n)).view(np.uint16)
    sign = rng.integers(0, 2, size=n, dtype=np.uint16) << 15
    subnormal = sign | rng.integers(1, 0x400, size=n, dtype=np.uint16)
    large = sign | rng.integers(0x7000, 0x7C00, size=n, dtype=np.uint16)  # up to 65504
    anyfinite = sign | rng.integers(0, 0x7C00, size=n, dtype=np.uint16)
    zero = sign
    out = np.where(kind < 6, realistic, np.where(kind == 6, subnormal, np.where(kind == 7, large, np.where(kind == 8, anyfinite, zero))))
    return out.astype(np.uint16)


def random_tensor(rng: np.random.Generator, qt: QT, rows: int, blocks_per_row: int) -> np.ndarray:
    be, bb, scale_offsets = TYPES[qt]
    data = rng.integers(0, 256, size=(rows * blocks_per_row, bb), dtype=np.uint8)
    for off in scale_offsets:
        data[:, off:off + 2] = random_f16_scales(rng, rows * blocks_per_row).view(np.uint8).reshape(-1, 2)
    return data.reshape(rows, blocks_per_row * bb)


def same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32, copy=False).ravel()
    b = b.astype(np.float32, copy=False).ravel()
    eq = a.view(np.uint32) == b.view(np.uint32)
    return eq | (np.isnan(a) & np.isnan(b))


def run(cmd, expect_ok=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if expect_ok and p.returncode != 0:
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashstar", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seed", type=int, default=None)
    args, _ = ap.parse_known_args()
    os.makedirs(args.workdir, exist_ok=True)
    seed = args.seed if args.seed is not None else secrets.randbits(63)
    print(f"test_quant_ggufpy: seed {seed} (rerun with --seed {seed})")
    rng = np.random.default_rng(seed)

    path = os.path.join(args.workdir, "quant_cross.gguf")
    writer = gguf.GGUFWriter(path, arch="flashstar-quant-test")
    tensors = {}
    for qt, (be, bb, _) in TYPES.items():
        rows = int(rng.integers(3, 40))
        blocks = int(rng.integers(1, 6)) * {1: 16, 32: 4, 256: 1}[be]
        raw = random_tensor(rng, qt, rows, blocks)
        name = f"t.{qt.name.lower()}"
        writer.add_tensor(name, raw, raw_dtype=qt)
        tensors[name] = (qt, raw)
    # Large enough (> 64K elements) that flashstar splits the rows across threads.
    raw = random_tensor(rng, QT.Q4_K, 400, 1)
    writer.add_tensor("t.big_q4_k", raw, raw_dtype=QT.Q4_K)
    tensors["t.big_q4_k"] = (QT.Q4_K, raw)
    # 3-D: a row is ne0 elements and rows run over all the other dims.
    raw = random_tensor(rng, QT.Q8_0, 3 * 5, 2).reshape(3, 5, 2 * 34)
    writer.add_tensor("t.q8_0_3d", raw, raw_dtype=QT.Q8_0)
    tensors["t.q8_0_3d"] = (QT.Q8_0, raw)
    # A type flashstar does not implement, to check the error path.
    writer.add_tensor("t.q6_k", rng.integers(0, 256, size=(2, 210), dtype=np.uint8), raw_dtype=QT.Q6_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    failures = 0
    for name, (qt, raw) in tensors.items():
        ref = dequantize(raw, qt).astype(np.float32, copy=False)
        ref = ref.reshape(-1, ref.shape[-1])
        out = os.path.join(args.workdir, f"{name}.f32")
        run([args.flashstar, "dump-tensor", path, name, "-o", out])
        got = np.fromfile(out, dtype="<f4")
        if got.size != ref.size:
            print(f"FAIL {name}: {got.size} values, expected {ref.size}")
            failures += 1
            continue
        ok = same_bits(got, ref)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            print(f"FAIL {name}: {int((~ok).sum())} of {ref.size} values differ; first at {i}: "
                  f"got {got[i]!r} (0x{got.view(np.uint32)[i]:08x}) want {ref.ravel()[i]!r} "
                  f"(0x{ref.ravel().view(np.uint32)[i]:08x})")
            failures += 1
        else:
            print(f"ok {name}: {ref.size} values bit-identical ({ref.shape[0]} rows)")

        # A row range must be exactly the matching slice of the full dump.
        rows = ref.shape[0]
        a = int(rng.integers(0, rows))
        b = int(rng.integers(a, rows + 1))
        run([args.flashstar, "dump-tensor", path, name, "-o", out, "--rows", f"{a}:{b}"])
        part = np.fromfile(out, dtype="<f4")
        if not (part.size == (b - a) * ref.shape[1] and same_bits(part, ref[a:b]).all()):
            print(f"FAIL {name}: --rows {a}:{b} is not the matching slice")
            failures += 1

    # Error paths: one line on stderr, exit status 1, no output file left behind.
    for extra, what in ((["t.q6_k"], "unsupported type"), (["no.such.tensor"], "missing tensor"),
                        (["t.q8_0", "--rows", "5:1"], "bad row range")):
        out = os.path.join(args.workdir, "err.f32")
        if os.path.exists(out):
            os.remove(out)
        p = run([args.flashstar, "dump-tensor", path, *extra[:1], "-o", out, *extra[1:]], expect_ok=False)
        lines = p.stderr.strip().splitlines()
        if p.returncode != 1 or len(lines) != 1 or os.path.exists(out):
            print(f"FAIL {what}: exit {p.returncode}, stderr {p.stderr!r}")
            failures += 1
        else:
            print(f"ok {what}: {lines[0]}")

    if failures:
        print(f"test_quant_ggufpy: {failures} failure(s), seed {seed}")
        return 1
    print("test_quant_ggufpy: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
