"""Protocol values on their own: lines, versions, snapshots through JSON, log chunks."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachewatch.engine.cache.types import CacheStats
from cachewatch.engine.daemon.errors import ProtocolError
from cachewatch.engine.daemon.protocol import (
    COMMANDS,
    PROTOCOL_VERSION,
    Bye,
    LogPush,
    Response,
    SnapshotPush,
    check_version,
    decode_line,
    encode,
    parse_server_message,
)
from cachewatch.engine.daemon.snapshot import Alert, CacheView, EngineInfo, EngineSnapshot, EvictionView, JobView
from cachewatch.engine.daemon.tail import read_chunk, utf8_safe_end
from cachewatch.engine.training.eta import EtaEstimate
from cachewatch.engine.training.progress import ProgressSnapshot
from cachewatch.engine.training.runstate import AttemptRecord, RestartPolicy, TrainingInfo, TrainingState


def _snapshot() -> EngineSnapshot:
    stats = CacheStats(root="/c", size_bytes=90, data_bytes=80, entries=3, max_bytes=100, target_bytes=90,
                       reserved_bytes=4, writers=1, replaced_pinned_bytes=0, hits=7, misses=2, evicted_files=5,
                       evicted_bytes=50, expired_files=0, ttl_s=None, block_bytes=4096)
    now = time.time()
    return EngineSnapshot(
        seq=7,
        time=now,
        engine=EngineInfo(name="e", pid=1, version="0", protocol=PROTOCOL_VERSION, started=now - 5),
        training=TrainingInfo(command=("python", "t.py"), state=TrainingState.RESTARTING, pid=None, attempt=2,
                              restarts=1, failure_restarts=1, policy=RestartPolicy("on-failure", 3, 5, 60),
                              started=now - 3, ended=now - 1, exit_code=None, signal="SIGKILL", next_restart_at=now + 4,
                              history=(AttemptRecord(1, 10, now - 9, now - 8, 1, None), AttemptRecord(2, 11, now - 3, now - 1, None, "SIGKILL"))),
        caches=(CacheView(root="/c", stats=stats, disk_free_bytes=10, disk_total_bytes=20),),
        evictions=(EvictionView(time=now, cache="/c", reason="put", files=5, bytes=50, size_before=140, size_after=90),),
        alerts=(Alert(id="cuda_oom-1", kind="cuda_oom", severity="critical", title="CUDA out of memory",
                      remedies=("mixed precision", "smaller batch"), figures={"tried_to_allocate_bytes": 20971520}),),
        jobs=(JobView(id="verify-1", kind="verify", state="running", started=now, done=3, total=10),),
        log_size_bytes=1234,
        progress=ProgressSnapshot(epoch=4, total_epochs=15, eta=EtaEstimate(remaining_s=139680.0)),
    )


def test_a_snapshot_survives_json_unchanged() -> None:
    snap = _snapshot()
    wire = json.loads(encode({"type": "snapshot", "snapshot": snap.to_json()}))
    back = parse_server_message(wire)
    assert isinstance(back, SnapshotPush)
    s = back.snapshot
    assert s.caches[0].stats == snap.caches[0].stats
    assert s.training == snap.training
    assert s.alerts == snap.alerts and s.jobs == snap.jobs and s.evictions == snap.evictions
    assert s.engine == snap.engine and s.log_size_bytes == 1234
    # Part snapshots come back as their package's own type.
    assert s.progress == snap.progress and s.progress is not None and s.progress.eta.remaining_s == 139680.0
    mine, theirs = s.to_json(), snap.to_json()
    assert mine == theirs
    assert EngineSnapshot.from_json(json.loads(json.dumps(mine))).to_json() == mine


def test_snapshots_are_immutable() -> None:
    snap = _snapshot()
    with pytest.raises(AttributeError):
        snap.seq = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.alerts[0].figures["x"] = 1  # type: ignore[index]


def test_nan_never_breaks_a_line() -> None:
    line = encode({"type": "event", "event": {"loss": math.nan, "x": [math.inf]}})
    assert json.loads(line) == {"type": "event", "event": {"loss": "NaN", "x": ["Infinity"]}}


def test_lines_are_one_json_object_each() -> None:
    line = encode({"type": "log", "data": "a\nb\r\n"})
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    with pytest.raises(ProtocolError, match="not JSON"):
        decode_line(b"{nope\n")
    with pytest.raises(ProtocolError, match="must be a JSON object"):
        decode_line(b"[1, 2]\n")
    with pytest.raises(ProtocolError, match="needs a string field 'type'"):
        decode_line(b'{"id": 1}\n')


def test_versions_with_another_major_are_refused_with_the_fix() -> None:
    check_version("1.7")
    with pytest.raises(ProtocolError, match=r"speaks protocol 2.0, this side speaks 1\.\d+; use the same major version"):
        check_version("2.0", who="the client")
    with pytest.raises(ProtocolError, match="no usable protocol version"):
        check_version(None)


def test_server_messages_come_back_typed() -> None:
    assert parse_server_message({"type": "bye", "reason": "stop"}) == Bye("stop")
    r = parse_server_message({"type": "response", "id": 3, "ok": False, "error": {"code": "conflict", "message": "m"}})
    assert isinstance(r, Response) and not r.ok and r.error.code == "conflict"
    chunk = {"offset": 0, "next_offset": 3, "size": 3, "data": "abc", "path": "/l"}
    assert isinstance(parse_server_message({"type": "log", "chunk": chunk}), LogPush)


def test_every_command_the_dashboard_needs_is_declared() -> None:
    assert {"evict", "pause", "resume", "restart", "stop", "verify", "build", "split", "dismiss_alert", "cancel_job"} <= set(COMMANDS)
    assert COMMANDS["stop"].destructive and COMMANDS["evict"].destructive and not COMMANDS["pause"].destructive


def test_log_chunks_never_split_a_character(tmp_path: Path) -> None:
    log = tmp_path / "log"
    text = "época 4/15 — ñandú 🚀\n"
    log.write_bytes(text.encode())
    data = text.encode()
    out = []
    offset = 0
    while True:
        chunk = read_chunk(log, offset, 5)
        if chunk.next_offset == offset:
            break
        out.append(chunk.data)
        offset = chunk.next_offset
    assert "".join(out) == text and offset == len(data)


def test_a_negative_offset_reads_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"0123456789")
    chunk = read_chunk(log, -4, 100)
    assert (chunk.data, chunk.offset, chunk.next_offset, chunk.size) == ("6789", 6, 10, 10)
    assert read_chunk(tmp_path / "missing", 0).data == ""


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(0, 40))
def test_utf8_safe_end_is_always_a_character_boundary(text: str, cut: int) -> None:
    data = text.encode()[:cut]
    end = utf8_safe_end(data)
    assert end <= len(data)
    data[:end].decode("utf-8")  # never raises
    assert len(data) - end <= 3
