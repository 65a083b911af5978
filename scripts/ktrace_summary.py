#!/usr/bin/env python3
"""Summary of a kernel timeline (FLASHSTAR_KTRACE=<path.csv>, src/cuda/kernel_trace.cpp): where a decode step's
(or a prefill chunk's) device time goes in situ, inside the CUDA graph, with programmatic dependent launch and
two streams as they run.

  python3 scripts/ktrace_summary.py trace.csv [--prefill] [--skip 1] [--top 40] [--full] [--list 60]
                                    [--step-marker REGEX [--marker-ends]] [--gap-us 50] [--layers 43]

Steps. A decode step is one launch of a decode graph: the graph's kernels (graph_id != 0), in start order. A
launch runs every node of its graph once, so a new step begins where the graph id changes or a node id comes
back (two launches of one graph back to back, even overlapping under PDL, still split), or where nothing ran for
--gap-us. Prefill chunks (--prefill) are the kernels launched outside graphs before the first graph kernel,
split where nothing ran for --gap-us (copies alone, such as the weight upload, make no chunk); if the chunks run
back to back, split them with --step-marker: a step then begins at each kernel whose name matches the
regex instead (--marker-ends: the step ends there, e.g. the output head's; kernels outside the marked steps are
left out). Without graph kernels (graphs off), decode steps are split so too, or on gaps. The first --skip steps
(warm-up: the first launch after instantiation) are left out of the statistics.

Per step: wall (first start to last end), busy (the union of the kernels' intervals), idle (wall - busy: no
kernel running; launch latency, dependency waits, host gaps), overlap (two or more kernels running: the side
stream, PDL prologues), the sum of kernel durations (busy + the time counted twice in overlaps), and the period
(this step's start to the next's, host time between steps included). Per kernel name: launches per step,
median in-situ duration, device time per step, and its share of the median step's wall (shares add up to more
than 100 % where kernels overlap), and its exposed time per step: every moment of a step goes to the oldest
running kernel, so a kernel launched early (PDL) and waiting for its predecessor gets only its time past the
predecessor's end, and side-stream work that ran under the main chain gets nothing (exposed + idle = wall;
the kernels to shorten are those with the most exposed time). Names are shortened: no return type, namespaces or arguments, and only the
first template argument (`k<64,...>`); --full keeps every template argument, so instantiations stay apart.
--list N prints the kernels of the median step in order (start offset, duration, gap since the latest end
before it: negative = overlap, exposed time), --layers L the per-layer time of that step, split at the kernel that runs L
times a step (or --layer-marker REGEX).
"""
import argparse
import csv
import re
import heapq
import statistics
import sys


def load(path):
    rows = []
    with open(path, newline='') as f:
        for r in csv.DictReader(f):
            rows.append({
                'start': int(r['start_ns']), 'end': int(r['end_ns']), 'stream': int(r['stream']),
                'graph': int(r['graph_id']), 'node': int(r['graph_node_id']),
                'grid': '%s,%s,%s' % (r['grid_x'], r['grid_y'], r['grid_z']), 'block': int(r['block_x']),
                'name': r['name']})
    rows.sort(key=lambda r: (r['start'], r['end']))
    return rows


def _depth_scan(s):
    """(index, char, depth before the char) over s, depth counting <> and ()."""
    d = 0
    for i, c in enumerate(s):
        if c in ')>':
            d -= 1
        yield i, c, d if c not in ')>' else d + 1
        if c in '(<':
            d += 1


