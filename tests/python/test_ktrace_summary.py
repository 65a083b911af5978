#!/usr/bin/env python3
"""scripts/ktrace_summary.py on a small synthetic kernel timeline (the CSV FLASHSTAR_KTRACE writes):

- decode steps are split per graph launch (node id repeats), the warm-up launch skipped; wall, busy, idle,
  overlap and the sum of durations are exact; names shortened (or kept whole with --full);
- --list gives start offsets, durations and gaps (negative where kernels overlap); --layers splits at the kernel
  run that often a step;
- --prefill splits the kernels outside graphs before the first graph kernel on gaps; --step-marker splits at a
  kernel name instead.
"""
import argparse
import contextlib
import io
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'scripts'))
import ktrace_summary as ks  # noqa: E402

FAILURES = []
COLUMNS = ('start_ns,end_ns,duration_ns,stream,correlation,graph_id,graph_node_id,grid_x,grid_y,grid_z,block_x,'
           'regs,smem_dyn,smem_static,name')
MATVEC = 'void flashstar::fast::(anonymous namespace)::matvec_q8<64, 2, true>(float const*, float*, int)'
HC = 'void flashstar::fast::hc_pre_kernel<flashstar::fast::HcArgs<4>, 8>(flashstar::fast::HcArgs<4>)'
# One decode step: (node, offset, duration, stream, name). Busy 6 900 of 7 600 ns, overlap 1 100, sum 8 000.
STEP = [(1, 0, 1000, 7, 'embed_kernel(int const*, float*)'), (2, 1500, 1000, 7, HC), (3, 2400, 2000, 7, MATVEC),
        (4, 3000, 1000, 8, 'void attn_side<128>(float*)'), (5, 4600, 1000, 7, HC),
        (6, 5600, 2000, 7, 'void output_head(float const*, float*)')]


def check(cond, what):
    print(('ok   ' if cond else 'FAIL ') + what)
    if not cond:
        FAILURES.append(what)


def row(start, dur, stream=7, graph=0, node=0, name='k'):
    return '%d,%d,%d,%d,0,%d,%d,132,1,1,256,32,0,0,"%s"' % (start, start + dur, dur, stream, graph, node,
                                                         name.replace('"', '""'))


