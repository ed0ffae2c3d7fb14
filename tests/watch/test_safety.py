"""Eviction in a directory we do not own: symlinks, renames, files being written, directories moving under us."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cachewatch.engine.watch import WatchedDirectory
from cachewatch.engine.watch.enforcer import Enforcer
from cachewatch.engine.watch.scanner import RootIdentity

from tests.support.helpers import wait_for
from .conftest import tree_bytes, write


def _rid(root: Path) -> RootIdentity:
    st = os.stat(root)
    return RootIdentity(os.path.realpath(root), st.st_dev, st.st_ino)


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and not p.is_symlink()}


class ListSource:
    """A fixed candidate list, as a stale index would give it: the enforcer must re-check everything itself."""

    def __init__(self, items: list[tuple[str, bytes, int]], on_unlink=None) -> None:
        self.items = [(d, n, s, float(i)) for i, (d, n, s) in enumerate(items)]
        self.unlinked: list[tuple[str, bytes]] = []
        self.on_unlink = on_unlink

    def size_bytes(self) -> int:
        return sum(s for _, _, s, _ in self.items)

    def candidates(self, count: int):
        return list(self.items)[:count]

    def after_unlink(self, rel_dir: str, name: bytes, dir_fd: int) -> None:
        self.unlinked.append((rel_dir, name))
        if self.on_unlink:
            self.on_unlink(rel_dir, name)


def test_symlinks_out_of_the_root_are_neither_followed_nor_deleted(root: Path, outside: Path, state: Path) -> None:
    for i in range(5):
        write(outside / "data" / f"o{i}.bin", 1000)
    write(outside / "single.bin", 5000)
    before = _snapshot(outside)
    for i in range(10):
        write(root / "s" / f"f{i}.bin", 1000)
    os.symlink(outside / "data", root / "s" / "linkdir")
    os.symlink(outside / "single.bin", root / "s" / "linkfile")
    os.symlink(outside / "data", root / "toplink")
    with WatchedDirectory(root, "20KB", target_size=1, min_age=0, state_dir=state, scan_workers=0) as w:
        assert w.stats().size_bytes == 10_000  # the links' targets do not count
        w.evict(to=0)
        assert w.stats().size_bytes == 0
    assert _snapshot(outside) == before
    assert (root / "s" / "linkdir").is_symlink() and (root / "s" / "linkfile").is_symlink()
    assert (root / "toplink").is_symlink()
    assert not list((root / "s").glob("f*.bin"))


def test_directory_swapped_for_a_symlink_before_the_unlink(root: Path, outside: Path) -> None:
    for i in range(5):
        write(root / "a" / f"f{i}", 100)
        write(outside / f"f{i}", 100)
    before = _snapshot(outside)
    source = ListSource([("a", f"f{i}".encode(), 100) for i in range(5)])
    (root / "a").rename(root / "a_old")
    os.symlink(outside, root / "a")  # same name, now pointing out of the root
    out = Enforcer(_rid(root), min_age_s=0).run_pass(source, 0, "manual", dry_run=False)
    assert out.report.files == 0 and out.skipped_other == 5
    assert _snapshot(outside) == before
    assert len(list((root / "a_old").iterdir())) == 5


def test_directory_walk_refuses_symlinks_at_every_level(root: Path, outside: Path) -> None:
    (outside / "x").mkdir()
    (root / "real" / "deeper").mkdir(parents=True)
    os.symlink(outside, root / "link")
    os.symlink(outside / "x", root / "real" / "link")
    e = Enforcer(_rid(root), min_age_s=0)
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    cache: dict[str, int] = {}
    try:
        assert e._dir_fd(rfd, "link", cache) == -1
        assert e._dir_fd(rfd, "link/x", cache) == -1
        assert e._dir_fd(rfd, "real/link", cache) == -1
        assert e._dir_fd(rfd, "real/deeper", cache) >= 0
    finally:
        for fd in cache.values():
            if fd >= 0:
                os.close(fd)
        os.close(rfd)


def test_directory_moved_out_of_the_root_mid_pass(root: Path, outside: Path) -> None:
    for i in range(6):
        write(root / "a" / f"f{i}", 100)

    def move_out(rel_dir: str, name: bytes) -> None:
        if not (outside / "a").exists():
            (root / "a").rename(outside / "a")  # the enforcer still holds an fd on this directory

    source = ListSource([("a", f"f{i}".encode(), 100) for i in range(6)], on_unlink=move_out)
    out = Enforcer(_rid(root), min_age_s=0).run_pass(source, 0, "manual", dry_run=False)
    assert out.report.files == 1  # the first went while the directory was inside
    assert sorted(p.name for p in (outside / "a").iterdir()) == [f"f{i}" for i in range(1, 6)]


def test_inside_root_check_follows_the_directory(root: Path, outside: Path) -> None:
    (root / "d").mkdir()
    e = Enforcer(_rid(root), min_age_s=0)
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    dfd = os.open(root / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert e._inside_root(dfd, rfd)
        (root / "d").rename(outside / "d")
        assert not e._inside_root(dfd, rfd)
    finally:
        os.close(dfd)
        os.close(rfd)


def test_file_replaced_by_a_symlink_is_not_deleted(root: Path, outside: Path) -> None:
    write(root / "x", 100)
    write(outside / "precious", 100)
    source = ListSource([("", b"x", 100)])
    os.unlink(root / "x")
    os.symlink(outside / "precious", root / "x")
    out = Enforcer(_rid(root), min_age_s=0).run_pass(source, 0, "manual", dry_run=False)
    assert out.report.files == 0 and (root / "x").is_symlink() and (outside / "precious").exists()


def test_rename_over_another_file_keeps_the_count_right(root: Path, state: Path) -> None:
    write(root / "a.bin", 300)
    write(root / "b.bin", 500)
    with WatchedDirectory(root, "1MB", state_dir=state, scan_workers=0) as w:
        assert (w.stats().size_bytes, w.stats().entries) == (800, 2)
        os.replace(root / "a.bin", root / "b.bin")
        wait_for(lambda: (w.stats().size_bytes, w.stats().entries) == (300, 1), what="rename-over reflected")
        write(root / "tmp.part", 700)
        os.replace(root / "tmp.part", root / "c.bin")  # write-then-rename, as careful writers do
        wait_for(lambda: (w.stats().size_bytes, w.stats().entries) == (1000, 2), what="rename reflected")
        w.check_index()


WRITER = """
import sys, time
f = open(sys.argv[1], 'wb')
f.write(b'w' * 1000); f.flush()
print('open', flush=True)
time.sleep(60)
"""


def test_a_file_open_for_writing_is_never_deleted(root: Path, state: Path) -> None:
    for i in range(5):
        write(root / f"old{i}", 1000)
    reader_target = write(root / "being_read", 1000)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root / "being_written")], stdout=subprocess.PIPE, text=True)
    reader = open(reader_target, "rb")  # open for reading only: no protection needed, unlink is safe for readers
    try:
        assert proc.stdout.readline().strip() == "open"
        with WatchedDirectory(root, "3KB", target_size=0, min_age=0, state_dir=state, scan_workers=0) as w:
            wait_for(lambda: w.stats().size_bytes <= 1000, what="eviction down to the open file")
            assert (root / "being_written").exists()
            assert not (root / "being_read").exists() and not any(root.glob("old*"))
            evictions = w.events.read(kinds=("eviction",))
            assert evictions and evictions[0].get("skipped_open") == 1
            assert "being_written" not in evictions[0].get("keys")
            proc.kill()
            proc.wait()
            w.evict(to=0)
            assert not (root / "being_written").exists()
    finally:
        proc.kill()
        proc.wait()
        reader.close()


def test_writer_restricted_to_a_process_set(root: Path, state: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root / "w")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        # the caller says only pid 1's tree matters: the open file of our writer is not protected then
        w = WatchedDirectory(root, "1KB", target_size=0, min_age=0, state_dir=state, scan_workers=0, writer_pids=[1])
        with w:
            w.evict(to=0)
        assert not (root / "w").exists()
    finally:
        proc.kill()
        proc.wait()


def test_recently_changed_files_are_kept(root: Path, state: Path) -> None:
    for i in range(4):
        write(root / f"f{i}", 1000)
    with WatchedDirectory(root, "2KB", target_size=0, min_age="1h", state_dir=state, scan_workers=0) as w:
        r = w.evict()
        assert r.files == 0 and r.pinned_skipped == 4
        assert len(list(root.iterdir())) == 4
        wait_for(lambda: any(a.kind == "eviction_blocked" for a in w.stats().alerts), what="blocked alert")


def test_dry_run_reports_and_deletes_nothing(root: Path, state: Path) -> None:
    for i in range(10):
        write(root / f"f{i}", 1000)
    before = _snapshot(root)
    with WatchedDirectory(root, "5KB", min_age=0, dry_run=True, state_dir=state, scan_workers=0) as w:
        wait_for(lambda: w.stats().would_evict_files > 0, what="dry-run report")
        s = w.stats()
        assert s.would_evict_files == 6 and s.would_evict_bytes == 6000  # down to the 4.5 KB target
        assert s.evicted_files == 0
    assert _snapshot(root) == before
    kinds = [json.loads(line)["kind"] for line in (state / "events.jsonl").read_text().splitlines()]
    assert "watch.dry_run" in kinds and "eviction" not in kinds


def test_nothing_outside_the_root_changes_under_churn(root: Path, outside: Path, state: Path) -> None:
    # Symlinks appearing and directories swapping while eviction runs hard: outside stays byte-identical.
    for i in range(30):
        write(outside / "o" / f"f{i}", 500)
    before = _snapshot(outside)
    with WatchedDirectory(root, "4KB", target_size=0, min_age=0, state_dir=state, scan_workers=0):
        for round_ in range(15):
            d = root / f"d{round_ % 3}"
            if d.is_symlink():
                d.unlink()
            elif d.exists():
                d.rename(root / f"gone{round_}")
            if round_ % 2:
                os.symlink(outside / "o", d)
            else:
                for i in range(10):
                    write(d / f"f{i}", 500)
            time.sleep(0.05)
        wait_for(lambda: tree_bytes(root)[0] <= 4000, what="enforcement to settle")
    assert _snapshot(outside) == before
