#!/usr/bin/env python3
"""Per-k-tile SASS instruction counts of the grouped wgmma kernels, by source category.

Usage: sass-ktile-count.py OBJ_OR_CUBIN [-vCATEGORY ...] [FUNCTION_SUBSTRING ...]
Disassembles with line info (nvdisasm -g), finds each matching kernel's main k-tile loop (the largest
backward branch whose body holds HGMMA), and counts the loop body's instructions by the source file and
line they come from: decode (the Decode / DecodeFast structs, their helpers and the tile stores), copy
(cp.async address math and issue; the raw-unit copy loop once, though it runs every 8th k-tile), sums
(token sums), promote, wgmma, index (ring slots and swizzle helpers, shared by several) and the rest
(barrier, waits, loop). The loop holds both the N = 64 and N = 32 paths of the products and the
promotion (one runs a k-tile); decode, copies and sums are on both paths once. -vdecode lists that
category's instructions with their source lines. Why a script: the counts are the kernel's issue budget
(docs/PERFORMANCE.md), and the decode rewrite (gemm_group_decode.h) is judged by them.
"""
import os, re, subprocess, sys, tempfile, collections

def cubin_of(path):
    if path.endswith('.cubin'):
        return path
    d = tempfile.mkdtemp()
    subprocess.run(['cuobjdump', '-xelf', 'all', os.path.abspath(path)], cwd=d, check=True, capture_output=True)
    c = [f for f in os.listdir(d) if f.endswith('.cubin')]
    return os.path.join(d, c[0])

# (file basename, first line, last line or None) -> category; first match wins.
def category(f, line, op=''):
    if f == 'gemm_group_decode.h':
        return 'decode'
    if f in ('int8_digits.h',):
        return 'decode'
    if f == 'gemm_int_weights.h':
        if 'promote' in SRC_FUN.get((f, line), ''):
            return 'promote'
        if 'sum8' in SRC_FUN.get((f, line), ''):
            return 'sums'
        return 'decode'
    if f == 'gemm_group_v2.h':
        fn = SRC_FUN.get((f, line), '')
        if any(k in fn for k in ('x_issue', 'load_raw', 'raw_task', 'raw_src', 'x_task', 'x_copies')):
            return 'copy'
        if 'tok_sum' in fn or 'sum_task' in fn:
            return 'sums'
        if fn in ('swz', 'x_stage', 'tile_buf', 'raw_buf', 'unit_of', 'starts_unit'):
            return 'index'  # ring slots and the swizzle, shared by copies, decode stores and wgmma
        return 'decode'
    if f == 'mma_f16.cuh':
        return 'copy'
    if f == 'gemm_group_wgmma.h':
        fn = SRC_FUN.get((f, line), '')
        return 'promote' if 'promote' in fn else 'wgmma'
    if f == 'wgmma_tile.cuh':
        return 'wgmma'
    if f == 'cuda_fp16.hpp':  # __hsub2 / __hfma2 of the decoders; the .F32 conversions of sums and scales
        return 'f16->f32' if op.endswith('.F32') else 'decode'
    if f == 'sm_32_intrinsics.hpp':  # __funnelshift_r of the IQ2_XXS sub-block read
        return 'decode'
    if f == 'sm_20_intrinsics.hpp':  # __cvta_generic_to_shared of the copies
        return 'copy'
    return 'other:' + f

SRC_FUN = {}
def index_functions(srcdir):
    """Maps (file, line) to the enclosing function name by a crude scan for definitions at column 0/2."""
    pat = re.compile(r'^\s{0,2}(?:static\s+)?(?:GI_HD|WG_HD|__device__|I8D_HD|GD_HD|inline)\b.*?(\w+)\s*\(')
    for f in ('gemm_group_v2.h', 'gemm_int_weights.h', 'gemm_group_wgmma.h', 'gemm_group_decode.h'):
        p = os.path.join(srcdir, f)
        if not os.path.exists(p):
            continue
        cur = ''
        for i, l in enumerate(open(p), 1):
            m = pat.match(l)
            if m:
                cur = m.group(1)
            SRC_FUN[(f, i)] = cur

