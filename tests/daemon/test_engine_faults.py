"""Issue 9, items 4, 5 and 11: start-up failures leave no training behind, the state directory
is private from other local users, and no process of a training outlives `stop` or its engine.

Real ``cachewatch`` command lines, real daemons, real trainings, real ``kill -9``, a real second
Unix user (``nobody``, through ``subprocess``'s ``user=``), a real full tmpfs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from cachewatch.engine import load_config
from cachewatch.engine.daemon import list_engines, orphans
from cachewatch.engine.daemon.process import run_engine

from tests.support.engine import EngineEnv, python_cmd, run_cli, wait_for

NOBODY = 65534


def _marker_training(marker: Path) -> tuple[str, ...]:
    """A training that proves it ran by writing its pid to ``marker``, then waits."""
    return python_cmd(f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\nwhile True: time.sleep(1)")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _no_process_with(marker: Path) -> bool:
    for p in psutil.process_iter():
        try:
            if str(marker) in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.Error:
            pass
    return True


def _one_line_exit_2(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cachewatch: ") and "Traceback" not in out.stderr, out.stderr
    return lines[0]


# ------------------------------------------------------------------ item 4: failed start-ups
def test_a_bad_metrics_port_in_the_config_starts_no_training(engine_env: EngineEnv) -> None:
    marker = engine_env.tmp / "started"
    cfg = engine_env.tmp / "cachewatch.toml"
    cfg.write_text("[metrics]\nport = 70000\n")
    out = run_cli("run", "--config", str(cfg), "--headless", "--name", "port", "--", *_marker_training(marker))
    line = _one_line_exit_2(out)
    assert "[metrics] port" in line and "70000" in line and "1 to 65535" in line
    time.sleep(0.5)
    assert not marker.exists() and _no_process_with(marker) and list_engines() == []


def test_a_busy_metrics_port_is_refused_before_the_training_starts(engine_env: EngineEnv) -> None:
    marker = engine_env.tmp / "started"
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        out = run_cli("run", "--headless", "--name", "busy", "--metrics-port", str(port), "--", *_marker_training(marker))
        line = _one_line_exit_2(out)
        assert f"cannot serve metrics on 127.0.0.1:{port}" in line
    finally:
        busy.close()
    time.sleep(0.5)
    assert not marker.exists() and _no_process_with(marker) and list_engines() == []


@pytest.fixture
def full_runtime_dir(engine_env: EngineEnv):
    """A runtime directory on a tmpfs with no free block left: the registry entry cannot be written."""
    mnt = Path(tempfile.mkdtemp(prefix="cwf-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "cachewatch").mkdir(mode=0o700)
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        os.rmdir(mnt)


def test_a_full_runtime_directory_is_refused_before_the_training_starts(engine_env: EngineEnv, full_runtime_dir: Path) -> None:
    marker = engine_env.tmp / "started"
    out = run_cli("run", "--headless", "--name", "full", "--", *_marker_training(marker),
                  env={"XDG_RUNTIME_DIR": str(full_runtime_dir)})
    line = _one_line_exit_2(out)
    assert "No space left on device" in line and "cannot write the engine entry" in line
    time.sleep(0.5)
    assert not marker.exists() and _no_process_with(marker)
    assert sorted(p.name for p in (full_runtime_dir / "cachewatch").iterdir()) == []  # the name was released


def test_a_failure_after_the_launch_stops_the_training(engine_env: EngineEnv) -> None:
    # The last step of a start-up (telling the launcher "ok") fails after the training runs:
    # the engine must stop the training before it reports the error.
    marker = engine_env.tmp / "started"
    cfg = load_config(None)

    def ready(line: str) -> None:
        if line.startswith("ok"):
            wait_for(marker.exists, what="the training ran")
            raise RuntimeError("the launcher went away")

    with pytest.raises(RuntimeError, match="the launcher went away"):
        run_engine(cfg, name="late", command=_marker_training(marker), cwd=str(engine_env.tmp), ready=ready)
    pid = int(marker.read_text())
    assert _gone(pid)
    assert list_engines() == []


# ------------------------------------------------------------------ item 5: a private state dir
@pytest.fixture
def open_state_home(monkeypatch: pytest.MonkeyPatch):
    """An XDG_STATE_HOME every local user can reach, so only cachewatch's own modes protect it."""
    home = Path(tempfile.mkdtemp(prefix="cw-state-", dir="/tmp"))
    os.chmod(home, 0o755)
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    yield home
    subprocess.run(["rm", "-rf", str(home)], check=False)