def write_trace(path):
    lines = [COLUMNS]
    t = 1000000
    for chunk in range(2):  # prefill: two chunks of three kernels, 100 us apart
        for i in range(3):
            lines.append(row(t, 2000, name='void prefill_gemm<%d>(float*)' % (i + 1)))
            t += 2500
        t += 100000
    t0 = t + 50000
    for k in range(4):  # decode: four launches of graph 5, each after a token copy outside the graph
        base = t0 + k * 10000
        lines.append(row(base - 800, 300, name='[memcpy HtoD]'))
        for node, off, dur, stream, name in STEP:
            lines.append(row(base + off, dur, stream, 5, node, name))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def run(args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # parsed as on the command line
        rc = ks.main(args)
    return rc, out.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--flashstar')
    ap.add_argument('--shared')
    ap.add_argument('--workdir', default='/tmp/py_test_ktrace_summary')
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    path = os.path.join(a.workdir, 'trace.csv')
    write_trace(path)

    check(ks.short_name(MATVEC) == 'matvec_q8<64,...>', 'short name: namespaces, arguments, later template args')
    check(ks.short_name(MATVEC, full=True) == 'matvec_q8<64, 2, true>', '--full keeps the template arguments')
    check(ks.short_name(HC) == 'hc_pre_kernel<HcArgs<4>,...>', 'short name: namespaces inside the first argument')
    check(ks.short_name('embed_kernel(int const*, float*)') == 'embed_kernel', 'short name: plain function')
    check(ks.short_name('[memcpy HtoD]') == '[memcpy HtoD]', 'copies keep their name')

    rc, out = run([path, '--list', '10', '--layers', '2'])
    print(out)
    check(rc == 0, 'decode summary exits 0')
    check('decode steps: 4 (graph launches' in out and '3 analysed (--skip 1)' in out, 'four launches, one skipped')
    check('step wall   median       7.6 us' in out, 'wall 7.6 us')
    check('step period median      10.0 us' in out, 'period 10 us')
    check('busy (>= 1 kernel running)   median       6.9 us   90.8% of wall' in out, 'busy 6.9 us')
    check('idle (no kernel running)     median       0.7 us    9.2% of wall' in out, 'idle 0.7 us')
    check('overlap (>= 2 running)       median       1.1 us' in out, 'overlap 1.1 us')
    check('sum of kernel durations      median       8.0 us' in out, 'sum 8 us')
    check('[memcpy' not in out, 'the copies outside the graph are not in the steps')
    table = out.split('per kernel')[1].split('median step')[0]
    lines = [l.split() for l in table.splitlines()[2:] if l.strip()]
    check(lines[0][0] == 'hc_pre_kernel<HcArgs<4>,...>' and lines[0][1:] == ['2.00', '1.00', '2.0', '26.3%', '2.0', '26.3%'],
          'hc_pre: 2 a step, 1 us each, 26.3 %, all of it exposed (table sorted by time)')
    check(any(l[0] == 'attn_side<128>' and l[5:] == ['0.0', '0.0%'] for l in lines),
          'the side stream\'s kernel ran under older ones: nothing exposed')
    exposed = sum(float(l[5]) for l in lines if len(l) == 7)
    check(abs(exposed - 6.9) < 0.11, 'exposed times add up to the busy time (%.2f)' % exposed)
    check(any(l[0] == 'matvec_q8<64,...>' and l[1] == '1.00' for l in lines), 'matvec in the table')
    listed = out.split('kernels in start order')[1].split('per layer')[0].splitlines()[2:]
    listed = [l for l in listed if l.strip()]
    check(len(listed) == 6 and listed[0].split()[1:3] == ['0.00', '1.00'],
          '--list: six kernels from offset 0')
    check(listed[2].split()[1:4] == ['2.40', '2.00', '-0.10'], '--list: matvec 100 ns inside hc_pre (PDL)')
    check(listed[3].split()[1:6] == ['3.00', '1.00', '-1.40', '0.00', '8'], '--list: the side stream\'s kernel')
    check(listed[4].split()[3] == '0.20', '--list: 200 ns gap before the second layer')
    check('per layer (median step, split at hc_pre_kernel<HcArgs<4>,...>)' in out, 'per layer split at hc_pre')
    check('layer   0  +      1.5 us       3.1 us    3' in out and 'layer   1  +      4.6 us       3.0 us    2' in out,
          'per layer spans')

    rc, out = run([path, '--prefill'])
    print(out)
    check(rc == 0 and 'prefill chunks: 2 (' in out and '2 analysed (--skip 0)' in out, '--prefill: two chunks')
    check('step wall   median       7.0 us' in out, 'prefill chunk wall 7 us')
    check('prefill_gemm<1>' in out and 'prefill_gemm<3>' in out, 'prefill kernels named')

    rc, out = run([path, '--prefill', '--step-marker', r'prefill_gemm<2>'])
    check(rc == 0 and 'prefill chunks: 2 (' in out and '(min 107.0, max 154.5)' in out,
          '--prefill --step-marker: a chunk runs from a marker to the next (gaps and copies included)')

    rc, out = run([path, '--step-marker', 'output_head', '--marker-ends', '--skip', '0', '--full'])
    check(rc == 0 and 'decode steps: 4 (' in out and 'split at /output_head/ (last kernel)' in out,
          '--step-marker splits at the head')
    check('matvec_q8<64, 2, true>' in out, '--full names')

    rc, out = run([path, '--step-marker', 'nothing_matches', '--skip', '1'])
    check(rc == 1 and 'nothing to analyse' in out, 'a marker that never matches: one step, nothing after --skip')

    if FAILURES:
        print('%d failures' % len(FAILURES))
        return 1
    print('all ok')
    return 0


if __name__ == '__main__':
    sys.exit(main())
