"""The headless engine end to end: the real ``cachewatch`` command line, a real daemon, real
trainings, real signals; observed through the real socket."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from cachewatch.engine import Cache
from cachewatch.engine.daemon import EngineClient, list_engines
from cachewatch.engine.daemon.protocol import EventPush, LogPush, SnapshotPush

from tests.support.engine import REPO, EngineEnv, proc_state, python_cmd, run_cli, wait_for

TICKER = python_cmd(
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM, saving', flush=True), sys.exit(0)))\n"
    "i = 0\n"
    "while True:\n    i += 1; print(f'tick {i}', flush=True); time.sleep(0.2)\n"
)
WITH_WORKERS = python_cmd(
    "import subprocess, time\nws = [subprocess.Popen(['sleep', '600']) for _ in range(2)]\nwhile True: time.sleep(1)"
)


def _config(env: EngineEnv, text: str) -> Path:
    path = env.tmp / "proj" / "cachewatch.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def _snapshot(entry):
    with EngineClient(entry.socket) as c:
        return c.snapshot()


def _events(entry, kinds=None):
    with EngineClient(entry.socket) as c:
        return c.events(kinds=kinds)


def test_status_logs_events_and_stop_from_the_command_line(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*TICKER, name="cli")
    assert entry.name == "cli" and psutil.pid_exists(entry.pid)
    wait_for(lambda: "tick 2" in run_cli("logs", "cli").stdout, what="output in logs")

    out = run_cli("status", "cli", "--json")
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert snap["engine"]["name"] == "cli" and snap["training"]["state"] == "running"
    training_pid = snap["training"]["pid"]
    human = run_cli("status", "cli").stdout
    assert "training  running, pid" in human and "tick 1" not in human

    ls = json.loads(run_cli("ls", "--json").stdout)
    assert [(e["name"], e["training_state"]) for e in ls] == [("cli", "running")]

    events = [json.loads(line) for line in run_cli("events", "cli", "--json").stdout.splitlines()]
    assert [e["kind"] for e in events][:2] == ["engine.started", "training.started"]

    out = run_cli("stop", "cli", "--yes")
    assert out.returncode == 0, out.stderr
    assert "training: stopped on request (code 0)" in out.stdout and "engine cli: stopped" in out.stdout
    assert not psutil.pid_exists(training_pid) or psutil.Process(training_pid).status() == psutil.STATUS_ZOMBIE
    assert "got SIGTERM, saving" in (engine_env.state_dir("cli") / "training.log").read_text()  # graceful
    assert list_engines() == [] and not os.path.exists(entry.socket)

    # The record outlives the engine.
    after = run_cli("events", "cli").stdout
    assert "training.stopped" in after and "engine.stopped" in after
    out = run_cli("status", "cli")
    assert out.returncode == 3 and out.stderr.startswith("cachewatch: no engine named 'cli' is running")


def test_kill_9_of_the_training_with_on_failure_restarts_it_and_records_it(engine_env: EngineEnv) -> None:
    cfg = _config(engine_env, "[run]\nrestart = 'on-failure'\nmax_restarts = 2\nbackoff = '0.2s'\nbackoff_max = '1s'\n")
    entry = engine_env.start(*TICKER, name="restart", args=("--config", str(cfg)))
    first = _snapshot(entry).training
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: _snapshot(entry).training.attempt == 2 and _snapshot(entry).training.state.value == "running",
             timeout=30, what="second attempt")
    t = _snapshot(entry).training
    assert t.pid != first.pid and t.restarts == 1 and t.failure_restarts == 1
    assert t.history[0].signal == "SIGKILL" and not t.history[0].requested
    kinds = [(e.kind, e.get("signal")) for e in _events(entry, ["training"])]
    assert ("training.exited", "SIGKILL") in kinds
    assert [k for k, _ in kinds].count("training.started") == 2 and ("training.restarted", None) in kinds
    alerts = _snapshot(entry).alerts
    assert any(a.figures.get("signal") == "SIGKILL" for a in alerts)
    assert "restart 1/2" in alerts[0].text


def test_pause_resume_and_restart_through_the_socket(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*WITH_WORKERS, name="pause")
    with EngineClient(entry.socket) as c:
        pid = c.snapshot().training.pid
        root = psutil.Process(pid)
        wait_for(lambda: len(root.children()) == 2, what="two workers")
        group = [pid] + [p.pid for p in root.children()]
        assert c.command("pause").training.state.value == "paused"
        wait_for(lambda: all(proc_state(p) == "T" for p in group), what="group stopped")
        assert c.command("resume").training.state.value == "running"
        wait_for(lambda: all(proc_state(p) in "SR" for p in group), what="group running")
        info = c.command("restart").training
        assert info.attempt == 2 and info.pid != pid and info.state.value == "running"
        wait_for(lambda: all(not psutil.pid_exists(p) or proc_state(p) == "Z" for p in group), what="old group gone")
        kinds = [e.kind for e in c.events(kinds=["training"])]
    assert kinds[-5:] == ["training.paused", "training.resumed", "training.exited", "training.restarted", "training.started"]


def test_commands_that_do_not_fit_get_clear_refusals(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*python_cmd("print('done')"), name="refuse")
    with EngineClient(entry.socket) as c:
        wait_for(lambda: c.snapshot().training.state.value == "exited", what="exited")
        for name, args, code, text in [
            ("pause", {}, "conflict", "nothing to pause: the training is exited"),
            ("evict", {}, "unavailable", "this engine has no managed cache"),
            ("dismiss_alert", {"alert_id": "nope"}, "bad_args", "no alert 'nope'"),
            ("stop", {"what": "everything"}, "bad_args", "argument 'what' = 'everything' is not one of 'training', 'engine'"),
        ]:
            try:
                c.command(name, **args)
            except Exception as exc:  # CommandFailed
                assert getattr(exc, "code", None) == code and text in str(exc), (name, exc)
            else:
                raise AssertionError(f"{name} was accepted")
        assert c.command("start").training.attempt == 2  # a finished training can be started again


def test_a_command_that_cannot_start_is_one_line_and_leaves_no_engine(engine_env: EngineEnv) -> None:
    out = run_cli("run", "--headless", "--name", "x", "--", "no-such-trainer", "--epochs", "3")
    assert out.returncode == 2
    assert out.stderr == "cachewatch: cannot start training: command 'no-such-trainer' not found on PATH; check the spelling or give its full path\n"
    script = engine_env.tmp / "train.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    out = run_cli("run", "--headless", "--name", "x", "--", str(script))
    assert out.returncode == 2 and "is not executable; run `chmod +x" in out.stderr and "Traceback" not in out.stderr
    assert list_engines() == []


def test_a_second_engine_with_the_same_name_is_refused(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*TICKER, name="twice")
    out = run_cli("run", "--headless", "--name", "twice", "--", "sleep", "1")
    assert out.returncode == 2
    assert f"an engine named 'twice' is already running (pid {entry.pid})" in out.stderr


def test_the_headless_engine_survives_its_terminal(engine_env: EngineEnv) -> None:
    sock = f"cw-test-{os.getpid()}"
    cmd = f"{sys.executable} -m cachewatch.tui.cli run --headless --name term -- sleep 600; sleep 600"
    env = dict(os.environ)
    subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-s", "t", cmd], check=True, env=env, cwd=engine_env.tmp)
    try:
        wait_for(lambda: list_engines(), timeout=60, what="engine up")
        entry = list_engines()[0]
        training_pid = _snapshot(entry).training.pid
        assert os.getsid(entry.pid) == entry.pid  # its own session, no controlling terminal
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], check=False)  # closes the terminal: SIGHUP to its session
    time.sleep(1.0)
    assert psutil.pid_exists(entry.pid) and psutil.pid_exists(training_pid)
    assert _snapshot(entry).training.state.value == "running"


def test_foreground_mode_shows_the_output_and_returns_the_training_exit_code(engine_env: EngineEnv) -> None:
    out = run_cli("run", "--foreground", "--name", "fg", "--", *python_cmd("print('hello from training'); raise SystemExit(3)"))
    assert out.returncode == 3, out.stderr
    assert "hello from training" in out.stdout
    assert list_engines() == []


def test_default_mode_follows_the_output_and_leaves_the_engine_running(engine_env: EngineEnv) -> None:
    out = run_cli("run", "--name", "follow", "--", *python_cmd("print('line one'); print('line two'); raise SystemExit(4)"))
    assert out.returncode == 4, out.stderr
    assert "line one\nline two\n" in out.stdout
    assert "engine follow keeps running" in out.stderr
    assert [e.name for e in list_engines()] == ["follow"]


def test_stop_asks_first_on_a_terminal(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*TICKER, name="ask")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cachewatch.tui.cli", "stop", "ask"], stdin=slave, stdout=slave,
                            stderr=slave, env=dict(os.environ))
    os.close(slave)
    buf = b""
    deadline = time.monotonic() + 30
    while b"[y/N]" not in buf and time.monotonic() < deadline:
        buf += os.read(master, 1024)
    assert b"Stop the training and the engine 'ask'" in buf
    os.write(master, b"n\n")
    assert proc.wait(30) == 0
    os.close(master)
    assert _snapshot(entry).training.state.value == "running"


def test_events_and_log_follow_over_the_socket(engine_env: EngineEnv) -> None:
    code = "import sys, time\nfor i in range(1, 1000):\n    print(f'época {i} ✓', flush=True); time.sleep(0.05)"
    entry = engine_env.start(*python_cmd(code), name="follow2")
    with EngineClient(entry.socket) as c:
        wait_for(lambda: "época 3 ✓" in c.log(0, 1 << 20).data, what="output")
        # By offset, in small pieces, never splitting a character.
        text, offset = "", 0
        for _ in range(200):
            chunk = c.log(offset, 7)
            if chunk.next_offset == offset or "época 3 ✓" in text:
                break
            text, offset = text + chunk.data, chunk.next_offset
        assert "época 1 ✓\népoca 2 ✓\n" in text
        c.subscribe(snapshots=False, events=True, log=True, log_offset=0)
        c.command("pause")
        got_event = got_log = False
        for _ in range(200):
            msg = c.recv(10)
            assert msg is not None, "nothing pushed for 10 s"
            got_event |= isinstance(msg, EventPush) and msg.event.kind == "training.paused"
            got_log |= isinstance(msg, LogPush)
            if got_event and got_log:
                break
        assert got_event and got_log
        c.command("resume")


def test_evictions_reach_the_event_stream_once(engine_env: EngineEnv) -> None:
    root = engine_env.tmp / "cache"
    cfg = _config(engine_env, f"[cache]\nroot = '{root}'\nmax_size = '2MB'\n")
    with Cache(root, max_size="2MB") as cache:
        for i in range(40):
            cache.put(f"k{i:03d}", os.urandom(40_000))
    entry = engine_env.start(*TICKER, name="evict", args=("--config", str(cfg)))
    with EngineClient(entry.socket) as c:
        result = c.command("evict", to="500KB")
        assert result.files > 0 and result.size_after <= 500_000 and result.root == str(root)
        wait_for(lambda: c.snapshot().evictions and c.snapshot().evictions[0].reason == result.reason, what="snapshot eviction")
        wait_for(lambda: c.snapshot().caches[0].stats.size_bytes == result.size_after, what="fresh cache stats")
    # An eviction by another process (a DataLoader worker's put) is seen too.
    with Cache(root) as cache:
        outside = cache.evict(to=100_000)
    assert outside.files > 0
    wait_for(lambda: len(_events(entry, ["eviction"])) == 2, what="second eviction event")
    evs = _events(entry, ["eviction"])
    assert [e.get("files") for e in evs] == [result.files, outside.files]
    assert all(e.get("cache") == str(root) for e in evs)
    # A new engine with the same name does not copy them again.
    assert run_cli("stop", "evict", "--yes").returncode == 0
    entry = engine_env.start(*TICKER, name="evict", args=("--config", str(cfg)))
    with Cache(root) as cache:
        cache.evict(to=0)
    wait_for(lambda: len(_events(entry, ["eviction"])) == 3, what="third eviction event")
    time.sleep(0.5)
    assert len(_events(entry, ["eviction"])) == 3


def test_metrics_are_served_on_loopback_with_the_snapshot_figures(engine_env: EngineEnv) -> None:
    root = engine_env.tmp / "cache"
    cfg = _config(engine_env, f"[cache]\nroot = '{root}'\nmax_size = '10MB'\n")
    with Cache(root, max_size="10MB") as cache:
        cache.put("a", b"x" * 5000)
        cache.get("a")
        cache.get("missing")
    entry = engine_env.start(*TICKER, name="metrics", args=("--config", str(cfg), "--metrics-port", "0"))
    assert entry.metrics_url and entry.metrics_url.startswith("http://127.0.0.1:")
    listening = [c for c in psutil.Process(entry.pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert [c.laddr.ip for c in listening] == ["127.0.0.1"]

    def scrape() -> dict:
        body = urllib.request.urlopen(entry.metrics_url, timeout=10).read().decode()
        out = {}
        for fam in text_string_to_metric_families(body):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    wait_for(lambda: any(k[0] == "cachewatch_cache_size_bytes" for k in scrape()), what="cache metrics")
    m = scrape()
    labels = (("engine", "metrics"), ("root", str(root)))
    stats = _snapshot(entry).caches[0].stats
    assert m[("cachewatch_cache_size_bytes", labels)] == stats.size_bytes
    assert m[("cachewatch_cache_max_bytes", labels)] == 10_000_000
    assert m[("cachewatch_cache_hits_total", labels)] == stats.hits >= 1
    assert m[("cachewatch_cache_misses_total", labels)] == stats.misses >= 1
    assert m[("cachewatch_training_state", (("engine", "metrics"), ("state", "running")))] == 1.0
    assert m[("cachewatch_training_state", (("engine", "metrics"), ("state", "paused")))] == 0.0


def test_the_engine_module_runs_from_the_repository(engine_env: EngineEnv) -> None:
    # `cachewatch run` starts `python -m cachewatch.engine.daemon`; a bad invocation says why.
    out = subprocess.run([sys.executable, "-m", "cachewatch.engine.daemon", "--name", "bad name"], capture_output=True,
                         text=True, cwd=REPO, timeout=60)
    assert out.returncode == 2 and "engine name 'bad name' is not usable" in out.stderr


def test_the_asyncio_client_attaches_commands_and_detaches(engine_env: EngineEnv) -> None:
    import asyncio

    from cachewatch.engine.daemon import AsyncEngineClient
    from cachewatch.engine.daemon.errors import CommandFailed

    entry = engine_env.start(*TICKER, name="async")

    async def session() -> tuple[list, str, int]:
        pushes: list = []
        client = await AsyncEngineClient.connect(entry.socket, client_name="dashboard", on_push=pushes.append)
        assert client.hello.engine.name == "async" and "pause" in client.hello.commands
        await client.subscribe(snapshots=True, events=True, log=True, log_offset=0)
        paused = await client.command("pause")
        try:
            await client.command("pause_everything")
        except CommandFailed as exc:
            refused = exc.code
        for _ in range(100):
            if any(isinstance(m, EventPush) and m.event.kind == "training.paused" for m in pushes) and \
                    any(isinstance(m, LogPush) for m in pushes) and any(isinstance(m, SnapshotPush) for m in pushes):
                break
            await asyncio.sleep(0.05)
        await client.command("resume")
        tail = await client.log(-100, 100)
        await client.close()
        return pushes, refused, paused.training.pid if tail.size else -1

    pushes, refused, pid = asyncio.run(session())
    assert refused == "unknown_command"
    assert any(isinstance(m, SnapshotPush) for m in pushes) and any(isinstance(m, LogPush) for m in pushes)
    assert any(isinstance(m, EventPush) and m.event.kind == "training.paused" for m in pushes)
    t = _snapshot(entry).training  # detached: the training goes on, same process
    assert t.state.value == "running" and t.pid == pid


def test_a_client_can_ask_for_fewer_snapshots(engine_env: EngineEnv) -> None:
    chatty = python_cmd("import time\nwhile True: print('x', flush=True); time.sleep(0.02)")
    entry = engine_env.start(*chatty, name="paced")
    with EngineClient(entry.socket) as c:
        try:
            c.subscribe(interval_s=-1)
        except Exception as exc:
            assert getattr(exc, "code", None) == "bad_args"
        else:
            raise AssertionError("a negative interval was accepted")
        c.subscribe(interval_s=1.0)
        t_end = time.monotonic() + 3.0
        seqs = []
        while time.monotonic() < t_end:
            msg = c.recv(max(0.01, t_end - time.monotonic()))
            if isinstance(msg, SnapshotPush):
                seqs.append(msg.snapshot.seq)
    # Output every 20 ms would make a snapshot every 0.1 s; this client gets one a second.
    assert 1 <= len(seqs) <= 5, seqs
    assert seqs == sorted(seqs)
