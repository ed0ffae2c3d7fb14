"""The fleet against a real redis-server: several engines in separate processes (real daemons
started through the command line), real kill -9, Redis stopped and restarted under them."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import psutil

from cachewatch.engine.daemon import EngineClient
from tests.support.engine import EngineEnv, python_cmd, run_cli, wait_for

from .redis_server import RedisServer

INTERVAL_S = 0.5
TICKER = python_cmd(
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
    "i = 0\n"
    "while True:\n    i += 1; print(f'tick {i}', flush=True); time.sleep(0.1)\n"
)


def fleet_env(redis: RedisServer, host: str, *, accept: bool = False, interval_s: float = INTERVAL_S) -> dict[str, str]:
    return {"CACHEWATCH_FLEET_URL": redis.url, "CACHEWATCH_FLEET_HOST": host,
            "CACHEWATCH_FLEET_INTERVAL": f"{interval_s}s", "CACHEWATCH_FLEET_ACCEPT_COMMANDS": "true" if accept else "false"}


def host_env(engine_env: EngineEnv, host: str) -> dict[str, str]:
    """A runtime and state directory per fake machine, so that engines may share a name as on real ones."""
    run = engine_env.runtime.parent / host
    run.mkdir(mode=0o700, exist_ok=True)
    return {"XDG_RUNTIME_DIR": str(run), "XDG_STATE_HOME": str(engine_env.state / host)}


def start(engine_env: EngineEnv, redis: RedisServer, name: str, host: str, **kw):  # type: ignore[no-untyped-def]
    args = tuple(kw.pop("args", ()))
    env = {**host_env(engine_env, host), **fleet_env(redis, host, **kw)}
    return engine_env.start(*TICKER, name=name, args=args, env=env)


def start_all(engine_env: EngineEnv, redis: RedisServer, specs: list[tuple[str, str, dict]]) -> list:
    """Several engines at once (start-up is mostly imports; the tests wait less)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(specs)) as pool:
        return list(pool.map(lambda spec: start(engine_env, redis, spec[0], spec[1], **spec[2]), specs))


def engine_log(engine_env: EngineEnv, host: str, name: str) -> str:
    return (engine_env.state / host / "cachewatch" / name / "engine.log").read_text()


def fleet(redis: RedisServer, *args: str) -> dict:
    out = run_cli("fleet", "--json", "--url", redis.url, *args)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def rows(redis: RedisServer) -> dict[str, dict]:
    return {e["id"]: e for e in fleet(redis)["engines"]}


def fresh(redis: RedisServer, ids: set[str], state: str = "running") -> dict[str, dict] | None:
    r = rows(redis)
    ok = all(i in r and not r[i]["lost"] and r[i]["summary"] and r[i]["summary"]["training_state"] == state for i in ids)
    return r if ok else None


def state_of(redis: RedisServer, eid: str) -> str | None:
    row = rows(redis).get(eid)
    return None if row is None or row["summary"] is None else row["summary"]["training_state"]


def test_several_engines_in_separate_processes_publish_to_one_redis(engine_env: EngineEnv, redis_server: RedisServer) -> None:
    started = start_all(engine_env, redis_server, [("train", f"node-{i}", {}) for i in range(3)])
    entries = {f"node-{i}/train": e for i, e in enumerate(started)}
    # Same engine name on three "machines": the fleet tells them apart by host.
    r = wait_for(lambda: fresh(redis_server, set(entries)), timeout=30, what="3 engines in the fleet")
    for eid, entry in entries.items():
        s = r[eid]["summary"]
        assert s["pid"] == entry.pid and s["host"] == eid.split("/")[0] and s["name"] == "train"
        assert s["interval_s"] == INTERVAL_S and s["accept_commands"] is False
        assert s["training_pid"] and psutil.pid_exists(s["training_pid"])

    red = redis_server.client()
    server_now = float(red.time()[0])
    for member, score in red.zrange("cachewatch:engines", 0, -1, withscores=True):
        # Scored by the server's clock, within a few intervals of it.
        assert abs(server_now - score) < 5, (member, score, server_now)
    ttl_ms = red.pttl("cachewatch:summary:node-0/train")
    assert 0 < ttl_ms <= 3 * INTERVAL_S * 1000
    # Only TTL strings, sorted sets and streams.
    for key in red.keys("cachewatch:*"):
        assert red.type(key) in (b"string", b"zset", b"stream"), key

    # Events reach the capped stream: pause through the local socket, see it in Redis.
    with EngineClient(entries["node-1/train"].socket) as c:
        c.command("pause")
    def paused_event() -> bool:
        events = [json.loads(f[b"e"]) for _, f in red.xrange("cachewatch:events:node-1/train")]
        return any(e["kind"] == "training.paused" for e in events)
    wait_for(paused_event, timeout=10, what="training.paused in the event stream")
    wait_for(lambda: state_of(redis_server, "node-1/train") == "paused", timeout=10, what="paused in the fleet")

    text = run_cli("fleet", "--url", redis_server.url)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:3] == ["HOST", "ENGINE", "STATE"]
    assert any(l.split()[:3] == ["node-1", "train", "paused"] for l in lines), text.stdout

    # A clean stop leaves the fleet (not shown as lost); the others stay.
    out = run_cli("stop", "train", "--yes", env=host_env(engine_env, "node-2"))
    assert out.returncode == 0, out.stderr
    wait_for(lambda: "node-2/train" not in rows(redis_server), timeout=20, what="node-2 gone from the fleet")
    assert {"node-0/train", "node-1/train"} <= set(rows(redis_server))


