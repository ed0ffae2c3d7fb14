"""The output pump: the training's stdout and stderr on their way into ``training.log``.

The training writes into a pseudo-terminal (or a pipe with ``[run] tty = false``); a small
separate process, the pump, reads the other end and appends to the log:

* carriage-return redraws are collapsed: a line keeps only its last state. A bar drawn
  9,000 times a second becomes one line in the log; while it is still being drawn, its
  current state is appended every ``PARTIAL_FLUSH_S`` as ``\\r<state>``, so readers of the
  log (the engine's progress parser, ``cachewatch logs -f``, the dashboard) see it live;
* terminal escape sequences (colours, cursor moves, erase-line) and other control
  characters are removed; ``\\t``, ``\\r`` and ``\\n`` stay. Bytes that are not UTF-8 are
  kept as they are (readers decode with replacement);
* a line longer than ``max_line_bytes`` is cut there, with a marker saying how much was
  dropped;
* the log is rotated by size: ``training.log`` becomes ``training.log.1`` and so on, ``keep``
  old files are kept. Offsets in the log are *logical*: they keep growing across
  rotations. ``training.log.base`` holds the logical offset of the current file's first
  byte (absent: 0), so a reader can map an offset to a file (:mod:`..daemon.tail`).

Why a process and not a thread of the engine: the training must outlive the engine (a
``kill -9`` of the engine leaves the training running, as when it wrote straight into the
file). The pump is in its own session: it outlives the engine too, keeps the log written,
and exits when every writer has closed the terminal (the training and its children are
gone). Its own work is small: a few reads and one write per wake-up, however many redraws.

This module uses the standard library only: the supervisor runs it as a script
(``python -I -S output.py``), which starts in a few milliseconds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Mapping

__all__ = [
    "LineCollapser",
    "LogWriter",
    "append_to_log",
    "base_path",
    "read_base",
    "rotated_path",
    "open_pty",
    "tty_environment",
    "pump",
    "utf8_safe_end",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_LOG_KEEP",
    "PARTIAL_FLUSH_S",
    "TTY_COLUMNS",
    "TTY_ROWS",
]

DEFAULT_MAX_LINE_BYTES = 64 * 1024
DEFAULT_LOG_MAX_BYTES = 100 * 1000 * 1000
DEFAULT_LOG_KEEP = 3
# How often the state of a line still being redrawn reaches the log: live enough for a
# progress display (the engine reads the log every 50 ms), and 7 small writes a second
# whatever the redraw rate.
PARTIAL_FLUSH_S = 0.15
TTY_COLUMNS = 200
TTY_ROWS = 50
_READ_BYTES = 1024 * 1024
_ROUND_MAX_BYTES = 4 * 1024 * 1024
# Under a flood, waiting this long between reads lets the output pile up in the kernel
# buffer and be read in a few large reads instead of thousands of small ones. Only while
# the buffer is far from full (a pty holds about 64 KiB), so the training never waits on it.
_BATCH_WAIT_S = 0.02
_BATCH_MIN_BYTES = 2048
_BATCH_MAX_BYTES = 32 * 1024

# CSI (colours, cursor moves, erase line), OSC (titles, hyperlinks), charset selection,
# and the other two-byte escapes.
_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()*+][ -~]|\x1b[@-Z\\-_=>78]")
_ESC_HOLD_BYTES = 256  # an escape sequence cut by a read is held back this long at most
_CONTROLS = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"


def utf8_safe_end(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    n = len(data)
    i = n - 1
    # Walk back over continuation bytes (10xxxxxx) to the lead byte of the last character.
    while i >= 0 and n - i <= 4 and (data[i] & 0xC0) == 0x80:
        i -= 1
    if i < 0 or n - i > 4:
        return n  # not UTF-8 anyway; let the decoder replace it
    lead = data[i]
    need = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1
    return n if n - i >= need else i


# ------------------------------------------------------------------------------ collapsing
class LineCollapser:
    """Raw output bytes in, bytes for the log out. Not thread-safe.

    :meth:`feed` returns the lines a chunk completes, each with only its last state;
    :meth:`partial` the state of the unfinished line when it changed since last written
    (``\\r``-prefixed when an earlier state of that line is already in the log);
    :meth:`finish` the unfinished line, terminated, at the end of the output.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max(16, int(max_line_bytes))
        self._esc = b""  # an escape sequence cut by the chunk end
        self._cur = b""  # the segment after the line's last \r, up to max_line_bytes
        self._cur_dropped = 0
        self._prev = b""  # the line's last non-empty segment before that \r
        self._prev_dropped = 0
        self._written: bytes | None = None  # this line's state already in the log

    @property
    def pending(self) -> bool:
        """True while a line is unfinished (some of it arrived, not its ``\\n``)."""
        return bool(self._cur or self._cur_dropped or self._prev or self._prev_dropped or self._written is not None)

    @property
    def mid_line(self) -> bool:
        """True when the log ends inside this line (a partial state was written)."""
        return self._written is not None

    def feed(self, data: bytes) -> bytes:
        data = self._clean(data)
        if not data:
            return b""
        out = bytearray()
        pos = 0
        find = data.find
        while True:
            nl = find(b"\n", pos)
            if nl < 0:
                self._add(data[pos:] if pos else data)
                break
            self._add(data[pos:nl])
            self._end_line(out)
            pos = nl + 1
        return bytes(out)

    def partial(self) -> bytes:
        """What to append so the log shows the unfinished line's current state (may be empty)."""
        text = self._render(False)
        if not text or text == self._written:
            return b""
        out = self._continue(text)
        self._written = text
        return out

    def finish(self) -> bytes:
        """End of output: the unfinished line, terminated with ``\\n`` (nothing if none)."""
        self._esc = b""
        if not (self._cur or self._cur_dropped or self._prev or self._prev_dropped or self._written is not None):
            return b""
        out = bytearray()
        self._end_line(out)
        return bytes(out)

    # -------------------------------------------------------------------------- internals
    def _clean(self, data: bytes) -> bytes:
        if self._esc:
            data = self._esc + data
            self._esc = b""
        if b"\x1b" in data:
            data = _ANSI.sub(b"", data)
            k = data.rfind(b"\x1b")
            if k >= 0 and len(data) - k < _ESC_HOLD_BYTES and b"\n" not in data[k:] and b"\r" not in data[k:]:
                # Maybe the start of a sequence whose end is in the next read.
                self._esc = data[k:]
                data = data[:k]
        return data.translate(None, _CONTROLS)

    def _append(self, piece: bytes) -> None:
        room = self.max_line_bytes - len(self._cur)
        if room >= len(piece):
            self._cur += piece
        elif room > 0:
            self._cur += piece[:room]
            self._cur_dropped += len(piece) - room
        else:
            self._cur_dropped += len(piece)

    def _close_segment(self) -> None:
        # "\r" returns to column 0: what comes next overwrites. An empty segment (the
        # "\r" of "\r\n", or two "\r" in a row) erases nothing.
        if self._cur or self._cur_dropped:
            self._prev, self._prev_dropped = self._cur, self._cur_dropped
            self._cur, self._cur_dropped = b"", 0

    def _add(self, piece: bytes) -> None:
        """A piece of one line (no ``\\n``), possibly with ``\\r`` redraws."""
        last = piece.rfind(b"\r")
        if last < 0:
            self._append(piece)
            return
        first = piece.find(b"\r")
        self._append(piece[:first])
        self._close_segment()
        if first < last:
            # Of all the redraws in between, only the last non-empty one can still show.
            end = last
            while end > first:
                start = piece.rfind(b"\r", first, end)
                if start + 1 < end:
                    self._append(piece[start + 1 : end])
                    self._close_segment()
                    break
                end = start
        self._append(piece[last + 1 :])

    def _render(self, final: bool) -> bytes:
        if self._cur or self._cur_dropped:
            text, dropped = self._cur, self._cur_dropped
        else:
            text, dropped = self._prev, self._prev_dropped
        if dropped or not final:
            # Never end inside a character: a cut line, or a state still arriving.
            cut = utf8_safe_end(text)
            if dropped:
                dropped += len(text) - cut
            text = text[:cut]
        if dropped and final:
            text += b" [cachewatch: line cut at %d bytes, %d more bytes dropped]" % (len(text), dropped)
        return text

    def _continue(self, text: bytes) -> bytes:
        """Bytes that turn the line as written so far into ``text``."""
        written = self._written
        if written is None:
            return text
        if text.startswith(written):
            return text[len(written):]  # the line grew: append the rest, no redraw
        return b"\r" + text

    def _end_line(self, out: bytearray) -> None:
        text = self._render(True)
        if text != self._written:
            out += self._continue(text)
        out += b"\n"
        self._cur = self._prev = b""
        self._cur_dropped = self._prev_dropped = 0
        self._written = None


