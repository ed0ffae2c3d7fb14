"""The output pump: redraws collapsed, escape codes removed, long lines cut, the log rotated.

The collapser is tested on bytes; the pump with a real pipe and a real writing process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from hypothesis import given, settings, strategies as st

from cachewatch.engine.training.output import (
    LineCollapser,
    LogWriter,
    append_to_log,
    base_path,
    pump,
    read_base,
    rotated_path,
)
from tests.support.helpers import wait_for

PY = sys.executable


def collapse(data: bytes, max_line_bytes: int = 1024) -> bytes:
    c = LineCollapser(max_line_bytes)
    return c.feed(data) + c.finish()


# ------------------------------------------------------------------------------ collapsing
def test_redraws_keep_only_the_last_state_of_each_line() -> None:
    flood = b"".join(b"\r%3d%%|bar" % i for i in range(1000))
    assert collapse(b"before\n" + flood + b"\n" + b"after\n") == b"before\n999%|bar\nafter\n"


def test_a_carriage_return_before_the_newline_makes_no_empty_line() -> None:
    # A pty with onlcr, or a Windows-style line end: "\r\n" is one line end.
    assert collapse(b"one\r\ntwo\r\n\r\nthree\r\n") == b"one\ntwo\n\nthree\n"
    # A trailing "\r" erases nothing: the state before it stays.
    assert collapse(b"bar 1\rbar 2\r\r\n") == b"bar 2\n"
    # A bar cleared with spaces shows blank, as on a terminal.
    assert collapse(b"bar\r   \r\n") == b"   \n"


def test_escape_codes_and_control_characters_are_removed_even_across_reads() -> None:
    c = LineCollapser()
    out = c.feed(b"\x1b[?25l\r\x1b[2K\x1b[31mred\x1b[0m \x1b")  # a sequence cut by the read
    out += c.feed(b"[1mbold\x1b[0m\x1b]0;title\x07\x08\x00 tab\there\n")
    assert out == b"red bold tab\there\n"


def test_bytes_that_are_not_utf8_are_kept_as_they_are() -> None:
    assert collapse(b"\xff\xfe bin \xc3\x28\n") == b"\xff\xfe bin \xc3\x28\n"


def test_a_long_line_is_cut_with_a_marker_and_never_inside_a_character() -> None:
    line = "é".encode() * 100  # 200 bytes of two-byte characters
    out = collapse(b"x" + line + b"\nnext\n", max_line_bytes=64)
    head, rest = out.split(b" [cachewatch: ", 1)
    assert head == b"x" + "é".encode() * 31  # 63 bytes: the 64th would split a character
    assert rest == b"line cut at 63 bytes, 138 more bytes dropped]\nnext\n"


def test_partial_state_is_shown_then_completed_without_repeating_it() -> None:
    c = LineCollapser()
    assert c.feed(b"Loading...") == b""
    assert c.partial() == b"Loading..."
    assert c.partial() == b""  # nothing new
    assert c.feed(b"done\n") == b"done\n"  # the line grew: the rest is appended, no redraw
    assert c.feed(b"\r 10%") == b"" and c.partial() == b" 10%"
    assert c.feed(b"\r 20%\r 30%") == b"" and c.partial() == b"\r 30%"
    assert c.feed(b"\r 30%\n") == b"\n"  # finished in the state already written: once
    assert c.finish() == b""


def test_the_unfinished_last_line_is_terminated_at_the_end() -> None:
    c = LineCollapser()
    assert c.feed(b"a\nno newline") == b"a\n"
    assert c.finish() == b"no newline\n"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300).map(lambda b: b.replace(b"Z", b"\r").replace(b"Y", b"\n").replace(b"X", b"\x1b[2K")),
       st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_any_chunking_gives_the_same_log(data: bytes, cuts: list[int]) -> None:
    whole = collapse(data, 40)
    c = LineCollapser(40)
    out = b""
    prev = 0
    for cut in sorted(set(cuts)):
        out += c.feed(data[prev:cut])
        prev = max(prev, cut)
    out += c.feed(data[prev:]) + c.finish()
    assert out == whole
    # Every line end of the input is one line end of the log ("\r" never makes a line), and an
    # unfinished last line is ended if anything of it is kept (b"\x00" or an erase-line escape
    # alone leave nothing to show, and no empty line is made for them).
    tail = data.rsplit(b"\n", 1)[-1]
    kept = bool(collapse(tail, 40))
    assert whole.count(b"\n") == data.count(b"\n") + (1 if kept else 0)


# ------------------------------------------------------------------------------- rotation
def test_rotation_keeps_n_files_and_the_base_counts_every_byte(tmp_path: Path) -> None:
    log = tmp_path / "training.log"
    w = LogWriter(log, max_bytes=100, keep=2)
    for i in range(30):
        w.write(b"line %02d %s\n" % (i, b"x" * 20))  # 29 bytes a line: 3 lines a file
    w.close()
    files = sorted(p.name for p in tmp_path.glob("training.log*"))
    assert files == ["training.log", "training.log.1", "training.log.2", "training.log.base"]
    total = 30 * 29
    assert read_base(log) + log.stat().st_size == total
    assert log.read_bytes().startswith(b"line 27")
    assert rotated_path(log, 1).read_bytes().startswith(b"line 24")
    assert rotated_path(log, 2).read_bytes().startswith(b"line 21")


def test_keep_zero_keeps_only_the_current_file(tmp_path: Path) -> None:
    log = tmp_path / "training.log"
    for i in range(10):
        append_to_log(log, b"%d\n" % i * 10, max_bytes=50, keep=0)
    assert sorted(p.name for p in tmp_path.glob("training.log*")) == ["training.log", "training.log.base"]
    assert int(base_path(log).read_text()) + log.stat().st_size == sum(len(b"%d\n" % i * 10) for i in range(10))


# ------------------------------------------------------------------------------- the pump
def _pump_thread(read_fd: int, log: Path, **kw) -> threading.Thread:
    t = threading.Thread(target=pump, args=(read_fd, log), kwargs=kw, daemon=True)
    t.start()
    return t


def test_pump_writes_a_redraw_flood_as_one_line(tmp_path: Path) -> None:
    log = tmp_path / "training.log"
    r, w = os.pipe()
    t = _pump_thread(r, log, partial_flush_s=30.0)
    code = ("import os\nfor i in range(20000): os.write(1, b'\\r step %5d/20000' % (i + 1))\n"
            "os.write(1, b'\\n' + b'done\\n')\n")
    subprocess.run([PY, "-c", code], stdout=w, check=True)
    os.close(w)
    t.join(30)
    assert not t.is_alive()
    os.close(r)
    assert log.read_bytes() == b" step 20000/20000\ndone\n"


def test_pump_shows_the_state_of_a_line_still_being_drawn(tmp_path: Path) -> None:
    log = tmp_path / "training.log"
    r, w = os.pipe()
    go = tmp_path / "go"
    t = _pump_thread(r, log, partial_flush_s=0.05)
    code = ("import os, time, sys\nos.write(1, b'\\rA 1/2')\n"
            "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\n"
            "os.write(1, b'\\rA 2/2\\n')\n")
    proc = subprocess.Popen([PY, "-c", code, str(go)], stdout=w)
    os.close(w)
    # The training has not finished the line, yet its state is in the log.
    wait_for(lambda: log.exists() and log.read_bytes() == b"A 1/2", what="the partial state in the log")
    go.touch()
    proc.wait(30)
    t.join(30)
    os.close(r)
    assert log.read_bytes() == b"A 1/2\rA 2/2\n"


def test_pump_rotates_while_writing_and_nothing_is_lost(tmp_path: Path) -> None:
    log = tmp_path / "training.log"
    r, w = os.pipe()
    t = _pump_thread(r, log, log_max_bytes=4096, log_keep=1000)
    code = "import sys\nfor i in range(5000): print('line', i)\n"
    subprocess.run([PY, "-c", code], stdout=w, check=True)
    os.close(w)
    t.join(30)
    os.close(r)
    n = len(list(tmp_path.glob("training.log.[0-9]*")))
    assert n >= 5
    data = b"".join(rotated_path(log, i).read_bytes() for i in range(n, 0, -1)) + log.read_bytes()
    assert data == b"".join(b"line %d\n" % i for i in range(5000))
    assert read_base(log) + log.stat().st_size == len(data)