def short_name(name, full=False):
    """`void ns::(anonymous namespace)::k<64, 2, true>(float const*, int)` -> `k<64,...>` (full: `k<64, 2, true>`)."""
    if not name or name.startswith('['):
        return name
    s = name.strip()
    if s.endswith(')'):  # the argument list: the last top-level parenthesis
        d = 0
        for i in range(len(s) - 1, -1, -1):
            d += {')': 1, '(': -1}.get(s[i], 0)
            if d == 0:
                s = s[:i]
                break
    cut = [i for i, c, d in _depth_scan(s) if c == ' ' and d == 0]  # the return type
    if cut:
        s = s[cut[-1] + 1:]
    parts, b = [], 0  # namespaces: the last top-level `::` component
    for i, c, d in _depth_scan(s):
        if d == 0 and s.startswith('::', i) and i >= b:
            parts.append(s[b:i])
            b = i + 2
    s = s[b:] if b else s
    lt = s.find('<')
    if lt < 0 or full:
        return s
    args, b = [], lt + 1
    for i, c, d in _depth_scan(s):
        if i <= lt:
            continue
        if d == 1 and c in ',>':
            args.append(s[b:i].strip())
            b = i + 1
    first = re.sub(r'\b\w+::', '', args[0]) if args else ''
    return s[:lt] + '<' + first + (',...>' if len(args) > 1 else '>')


def split_steps(rows, prefill, marker, marker_ends, gap_ns):
    graph_rows = [r for r in rows if r['graph']]
    first_graph = graph_rows[0]['start'] if graph_rows else None
    how = ''
    if prefill:
        sel = [r for r in rows if not r['graph'] and (first_graph is None or r['start'] < first_graph)]
        how = 'kernels outside graphs before the first graph kernel'
    elif graph_rows:
        sel = graph_rows
        how = 'graph launches'
    else:
        sel = [r for r in rows if not r['name'].startswith('[')]
        how = 'no graph kernels (graphs off?): all kernels'
    steps, cur, seen, last_end, gid = [], [], set(), None, None
    rx = re.compile(marker) if marker else None
    for r in sel:
        new = False
        if rx:
            if not marker_ends and rx.search(r['name']):
                new = True
        elif last_end is not None and r['start'] - last_end > gap_ns:
            new = True
        elif not prefill and graph_rows and (r['graph'] != gid or r['node'] in seen):
            new = True
        if new and cur:
            steps.append(cur)
            cur, seen, last_end = [], set(), None
        cur.append(r)
        seen.add(r['node'])
        gid = r['graph']
        last_end = r['end'] if last_end is None else max(last_end, r['end'])
        if rx and marker_ends and rx.search(r['name']):
            steps.append(cur)
            cur, seen, last_end = [], set(), None
    if cur and not (rx and marker_ends):  # (what follows the last end marker is no whole step)
        steps.append(cur)
    if rx and not marker_ends:  # what precedes the first marker is no step
        steps = [s for s in steps if rx.search(s[0]['name'])]
    steps = [s for s in steps if any(not r['name'].startswith('[') for r in s)]  # copies alone: uploads
    if rx:
        how += ', split at /%s/ (%s)' % (marker, 'last kernel' if marker_ends else 'first kernel')
    elif not prefill and graph_rows:
        how += ' (graph id change, node id repeat or a gap > %g us)' % (gap_ns / 1e3)
    else:
        how += ', split on gaps > %g us' % (gap_ns / 1e3)
    return steps, how


def step_stats(step):
    t0 = min(r['start'] for r in step)
    t1 = max(r['end'] for r in step)
    ev = sorted([(r['start'], 1) for r in step] + [(r['end'], -1) for r in step], key=lambda e: (e[0], e[1]))
    busy = overlap = 0
    n, prev = 0, t0
    for t, d in ev:
        if n >= 1:
            busy += t - prev
        if n >= 2:
            overlap += t - prev
        n += d
        prev = t
    total = sum(r['end'] - r['start'] for r in step)
    return {'t0': t0, 'wall': t1 - t0, 'busy': busy, 'idle': t1 - t0 - busy, 'overlap': overlap, 'sum': total,
            'n': len(step)}


