"""A new writer's first put: its liveness token file and journal are made outside the
reservation mutex, and a token file is never lost to another process's sweep of dead ones.

Real processes: a writer stopped (SIGSTOP, by the cache's own fault point) just after making
its token file, then killed with -9; a real sweeper process asking about every token file while
this one makes new ones.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from pathlib import Path

from cachewatch.engine import Cache
from cachewatch.engine.cache.locks import OwnerLock, lock_held

from tests.support.helpers import start_stopped_at

from .consistency import assert_index_matches_files

KiB = 1024


def test_a_writer_stopped_while_making_its_token_holds_up_no_other_writer(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    Cache(root, max_size="256KiB", sweep=False).close()
    code = (
        "from cachewatch.engine import Cache\n"
        f"c = Cache({str(root)!r}, sweep=False)\n"
        "c.put('from-stopped', b's' * 5000)\n"
    )
    stopped = start_stopped_at(code, "writer_after_token")
    try:
        tokens = [p.name for p in (root / ".cachewatch" / "owners").iterdir()]
        assert len(tokens) == 1  # its token file is there, locked; it has no ledger slot yet
        done = threading.Event()

        def put_many() -> None:
            with Cache(root, sweep=False) as other:
                for i in range(40):  # 320 KiB into a 256 KiB cache: reservations, commits, evictions
                    other.put(f"k{i}", bytes([i]) * 8 * KiB)
            done.set()

        worker = threading.Thread(target=put_many, daemon=True)
        worker.start()
        # Under the mutex (as it was made before), the stopped writer would hold every other one here.
        assert done.wait(30), "another writer's puts waited on the stopped one"
        worker.join()
    finally:
        os.kill(stopped.pid, signal.SIGKILL)
        stopped.wait(30)
    with Cache(root, sweep=False) as after:  # its start-up recovery forgets the dead token
        assert list((root / ".cachewatch" / "owners").iterdir()) == []
        assert "from-stopped" not in after
        assert "k39" in after
    assert_index_matches_files(root)


def _sweep_tokens(owners: str, stop) -> None:  # noqa: ANN001 - mp plumbing
    # What a start-up recovery does to each token file: a free one is a dead owner's, removed.
    while not stop.is_set():
        for name in os.listdir(owners):
            lock_held(os.path.join(owners, name), remove_if_free=True)


def test_a_new_token_file_is_never_swept_as_a_dead_owners(tmp_path: Path) -> None:
    owners = tmp_path / "owners"
    owners.mkdir()
    stop = mp.get_context("fork").Event()
    sweeper = mp.get_context("fork").Process(target=_sweep_tokens, args=(str(owners), stop))
    sweeper.start()
    try:
        lost = 0
        for _ in range(3000):
            lock = OwnerLock(owners)
            # The sweeper can find the file between its creation and the flock: the lock must
            # count only for a file still there, or other processes take this live owner for dead.
            if not lock_held(lock.path):
                lost += 1
            lock.release()
        assert lost == 0, f"{lost} of 3000 new token files were removed while their owner lived"
    finally:
        stop.set()
        sweeper.join(30)
