"""A real training's output through the supervisor: a pseudo-terminal (or a pipe), the output
pump, and the log as it ends up on disk, byte for byte."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from cachewatch.engine.training.output import TTY_COLUMNS
from cachewatch.engine.training.runstate import TrainingState
from cachewatch.engine.training.supervisor import Supervisor
from tests.support.helpers import wait_for

PY = sys.executable
MARKER = b"[cachewatch] "


def run_training(tmp_path: Path, code: str, **kw) -> bytes:
    """Run ``code`` under a supervisor until it exits; the log without the supervisor's lines."""
    log = tmp_path / "training.log"
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(code))
    sup = Supervisor([PY, str(script)], log_path=log, **kw)
    sup.start()
    info = sup.wait(60)
    assert info.state is TrainingState.EXITED and info.exit_code == 0, log.read_bytes()[-2000:]
    return own_output(log.read_bytes())


def own_output(data: bytes) -> bytes:
    return b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(MARKER))


def shown(data: bytes) -> list[bytes]:
    """The log as a reader shows it: each line in its last drawn state."""
    return [[p for p in line.split(b"\r") if p][-1] if line.strip(b"\r") else b"" for line in data.split(b"\n")[:-1]]


def test_training_writes_to_a_terminal_of_200_columns_without_a_controlling_terminal(tmp_path: Path) -> None:
    code = """
        import os, shutil, sys
        print(sys.stdout.isatty(), sys.stderr.isatty(), sys.stdin.isatty())
        print(os.get_terminal_size(1).columns, os.get_terminal_size(1).lines, os.environ['TERM'])
        try:
            open('/dev/tty')
            print('has a controlling terminal')
        except OSError:
            print('no controlling terminal')
    """
    assert run_training(tmp_path, code) == b"True True False\n200 50 xterm-256color\nno controlling terminal\n"


def test_pipe_mode_keeps_plain_pipes(tmp_path: Path) -> None:
    code = "import sys; print(sys.stdout.isatty(), sys.stderr.isatty()); print('err', file=sys.stderr)"
    assert run_training(tmp_path, code, tty=False) == b"False False\nerr\n"


@pytest.mark.parametrize("tty", [True, False])
def test_stdout_and_stderr_keep_their_order_and_lines(tmp_path: Path, tty: bool) -> None:
    code = """
        import sys
        for i in range(3):
            print('out', i)
            print('err', i, file=sys.stderr)
        print('tab\\there')
        print()
        sys.stdout.write('no newline at the end')
    """
    expected = b"out 0\nerr 0\nout 1\nerr 1\nout 2\nerr 2\ntab\there\n\nno newline at the end\n"
    assert run_training(tmp_path, code, tty=tty) == expected


def test_rich_progress_draws_on_the_terminal_and_lands_as_one_clean_line(tmp_path: Path) -> None:
    code = """
        import time
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        console = Console()
        console.print(f'[bold red]width[/] {console.width} terminal {console.is_terminal}')
        with Progress(TextColumn('train'), BarColumn(bar_width=20), MofNCompleteColumn(), console=console) as p:
            task = p.add_task('train', total=10)
            for _ in range(10):
                time.sleep(0.05)
                p.advance(task)
        console.print('[green]done[/]')
    """
    out = run_training(tmp_path, code)
    assert b"\x1b" not in out  # colours, cursor hiding and erase-line are gone
    assert shown(out) == [b"width 200 terminal True", "train ".encode() + "━".encode() * 20 + b" 10/10", b"done"]
    # Rich redrew the bar at every refresh; the log holds a few of its states at most.
    bar_line = out.split(b"\n")[1]
    assert 1 <= bar_line.count(b"\r") + 1 <= 11


def test_tqdm_uses_the_terminal_width_and_its_redraws_collapse(tmp_path: Path) -> None:
    code = """
        from tqdm import tqdm
        for _ in tqdm(range(3000), mininterval=0, ascii=True, bar_format='{l_bar}{bar}| {n_fmt}/{total_fmt}'):
            pass
        print('after')
    """
    out = run_training(tmp_path, code)
    # tqdm leaves the terminal's last column free: the line is 199 characters wide.
    bar = b"#" * (TTY_COLUMNS - 1 - len(b"100%|| 3000/3000"))
    assert shown(out) == [b"100%|" + bar + b"| 3000/3000", b"after"]
    assert len(out) < 20 * TTY_COLUMNS  # 3000 redraws, a handful kept


def test_a_carriage_return_flood_becomes_one_line(tmp_path: Path) -> None:
    code = """
        import sys
        for i in range(200000):
            sys.stdout.write('\\rstep %6d' % i)
        sys.stdout.write('\\n')
        print('end')
    """
    out = run_training(tmp_path, code)
    assert shown(out) == [b"step 199999", b"end"]
    assert len(out) < 2000  # 2.4 MB of redraws in, a few states out


def test_binary_output_loses_control_bytes_and_keeps_the_rest(tmp_path: Path) -> None:
    code = r"""
        import sys
        sys.stdout.buffer.write(b'\xff\xfe\x00\x01bin\xc3(\x1b[31mred\x1b[0m\x07\n')
        sys.stdout.buffer.write(bytes(range(256)) + b'\n')
    """
    out = run_training(tmp_path, code)
    # range(256) holds "\t", a "\n" (ending a line there) and a "\r" (nothing was drawn after
    # it on the new line, so what follows simply starts it).
    printable = bytes(c for c in range(32, 256) if c != 127)
    assert out == b"\xff\xfebin\xc3(red\n" + b"\t\n" + printable + b"\n"