def exposed(step):
    """Each kernel's exposed time: every moment of the step goes to the running kernel that started first.
    With programmatic launches a kernel starts early and waits (pdl_wait) for the one before it, which
    started before it; so in a chain the moment goes to the kernel doing the work, and a kernel's exposed
    time is about its time past its predecessor's end. Moments with nothing running are idle: the exposed
    times and the idle time add up to the wall. Returns {id(record): ns}."""
    out = {id(r): 0 for r in step}
    marks = sorted({r['start'] for r in step} | {r['end'] for r in step})
    order = sorted(step, key=lambda r: (r['start'], r['end']))
    heap, i = [], 0
    for a, b in zip(marks, marks[1:]):
        while i < len(order) and order[i]['start'] <= a:
            heapq.heappush(heap, (order[i]['start'], i))
            i += 1
        while heap and order[heap[0][1]]['end'] <= a:  # the oldest has ended: the next oldest still running
            heapq.heappop(heap)
        if heap:
            out[id(order[heap[0][1]])] += b - a
    return out


def us(ns):
    return ns / 1e3


def layer_view(step, layers, marker, full, out):
    names = [short_name(r['name'], full) for r in step]
    if marker:
        rx = re.compile(marker)
        starts = [i for i, r in enumerate(step) if rx.search(r['name'])]
        what = '/%s/' % marker
    else:
        counts = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        pick = next((n for n in names if counts[n] == layers), None)
        if pick is None:
            print('per layer: no kernel runs %d times a step (try --layer-marker)' % layers, file=out)
            return
        starts = [i for i, n in enumerate(names) if n == pick]
        what = pick
    if len(starts) < 2:
        print('per layer: fewer than 2 layer starts', file=out)
        return
    print('\nper layer (median step, split at %s): start offset, span to the next layer\'s start, kernels' % what,
          file=out)
    t0 = step[0]['start']
    bounds = starts + [len(step)]
    spans = []
    for li in range(len(starts)):
        a, b = bounds[li], bounds[li + 1]
        s0 = step[a]['start']
        s1 = step[b]['start'] if b < len(step) else max(r['end'] for r in step[a:b])
        spans.append(s1 - s0)
        print('  layer %3d  +%9.1f us  %8.1f us  %3d' % (li, us(s0 - t0), us(s1 - s0), b - a), file=out)
    if starts[0] > 0:
        print('  (before the first layer: %d kernel(s), %.1f us)' % (starts[0], us(step[starts[0]]['start'] - t0)),
              file=out)
    print('  layer span median %.1f us, min %.1f, max %.1f' % (us(statistics.median(spans)), us(min(spans)),
                                                              us(max(spans))), file=out)