def _as_nobody(*argv: str) -> subprocess.CompletedProcess:
    assert os.getuid() == 0, "these tests create a second user's process; they run as root (CI does)"
    return subprocess.run(list(argv), user=NOBODY, group=NOBODY, capture_output=True, text=True, timeout=30)


def test_another_user_cannot_read_the_training_output(engine_env: EngineEnv, open_state_home: Path) -> None:
    code = "import time\nprint('API_KEY=sk-secret-123', flush=True)\nwhile True: time.sleep(1)"
    entry = engine_env.start(*python_cmd(code), name="secret", env={"XDG_STATE_HOME": str(open_state_home)})
    sdir = Path(entry.state_dir)
    assert sdir.parent == open_state_home / "cachewatch"
    wait_for(lambda: b"sk-secret" in (sdir / "training.log").read_bytes(), what="the secret in the log")
    wait_for(lambda: (sdir / "events.jsonl").stat().st_size > 0, what="events")

    assert stat.S_IMODE(sdir.stat().st_mode) == 0o700
    assert stat.S_IMODE(sdir.parent.stat().st_mode) == 0o700
    for name in ("training.log", "events.jsonl", "progress.jsonl", "engine.log", "training.json"):
        assert stat.S_IMODE((sdir / name).stat().st_mode) == 0o600, name

    # A real second user, by every path: the file, the directory listing, a search from above.
    for argv in (("cat", str(sdir / "training.log")), ("ls", str(sdir)), ("grep", "-r", "sk-secret", str(open_state_home))):
        out = _as_nobody(*argv)
        assert out.returncode != 0 and "sk-secret" not in out.stdout, argv
        assert "Permission denied" in out.stderr, argv
    # The owner still reads it, through the engine and directly.
    assert "sk-secret" in run_cli("logs", "secret").stdout


