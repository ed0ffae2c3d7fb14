"""Following the training log across rotations: logical offsets, no byte lost or repeated."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cachewatch.engine import load_config
from cachewatch.engine.daemon import Engine, EngineParts
from cachewatch.engine.daemon.tail import FileTail, read_chunk, read_logical
from cachewatch.engine.training.output import LogWriter, rotated_path

from tests.support.engine import python_cmd, wait_for


def _lines(a: int, b: int) -> bytes:
    return b"".join(b"line %05d\n" % i for i in range(a, b))


def test_tail_reads_on_across_rotations_even_several_between_polls(tmp_path: Path) -> None:
    log = tmp_path / "training.log"
    w = LogWriter(log, max_bytes=200, keep=50)
    tail = FileTail.at_end(log)
    got: list[tuple[int, bytes]] = []

    def drain() -> None:
        while True:
            off, data = tail.read_new(64)
            if not data:
                return
            got.append((off, data))

    n = 0
    for burst in (3, 40, 1, 100, 7):  # 100 lines = several rotations before the next poll
        w.write(_lines(n, n + burst))
        n += burst
        drain()
    w.close()
    assert len(list(tmp_path.glob("training.log.[0-9]*"))) >= 5
    assert b"".join(d for _, d in got) == _lines(0, n)
    offsets = [o for o, _ in got]
    assert offsets[0] == 0 and all(o + len(d) == nxt for (o, d), nxt in zip(got, offsets[1:]))
    assert tail.offset == len(_lines(0, n)) == tail.size()


def test_tail_and_a_rotating_writer_at_the_same_time(tmp_path: Path) -> None:
    log = tmp_path / "training.log"
    total = 20000
    done = threading.Event()

    def write() -> None:
        w = LogWriter(log, max_bytes=3000, keep=1000)
        for i in range(0, total, 10):
            w.write(_lines(i, i + 10))
        w.close()
        done.set()

    tail = FileTail(log)
    t = threading.Thread(target=write)
    t.start()
    out = bytearray()
    while True:
        finished = done.is_set()
        _, data = tail.read_new()
        out += data
        if finished and not data:
            break
    t.join()
    assert bytes(out) == _lines(0, total)


def test_read_chunk_maps_offsets_to_the_rotated_files(tmp_path: Path) -> None:
    log = tmp_path / "training.log"
    w = LogWriter(log, max_bytes=110, keep=2)  # 11 bytes a line, 10 lines a file
    w.write(_lines(0, 45))
    w.close()
    everything = _lines(0, 45)
    assert read_chunk(log, 0, 1).size == len(everything)
    # Lines 0-19 were rotated away (keep 2): asking for them gives the oldest kept byte on.
    old = read_chunk(log, 0, 22)
    assert old.offset == 20 * 11 and old.data == "line 00020\nline 00021\n"
    # A read across the rotation boundary returns both sides.
    chunk = read_chunk(log, 38 * 11, 4 * 11)
    assert chunk.offset == 38 * 11 and chunk.data.encode() == _lines(38, 42) and chunk.next_offset == 42 * 11
    # Negative offsets count from the logical end (what `cachewatch logs` asks for).
    tail = read_chunk(log, -3 * 11, 1000)
    assert tail.data.encode() == _lines(42, 45) and tail.next_offset == tail.size
    assert rotated_path(log, 1).read_bytes() == _lines(30, 40)


def test_engine_follows_a_rotating_log_and_serves_it(tmp_path: Path) -> None:
    cfg = tmp_path / "cachewatch.toml"
    cfg.write_text("[run]\nlog_max_size = 20000\nlog_keep = 100\n")
    engine = Engine(load_config(cfg), name="rot", command=python_cmd("for i in range(20000): print('line %05d' % i)"),
                    state_dir=tmp_path / "state", parts=EngineParts())
    pieces: list[tuple[int, bytes]] = []
    engine.add_log_listener(lambda off, data: pieces.append((off, data)))
    engine.start()
    try:
        wait_for(lambda: engine.supervisor.info().state.over, what="training over")
        wait_for(lambda: b"line 19999\n" in b"".join(d for _, d in pieces[-3:]), what="all output")
        assert len(list((tmp_path / "state").glob("training.log.[0-9]*"))) >= 5
        data = b"".join(d for _, d in pieces)
        body = b"".join(l for l in data.splitlines(keepends=True) if not l.startswith(b"[cachewatch]"))
        assert body == _lines(0, 20000)  # every line once, in order, across the rotations
        offsets = [o for o, _ in pieces]
        assert all(o + len(d) == n for (o, d), n in zip(pieces, offsets[1:]))
        # What `cachewatch logs` and the dashboard read: the log by offset, across the files.
        served = bytearray()
        offset = 0
        while True:
            chunk = engine.read_log(offset, 7000)
            if chunk.next_offset <= offset:
                break
            served += chunk.data.encode()
            offset = chunk.next_offset
        assert bytes(served) == data[: len(served)] and len(served) >= len(data)
        assert engine.snapshot().log_size_bytes == chunk.size == offset
    finally:
        engine.close()


def _mid_shift(tmp_path: Path) -> tuple[Path, bytes]:
    """A log rotated three times, then a fourth rotation stopped where a rotation is slowest to
    read: log.3 -> log.4 and log.2 -> log.3 done, log.1 -> log.2 not yet, base not yet written."""
    log = tmp_path / "training.log"
    w = LogWriter(log, max_bytes=110, keep=10)  # 10 lines a file
    w.write(_lines(0, 45))
    w.close()
    assert rotated_path(log, 4).exists() and not rotated_path(log, 5).exists()
    os.replace(rotated_path(log, 4), rotated_path(log, 5))
    os.replace(rotated_path(log, 3), rotated_path(log, 4))
    os.replace(rotated_path(log, 2), rotated_path(log, 3))
    return log, _lines(0, 45)


def test_a_read_during_a_rotation_never_skips_or_repeats_bytes(tmp_path: Path) -> None:
    # Lines 10-19 are in log.4 now (log.3 until a moment ago) and log.2 is a gap. Before the
    # fix, the walk stopped at the gap and read log.1 from its start: lines 10-29 were skipped.
    log, everything = _mid_shift(tmp_path)
    start, data, _ = read_logical(log, 10 * 11, 1000)
    assert data == everything[start : start + len(data)]  # never bytes from the wrong place
    assert data == b"" and start == 10 * 11  # nothing: a rotation is moving the files

    tail = FileTail(log, 10 * 11)
    off, data = tail.read_new()
    assert (off, data) == (10 * 11, b"") and tail.offset == 10 * 11  # waits: nothing skipped

    # The rotation finishes: every byte, in order, from where the reader was.
    os.replace(rotated_path(log, 1), rotated_path(log, 2))
    os.replace(log, rotated_path(log, 1))
    (tmp_path / "training.log.base").write_text(f"{45 * 11}\n")
    log.write_bytes(b"")
    got = bytearray()
    while True:
        _, data = tail.read_new(64)
        if not data:
            break
        got += data
    assert bytes(got) == everything[10 * 11 :]
