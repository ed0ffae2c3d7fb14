"""A running WatchedDirectory: live sizes from events, limits, stats, events file, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cachewatch.engine import WatchError, WatchStats
from cachewatch.engine.errors import CachewatchError
from cachewatch.engine.watch import WatchedDirectory, default_state_dir

from tests.support.helpers import wait_for
from .conftest import tree_bytes, write


def _matches_disk(w: WatchedDirectory, root: Path) -> bool:
    s = w.stats()
    return (s.size_bytes, s.entries) == tree_bytes(root)


def test_events_keep_the_size_live(root: Path, outside: Path, state: Path) -> None:
    write(root / "pre" / "a", 10)
    with WatchedDirectory(root, "1GB", state_dir=state, scan_workers=0) as w:
        assert (w.stats().size_bytes, w.stats().entries) == (10, 1)
        steps = [
            lambda: write(root / "n1" / "n2" / "n3" / "deep.bin", 1234),  # nested directories made after the start
            lambda: (root / "pre" / "a").write_bytes(b"z" * 5000),  # grows in place
            lambda: os.truncate(root / "pre" / "a", 7),  # shrinks
            lambda: (root / "n1").rename(root / "moved"),  # a directory moves inside the root
            lambda: write(root / "moved" / "n2" / "more", 99),
            lambda: shutil.move(str(root / "moved" / "n2"), str(outside / "n2")),  # moves out: gone
            lambda: write(outside / "incoming" / "x", 321) and shutil.move(str(outside / "incoming"), str(root / "incoming")),
            lambda: (root / "pre" / "a").unlink(),
            lambda: shutil.rmtree(root / "incoming"),
        ]
        for step in steps:
            step()
            wait_for(lambda: _matches_disk(w, root), timeout=10, what=f"index to match the disk after {step}")
            w.check_index()
        assert w.stats().scans == 1  # events alone did it, no rescan


def test_include_and_exclude_are_live(root: Path, state: Path) -> None:
    with WatchedDirectory(root, "1GB", include="*.jpg", exclude="tmp/", state_dir=state, scan_workers=0) as w:
        write(root / "a.jpg", 100)
        write(root / "b.png", 1000)
        write(root / "tmp" / "c.jpg", 10000)
        write(root / "d" / "e.jpg", 1)
        wait_for(lambda: w.stats().entries == 2, what="two counted files")
        assert w.stats().size_bytes == 101
        assert sorted(f.rel_path for f in w.files()) == ["a.jpg", "d/e.jpg"]


def test_eviction_down_to_target_in_lru_order(root: Path, state: Path) -> None:
    for i in range(10):
        write(root / f"f{i}", 1000)
    with WatchedDirectory(root, "20KB", min_age=0, state_dir=state, scan_workers=0) as w:
        # use some files: they become the most recently used
        for i in (0, 1, 2):
            (root / f"f{i}").read_bytes()
        wait_for(lambda: [f.rel_path for f in w.files()][-3:] == ["f0", "f1", "f2"], what="opens to count as use")
        for i in range(10, 25):
            write(root / f"f{i}", 1000)
        wait_for(lambda: w.stats().evicted_files > 0 and w.stats().size_bytes <= 20_000, what="eviction")
        assert tree_bytes(root)[0] <= 20_000
        s = w.stats()
        assert s.size_bytes == tree_bytes(root)[0]
        for i in (0, 1, 2):
            assert (root / f"f{i}").exists(), "recently read files went before older ones"
        log = w.eviction_log()
        assert log[0].reason == "max" and log[0].size_before > 20_000 and log[0].size_after == 18_000
        ev = json.loads((state / "events.jsonl").read_text().splitlines()[1])
        for field in ("reason", "files", "bytes", "size_before", "size_after", "keys", "max_bytes", "target_bytes"):
            assert field in ev
        assert ev["kind"] == "eviction" and ev["keys"] == [f"f{i}" for i in range(3, 3 + ev["files"])]


def test_over_max_at_start_is_brought_down_to_target(root: Path, state: Path) -> None:
    for i in range(30):
        write(root / "s" / f"f{i:02d}", 1000)
    with WatchedDirectory(root, "10KB", target_ratio=0.5, min_age=0, state_dir=state, scan_workers=0) as w:
        wait_for(lambda: w.stats().size_bytes <= 5000, what="start-up eviction")
        assert w.eviction_log()[-1].reason == "startup"
        assert tree_bytes(root) == (5000, 5)


def test_stats_snapshot_is_frozen_and_round_trips(root: Path, state: Path) -> None:
    write(root / "x", 10)
    with WatchedDirectory(root, "1MB", state_dir=state, scan_workers=0) as w:
        s = w.stats()
    assert isinstance(s, WatchStats)
    with pytest.raises(AttributeError):
        s.size_bytes = 1  # type: ignore[misc]
    back = WatchStats.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s
    assert s.max_bytes == 1_000_000 and s.target_bytes == 900_000 and s.used_bytes == 10
    assert s.access_source in ("atime", "mtime") and s.access_source_reason
    assert s.events_path == str(state / "events.jsonl") and s.state_dir == str(state)


def test_default_state_dir_is_outside_the_root(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    w = WatchedDirectory(root, "1MB", scan_workers=0)
    assert w.state_dir == default_state_dir(os.path.realpath(root))
    assert str(w.state_dir).startswith(str(tmp_path / "xdg" / "cachewatch" / "watch"))
    with w:
        pass
    assert (w.state_dir / "root.txt").read_text().strip() == os.path.realpath(root)
    assert (w.state_dir / "events.jsonl").exists()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"max_size": "0"}, "max_size"),
        ({"max_size": "1XB"}, "'1XB'"),
        ({"max_size": "1MB", "target_size": "2MB"}, "target_size"),
        ({"max_size": "1MB", "target_ratio": 1.5}, "target_ratio"),
        ({"max_size": "1MB", "min_age": "soon"}, "min_age"),
    ],
)
def test_bad_limits_are_one_line_errors(root: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(CachewatchError) as e:
        WatchedDirectory(root, **kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_bad_roots_are_refused(tmp_path: Path, root: Path) -> None:
    with pytest.raises(WatchError, match="does not exist"):
        WatchedDirectory(tmp_path / "nope", "1MB")
    write(tmp_path / "file", 1)
    with pytest.raises(WatchError, match="not a directory"):
        WatchedDirectory(tmp_path / "file", "1MB")
    os.symlink(root, tmp_path / "link")
    with pytest.raises(WatchError, match="symlink"):
        WatchedDirectory(tmp_path / "link", "1MB")
    with pytest.raises(WatchError, match="whole filesystem"):
        WatchedDirectory("/", "1MB")
    w = WatchedDirectory(root, "1MB", state_dir=root / ".state")
    with pytest.raises(WatchError, match="inside the watched root"):
        w.start()
    assert not (root / ".state").exists()


def test_one_enforcer_per_root(root: Path, state: Path) -> None:
    with WatchedDirectory(root, "1MB", state_dir=state, scan_workers=0):
        second = WatchedDirectory(root, "1MB", state_dir=state, scan_workers=0)
        with pytest.raises(WatchError, match=f"already watched \\(pid {os.getpid()}"):
            second.start()
        with pytest.raises(WatchError, match="already watched"):
            second.check_once()
    with WatchedDirectory(root, "1MB", state_dir=state, scan_workers=0):  # free again once stopped
        pass


@pytest.mark.parametrize("path", ["/usr", "/usr/lib", "/etc", "/var", "/proc", "/proc/1", "/home", "/tmp", "/opt", "/"])
def test_system_directories_are_refused_unless_explicitly_allowed(path: str, state: Path) -> None:
    with pytest.raises(WatchError) as e:
        WatchedDirectory(path, "1MB", state_dir=state)
    msg = str(e.value)
    assert "\n" not in msg and f"'{os.path.realpath(path)}'" in msg and "--allow-dangerous-root" in msg
    assert "system" in msg or "whole filesystem" in msg
    # the explicit flag lifts the refusal (constructing starts nothing: no scan, no deletion)
    assert WatchedDirectory(path, "1MB", state_dir=state, allow_dangerous_root=True).root.path == os.path.realpath(path)


def test_the_home_directory_and_every_directory_above_it_are_refused(tmp_path: Path, state: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "people" / "staff" / "alice"
    (home / ".cache" / "torch").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for refused, words in [(home, "is your home directory"), (home.parent, "holds your home directory"),
                           (tmp_path / "people", "holds your home directory")]:
        with pytest.raises(WatchError, match=words):
            WatchedDirectory(refused, "1MB", state_dir=state)
    # a cache inside the home, and a sibling of an ancestor, are what a watch is for
    assert WatchedDirectory(home / ".cache" / "torch", "1MB", state_dir=state)
    (tmp_path / "people" / "shared-cache").mkdir()
    assert WatchedDirectory(tmp_path / "people" / "shared-cache", "1MB", state_dir=state)
