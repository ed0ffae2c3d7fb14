"""Finding files open for writing under the root, from /proc, with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cachewatch.engine.watch.openfiles import find_open_writers, process_tree

from .conftest import write

HOLD = """
import mmap, os, sys, time
mode = sys.argv[2]
if mode == 'mmap':
    fd = os.open(sys.argv[1], os.O_RDWR)
    m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)  # only the mapping is left, no descriptor
else:
    f = open(sys.argv[1], {'write': 'ab', 'read': 'rb', 'rw': 'r+b'}[mode])
print('ready', flush=True)
time.sleep(60)
"""


def _hold(path: Path, mode: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def _id(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def test_writers_readers_and_shared_maps(root: Path, outside: Path) -> None:
    files = {m: write(root / "d" / f"{m}.bin", 4096) for m in ("write", "read", "rw", "mmap")}
    elsewhere = write(outside / "x.bin", 10)
    procs = [_hold(p, m) for m, p in files.items()] + [_hold(elsewhere, "write")]
    try:
        found = find_open_writers(os.path.realpath(root))
        assert _id(files["write"]) in found and _id(files["rw"]) in found and _id(files["mmap"]) in found
        assert _id(files["read"]) not in found
        assert _id(elsewhere) not in found  # only files under the root are looked at
        assert found.processes > 0
        # restricted to one process tree: only that process's files
        only = find_open_writers(os.path.realpath(root), lambda: process_tree(procs[1].pid))
        assert not only.inodes
        only = find_open_writers(os.path.realpath(root), [procs[0].pid])
        assert only.inodes == {_id(files["write"])}
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert not find_open_writers(os.path.realpath(root)).inodes


def test_process_tree_includes_children() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import subprocess,sys,time; c=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); print(c.pid, flush=True); time.sleep(60)"],
                         stdout=subprocess.PIPE, text=True)
    try:
        child = int(p.stdout.readline())  # type: ignore[union-attr]
        tree = process_tree(p.pid)
        assert p.pid in tree and child in tree
        assert process_tree(2**22 + 12345) == []
    finally:
        os.kill(child, 9)
        p.kill()
        p.wait()
