"""The training's process tree, observed on real processes: workers, CPU, RSS, processes that vanish."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from cachewatch.engine.monitor import (
    ROLE_CHILD,
    ROLE_ROOT,
    ROLE_WORKER,
    MonitorError,
    ProcessTreeSampler,
    TreeSnapshot,
)

from tests.support.helpers import wait_for
from .conftest import Trees

MP_TREE = """
import multiprocessing as mp, os, sys, time

def work(stop):
    x = 0
    while not stop.is_set():
        x += 1  # a little real CPU, so cpu_percent has something to show
        if x % 100000 == 0:
            time.sleep(0.01)

if __name__ == "__main__":
    method, n, reap = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "reap"
    ctx = mp.get_context(method)
    stop = ctx.Event()
    procs = [ctx.Process(target=work, args=(stop,)) for _ in range(n)]
    for p in procs:
        p.start()
    print("children", *[p.pid for p in procs], flush=True)
    # Reap children that die (multiprocessing.active_children joins the finished ones), unless told not to.
    while True:
        time.sleep(0.05)
        if reap:
            mp.active_children()
"""


def _sample_until(sampler: ProcessTreeSampler, predicate, what: str) -> TreeSnapshot:
    return wait_for(lambda: (lambda s: s if predicate(s) else None)(sampler.sample()), timeout=30, what=what)  # type: ignore[return-value]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_children_are_the_workers(trees: Trees, method: str) -> None:
    root = trees.start(MP_TREE, method, "3", "reap")
    children = set(map(int, trees.read_line(root, "children")))
    sampler = ProcessTreeSampler(root.pid)
    snap = _sample_until(sampler, lambda s: set(s.worker_pids) == children, "3 workers")
    assert snap.root_alive and snap.root_pid == root.pid and snap.reason is None
    assert snap.worker_count == 3
    assert snap.worker_detection == "cmdline"
    assert snap.processes[0].pid == root.pid and snap.processes[0].role == ROLE_ROOT
    # the resource tracker (spawn, forkserver) and the fork server are in the tree but are not workers
    helpers = {p.pid for p in snap.processes if p.role == ROLE_CHILD}
    assert helpers.isdisjoint(children)
    if method != "fork":
        assert helpers, "spawn and forkserver start a resource tracker"
    assert all(p.rss_bytes and p.rss_bytes > 0 for p in snap.processes)
    assert snap.rss_bytes_total == sum(p.rss_bytes for p in snap.processes)
    time.sleep(0.3)
    later = sampler.sample()
    # CPU percent needs two samples of the same process: now every process has one
    assert all(p.cpu_percent is not None and p.cpu_percent >= 0 for p in later.processes)
    assert later.cpu_percent_total == pytest.approx(sum(p.cpu_percent for p in later.processes))
    assert sum(p.cpu_percent for p in later.processes if p.role == ROLE_WORKER) > 0  # they do spin
    assert TreeSnapshot.from_json(json.loads(json.dumps(later.to_json()))) == later


def test_first_sight_of_a_process_has_no_cpu_percent(trees: Trees) -> None:
    root = trees.start(MP_TREE, "fork", "1", "reap")
    trees.read_line(root, "children")
    sampler = ProcessTreeSampler(root.pid)
    first = sampler.sample()
    assert all(p.cpu_percent is None for p in first.processes)
    assert first.cpu_percent_total is None


DATALOADER = """
import sys, time
import torch
from torch.utils.data import DataLoader, Dataset

class Slow(Dataset):
    def __len__(self):
        return 1_000_000
    def __getitem__(self, i):
        time.sleep(0.005)
        return torch.zeros(2)

if __name__ == "__main__":
    loader = DataLoader(Slow(), batch_size=2, num_workers=2, persistent_workers=True, multiprocessing_context="fork")
    it = iter(loader)
    next(it)
    print("workers", *[w.pid for w in it._workers], flush=True)
    sys.stdin.read()
"""


def test_torch_dataloader_workers_are_found_by_name(trees: Trees) -> None:
    root = trees.start(DATALOADER)
    workers = set(map(int, trees.read_line(root, "workers")))
    assert len(workers) == 2
    sampler = ProcessTreeSampler(root.pid)
    snap = _sample_until(sampler, lambda s: set(s.worker_pids) == workers, "the 2 DataLoader workers")
    assert snap.worker_detection == "process_name"
    assert {p.name for p in snap.processes if p.role == ROLE_WORKER} == {"pt_data_worker"}
    assert all(p.rss_bytes and p.rss_bytes > 0 for p in snap.processes)
    # torch's pin-memory and other threads live in the root; the root is never a worker
    assert snap.root is not None and snap.root.role == ROLE_ROOT


RENAMED_WORKER = """
import ctypes, multiprocessing as mp, sys, threading, time
libc = ctypes.CDLL(None)
PR_SET_NAME = 15