# ------------------------------------------------------------------------------- the file
def base_path(log_path: str | os.PathLike) -> Path:
    """The file holding the logical offset of the current log file's first byte."""
    p = Path(log_path)
    return p.with_name(p.name + ".base")


def rotated_path(log_path: str | os.PathLike, n: int) -> Path:
    p = Path(log_path)
    return p.with_name(f"{p.name}.{n}")


def read_base(log_path: str | os.PathLike) -> int:
    try:
        return int(base_path(log_path).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_base(log_path: Path, base: int) -> None:
    final = base_path(log_path)
    tmp = final.with_name(final.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)  # beside a private log
    try:
        os.write(fd, f"{base}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, final)


class LogWriter:
    """Appends to the log and rotates it by size. One writer at a time (the pump, or the
    supervisor when no pump runs)."""

    def __init__(self, path: str | os.PathLike, max_bytes: int = DEFAULT_LOG_MAX_BYTES, keep: int = DEFAULT_LOG_KEEP) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.keep = max(0, int(keep))
        self._fd: int | None = None
        self._size = 0
        self.dropped_bytes = 0  # output lost to write errors (a full disk)

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        try:
            view = memoryview(data)
            while view:
                fd = self._open()
                room = self.max_bytes - self._size
                if self.max_bytes <= 0 or len(view) <= room:
                    piece = view
                else:
                    # Fill this file up to a line end, the rest goes to the next one: files stay
                    # under max_bytes unless one line alone is longer.
                    cut = bytes(view[: max(room, 0)]).rfind(b"\n") + 1
                    if cut == 0 and self._size > 0:
                        self.rotate()
                        continue
                    if cut == 0:
                        nl = bytes(view).find(b"\n") + 1
                        cut = nl if nl > 0 else len(view)
                    piece = view[:cut]
                while piece:
                    n = os.write(fd, piece)
                    self._size += n
                    piece = piece[n:]
                    view = view[n:]
                if view:
                    self.rotate()
        except OSError:
            # A full or failing disk must not stop the training nor the pump: the output
            # is lost, the next write tries again.
            self.dropped_bytes += len(view)
            self.close()

    def rotate(self) -> None:
        """``log`` -> ``log.1`` -> ... -> ``log.<keep>``; the oldest goes. Readers following
        the log by offset go on from the old file's end into the new file (see the module doc)."""
        base = read_base(self.path)
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        self.close()
        if self.keep == 0:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        else:
            for n in range(self.keep - 1, 0, -1):
                try:
                    os.replace(rotated_path(self.path, n), rotated_path(self.path, n + 1))
                except FileNotFoundError:
                    pass
            try:
                os.replace(self.path, rotated_path(self.path, 1))
            except FileNotFoundError:
                pass
        # The base changes before the new file exists, so a reader that finds a log file
        # always finds its base (readers check the base did not change while they read).
        _write_base(self.path, base + size)


def append_to_log(path: str | os.PathLike, data: bytes, max_bytes: int = DEFAULT_LOG_MAX_BYTES, keep: int = DEFAULT_LOG_KEEP) -> None:
    """One write by someone other than the pump (the supervisor's own lines), rotating if due."""
    w = LogWriter(path, max_bytes, keep)
    try:
        w.write(data)
    finally:
        w.close()


# -------------------------------------------------------------------------------- the pty
def open_pty(columns: int = TTY_COLUMNS, rows: int = TTY_ROWS) -> tuple[int, int]:
    """``(master, slave)``: a terminal of a fixed size whose output keeps ``\\n`` as is (no
    ``\\r\\n`` translation). Both close on exec; pass the slave as the child's stdout."""
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR  # oflag: "\n" stays "\n"
    attrs[3] &= ~(termios.ECHO | termios.ICANON)  # lflag: nothing is typed into it anyway
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    os.set_inheritable(master, False)
    os.set_inheritable(slave, False)
    return master, slave


def tty_environment(env: Mapping[str, str], columns: int = TTY_COLUMNS, rows: int = TTY_ROWS) -> dict[str, str]:
    """The training's environment for a pty: a terminal type that progress libraries draw
    on (Rich draws nothing on ``TERM=dumb``), the pty's size, and no colours (they would be
    stripped anyway). A ``NO_COLOR`` or ``FORCE_COLOR`` the user set is left alone."""
    out = dict(env)
    out["TERM"] = "xterm-256color"
    out["COLUMNS"] = str(columns)
    out["LINES"] = str(rows)
    if "FORCE_COLOR" not in out:
        out.setdefault("NO_COLOR", "1")
    return out


# ------------------------------------------------------------------------------- the pump
def pump(
    fd: int,
    log_path: str | os.PathLike,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
    log_keep: int = DEFAULT_LOG_KEEP,
    partial_flush_s: float = PARTIAL_FLUSH_S,
    stop: list[bool] | None = None,
) -> None:
    """Copy ``fd`` (a pty master or a pipe's read end) into the log until every writer is gone,
    or until ``stop[0]`` becomes true (then what is buffered already is still written)."""
    stop = stop if stop is not None else [False]
    os.set_blocking(fd, False)
    collapser = LineCollapser(max_line_bytes)
    writer = LogWriter(log_path, log_max_bytes, log_keep)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    last_partial = 0.0
    pending_since: float | None = None  # when the unfinished line began
    eof = False
    try:
        while not eof and not stop[0]:
            if pending_since is None:
                timeout_ms = 500  # a finite wait: SIGTERM is noticed even when nothing is written
            else:
                due = max(last_partial, pending_since) + partial_flush_s
                timeout_ms = max(1, int((due - time.monotonic()) * 1000) + 1)
            try:
                events = poller.poll(timeout_ms)
            except InterruptedError:
                continue
            got = 0
            chunks: list[bytes] = []
            if events:
                while got < _ROUND_MAX_BYTES:
                    try:
                        data = os.read(fd, _READ_BYTES)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno == errno.EIO:  # pty: the last writer closed it
                            eof = True
                            break
                        raise
                    if not data:  # pipe: the last writer closed it
                        eof = True
                        break
                    chunks.append(data)
                    got += len(data)
            out = collapser.feed(b"".join(chunks)) if chunks else b""
            now = time.monotonic()
            if not collapser.pending:
                pending_since = None
            elif pending_since is None:
                pending_since = now
            elif now - pending_since >= partial_flush_s and now - last_partial >= partial_flush_s:
                # A line finished within PARTIAL_FLUSH_S is written once, complete; one still
                # being redrawn after that shows its state a few times a second.
                part = collapser.partial()
                last_partial = now
                out += part
            if out:
                writer.write(out)
            if _BATCH_MIN_BYTES <= got < _BATCH_MAX_BYTES and not eof:
                time.sleep(_BATCH_WAIT_S)
        if not eof:
            # SIGTERM: take what is already buffered, then stop.
            try:
                while True:
                    data = os.read(fd, _READ_BYTES)
                    if not data:
                        break
                    writer.write(collapser.feed(data))
            except OSError:
                pass
        writer.write(collapser.finish())
    finally:
        writer.close()


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="cachewatch-output-pump", description="copy a training's output into its log")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--max-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES)
    ap.add_argument("--log-max-bytes", type=int, default=DEFAULT_LOG_MAX_BYTES)
    ap.add_argument("--log-keep", type=int, default=DEFAULT_LOG_KEEP)
    args = ap.parse_args(argv)
    # Own session (the supervisor starts it so): no terminal's SIGINT or SIGHUP reaches it;
    # it ends when the training's output ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stop = [False]

    def _on_term(_sig: int, _frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, _on_term)
    pump(args.fd, args.log, max_line_bytes=args.max_line_bytes, log_max_bytes=args.log_max_bytes,
         log_keep=args.log_keep, stop=stop)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