def main():
    verbose = [a[2:] for a in sys.argv[1:] if a.startswith('-v')]  # -vCATEGORY: list that category's lines
    # -a: every outermost loop holding HGMMA (kernels with one k-loop per wgmma width, wgmma::with_n),
    # not only the largest.
    every = '-a' in sys.argv[1:]
    args = [a for a in sys.argv[1:] if not a.startswith('-v') and a != '-a']
    obj, subs = args[0], args[1:]
    index_functions(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src', 'cuda'))
    dis = subprocess.run(['nvdisasm', '-g', '-c', cubin_of(obj)], capture_output=True, text=True).stdout
    funcs = collections.OrderedDict()
    cur = None
    loc = ('?', 0)
    for l in dis.splitlines():
        m = re.match(r'\s*\.text\.(\S+):', l)
        if m:
            cur = m.group(1); funcs[cur] = []; continue
        m = re.match(r'\s*//## File "([^"]+)", line (\d+)', l)
        if m:
            loc = (os.path.basename(m.group(1)), int(m.group(2))); continue
        m = re.match(r'\s*/\*([0-9a-f]{4,})\*/\s+(.*?);', l)
        if m and cur:
            funcs[cur].append((int(m.group(1), 16), m.group(2).strip(), loc))
    for name, ins in funcs.items():
        if subs and not any(s in name for s in subs):
            continue
        best = None
        # Backward branches: nvdisasm prints targets as labels (.L_x_N); their addresses from the label lines.
        lab_addr = {}
        lines = dis.split('.text.' + name + ':', 1)[1].split('.text.', 1)[0].splitlines()
        pend = []
        for l in lines:
            m = re.match(r'\s*(\.L_x_\d+):', l)
            if m:
                pend.append(m.group(1)); continue
            m = re.match(r'\s*/\*([0-9a-f]{4,})\*/', l)
            if m and pend:
                for p in pend:
                    lab_addr[p] = int(m.group(1), 16)
                pend = []
        loops = []
        for addr, text, _ in ins:
            m = re.search(r'BRA\s.*?(\.L_x_\d+)', text)
            if m and m.group(1) in lab_addr and lab_addr[m.group(1)] < addr:
                lo = lab_addr[m.group(1)]
                body = [x for x in ins if lo <= x[0] <= addr]
                if any('HGMMA' in x[1] for x in body):
                    loops.append((lo, addr, body))
                if any('HGMMA' in x[1] for x in body) and (best is None or len(body) > len(best)):
                    best = body
        if not best:
            continue
        if every:
            outer = [l for l in loops if not any(o is not l and o[0] <= l[0] and l[1] <= o[1] for o in loops)]
            for lo, hi, body in sorted(outer, key=lambda l: l[0]):
                n_mma = sum(1 for x in body if 'HGMMA' in x[1])
                ffma = sum(1 for x in body if re.sub(r'^@!?U?P\w+\s+', '', x[1]).startswith('FFMA'))
                print(f'  loop {lo:#x}..{hi:#x}: {len(body)} instructions, HGMMA {n_mma}, FFMA {ffma}')
        cats = collections.Counter()
        ops = collections.defaultdict(collections.Counter)
        for _, text, (f, line) in best:
            op = re.sub(r'^@!?U?P\w+\s+', '', text).split()[0]
            c = category(f, line, op)
            cats[c] += 1
            if c in verbose:
                print(f'    {f}:{line:<5} {text}')
            ops[c][op.split('.')[0]] += 1
        short = re.sub(r'_ZN9flashstar4cuda4fast\d+_GLOBAL__N__\w+?_cu_\w+?(\d+group_wgmma)', r'\1', name)
        print(f'{short[:110]}: loop body {len(best)} instructions')
        for c, n in sorted(cats.items(), key=lambda kv: -kv[1]):
            top = ', '.join(f'{o} {k}' for o, k in ops[c].most_common(8))
            print(f'  {c:<28} {n:5d}   ({top})')
        # A healthy loop has 3 WARPGROUP instructions (arrive and the waits); ptxas's C7511 fallback
        # brackets every HGMMA with its own, which serialises the tensor core against the decode.
        wg = sum(1 for _, text, _ in best if 'WARPGROUP' in text)
        if wg > 4:
            print(f'  WARNING: {wg} WARPGROUP instructions: wgmma serialised (ptxas C7511)')

if __name__ == '__main__':
    try:
        main()
    except BrokenPipeError:
        pass