def worker(ready):
    # torch names the worker's thread, then user code renames the process (setproctitle does this).
    named = threading.Event()
    def torch_named_thread():
        libc.prctl(PR_SET_NAME, b"pt_data_worker", 0, 0, 0)
        named.set()
        time.sleep(300)
    threading.Thread(target=torch_named_thread, daemon=True).start()
    named.wait()
    libc.prctl(PR_SET_NAME, b"my-loader", 0, 0, 0)
    ready.set()
    time.sleep(300)

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    worker_proc = ctx.Process(target=worker, args=(ready,))
    worker_proc.start()
    ready.wait(60)
    print("children", worker_proc.pid, flush=True)
    sys.stdin.read()
"""


def test_worker_found_by_thread_name_when_the_process_was_renamed(trees: Trees) -> None:
    root = trees.start(RENAMED_WORKER)
    (worker,) = map(int, trees.read_line(root, "children"))
    sampler = ProcessTreeSampler(root.pid)
    snap = _sample_until(sampler, lambda s: s.worker_pids == (worker,) and s.worker_detection == "thread_name", "the renamed worker")
    assert [p.name for p in snap.processes if p.role == ROLE_WORKER] == ["my-loader"]


PLAIN_CHILDREN = """
import subprocess, sys
py = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
sh = subprocess.Popen(["sleep", "300"])
print("children", py.pid, sh.pid, flush=True)
sys.stdin.read()
"""


def test_fallback_counts_python_children_only(trees: Trees) -> None:
    root = trees.start(PLAIN_CHILDREN)
    py, sh = map(int, trees.read_line(root, "children"))
    sampler = ProcessTreeSampler(root.pid)
    snap = _sample_until(sampler, lambda s: {py, sh} <= set(s.pids), "both children")
    assert snap.worker_detection == "python_children"
    assert snap.worker_pids == (py,)
    assert {p.pid: p.role for p in snap.processes}[sh] == ROLE_CHILD


def test_no_children_no_workers(trees: Trees) -> None:
    root = trees.start("import sys; print('up', flush=True); sys.stdin.read()")
    trees.read_line(root, "up")
    snap = ProcessTreeSampler(root.pid).sample()
    assert snap.pids == (root.pid,) and snap.worker_count == 0 and snap.worker_detection == "none"


def test_killed_worker_vanishes_and_is_reported(trees: Trees) -> None:
    root = trees.start(MP_TREE, "fork", "3", "reap")
    children = list(map(int, trees.read_line(root, "children")))
    sampler = ProcessTreeSampler(root.pid)
    _sample_until(sampler, lambda s: s.worker_count == 3, "3 workers")
    victim = children[0]
    os.kill(victim, signal.SIGKILL)
    snap = _sample_until(sampler, lambda s: victim not in s.pids, "the killed worker to disappear")
    assert victim in snap.vanished_pids
    assert snap.worker_count == 2 and set(snap.worker_pids) == set(children[1:])
    assert sampler.sample().vanished_pids == ()  # reported once


def test_unreaped_dead_worker_is_a_zombie_not_a_worker(trees: Trees) -> None:
    root = trees.start(MP_TREE, "fork", "2", "noreap")
    children = list(map(int, trees.read_line(root, "children")))
    sampler = ProcessTreeSampler(root.pid)
    _sample_until(sampler, lambda s: s.worker_count == 2, "2 workers")
    os.kill(children[0], signal.SIGKILL)
    snap = _sample_until(
        sampler, lambda s: any(p.pid == children[0] and p.status == psutil.STATUS_ZOMBIE for p in s.processes), "a zombie"
    )
    zombie = next(p for p in snap.processes if p.pid == children[0])
    assert zombie.role == ROLE_CHILD and zombie.rss_bytes is None and zombie.cpu_percent is None
    assert snap.worker_pids == (children[1],)


CHURN = """
import subprocess, sys, threading
print("up", flush=True)
def churn():
    while True:
        subprocess.run(["sleep", "0.02"])
for _ in range(2):
    threading.Thread(target=churn, daemon=True).start()
