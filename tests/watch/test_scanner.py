"""The reconciling scan: the same answer as walking the tree, never through a symlink, robust to changes mid-scan."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from cachewatch.engine.watch.filters import PathFilter
from cachewatch.engine.watch.scanner import RootIdentity, Scanner
from cachewatch.engine.watch.tree import FileIndex

from .conftest import tree_bytes, write


def _rid(root: Path) -> RootIdentity:
    st = os.stat(root)
    return RootIdentity(os.path.realpath(root), st.st_dev, st.st_ino)


def _files(idx: FileIndex) -> dict[str, int]:
    return {f.rel_path: f.size_bytes for f in idx.iter_files()}


def _populate(root: Path, outside: Path) -> None:
    for d in range(12):
        for i in range(7):
            write(root / f"{d:02x}" / f"sub{i % 2}" / f"f{i}.bin", 100 * d + i)
    write(root / "top.bin", 5)
    write(outside / "big.bin", 10_000)
    os.symlink(outside, root / "link_dir")
    os.symlink(outside / "big.bin", root / "link_file")
    os.mkfifo(root / "fifo")
    for d in ("03", "07/sub1"):  # also deep down, where worker processes do the listing
        os.symlink(outside, root / d / "link_dir")
        os.symlink(outside / "big.bin", root / d / "link_file")


@pytest.mark.parametrize("workers", [0, 2])
def test_scan_matches_the_tree_and_ignores_symlinks(root: Path, outside: Path, workers: int) -> None:
    _populate(root, outside)
    s = Scanner(_rid(root), PathFilter(), use_atime=True, workers=workers)
    s.parent_scans = False  # the workers list every subtree: their path is the one under test
    chunk, report = s.scan()
    idx = FileIndex.from_chunk(chunk)
    truth_bytes, truth_files = tree_bytes(root)
    assert (idx.size_bytes, idx.entries) == (truth_bytes, truth_files)
    assert (report.bytes, report.files) == (truth_bytes, truth_files)
    assert report.workers == (2 if workers else 0)
    assert report.symlinks == 6 and report.other == 1
    assert not any(p.startswith("link_dir") for p in _files(idx))
    idx.check()


def test_workers_and_in_process_agree_with_filters(root: Path, outside: Path) -> None:
    _populate(root, outside)
    write(root / "05" / "x.part", 77)
    f = PathFilter(include=("*.bin",), exclude=("01/", "*.part"))
    a = FileIndex.from_chunk(Scanner(_rid(root), f, True, workers=0).scan()[0])
    s = Scanner(_rid(root), f, True, workers=3)
    s.parent_scans = False
    b = FileIndex.from_chunk(s.scan()[0])
    assert _files(a) == _files(b)
    assert "top.bin" in _files(a) and not any(p.startswith("01/") for p in _files(a))
    assert not any(p.endswith(".part") for p in _files(a))


def test_directory_removed_mid_scan(root: Path, outside: Path) -> None:
    _populate(root, outside)
    removed: list[str] = []

    def on_dir(rel: str) -> None:
        # after the first directory, remove another one not visited yet
        if not removed:
            victim = "0b" if not rel.startswith("0b") else "00"
            shutil.rmtree(root / victim)
            removed.append(victim)

    chunk, report = Scanner(_rid(root), PathFilter(), True, workers=0).scan(on_dir=on_dir)
    idx = FileIndex.from_chunk(chunk)
    assert removed and report.vanished >= 1
    assert (idx.size_bytes, idx.entries) == tree_bytes(root)
    assert not any(p.startswith(removed[0] + "/") for p in _files(idx))


def test_directory_swapped_for_a_symlink_mid_scan_is_not_entered(root: Path, outside: Path) -> None:
    _populate(root, outside)
    for i in range(50):
        write(outside / "deep" / f"o{i}", 1000)
    swapped: list[str] = []

    def on_dir(rel: str) -> None:
        if not swapped:
            victim = "0a" if not rel.startswith("0a") else "02"
            shutil.rmtree(root / victim)
            os.symlink(outside / "deep", root / victim)  # same name, now a symlink out of the root
            swapped.append(victim)

    chunk, _ = Scanner(_rid(root), PathFilter(), True, workers=0).scan(on_dir=on_dir)
    idx = FileIndex.from_chunk(chunk)
    assert swapped
    assert not any(p.startswith(swapped[0] + "/") for p in _files(idx))
    assert (idx.size_bytes, idx.entries) == tree_bytes(root)


def test_scan_survives_a_tree_changing_under_it(root: Path) -> None:
    # Real concurrent churn while parallel workers scan: no crash, and a rescan when quiet is exact.
    for d in range(16):
        for i in range(40):
            write(root / f"d{d}" / f"f{i}", 10 + i)
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            d = root / f"d{n % 16}"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(exist_ok=True)
            for i in range(5):
                (d / f"g{i}").write_bytes(b"y" * i)
            n += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        s = Scanner(_rid(root), PathFilter(), True, workers=2)
        for _ in range(5):
            chunk, report = s.scan()
            FileIndex.from_chunk(chunk).check()
    finally:
        stop.set()
        t.join()
    chunk, _ = s.scan()
    idx = FileIndex.from_chunk(chunk)
    assert (idx.size_bytes, idx.entries) == tree_bytes(root)


def test_root_replaced_is_refused(root: Path, tmp_path: Path) -> None:
    rid = _rid(root)
    root.rename(tmp_path / "moved")
    root.mkdir()
    with pytest.raises(OSError):
        Scanner(rid, PathFilter(), True, workers=0).scan()


def test_other_filesystem_inside_the_root_is_skipped(root: Path, tmp_path: Path) -> None:
    mnt = root / "mnt"
    mnt.mkdir()
    if os.system(f"mount -t tmpfs -o size=1m tmpfs {mnt} 2>/dev/null") != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        write(mnt / "elsewhere.bin", 1234)
        write(root / "here.bin", 10)
        chunk, report = Scanner(_rid(root), PathFilter(), True, workers=0).scan()
        assert _files(FileIndex.from_chunk(chunk)) == {"here.bin": 10}
        assert report.other_fs == 1
    finally:
        os.system(f"umount {mnt}")


def test_walker_never_opens_a_symlinked_directory(root: Path, outside: Path) -> None:
    from cachewatch.engine.watch._scan_worker import Walker

    write(outside / "o.bin", 1)
    os.symlink(outside, root / "l")
    (root / "d").mkdir()
    w = Walker(os.stat(root).st_dev, True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert w.open_child(fd, "l") == -1
        assert w.open_rel(fd, "l") == -1
        child = w.open_child(fd, "d")
        assert child >= 0
        os.close(child)
    finally:
        os.close(fd)


def test_worker_process_protocol_and_symlinks(root: Path, outside: Path) -> None:
    # The real worker script, as the scanner runs it: subtrees in on stdin, one chunk each out.
    import json
    import struct
    import subprocess
    import sys

    from cachewatch.engine.watch import scanner as sc
    from cachewatch.engine.watch._scan_worker import ScanChunk

    _populate(root, outside)
    spec = json.dumps({"root": os.path.realpath(root), "dev": os.stat(root).st_dev, "ino": os.stat(root).st_ino,
                       "use_atime": True, "regexes": None, "has_include": False})
    out = subprocess.run([sys.executable, "-I", sc._WORKER, spec], input=b"03\0" + b"07\0", capture_output=True, check=True).stdout
    chunks, pos = [], 0
    while pos < len(out):
        (n,) = struct.unpack_from("<Q", out, pos)
        chunks.append(ScanChunk.from_bytes(out[pos + 8 : pos + 8 + n]))
        pos += 8 + n
    assert len(chunks) == 2
    idx = FileIndex.from_chunk(sc.merge_chunks(chunks))
    want = {p: s for p, s in _files(FileIndex.from_chunk(Scanner(_rid(root), PathFilter(), True, workers=0).scan()[0])).items()
            if p.startswith(("03/", "07/"))}
    assert _files(idx) == want
    assert sum(c.symlinks for c in chunks) == 4
