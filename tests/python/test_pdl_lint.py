#!/usr/bin/env python3
"""Every CUDA kernel of the library waits for its predecessors first (pdl_wait()).

The decode graph turns kernel-to-kernel edges into programmatic ones (src/cuda/pdl.cuh): a kernel may
start while its predecessor still runs, so one that read or wrote shared buffers before pdl_wait()
would race. This reads each __global__ definition under src/cuda and checks that its body starts with
the wait. Takes the harness's usual arguments and ignores them.
"""
import argparse
import glob
import os
import re
import sys


def kernels(text):
    """(name, first statement) of each __global__ definition (prototypes skipped)."""
    for m in re.finditer(r"__global__", text):
        j, depth = m.end(), 0
        while j < len(text):
            c = text[j]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif depth == 0 and c in ";{":
                break
            j += 1
        if j >= len(text) or text[j] == ";":
            continue
        head = text[m.end():j]
        name = re.findall(r"(\w+)\s*\(", head)
        body = text[j + 1:]
        lead = re.match(r"^\s*(//[^\n]*\n\s*)*", body).group(0)
        body = body[len(lead):]
        first = body.split(";", 1)[0].strip()
        # A kernel may do constant-only work first (prefetch of weights) when its leading comment says
        # so with PDL-PROLOGUE and it still calls pdl_wait() in its body.
        if "PDL-PROLOGUE" in lead and "pdl_wait()" in body:
            first = "pdl_wait()"
        yield (name[-1] if name else "?"), first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashstar")
    ap.add_argument("--shared")
    ap.add_argument("--workdir")
    ap.parse_args()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "cuda")
    bad, n = [], 0
    for path in sorted(glob.glob(os.path.join(root, "*.cu")) + glob.glob(os.path.join(root, "*.cuh"))):
        for name, first in kernels(open(path).read()):
            n += 1
            if first != "pdl_wait()":
                bad.append(f"{os.path.basename(path)}: {name} starts with '{first[:60]}'")
    if n == 0:
        print("FAIL: no kernels found under", root)
        return 1
    for b in bad:
        print("FAIL:", b)
    print(f"{n} kernels, {len(bad)} without pdl_wait() first")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