def summarize(a, out=None):
    out = out or sys.stdout
    rows = load(a.csv)
    kinds = 'prefill chunks' if a.prefill else 'decode steps'
    graphs = sorted({r['graph'] for r in rows if r['graph']})
    print('ktrace %s: %d records (%d in graphs, %d graphs), %d streams' %
          (a.csv, len(rows), sum(1 for r in rows if r['graph']), len(graphs), len({r['stream'] for r in rows})),
          file=out)
    steps, how = split_steps(rows, a.prefill, a.step_marker, a.marker_ends, a.gap_us * 1e3)
    skip = a.skip if a.skip is not None else (0 if a.prefill else 1)
    used = steps[skip:]
    print('%s: %d (%s); %d analysed (--skip %d)' % (kinds, len(steps), how, len(used), skip), file=out)
    if not used:
        print('nothing to analyse', file=out)
        return 1
    st = [step_stats(s) for s in used]
    periods = [st[i + 1]['t0'] - st[i]['t0'] for i in range(len(st) - 1)]
    med = lambda k: statistics.median(x[k] for x in st)
    wall = med('wall')
    print('step wall   median %9.1f us  (min %.1f, max %.1f)' % (us(wall), us(min(x['wall'] for x in st)),
                                                                 us(max(x['wall'] for x in st))), file=out)
    if periods:
        print('step period median %9.1f us  (start to next start: host time between steps included)' %
              us(statistics.median(periods)), file=out)
    pct = lambda v: 100.0 * v / wall if wall else 0.0
    for k, text in (('busy', 'busy (>= 1 kernel running)'), ('idle', 'idle (no kernel running)'),
                    ('overlap', 'overlap (>= 2 running)'), ('sum', 'sum of kernel durations')):
        print('  %-28s median %9.1f us  %5.1f%% of wall' % (text, us(med(k)), pct(med(k))), file=out)
    note = '' if a.prefill else ' (a graph launch runs each node once: min < max where records were lost)'
    print('  kernels a step: median %d, min %d, max %d%s' % (med('n'), min(x['n'] for x in st),
                                                          max(x['n'] for x in st), note), file=out)

    per = {}
    for s in used:
        ex = exposed(s)
        for r in s:
            n = short_name(r['name'], a.full)
            e = per.setdefault(n, {'n': 0, 'durs': [], 'exp': 0})
            e['n'] += 1
            e['durs'].append(r['end'] - r['start'])
            e['exp'] += ex[id(r)]
    ns = len(used)
    table = sorted(per.items(), key=lambda kv: -sum(kv[1]['durs']))
    print('\nper kernel (%d names; device time per step, share of the median wall; exposed: the time it was the '
          'oldest running kernel, about its time past its predecessor; exposed + idle = wall):' % len(per), file=out)
    width = min(max(len(n) for n in per) if per else 10, 70)
    print('  %-*s %7s %10s %11s %7s %12s %7s' % (width, 'kernel', 'n/step', 'median us', 'us/step', 'share',
                                                 'exposed us', 'share'), file=out)
    for n, e in table[:a.top]:
        per_step, exp_step = sum(e['durs']) / ns, e['exp'] / ns
        print('  %-*s %7.2f %10.2f %11.1f %6.1f%% %12.1f %6.1f%%' % (
            width, n[:width], e['n'] / ns, us(statistics.median(e['durs'])), us(per_step), pct(per_step),
            us(exp_step), pct(exp_step)), file=out)
    if len(table) > a.top:
        rest = sum(sum(e['durs']) for _, e in table[a.top:]) / ns
        print('  %-*s %7s %10s %11.1f %6.1f%%' % (width, '(%d more)' % (len(table) - a.top), '', '', us(rest),
                                                pct(rest)), file=out)

    order = sorted(range(ns), key=lambda i: st[i]['wall'])
    mi = order[len(order) // 2]
    step = used[mi]
    if a.list:
        print('\nmedian step (#%d, wall %.1f us): kernels in start order' % (mi + skip, us(st[mi]['wall'])), file=out)
        print('  %4s %10s %9s %9s %8s %6s %-13s %s' % ('#', 'start us', 'dur us', 'gap us', 'exp us', 'stream', 'grid',
                                                       'kernel'), file=out)
        t0, last_end, ex = step[0]['start'], None, exposed(step)
        for i, r in enumerate(step[:a.list]):
            gap = '' if last_end is None else '%9.2f' % us(r['start'] - last_end)
            print('  %4d %10.2f %9.2f %9s %8.2f %6d %-13s %s' % (
                i, us(r['start'] - t0), us(r['end'] - r['start']), gap, us(ex[id(r)]), r['stream'], r['grid'],
                short_name(r['name'], a.full)), file=out)
            last_end = r['end'] if last_end is None else max(last_end, r['end'])
    if a.layers or a.layer_marker:
        layer_view(step, a.layers, a.layer_marker, a.full, out)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('csv')
    p.add_argument('--prefill', action='store_true', help='prefill chunks instead of decode steps')
    p.add_argument('--skip', type=int, default=None, help='steps to leave out first (default: decode 1, prefill 0)')
    p.add_argument('--step-marker', help='regex of a kernel name that begins each step')
    p.add_argument('--marker-ends', action='store_true', help='the step marker ends a step instead')
    p.add_argument('--gap-us', type=float, default=50.0, help='an idle gap that splits steps (default 50)')
    p.add_argument('--top', type=int, default=40, help='kernel names in the table (default 40)')
    p.add_argument('--full', action='store_true', help='keep every template argument in names')
    p.add_argument('--list', type=int, default=0, metavar='N', help='list the first N kernels of the median step')
    p.add_argument('--layers', type=int, default=0, help='per-layer view: split at the kernel run this often a step')
    p.add_argument('--layer-marker', help='per-layer view: regex of the kernel that begins each layer')
    return summarize(p.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