sys.stdin.read()
"""


@pytest.mark.parametrize("full_walk_every", [1, 10_000])  # a full walk each time, or newborns only
def test_processes_that_vanish_mid_walk_are_normal(trees: Trees, full_walk_every: int) -> None:
    root = trees.start(CHURN)
    trees.read_line(root, "up")
    sampler = ProcessTreeSampler(root.pid, full_walk_every=full_walk_every)
    saw_short_lived = False
    samples = 0
    deadline = time.monotonic() + 20
    while (samples < 150 or not saw_short_lived) and time.monotonic() < deadline:
        snap = sampler.sample()  # must never raise while children come and go
        samples += 1
        assert snap.root_alive and snap.processes[0].pid == root.pid
        assert len(set(snap.pids)) == len(snap.pids)
        saw_short_lived = saw_short_lived or bool(snap.vanished_pids)
        time.sleep(0.002)
    assert saw_short_lived, "no churning child was ever seen, then seen gone"


def test_root_exit_and_restart_with_set_root(trees: Trees) -> None:
    first = trees.start(MP_TREE, "fork", "2", "reap")
    kids = set(map(int, trees.read_line(first, "children")))
    sampler = ProcessTreeSampler(first.pid)
    _sample_until(sampler, lambda s: s.worker_count == 2, "2 workers")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    gone = sampler.sample()
    assert not gone.root_alive and gone.processes == () and gone.worker_count == 0
    assert "has exited" in gone.reason and str(first.pid) in gone.reason
    assert kids | {first.pid} <= set(gone.vanished_pids)
    assert sampler.sample().vanished_pids == ()
    # the supervisor restarts the training: the sampler follows the new root
    second = trees.start(MP_TREE, "fork", "1", "reap")
    (kid,) = map(int, trees.read_line(second, "children"))
    sampler.set_root(second.pid)
    snap = _sample_until(sampler, lambda s: s.worker_pids == (kid,), "the new tree")
    assert snap.root_alive and snap.root_pid == second.pid
    assert sampler.pids() == snap.pids


def test_no_root_and_missing_root() -> None:
    sampler = ProcessTreeSampler()
    snap = sampler.sample()
    assert snap.root_pid is None and not snap.root_alive and snap.reason == "no training process to watch"
    pid = 2**22 + 12345  # above the default pid_max
    while psutil.pid_exists(pid):
        pid += 1
    sampler.set_root(pid)
    snap = sampler.sample()
    assert not snap.root_alive and "does not exist" in snap.reason


@pytest.mark.parametrize("bad", [0, -5, "123", 1.5, True])
def test_bad_root_pid_is_a_clear_error(bad) -> None:
    with pytest.raises(MonitorError, match="not a process id"):
        ProcessTreeSampler(bad)


def test_reused_pid_is_a_new_process() -> None:
    # A Process object kept from before is only reused when pid and start time match;
    # the sampler's own process has a steady identity, so two samples share the CPU baseline.
    sampler = ProcessTreeSampler(os.getpid())
    sampler.sample()
    assert sampler.sample().processes[0].cpu_percent is not None


LATE_WORKERS = """
import multiprocessing as mp, sys, time
def work():
    time.sleep(300)
if __name__ == "__main__":
    print("up", flush=True)
    sys.stdin.readline()  # the test says when: after the sampler has seen the lone root
    kids = [mp.get_context("fork").Process(target=work) for _ in range(3)]
    for k in kids:
        k.start()
    print("children", *[k.pid for k in kids], flush=True)
    sys.stdin.read()
"""


def test_workers_born_after_the_first_sample_are_found_without_a_full_walk(trees: Trees) -> None:
    from cachewatch.engine.monitor.process_tree import _last_created_pid

    root = trees.start(LATE_WORKERS)
    trees.read_line(root, "up")
    sampler = ProcessTreeSampler(root.pid, full_walk_every=10_000)
    assert sampler.sample().pids == (root.pid,)
    root.stdin.write("go\n")
    root.stdin.flush()
    kids = set(map(int, trees.read_line(root, "children")))
    snap = _sample_until(sampler, lambda s: set(s.worker_pids) == kids, "the 3 late workers")
    assert snap.worker_detection == "cmdline"
    if _last_created_pid() is not None:  # the kernel says which pid it gave last: newborns alone were read
        assert sampler.full_walks == 1 and sampler.new_pids_read >= 3


ORPHAN = """
import subprocess, sys
middle = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys; g = subprocess.Popen(['sleep', '300']); print('grandchild', g.pid, flush=True); sys.stdin.read()"],
    stdin=subprocess.PIPE)
print("middle", middle.pid, flush=True)
middle.wait()  # reaps the middle process when the test kills it
sys.stdin.read()
"""


def test_orphans_handed_to_a_reaper_leave_the_tree(trees: Trees) -> None:
    root = trees.start(ORPHAN)
    (middle,) = map(int, trees.read_line(root, "middle"))
    (grandchild,) = map(int, trees.read_line(root, "grandchild"))
    sampler = ProcessTreeSampler(root.pid, full_walk_every=10_000)
    _sample_until(sampler, lambda s: {middle, grandchild} <= set(s.pids), "the three generations")
    os.kill(middle, signal.SIGKILL)
    # The two may leave in different samples (the grandchild's new parent is seen a sample
    # later under load); each must be reported as vanished once it goes.
    vanished: set[int] = set()

    def both_gone(s) -> bool:
        vanished.update(s.vanished_pids)
        return middle not in s.pids and grandchild not in s.pids

    _sample_until(sampler, both_gone, "the middle process and its child to leave the tree")
    assert psutil.pid_exists(grandchild)  # still running, adopted outside the training's tree
    assert {middle, grandchild} <= vanished
    assert sampler.sample().pids == (root.pid,)


def test_a_root_that_exited_but_is_not_reaped_has_exited(trees: Trees) -> None:
    root = trees.start("import sys; print('up', flush=True); sys.stdin.read()")
    trees.read_line(root, "up")
    sampler = ProcessTreeSampler(root.pid)
    assert sampler.sample().root_alive
    os.kill(root.pid, signal.SIGKILL)  # the test process is its parent and does not wait(): a zombie
    wait_for(lambda: psutil.Process(root.pid).status() == psutil.STATUS_ZOMBIE, what="the root to be a zombie")
    snap = sampler.sample()
    assert not snap.root_alive and "has exited" in snap.reason and snap.processes == ()