def test_a_huge_line_is_cut_at_the_limit_with_a_marker(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('x' * 1000000 + '\\n'); print('next')"
    out = run_training(tmp_path, code, max_line_bytes=65536)
    assert out == b"x" * 65536 + b" [cachewatch: line cut at 65536 bytes, 934464 more bytes dropped]\nnext\n"


def test_the_log_is_rotated_by_size_and_keeps_n_files(tmp_path: Path) -> None:
    code = "for i in range(20000): print('line %05d' % i)"
    out_lines = run_training(tmp_path, code, log_max_bytes=50_000, log_keep=2)
    log = tmp_path / "training.log"
    files = sorted(p.name for p in tmp_path.glob("training.log*"))
    assert files == ["training.log", "training.log.1", "training.log.2", "training.log.base"]
    for p in tmp_path.glob("training.log*"):
        assert p.stat().st_size <= 50_000
    # The newest lines are all there, in order, up to the last one.
    kept = own_output((tmp_path / "training.log.2").read_bytes() + (tmp_path / "training.log.1").read_bytes() + log.read_bytes())
    assert kept.endswith(b"line 19999\n") and out_lines == own_output(log.read_bytes())
    first = int(kept.split(b"\n")[0].split()[1])
    assert kept == b"".join(b"line %05d\n" % i for i in range(first, 20000))


def test_pause_and_resume_work_on_a_pty(tmp_path: Path) -> None:
    log = tmp_path / "training.log"
    script = tmp_path / "ticks.py"
    script.write_text("import time, itertools\nfor i in itertools.count():\n    print('tick', i, flush=True); time.sleep(0.02)\n")
    sup = Supervisor([PY, str(script)], log_path=log)
    try:
        sup.start()
        wait_for(lambda: b"tick 3\n" in log.read_bytes(), what="ticks")
        sup.pause()
        wait_for(lambda: psutil.Process(sup.pid).status() == psutil.STATUS_STOPPED, what="stopped")
        time.sleep(0.3)  # whatever was in flight reaches the log
        frozen = log.read_bytes()
        time.sleep(0.3)
        assert log.read_bytes() == frozen  # nothing runs while paused
        sup.resume()
        wait_for(lambda: len(log.read_bytes()) > len(frozen), what="output again after resume")
        info = sup.stop()
        assert info.state is TrainingState.STOPPED and info.signal == "SIGTERM"
    finally:
        if not sup.info().state.over:
            sup.stop()
    ticks = [int(line.split()[1]) for line in own_output(log.read_bytes()).splitlines()]
    assert ticks == list(range(len(ticks)))  # every line once, in order, across the pause


_HOST = """
import sys, time
from cachewatch.engine.training.supervisor import Supervisor
sup = Supervisor([sys.executable, sys.argv[2]], log_path=sys.argv[1], tty=sys.argv[3] == 'tty')
sup.start()
print(sup.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("mode", ["tty", "pipe"])
def test_training_and_its_log_outlive_a_killed_engine(tmp_path: Path, mode: str) -> None:
    log = tmp_path / "training.log"
    code = tmp_path / "ticks.py"
    code.write_text("import time, itertools\nfor i in itertools.count():\n    print('tick', i, flush=True); time.sleep(0.05)\n")
    host = subprocess.Popen([PY, "-c", _HOST, str(log), str(code), mode], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(host.stdout.readline())
        pump = next(p for p in psutil.Process(host.pid).children() if p.pid != pid)
        wait_for(lambda: b"tick 2\n" in log.read_bytes(), what="ticks")
        host.kill()  # kill -9 of the engine
        host.wait()
        seen = log.read_bytes().count(b"tick")
        wait_for(lambda: log.read_bytes().count(b"tick") >= seen + 5, what="the training still writing")
        assert psutil.Process(pid).is_running() and pump.is_running()
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass
        host.kill()
    # The pump sees the training gone, writes what is left and exits.
    pump.wait(10)
    ticks = [int(line.split()[1]) for line in own_output(log.read_bytes()).splitlines()]
    assert ticks == list(range(len(ticks)))


def test_a_stopped_engine_does_not_stall_the_training(tmp_path: Path) -> None:
    # The engine is frozen (SIGSTOP) while the training writes 20 MB: the pump, not the
    # engine, reads the output, so the training runs to its end.
    log = tmp_path / "training.log"
    done = tmp_path / "done"
    code = tmp_path / "flood.py"
    code.write_text("import sys\nfor i in range(100000): sys.stdout.write('\\r' + '%07d' % i + '.' * 192)\n"
                    f"print()\nopen({str(done)!r}, 'w').close()\nimport time; time.sleep(600)\n")
    host = subprocess.Popen([PY, "-c", _HOST, str(log), str(code), "tty"], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(host.stdout.readline())
        os.kill(host.pid, signal.SIGSTOP)
        wait_for(done.exists, timeout=60, what="the training to finish its output")
        wait_for(lambda: b"0099999" in log.read_bytes(), what="the last state in the log")
        assert len(log.read_bytes()) < 100_000  # 20 MB of redraws, a few states kept
    finally:
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        host.kill()
        host.wait()


def test_the_supervisor_lines_come_after_the_last_output_on_their_own_lines(tmp_path: Path) -> None:
    log = tmp_path / "training.log"
    script = tmp_path / "t.py"
    script.write_text("import sys\nsys.stdout.write('\\rstep 1\\rstep 2')\nsys.stdout.flush()\nsys.exit(4)\n")
    sup = Supervisor([PY, str(script)], log_path=log)
    sup.start()
    assert sup.wait(60).exit_code == 4
    lines = log.read_bytes().split(b"\n")
    assert lines[0].startswith(MARKER) and b"attempt 1:" in lines[0]
    assert lines[1] == b"step 2"  # the unfinished last line is ended before the supervisor's line
    assert lines[2].startswith(MARKER) and b"attempt 1: exited with code 4 after" in lines[2]
    assert lines[3:] == [b""]
