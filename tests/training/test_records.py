"""Reading the progress file back: validation, partial lines, torn writes, a replaced file."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cachewatch.engine.training import ReportReader, ReportRecord, parse_report_line


def line(**fields) -> bytes:
    return (json.dumps({"v": 1, "t": 100.0, **fields}) + "\n").encode()


def test_fields_of_the_wrong_type_are_dropped_not_the_record() -> None:
    rec = parse_report_line(line(kind="progress", epoch="four", step=12.0, total_steps=-3, loss="0.5", metrics={"acc": "x", "f1": 0.8, "n": True}))
    assert rec is not None
    assert (rec.epoch, rec.step, rec.total_steps, rec.loss) == (None, 12, None, 0.5)
    assert dict(rec.metrics) == {"f1": 0.8}


def test_nan_survives() -> None:
    rec = parse_report_line(b'{"v":1,"kind":"progress","t":1.0,"loss":NaN}')
    assert rec is not None and math.isnan(rec.loss)  # type: ignore[arg-type]


def test_unknown_kind_or_no_time_is_not_a_record() -> None:
    assert parse_report_line(line(kind="bogus")) is None
    assert parse_report_line(b'{"v":1,"kind":"progress"}') is None
    assert parse_report_line(b"[1, 2, 3]") is None
    assert parse_report_line(b"") is None


def test_torn_line_followed_by_a_record() -> None:
    torn = b'{"v":1,"kind":"progress","t":1.0,"ste' + line(kind="progress", step=7)
    rec = parse_report_line(torn)
    assert rec is not None and rec.step == 7


def test_reader_waits_for_the_newline(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    reader = ReportReader(path)
    assert reader.read_new() == []  # no file yet
    data = line(kind="progress", step=1) + line(kind="progress", step=2)
    with open(path, "ab") as fh:
        fh.write(data[:-10])
    assert [r.step for r in reader.read_new()] == [1]
    with open(path, "ab") as fh:
        fh.write(data[-10:])
    assert [r.step for r in reader.read_new()] == [2]
    assert reader.read_new() == []


def test_reader_starts_again_on_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(line(kind="progress", step=1) + line(kind="progress", step=2))
    reader = ReportReader(path)
    assert len(reader.read_new()) == 2
    other = tmp_path / "new.jsonl"
    other.write_bytes(line(kind="progress", step=9))
    other.replace(path)
    assert [r.step for r in reader.read_new()] == [9]


def test_record_json_round_trip() -> None:
    rec = parse_report_line(line(kind="checkpoint", path="/ckpt/e4.pt", epoch=4, fields={"size": 3}, pid=12, rank=0))
    assert rec is not None and ReportRecord.from_json(rec.to_json()) == rec


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_reader_never_raises_on_garbage(tmp_path_factory, chunks: list[bytes]) -> None:
    path = tmp_path_factory.mktemp("garbage") / "p.jsonl"
    reader = ReportReader(path)
    with open(path, "ab") as fh:
        for chunk in chunks:
            fh.write(chunk)
            fh.flush()
            for rec in reader.read_new():
                assert rec.kind in ("progress", "epoch_start", "epoch_end", "checkpoint", "event")
