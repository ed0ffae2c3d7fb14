"""[fleet] settings and `cachewatch fleet` usage errors: one line naming the value and the fix, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachewatch.engine.config import load_config
from cachewatch.engine.errors import ConfigError
from cachewatch.engine.fleet.connect import redacted
from cachewatch.engine.fleet.keys import FleetKeys
from cachewatch.engine.fleet.summary import AlertLine, CacheLine, FleetSummary, GpuLine, JobLine
from tests.support.helpers import run_cli


def test_fleet_section_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "cachewatch.toml"
    path.write_text('[fleet]\nurl = "rediss://r.internal:6380/2"\nusername = "cw"\ninterval = "2s"\nhost = "node-7"\n')
    cfg = load_config(path, env={"CACHEWATCH_FLEET_ACCEPT_COMMANDS": "true", "CACHEWATCH_FLEET_PASSWORD": "pw"}).fleet
    assert (cfg.url, cfg.username, cfg.password, cfg.interval, cfg.host, cfg.accept_commands) == \
        ("rediss://r.internal:6380/2", "cw", "pw", 2.0, "node-7", True)
    assert load_config(None, env={}).fleet.url is None and load_config(None, env={}).fleet.accept_commands is False
    assert load_config(None, env={"CACHEWATCH_FLEET_URL": "redis://h:1/0"}).fleet.url == "redis://h:1/0"


@pytest.mark.parametrize("text, needle", [
    ('url = "http://host:6379"', "[fleet] url = 'http://host:6379' is not a Redis URL"),
    ('interval = "10ms"', "[fleet] interval = '10ms' is too short; it must be at least 100ms"),
    ('host = "a/b"', "[fleet] host = 'a/b' is not a host name"),
    ('accept_commands = "maybe"', "[fleet] accept_commands = 'maybe' is not a boolean"),
    ('port = 6379', "unknown key [fleet] 'port'"),
])
def test_bad_fleet_values_name_the_value_and_the_fix(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "cachewatch.toml"
    path.write_text(f"[fleet]\n{text}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert needle in str(err.value)
    out = run_cli("fleet", "--config", str(path))
    assert out.returncode == 2 and needle in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_fleet_command_usage_errors(tmp_path: Path) -> None:
    out = run_cli("fleet", cwd=tmp_path)
    assert out.returncode == 2 and "no fleet is configured" in out.stderr and "CACHEWATCH_FLEET_URL" in out.stderr
    out = run_cli("fleet", "--url", "localhost:6379", cwd=tmp_path)
    assert out.returncode == 2 and "not a Redis URL" in out.stderr
    out = run_cli("fleet", "--url", "redis://127.0.0.1:1/0", "--send", "x", "explode", cwd=tmp_path)
    assert out.returncode == 2 and "no such command" in out.stderr


def test_unreachable_redis_is_said_and_nothing_is_shown(tmp_path: Path) -> None:
    out = run_cli("fleet", "--url", "redis://127.0.0.1:1/0", cwd=tmp_path)  # nothing listens on port 1
    assert out.returncode == 1 and out.stdout.startswith("Redis unreachable at redis://127.0.0.1:1/0")
    assert "HOST" not in out.stdout


def test_password_never_shown() -> None:
    assert redacted("redis://cw:hunter2@h:6379/0") == "redis://cw:***@h:6379/0"
    assert redacted("rediss://:hunter2@h/0") == "rediss://:***@h/0"
    assert redacted("redis://h:6379/0") == "redis://h:6379/0"


def test_summary_round_trip_and_key_layout() -> None:
    s = FleetSummary(host="n1", name="e", pid=1, version="v", started=1.0, time=2.0, interval_s=1.0,
                     gpus=(GpuLine(0, 90, 5, 10), GpuLine(1, 70, 5, 10)),
                     caches=(CacheLine("/c", "cache", 80, 90, 100, 0.5), CacheLine("/w", "watch", 10, 90, 100)),
                     alerts=(AlertLine("memory", "warning", "mem"),), job=JobLine("j1", "verify", "running", 3, 9))
    back = FleetSummary.from_json({**s.to_json(), "added_by_a_newer_engine": 1})
    assert back == s
    assert back.cache_used_fraction == 0.8 and back.gpu_utilization_percent == 80
    k = FleetKeys("cw")
    assert k.engines == "cw:engines" and k.summary("n1/e") == "cw:summary:n1/e"
    with pytest.raises(ValueError):
        k.reply("n1/e", "../other")