def test_kill_9_of_an_engine_shows_it_lost_with_when(engine_env: EngineEnv, redis_server: RedisServer) -> None:
    a, _b = start_all(engine_env, redis_server, [("a", "gpu-1", {}), ("b", "gpu-2", {})])
    wait_for(lambda: fresh(redis_server, {"gpu-1/a", "gpu-2/b"}), timeout=30, what="both engines fresh")
    os.kill(a.pid, signal.SIGKILL)
    killed_at = time.time()
    # a lost, b (alive) fresh in the same read
    r = wait_for(lambda: (lambda r: r if r["gpu-1/a"]["lost"] and not r["gpu-2/b"]["lost"] else None)(rows(redis_server)),
                 timeout=30, what="gpu-1/a shown lost, gpu-2/b fresh")
    lost = r["gpu-1/a"]
    assert lost["summary"] is None  # nothing of a lost engine is shown as current
    assert lost["last_beat"] <= killed_at + 1 and lost["age_s"] > 0
    assert r["gpu-2/b"]["summary"]["training_state"] == "running"
    text = run_cli("fleet", "--url", redis_server.url).stdout
    line = next(l for l in text.splitlines() if l.startswith("gpu-1"))
    assert "LOST" in line and "ago (" in line, text


def test_redis_stopped_and_restarted_trainings_untouched_engines_back(engine_env: EngineEnv, redis_server: RedisServer) -> None:
    entries = dict(zip(("n0/job", "n1/job"), start_all(engine_env, redis_server, [("job", "n0", {}), ("job", "n1", {})])))
    r = wait_for(lambda: fresh(redis_server, set(entries)), timeout=30, what="engines in the fleet")
    training = {eid: r[eid]["summary"]["training_pid"] for eid in entries}
    logs = {eid: engine_env.state / eid.split("/")[0] / "cachewatch" / "job" / "training.log" for eid in entries}

    redis_server.stop()
    out = run_cli("fleet", "--url", redis_server.url)
    assert out.returncode == 1 and "Redis unreachable" in out.stdout, out
    assert "HOST" not in out.stdout  # no table of old data
    out = run_cli("fleet", "--json", "--url", redis_server.url)
    view = json.loads(out.stdout)
    assert view["error"].startswith("Redis unreachable") and view["engines"] == []

    sizes = {eid: p.stat().st_size for eid, p in logs.items()}
    with EngineClient(entries["n0/job"].socket) as c:
        c.command("pause")  # an event while Redis is away: kept, and published once it is back
    time.sleep(12 * INTERVAL_S)  # several heartbeats and retries while Redis is away
    for eid, entry in entries.items():
        assert psutil.pid_exists(entry.pid) and psutil.Process(training[eid]).status() != psutil.STATUS_ZOMBIE
        if eid != "n0/job":  # (n0 was paused on purpose)
            assert logs[eid].stat().st_size > sizes[eid]  # the training kept printing
        log = engine_log(engine_env, eid.split("/")[0], "job")
        assert log.count("is unreachable") == 1, log  # one warning, not one per retry

    redis_server.start()
    wait_for(lambda: fresh(redis_server, {"n0/job"}, state="paused"), timeout=30, what="n0 back in the fleet, paused")
    r = wait_for(lambda: fresh(redis_server, {"n1/job"}), timeout=30, what="n1 back in the fleet")
    red = redis_server.client()
    events = [json.loads(f[b"e"])["kind"] for _, f in red.xrange("cachewatch:events:n0/job")]
    assert "training.paused" in events, events
    r = rows(redis_server)
    for eid in entries:
        s = r[eid]["summary"]
        assert s["training_pid"] == training[eid] and s["attempt"] == 1  # the same training, never restarted
        assert "reachable again" in engine_log(engine_env, eid.split("/")[0], "job")


