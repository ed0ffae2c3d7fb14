"""Opening a cache while another process is still creating it.

DataLoader workers, a `cachewatch build` worker or the dashboard may open a root by its path
alone (no max_size: the stored one) while the process that creates it has made its
``.cachewatch/`` but not yet committed its limits. Such an opener waits for the creator instead
of failing with "no max_size yet". The creator here is a real process stopped (SIGSTOP, by the
cache's own fault point) between making the root and setting the limits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from cachewatch.engine import Cache
from cachewatch.engine.errors import CacheError, CacheRootError

from tests.support.helpers import start_stopped_at

from .consistency import assert_index_matches_files

MiB = 1024 * 1024


def _tree(root: Path) -> list[str]:
    """The files under ``root``, less SQLite's own -wal/-shm (a closing reader checkpoints a WAL)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.name.endswith(("-wal", "-shm")))


def _creator_stopped_before_limits(root: Path, max_size: str) -> subprocess.Popen[bytes]:
    code = (
        "from cachewatch.engine import Cache\n"
        f"c = Cache({str(root)!r}, max_size={max_size!r}, sweep=False)\n"
        "c.put('from-creator', b'c' * 5000)\n"
        "c.close()\n"
    )
    proc = start_stopped_at(code, "open_before_limits")
    assert (root / ".cachewatch").is_dir()  # the root is made; its limits are not
    return proc


def test_an_opener_without_max_size_waits_for_the_creator(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    creator = _creator_stopped_before_limits(root, "3MiB")
    try:
        resume = threading.Timer(0.5, os.kill, (creator.pid, signal.SIGCONT))
        resume.start()
        with Cache(root, sweep=False) as opener:  # no max_size: the creator's, once it has set it
            assert opener.max_bytes == 3 * MiB
            opener.put("from-opener", b"o" * 3000)
        resume.join()
        assert creator.wait(timeout=60) == 0
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.wait()
    with Cache(root, sweep=False) as again:
        assert again.read("from-creator") == b"c" * 5000
        assert again.read("from-opener") == b"o" * 3000
        assert again.stats().max_bytes == 3 * MiB
    assert_index_matches_files(root)


def test_an_abandoned_creation_is_reported_after_the_wait(tmp_path: Path) -> None:
    """The creator killed before it set the limits: the opener says so once its wait is over
    (bounded by its wait_timeout), and changes nothing; an opener with a max_size then creates it."""
    root = tmp_path / "cache"
    creator = _creator_stopped_before_limits(root, "3MiB")
    creator.kill()
    creator.wait()
    before = _tree(root)
    with pytest.raises(CacheError, match=r"has no max_size yet \(its \.cachewatch/ exists but no process set the limits within 0\.3s\); pass max_size"):
        Cache(root, sweep=False, wait_timeout=0.3)
    assert _tree(root) == before
    with Cache(root, max_size="2MiB", sweep=False) as cache:
        cache.put("k", b"v" * 100)
        assert cache.max_bytes == 2 * MiB
    assert_index_matches_files(root)


def test_a_broken_index_is_reported_at_once_not_waited_for(tmp_path: Path) -> None:
    """Waiting is only for a creation under way: a file that is not an index is the normal error."""
    root = tmp_path / "cache"
    Cache(root, max_size="1MiB", sweep=False).close()
    db = root / ".cachewatch" / "index.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"this is not a SQLite database, just some bytes" * 100)
    with pytest.raises(CacheRootError, match="cannot be read"):
        Cache(root, sweep=False)
    assert db.read_bytes().startswith(b"this is not a SQLite database")  # left as it was
