"""No client can hurt the engine: permissions, other users, bad lines, slow and dead clients.

Every test runs a real headless engine (``cachewatch run --headless``) supervising a real
process, talks to it over its real Unix socket, and checks afterwards that the engine still
answers and the training still runs with the same pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import psutil

from cachewatch.engine.daemon import EngineClient
from cachewatch.engine.daemon.protocol import PROTOCOL_VERSION, SnapshotPush

from tests.support.engine import EngineEnv, python_cmd, wait_for

SLEEPER = python_cmd("import time\nwhile True: time.sleep(1)")


class Raw:
    """A bare socket speaking the protocol by hand, to send what a real client never would."""

    def __init__(self, path: str) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(10)
        self.s.connect(path)
        self.buf = b""

    def line(self) -> dict | None:
        while b"\n" not in self.buf:
            data = self.s.recv(65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def hello(self, version: str = PROTOCOL_VERSION) -> dict:
        first = self.line()
        assert first is not None and first["type"] == "hello"
        self.send(json.dumps({"type": "hello", "protocol": version, "client": "raw"}).encode() + b"\n")
        return first

    def closed(self) -> bool:
        """True once the server has closed the connection (after any last lines)."""
        try:
            while True:
                data = self.s.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True


def _still_fine(env: EngineEnv, entry, training_pid: int) -> None:
    with env.client(entry) as c:
        assert c.ping()
        t = c.snapshot().training
    assert t.state.value == "running" and t.pid == training_pid
    assert psutil.pid_exists(entry.pid)


def _training_pid(env: EngineEnv, entry) -> int:
    with env.client(entry) as c:
        return c.snapshot().training.pid


def test_socket_directory_and_files_are_private(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*SLEEPER, name="perm")
    assert stat.S_IMODE(os.stat(engine_env.runtime).st_mode) == 0o700
    st = os.stat(entry.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(engine_env.runtime / "perm.json").st_mode) == 0o600


def test_another_user_cannot_connect_nor_be_served(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*SLEEPER, name="uid")
    pid = _training_pid(engine_env, entry)
    probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(10)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print('refused', type(e).__name__); sys.exit()\n"
             "print(s.recv(65536).decode().strip())\n")
    # An interpreter the other user may run (the test venv may sit in root's home); cwd "/" likewise.
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    assert python is not None, "a system python3 is needed to act as another user"
    nobody = {"user": 65534, "group": 65534, "cwd": "/"}
    out = subprocess.run([python, "-c", probe, entry.socket], capture_output=True, text=True, timeout=60, **nobody)
    assert out.stdout.strip() == "refused PermissionError"  # the 0700 directory stops it first
    # Even with the doors opened by mistake, the engine checks the peer's uid itself.
    os.chmod(engine_env.runtime.parent, 0o755)
    os.chmod(engine_env.runtime, 0o755)
    os.chmod(entry.socket, 0o666)
    out = subprocess.run([python, "-c", probe, entry.socket], capture_output=True, text=True, timeout=60, **nobody)
    reply = json.loads(out.stdout)
    assert reply["type"] == "error" and reply["error"]["code"] == "forbidden"
    assert "uid 65534 may not control this engine" in reply["error"]["message"]
    os.chmod(engine_env.runtime, 0o700)
    _still_fine(engine_env, entry, pid)


def test_malformed_json_gets_an_error_and_the_engine_goes_on(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*SLEEPER, name="badjson")
    pid = _training_pid(engine_env, entry)
    raw = Raw(entry.socket)
    raw.hello()
    raw.send(b'{"type": "ping", "id": 1\n')
    reply = raw.line()
    assert reply["type"] == "error" and reply["error"]["code"] == "bad_json"
    assert raw.closed()
    _still_fine(engine_env, entry, pid)


def test_requests_before_hello_or_from_another_major_version_are_refused(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*SLEEPER, name="hello")
    pid = _training_pid(engine_env, entry)
    raw = Raw(entry.socket)
    raw.line()
    raw.send(b'{"type": "command", "id": 1, "name": "stop"}\n')
    assert raw.line()["error"]["code"] == "hello_required"
    assert raw.closed()
    raw = Raw(entry.socket)
    raw.hello(version="2.0")
    reply = raw.line()
    assert reply["error"]["code"] == "protocol_version" and "speaks protocol 2.0" in reply["error"]["message"]
    assert raw.closed()
    _still_fine(engine_env, entry, pid)


def test_unknown_commands_and_types_are_answered_and_the_connection_stays(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*SLEEPER, name="unknown")
    pid = _training_pid(engine_env, entry)
    raw = Raw(entry.socket)
    raw.hello()
    raw.send(b'{"type": "command", "id": 1, "name": "format_disk"}\n')
    r = raw.line()
    assert (r["type"], r["id"], r["ok"], r["error"]["code"]) == ("response", 1, False, "unknown_command")
    raw.send(b'{"type": "teleport", "id": 2}\n')
    r = raw.line()
    assert (r["id"], r["error"]["code"]) == (2, "unknown_type")
    raw.send(b'{"type": "command", "id": 3, "name": "evict", "args": [1, 2]}\n')
    assert raw.line()["error"]["code"] == "bad_args"
    raw.send(b'{"type": "log", "id": 4, "offset": "zero"}\n')
    assert raw.line()["error"]["code"] == "bad_args"
    raw.send(b'{"type": "ping", "id": 5}\n')
    r = raw.line()
    assert (r["id"], r["ok"]) == (5, True)
    _still_fine(engine_env, entry, pid)


def test_a_huge_line_is_refused_without_swallowing_memory(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*SLEEPER, name="huge")
    pid = _training_pid(engine_env, entry)
    engine = psutil.Process(entry.pid)
    rss_before = engine.memory_info().rss
    raw = Raw(entry.socket)
    raw.hello()
    try:
        raw.send(b'{"type": "ping", "pad": "' + b"x" * (64 * 1024 * 1024))  # 64 MiB, no newline ever
    except (BrokenPipeError, ConnectionResetError):
        pass  # the engine hung up mid-send: that is the point
    reply = raw.line()
    assert reply is None or reply["error"]["code"] == "line_too_long"
    assert raw.closed()
    assert engine.memory_info().rss - rss_before < 32 * 1024 * 1024
    _still_fine(engine_env, entry, pid)


def test_a_client_that_never_reads_is_dropped_and_others_are_served(engine_env: EngineEnv) -> None:
    # A training that writes 64 MiB of output as fast as it can.
    flood = python_cmd("import sys, time\nline = 'x' * 1023 + '\\n'\nfor _ in range(65536): sys.stdout.write(line)\n"
                       "sys.stdout.flush()\nwhile True: time.sleep(1)")
    entry = engine_env.start(*flood, name="flood")
    pid = _training_pid(engine_env, entry)
    slow = Raw(entry.socket)
    slow.hello()
    slow.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.send(b'{"type": "subscribe", "id": 1, "snapshots": true, "log": true, "log_offset": 0}\n')
    # Meanwhile another client is served normally.
    with engine_env.client(entry, "fast") as fast:
        fast.subscribe()
        seen = [m for m in (fast.recv(10) for _ in range(3)) if isinstance(m, SnapshotPush)]
        assert seen
    # The output reaches the log at the pump's pace (a pty moves about 10 MB/s), so the slow
    # client must keep not reading until the engine gives up on it; then it sees the end.
    wait_for(lambda: "does not read its messages; dropping it" in (engine_env.state_dir("flood") / "engine.log").read_text(),
             timeout=60, what="the engine dropping the slow client")
    wait_for(lambda: _dropped(slow), timeout=60, what="slow client dropped")
    _still_fine(engine_env, entry, pid)


def _dropped(raw: Raw) -> bool:
    # Read everything the engine managed to send; a dropped client then sees the end of the stream.
    raw.s.settimeout(0.5)
    try:
        while True:
            data = raw.s.recv(1 << 20)
            if not data:
                return True
    except (socket.timeout, TimeoutError):
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_kill_9_of_a_client_leaves_engine_and_training_running(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*SLEEPER, name="killclient")
    pid = _training_pid(engine_env, entry)
    code = ("import sys, time\nfrom cachewatch.engine.daemon import EngineClient\n"
            "c = EngineClient(sys.argv[1], client_name='doomed')\nc.subscribe(events=True, log=True)\n"
            "c.recv(10)\nprint('attached', flush=True)\ntime.sleep(600)\n")
    client = subprocess.Popen([sys.executable, "-c", code, entry.socket], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "attached"
        client.send_signal(signal.SIGKILL)
        client.wait(30)
    finally:
        if client.poll() is None:
            client.kill()
    time.sleep(0.5)  # let the engine notice the broken connection
    _still_fine(engine_env, entry, pid)
    with engine_env.client(entry) as c:
        c.subscribe()
        assert isinstance(c.recv(10), SnapshotPush)


def test_several_clients_at_once_each_get_snapshots(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*SLEEPER, name="many")
    clients = [EngineClient(entry.socket, client_name=f"c{i}") for i in range(12)]
    try:
        for c in clients:
            c.subscribe()
        for c in clients:
            msg = c.recv(10)
            assert isinstance(msg, SnapshotPush) and msg.snapshot.engine.name == "many"
    finally:
        for c in clients:
            c.close()


# Issue 9 item 8: every argument is checked against the command table before anything starts.
BAD_ARGS = [
    ("verify", {"root": 5}, "'root'"),
    ("verify", {"repair": "yes"}, "'repair'"),
    ("verify", {"workers": 0}, "'workers'"),
    ("verify", {"rootx": "/tmp"}, "'rootx'"),
    ("split", {"input": "a.pkl", "output": "out", "compress_level": "abc"}, "'compress_level'"),
    ("split", {"input": "a.pkl", "output": "out", "compress_level": 12}, "'compress_level'"),
    ("split", {"output": "out"}, "'input'"),
    ("split", {"input": "a.pkl", "output": "out", "delete_original": True}, "'confirmed'"),
    ("split", {"input": "a\u0000b", "output": "out"}, "'input'"),
    ("build", {"workers": True}, "'workers'"),
    ("evict", {"to": "lots"}, "'to'"),
    ("evict", {"to": "1e300PB"}, "'to'"),
    ("evict", {"dry_run": 1}, "'dry_run'"),
    ("stop", {"what": "universe"}, "'what'"),
    ("cancel_job", {}, "'job_id'"),
    ("dismiss_alert", {"alert_id": ["a"]}, "'alert_id'"),
    ("pause", {"force": True}, "'force'"),
]


def test_bad_job_arguments_are_refused_before_anything_starts(engine_env: EngineEnv) -> None:
    cfg = engine_env.tmp / "cachewatch.toml"
    cfg.write_text(f"[cache]\nroot = '{engine_env.tmp / 'cache'}'\nmax_size = '10MB'\n")
    entry = engine_env.start(*SLEEPER, name="badargs", args=("--config", str(cfg)))
    pid = _training_pid(engine_env, entry)
    raw = Raw(entry.socket)
    raw.hello()
    for i, (name, args, field) in enumerate(BAD_ARGS):
        raw.send(json.dumps({"type": "command", "id": i, "name": name, "args": args}).encode() + b"\n")
        r = raw.line()
        assert (r["id"], r["ok"], r["error"]["code"]) == (i, False, "bad_args"), (name, args, r)
        assert field in r["error"]["message"] and "\n" not in r["error"]["message"], (name, r)
    with engine_env.client(entry) as c:
        snap = c.snapshot()
        assert snap.jobs == ()  # no job was started, to fail later
        assert not [e for e in c.events(kinds=["command", "job"])]
    assert "Traceback" not in (engine_env.state_dir("badargs") / "engine.log").read_text()
    _still_fine(engine_env, entry, pid)


def test_deeply_nested_json_is_refused_and_logged_no_exception(engine_env: EngineEnv) -> None:
    entry = engine_env.start(*SLEEPER, name="nested")
    pid = _training_pid(engine_env, entry)
    for depth in (1000, 30_000, 40):  # 30k levels still fit the 64 KiB line
        raw = Raw(entry.socket)
        raw.hello()
        raw.send(b'{"type": "command", "id": 1, "name": "verify", "args": {"root": ' + b"[" * depth + b"]" * depth + b"}}\n")
        reply = raw.line()
        assert reply["type"] == "error" and reply["error"]["code"] == "bad_json", reply
        assert "nested too deeply" in reply["error"]["message"]
        assert raw.closed()
    log = (engine_env.state_dir("nested") / "engine.log").read_text()
    assert "Traceback" not in log and "RecursionError" not in log and "exception" not in log.lower()
    _still_fine(engine_env, entry, pid)


def test_the_command_table_describes_every_argument_the_engine_accepts() -> None:
    from cachewatch.engine.daemon.protocol import COMMANDS
    from cachewatch.engine.jobs.daemon_adapter import JOB_ARGS

    # The jobs' own argument lists and the table agree, so the table is the one place to look.
    for kind, names in JOB_ARGS.items():
        assert set(COMMANDS[kind].args) == set(names), kind
        assert COMMANDS[kind].long_running
    assert set(COMMANDS["evict"].args) == {"to", "dry_run", "root"}
    assert not COMMANDS["evict"].is_destructive({"dry_run": True}) and COMMANDS["evict"].is_destructive({})
    assert COMMANDS["verify"].is_destructive({"repair": True}) and not COMMANDS["verify"].is_destructive({})
    assert COMMANDS["split"].is_destructive({"delete_original": True, "confirmed": True})
    assert not COMMANDS["pause"].long_running and COMMANDS["stop"].args["what"].choices == ("training", "engine")