def test_remote_command_refused_unless_enabled_and_carried_out_when_enabled(engine_env: EngineEnv,
                                                                             redis_server: RedisServer) -> None:
    closed, opened = start_all(engine_env, redis_server, [("closed", "h1", {"accept": False}),
                                                          ("opened", "h2", {"accept": True})])
    wait_for(lambda: fresh(redis_server, {"h1/closed", "h2/opened"}), timeout=30, what="engines fresh")

    out = run_cli("fleet", "--url", redis_server.url, "--send", "h1/closed", "pause")
    assert out.returncode == 1 and "does not accept commands through Redis" in out.stderr, out
    # Even written straight into its stream, a command is never read by an engine that did not opt in.
    red = redis_server.client()
    sent = float(red.time()[0])
    red.xadd("cachewatch:commands:h1/closed", {"request": "r1", "name": "pause", "args": "{}", "sent": repr(sent)})
    time.sleep(10 * INTERVAL_S)
    assert state_of(redis_server, "h1/closed") in ("running", None)  # None: a late heartbeat, not a pause
    assert red.exists("cachewatch:reply:h1/closed:r1") == 0
    with EngineClient(closed.socket) as c:
        assert c.snapshot().training.state.value == "running"

    out = run_cli("fleet", "--url", redis_server.url, "--send", "h2/opened", "pause")
    assert out.returncode == 0, out.stderr
    with EngineClient(opened.socket) as c:
        assert c.snapshot().training.state.value == "paused"  # carried out by the engine itself
        events = c.events(kinds=["command"])
    assert any(e.fields.get("command") == "pause" for e in events)
    # The same argument checks as the local socket: the engine's own message comes back.
    out = run_cli("fleet", "--url", redis_server.url, "--send", "opened", "stop", "--arg", "what=everything", "--yes")
    assert out.returncode == 1 and "stop: argument 'what' = 'everything' is not one of 'training', 'engine'" in out.stderr, out
    # Destructive without a terminal needs --yes; --readonly refuses it outright.
    out = run_cli("fleet", "--url", redis_server.url, "--send", "opened", "restart")
    assert out.returncode == 2 and "--yes" in out.stderr
    out = run_cli("fleet", "--url", redis_server.url, "--send", "opened", "restart", "--yes", "--readonly")
    assert out.returncode == 2 and "readonly" in out.stderr
    out = run_cli("fleet", "--url", redis_server.url, "--send", "opened", "resume")
    assert out.returncode == 0, out.stderr
    # Asked about by this call's arguments, as on the socket: a dry-run evict deletes nothing.
    out = run_cli("fleet", "--url", redis_server.url, "--send", "opened", "evict", "--arg", "to=1MB")
    assert out.returncode == 2 and "--yes" in out.stderr, out
    out = run_cli("fleet", "--url", redis_server.url, "--send", "opened", "evict", "--arg", "to=1MB", "--arg", "dry_run=true")
    assert out.returncode == 1 and "has no managed cache" in out.stderr, out  # sent: the engine's own answer
    # A command that waited too long (Redis was down, say) is refused, not run late.
    old = float(red.time()[0]) - 120
    red.xadd("cachewatch:commands:h2/opened", {"request": "late1", "name": "stop", "args": "{}", "sent": repr(old)})
    reply = wait_for(lambda: red.xrange("cachewatch:reply:h2/opened:late1"), timeout=20, what="the late command's reply")
    answer = json.loads(reply[0][1][b"a"])
    assert answer["ok"] is False and "not run late" in answer["error"]["message"]
    with EngineClient(opened.socket) as c:
        assert c.snapshot().training.state.value == "running"


def test_prometheus_service_discovery_lists_each_metrics_endpoint(engine_env: EngineEnv, redis_server: RedisServer,
                                                                   tmp_path: Path) -> None:
    from .redis_server import free_port

    ports = {h: free_port() for h in ("m1", "m2")}
    start_all(engine_env, redis_server, [("sd", h, {"args": ("--metrics-port", str(p))}) for h, p in ports.items()]
              + [("nometrics", "m3", {})])
    wait_for(lambda: fresh(redis_server, {"m1/sd", "m2/sd", "m3/nometrics"}), timeout=30, what="engines fresh")
    sd = tmp_path / "sd" / "cachewatch.json"
    sd.parent.mkdir()
    out = run_cli("fleet", "--url", redis_server.url, "--prometheus-sd", str(sd))
    assert out.returncode == 0, out.stderr
    targets = json.loads(sd.read_text())
    assert sorted(t["targets"][0] for t in targets) == sorted(f"127.0.0.1:{p}" for p in ports.values())
    for t in targets:
        assert t["labels"]["cachewatch_engine"] == "sd"
        body = urllib.request.urlopen(f"http://{t['targets'][0]}/metrics", timeout=5).read().decode()
        assert "cachewatch" in body  # a real endpoint, scrapeable
    assert not list(sd.parent.glob("*.tmp"))


def test_empty_fleet_watch_and_json_lines(redis_server: RedisServer) -> None:
    import subprocess
    import sys

    out = run_cli("fleet", "--url", redis_server.url)
    assert out.returncode == 0 and "no engine publishes to" in out.stdout
    proc = subprocess.Popen([sys.executable, "-m", "cachewatch.tui.cli", "fleet", "--json", "--watch", "--interval", "0.2",
                             "--url", redis_server.url], stdout=subprocess.PIPE, text=True)
    try:
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0  # Ctrl-C ends --watch cleanly
    assert [l["engines"] for l in lines] == [[], [], []] and lines[0]["time"] < lines[2]["time"]
