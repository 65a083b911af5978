#!/usr/bin/env python3
"""Kernel-by-kernel comparison of two `cuobjdump -sass` listings: which kernels' machine code differs, which
are missing, which are new. Addresses, encodings and the anonymous-namespace and internal-linkage hashes in
the names are normalised away, so a rebuild of the same source compares equal. How the sessions check that a
change leaves the default kernels' SASS alone:
    cuobjdump -sass old/flashstar > old.sass; cuobjdump -sass build-cuda/flashstar > new.sass
    python3 scripts/sass_compare.py old.sass new.sass
A renamed template (a new template parameter) shows as missing + new: map the old names first (sed)."""
import re
import sys


def norm(s):
    s = re.sub(r'_GLOBAL__N__[0-9a-f]+_\d+_([A-Za-z0-9_]+?)_[0-9a-f]{8}', r'_G_\1', s)
    return re.sub(r'_INTERNAL_[0-9a-f_]+', '_I_', s)


def kernels(path):
    out, cur, body, skip = {}, None, [], False
    for line in open(path, errors='replace'):
        m = re.match(r'\s*Function : (\S+)', line)
        if m:
            if cur:
                out[cur] = '\n'.join(body)
            cur, body, skip = norm(m.group(1)), [], False
            continue
        if cur is None:
            continue
        if 'Fatbin' in line or line.startswith('\tcode for'):  # the next cubin's header, not this kernel's
            skip = True
        if skip:
            continue
        line = re.sub(r'/\*[0-9a-f]{4,}\*/', '', line)
        line = norm(re.sub(r'/\* 0x[0-9a-f]+ \*/', '', line)).strip()
        if line:
            body.append(line)
    if cur:
        out[cur] = '\n'.join(body)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: sass_compare.py OLD.sass NEW.sass')
    a, b = kernels(sys.argv[1]), kernels(sys.argv[2])
    diff = [k for k in a if k in b and a[k] != b[k]]
    miss = [k for k in a if k not in b]
    new = [k for k in b if k not in a]
    print(len(a), 'kernels before,', len(b), 'after:', len(diff), 'differ,', len(miss), 'missing,', len(new), 'new')
    for k in diff:
        print(' ~', k[:160])
    for k in miss:
        print(' -', k[:160])
    for k in new:
        print(' +', k[:160])
    sys.exit(1 if diff else 0)


if __name__ == '__main__':
    main()
