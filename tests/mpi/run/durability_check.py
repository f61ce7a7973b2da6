#!/usr/bin/env python3
"""Reads an `strace -f -y` log of a swapcoord run and checks that every catalog commit is
durable: before each rename of catalog.h5.tmp over catalog.h5, every swap file created so
far was fsynced (or fdatasynced), every directory created so far and every swap file's
directory entry was made durable by an fsync of its parent, and the catalog's temporary
file was fsynced; after the rename, the catalog's directory is fsynced.
    durability_check.py TRACE PREFIX   (only files and directories under PREFIX count: the
                                        job's, not those of the MPI launcher)
Prints what it checked; exits 1 naming each missing call."""
import os
import re
import sys

CALL = re.compile(r'^(\w+)\((.*)\)\s+=\s+(-?\d+)(<[^>]*>)?')
FD_PATH = re.compile(r'^(?:AT_FDCWD|\d+<([^>]*)>)$')


def split_args(text):
    out, depth, quoted, cur = [], 0, False, ''
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            cur += ch
            if ch == '\\':
                cur += text[i + 1]
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted, cur = True, cur + ch
        elif ch in '[{(':
            depth, cur = depth + 1, cur + ch
        elif ch in ']})':
            depth, cur = depth - 1, cur + ch
        elif ch == ',' and depth == 0:
            out.append(cur.strip())
            cur = ''
        else:
            cur += ch
        i += 1
    if cur.strip():
        out.append(cur.strip())
    return out


def fd_path(arg):
    m = re.match(r'^\d+<(.*)>$', arg)
    return m.group(1) if m else None


def joined(dirfd, name):
    name = name.strip('"')
    if name.startswith('/'):
        return os.path.normpath(name)
    base = fd_path(dirfd) if dirfd != 'AT_FDCWD' else os.getcwd()
    return os.path.normpath(os.path.join(base or '', name))


def events(path):
    pending = {}
    with open(path, errors='replace') as f:
        for line in f:
            line = line.rstrip('\n')
            m = re.match(r'^(\d+)\s+(.*)$', line)
            if not m:
                continue
            pid, rest = m.groups()
            if rest.endswith('<unfinished ...>'):
                pending[pid] = rest[:-len('<unfinished ...>')].rstrip()
                continue
            r = re.match(r'^<\.\.\. (\w+) resumed>\s?(.*)$', rest)
            if r:
                rest = pending.pop(pid, r.group(1) + '(') + r.group(2)
            c = CALL.match(rest)
            if c:
                yield c.group(1), split_args(c.group(2)), int(c.group(3))


def main():
    prefix = os.path.normpath(sys.argv[2]) + '/'
    synced = {}         # path -> indices of successful fsync/fdatasync
    created_files = {}  # .swp path -> index of its first open with O_CREAT
    created_dirs = {}   # dir -> index of mkdir
    renames = []        # (index, tmp path, catalog path)
    for i, (name, args, result) in enumerate(events(sys.argv[1])):
        if result < 0:
            continue
        if name in ('fsync', 'fdatasync'):
            p = fd_path(args[0])
            if p:
                synced.setdefault(os.path.normpath(p), []).append(i)
        elif name == 'openat' and 'O_CREAT' in args[2]:
            p = joined(args[0], args[1])
            if p.endswith('.swp') and p.startswith(prefix):
                created_files.setdefault(p, i)
        elif name in ('mkdir', 'mkdirat'):
            d = joined('AT_FDCWD', args[0]) if name == 'mkdir' else joined(args[0], args[1])
            if d.startswith(prefix):
                created_dirs.setdefault(d, i)
        elif name == 'rename':
            src, dst = joined('AT_FDCWD', args[0]), joined('AT_FDCWD', args[1])
            if dst.endswith('/catalog.h5'):
                renames.append((i, src, dst))
        elif name in ('renameat', 'renameat2'):
            src, dst = joined(args[0], args[1]), joined(args[2], args[3])
            if dst.endswith('/catalog.h5'):
                renames.append((i, src, dst))

    def synced_between(path, after, before):
        return any(after < j < before for j in synced.get(os.path.normpath(path), []))

    problems = []
    if not renames:
        problems.append('no rename of catalog.h5.tmp over catalog.h5 in the trace')
    if not created_files:
        problems.append('no swap file (*.swp) created in the trace')
    checked = 0
    for at, tmp, catalog in renames:
        for f, made in created_files.items():
            if made > at:
                continue
            checked += 2
            if not synced_between(f, made, at):
                problems.append(f'swap file {f} was not fsynced before the catalog rename (trace event {at})')
            if not synced_between(os.path.dirname(f), made, at):
                problems.append(f'directory {os.path.dirname(f)} was not fsynced after {f} was created and before '
                                f'the catalog rename')
        for d, made in created_dirs.items():
            if made > at:
                continue
            checked += 1
            if not synced_between(os.path.dirname(d), made, at):
                problems.append(f'{os.path.dirname(d)} was not fsynced after directory {d} was made and before the '
                                f'catalog rename')
        checked += 2
        if not synced_between(tmp, -1, at):
            problems.append(f'the catalog {tmp} was not fsynced before it was renamed')
        if not synced_between(os.path.dirname(catalog), at, 1 << 62):
            problems.append(f'the catalog directory {os.path.dirname(catalog)} was not fsynced after the rename')
    print(f'{len(renames)} catalog commits, {len(created_files)} swap files, {len(created_dirs)} directories made; '
          f'{checked} durability conditions checked')
    for p in problems:
        print('MISSING:', p)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