def test_a_loose_state_dir_of_an_older_version_is_tightened(engine_env: EngineEnv, open_state_home: Path) -> None:
    sdir = open_state_home / "cachewatch" / "old"
    sdir.mkdir(parents=True, mode=0o755)
    os.chmod(sdir, 0o755)
    os.chmod(sdir.parent, 0o755)
    (sdir / "training.log").write_text("an earlier run's output\n")
    os.chmod(sdir / "training.log", 0o644)
    engine_env.start("sleep", "60", name="old", env={"XDG_STATE_HOME": str(open_state_home)})
    assert stat.S_IMODE(sdir.stat().st_mode) == 0o700 and stat.S_IMODE(sdir.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((sdir / "training.log").stat().st_mode) == 0o600
    out = _as_nobody("cat", str(sdir / "training.log"))
    assert out.returncode != 0 and "earlier run" not in out.stdout


def test_a_shared_log_dir_is_refused_not_chmod_ed(engine_env: EngineEnv) -> None:
    shared = engine_env.tmp / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    (shared / "notes.txt").write_text("somebody else's file\n")
    marker = engine_env.tmp / "started"
    cfg = engine_env.tmp / "cachewatch.toml"
    cfg.write_text(f"[run]\nlog_dir = '{shared}'\n")
    out = run_cli("run", "--config", str(cfg), "--headless", "--name", "shared", "--", *_marker_training(marker))
    line = _one_line_exit_2(out)
    assert str(shared) in line and "0755" in line and f"chmod 700 {shared}" in line
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755 and not marker.exists()


def test_a_state_dir_of_another_user_is_refused(engine_env: EngineEnv) -> None:
    sdir = engine_env.state_dir("theirs")
    sdir.mkdir(parents=True, mode=0o700)
    os.chown(sdir, NOBODY, NOBODY)
    out = run_cli("run", "--headless", "--name", "theirs", "--", "sleep", "60")
    line = _one_line_exit_2(out)
    assert f"belongs to uid {NOBODY}" in line and "[run] log_dir" in line


# ---------------------------------------------------- item 11: every process of the training
SETSID_TRAINING = (
    "import os, sys, time\n"
    "d = sys.argv[1]\n"
    "if os.fork() == 0:\n"  # a child that leaves the process group, its parent still alive
    "    os.setsid(); open(os.path.join(d, 'setsid.pid'), 'w').write(str(os.getpid()))\n"
    "    while True: time.sleep(1)\n"
    "if os.fork() == 0:\n"  # a daemon: fork, setsid, fork again, the middle one exits (re-parented away)
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        open(os.path.join(d, 'daemon.pid'), 'w').write(str(os.getpid()))\n"
    "        while True: time.sleep(1)\n"
    "    os._exit(0)\n"
    "print('training up', flush=True)\n"
    "while True: time.sleep(1)\n"
)


def _setsid_training(engine_env: EngineEnv, name: str):
    d = engine_env.tmp / f"pids-{name}"
    d.mkdir()
    entry = engine_env.start(*python_cmd(SETSID_TRAINING), str(d), name=name)
    wait_for(lambda: (d / "setsid.pid").exists() and (d / "daemon.pid").exists(), what="the escaped processes")
    time.sleep(0.1)
    escaped = [int((d / f).read_text()) for f in ("setsid.pid", "daemon.pid")]
    for pid in escaped:
        assert not _gone(pid)
    return entry, escaped


def test_stop_ends_descendants_that_left_the_process_group(engine_env: EngineEnv) -> None:
    entry, escaped = _setsid_training(engine_env, "tree")
    with engine_env.client(entry) as c:
        leader = c.snapshot().training.pid
    assert all(os.getpgid(pid) != leader for pid in escaped)  # out of reach of killpg
    out = run_cli("stop", "tree", "--yes", "--training-only")
    assert out.returncode == 0, out.stderr
    for pid in [leader, *escaped]:
        wait_for(lambda: _gone(pid), timeout=15, what=f"pid {pid} ended")
    with engine_env.client(entry) as c:
        kinds = [e.kind for e in c.events(kinds=["training"])]
    assert "training.leftovers_ended" in kinds


def test_stopping_the_engine_ends_descendants_that_left_the_process_group(engine_env: EngineEnv) -> None:
    entry, escaped = _setsid_training(engine_env, "tree2")
    out = run_cli("stop", "tree2", "--yes")
    assert out.returncode == 0, out.stderr
    for pid in escaped:
        wait_for(lambda: _gone(pid), timeout=15, what=f"pid {pid} ended")


def test_a_training_left_by_a_killed_engine_is_refused_then_stoppable(engine_env: EngineEnv) -> None:
    entry, escaped = _setsid_training(engine_env, "orph")
    with engine_env.client(entry) as c:
        leader = c.snapshot().training.pid
    os.kill(entry.pid, signal.SIGKILL)
    wait_for(lambda: _gone(entry.pid), what="the engine died")
    assert not _gone(leader) and all(not _gone(p) for p in escaped)  # what kill -9 leaves behind

    out = run_cli("ls")  # warned about wherever engines are listed
    assert f"the engine orph is gone but its training still runs (pid {leader}" in out.stderr
    assert "`cachewatch stop orph` stops it" in out.stderr

    marker = engine_env.tmp / "second"
    out = run_cli("run", "--headless", "--name", "orph", "--", *_marker_training(marker))
    line = _one_line_exit_2(out)
    assert f"pid {leader}" in line and "cachewatch stop orph" in line and "still running" in line
    time.sleep(0.5)
    assert not marker.exists() and _no_process_with(marker)  # no second training beside the first

    out = run_cli("stop", "orph", "--yes")
    assert out.returncode == 0, out.stderr
    assert "stopped the training left by the engine orph" in out.stdout
    for pid in [leader, *escaped]:
        wait_for(lambda: _gone(pid), timeout=15, what=f"pid {pid} ended")

    entry2 = engine_env.start(*_marker_training(marker), name="orph")  # now the name starts again
    wait_for(marker.exists, what="the new training ran")
    assert run_cli("stop", "orph", "--yes").returncode == 0


def test_the_record_names_one_process_not_a_reused_pid(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        record = {"engine": "x", "engine_pid": 999999999, "engine_start_ticks": 1, "run_id": "r-test-none",
                  "pid": proc.pid, "pgid": proc.pid, "start_ticks": orphans.start_ticks(proc.pid), "started": time.time(),
                  "command": ["sleep", "60"]}
        (tmp_path / orphans.RECORD_NAME).write_text(json.dumps(record))
        record["command"] = ["python", "-c", "import time\nwhile True:\n    time.sleep(1)"]
        (tmp_path / orphans.RECORD_NAME).write_text(json.dumps(record))
        found = orphans.find_orphan(tmp_path)
        assert found is not None and found.pid == proc.pid
        assert "\n" not in found.describe() and "import time while True:" in found.describe()  # one line
        # The same pid with another start time is another process (the pid was reused): no orphan,
        # and the stale record goes.
        record["start_ticks"] += 1
        (tmp_path / orphans.RECORD_NAME).write_text(json.dumps(record))
        assert orphans.find_orphan(tmp_path) is None
        assert not (tmp_path / orphans.RECORD_NAME).exists()
        assert proc.poll() is None  # and nothing was signalled
    finally:
        proc.kill()
        proc.wait()


def test_a_clean_stop_leaves_no_record(engine_env: EngineEnv) -> None:
    entry = engine_env.start("sleep", "60", name="clean")
    sdir = Path(entry.state_dir)
    wait_for(lambda: (sdir / orphans.RECORD_NAME).exists(), what="the record")
    assert run_cli("stop", "clean", "--yes").returncode == 0
    assert not (sdir / orphans.RECORD_NAME).exists()
    entry = engine_env.start("sleep", "60", name="clean")  # and the name starts again at once
    assert run_cli("stop", "clean", "--yes").returncode == 0


def test_logs_recreated_by_rotation_stay_private(tmp_path: Path) -> None:
    """A rotated training log or event log is created anew: in a private state dir it is 0600 too."""
    from cachewatch.engine.events import EventLog
    from cachewatch.engine.training.output import append_to_log

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    events = EventLog(state / "events.jsonl", max_bytes=200)
    for i in range(20):  # several rotations
        events.append("test.event", i=i, pad="x" * 50)
    events.close()
    log = state / "training.log"
    for i in range(20):
        append_to_log(log, b"line %d %s\n" % (i, b"y" * 60), max_bytes=300, keep=2)
    made = [p for p in state.iterdir() if p.name.startswith(("events", "training.log"))]
    assert len(made) >= 4  # current and rotated files of both
    for p in made:
        assert p.stat().st_mode & 0o077 == 0, f"{p.name} is {oct(p.stat().st_mode & 0o777)}"
    # A cache's eviction log in a directory others may read stays readable to them.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    pub = EventLog(shared / "events.jsonl")
    pub.append("test.event")
    pub.close()
    assert (shared / "events.jsonl").stat().st_mode & 0o044 == 0o044
