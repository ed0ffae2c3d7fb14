"""Launch the training, watch it, restart it by policy, pause, resume and stop it.

The training runs in its own session (``start_new_session``), so it is the leader of its
own process group: SIGSTOP/SIGCONT/SIGTERM go to the group and reach the DataLoader
workers, and a terminal closing (SIGHUP to the terminal's group) never touches it.

Both output streams go into one pseudo-terminal (``tty=True``, the default: Rich, tqdm and
Keras draw their progress as on a terminal; it is 200 columns wide and not the training's
controlling terminal, so no SIGHUP ever comes from it) or one pipe (``tty=False``). The
output pump (:mod:`.output`), a small process in its own session, reads the other end and
appends to the log: redraws collapsed, escape codes removed, long lines cut, the log
rotated by size. It is not a thread of the engine so that the training outlives the
engine as it always did: a ``kill -9`` of the engine leaves the training and the pump
running, and the log keeps being written. The engine tails the file.
``PYTHONUNBUFFERED=1`` makes Python trainings write as they go.

With ``progress_path``, the training gets ``CACHEWATCH_PROGRESS_FILE`` naming it (the
reporting API writes there), and the file is emptied before each attempt.

Events (``training.started``, ``.exited``, ``.restarting``, ``.restarted``, ``.paused``,
``.resumed``, ``.stopped``, ``.failed``) are handed to ``on_event`` outside the lock, so a
callback may call back into the supervisor.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import CachewatchError
from . import output
from .output import DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES, DEFAULT_MAX_LINE_BYTES, append_to_log, open_pty, tty_environment
from .runstate import AttemptRecord, RestartPolicy, TrainingInfo, TrainingState, describe_exit, signal_name

__all__ = ["Supervisor", "LaunchError", "SupervisorError", "PROGRESS_ENV", "ENGINE_ENV", "check_command"]

PROGRESS_ENV = "CACHEWATCH_PROGRESS_FILE"
ENGINE_ENV = "CACHEWATCH_ENGINE"
_HISTORY = 10
_PUMP_DRAIN_S = 5.0  # after the training's group is gone, how long its last output may take to reach the log
_F_SETPIPE_SZ = 1031
_PIPE_BYTES = 1024 * 1024  # a pipe this large absorbs a flood while the pump sleeps between reads

EventCallback = Callable[[str, dict[str, Any]], None]


class LaunchError(CachewatchError):
    """The training command cannot be started at all (not found, not executable, bad cwd)."""


class SupervisorError(CachewatchError):
    """A request that does not fit the training's state (pause when nothing runs...)."""


def check_command(command: Sequence[str], cwd: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> str:
    """The program that would run, or :class:`LaunchError` saying why it cannot.

    Checked before a daemon is spawned so the person at the terminal sees the error, not a log.
    """
    if not command:
        raise LaunchError("no training command; give one after `--` (cachewatch run -- python train.py) or set [run] command")
    if cwd is not None and not os.path.isdir(cwd):
        raise LaunchError(f"training working directory '{cwd}' does not exist; fix [run] cwd")
    prog = command[0]
    path_env = (env or os.environ).get("PATH", os.defpath)
    if os.sep in prog:
        full = prog if os.path.isabs(prog) or cwd is None else os.path.join(cwd, prog)
        if not os.path.exists(full):
            raise LaunchError(f"cannot start training: '{prog}' does not exist; check the path")
        if os.path.isdir(full):
            raise LaunchError(f"cannot start training: '{prog}' is a directory, not a program")
        if not os.access(full, os.X_OK):
            raise LaunchError(
                f"cannot start training: '{prog}' is not executable; run `chmod +x {prog}` or start it with its interpreter (python {prog})"
            )
        return full
    found = shutil.which(prog, path=path_env)
    if found is None:
        raise LaunchError(f"cannot start training: command '{prog}' not found on PATH; check the spelling or give its full path")
    return found


class Supervisor:
    """One training command under supervision. Thread-safe; every method returns quickly except
    :meth:`stop` and :meth:`restart` of a live training, which wait up to ``stop_grace_s``."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: str | os.PathLike,
        cwd: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        progress_path: str | os.PathLike | None = None,
        policy: RestartPolicy = RestartPolicy(),
        stop_grace_s: float = 10.0,
        on_event: EventCallback | None = None,
        tty: bool = True,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
        log_keep: int = DEFAULT_LOG_KEEP,
    ) -> None:
        self.command = tuple(str(a) for a in command)
        self.log_path = Path(log_path)
        self.cwd = None if cwd is None else str(cwd)
        self.tty = bool(tty)
        self.max_line_bytes = int(max_line_bytes)
        self.log_max_bytes = int(log_max_bytes)
        self.log_keep = int(log_keep)
        self.env = dict(os.environ if env is None else env)
        if self.tty:
            self.env = tty_environment(self.env)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.progress_path = None if progress_path is None else Path(progress_path)
        if self.progress_path is not None:
            self.env[PROGRESS_ENV] = str(self.progress_path)
        self.stop_grace_s = float(stop_grace_s)
        self._on_event = on_event
        self._cond = threading.Condition(threading.RLock())
        self._proc: subprocess.Popen[bytes] | None = None
        self._pump: subprocess.Popen[bytes] | None = None
        self._deferred_markers: list[bytes] = []
        self._info = TrainingInfo(command=self.command, state=TrainingState.STARTING, cwd=self.cwd,
                                  log_path=str(self.log_path), policy=policy)
        self._stop_requested = False
        self._restart_requested = False
        self._thread: threading.Thread | None = None
        self._pending_events: list[tuple[str, dict[str, Any]]] = []
        # Held while events are handed to the listener: a command that flushes after the watcher
        # thread took the pending events waits until they are delivered (a reply to `restart`
        # never comes before the "exited, restarted, started" it caused).
        self._flush_lock = threading.RLock()

    # ------------------------------------------------------------------------------ reading
    def info(self) -> TrainingInfo:
        with self._cond:
            return self._info

    @property
    def pid(self) -> int | None:
        return self.info().pid

    # ---------------------------------------------------------------------------- lifecycle
    def start(self) -> TrainingInfo:
        """Launch the first attempt. Raises :class:`LaunchError` if the command cannot start."""
        with self._cond:
            if self._info.state.live or self._info.state is TrainingState.RESTARTING:
                raise SupervisorError(f"the training is already {self._info.state.value} (pid {self._info.pid})")
            self._stop_requested = False
            self._restart_requested = False
            self._launch_locked()
            self._start_watcher_locked()
            info = self._info
        self._flush_events()
        return info

    def wait(self, timeout: float | None = None) -> TrainingInfo:
        """Block until the training is over for good (no restart to come), or ``timeout``.

        The events up to that state have reached ``on_event`` when it returns: the watcher sets
        the state before it delivers them, so this delivers what it has not yet (or waits for
        its delivery to end).
        """
        with self._cond:
            self._cond.wait_for(lambda: self._info.state.over, timeout)
            info = self._info
        self._flush_events()
        return info

    def pause(self) -> TrainingInfo:
        with self._cond:
            info = self._info
            if info.state is TrainingState.PAUSED:
                return info
            if info.state is not TrainingState.RUNNING:
                raise SupervisorError(f"nothing to pause: the training is {info.state.value}")
            self._signal_group(signal.SIGSTOP)
            now = time.time()
            self._info = replace(info, state=TrainingState.PAUSED, paused_since=now)
            self._event("training.paused", pid=info.pid, attempt=info.attempt)
            info = self._info
        self._flush_events()
        return info

    def resume(self) -> TrainingInfo:
        with self._cond:
            info = self._info
            if info.state is TrainingState.RUNNING:
                return info
            if info.state is not TrainingState.PAUSED:
                raise SupervisorError(f"nothing to resume: the training is {info.state.value}")
            self._signal_group(signal.SIGCONT)
            now = time.time()
            paused = now - (info.paused_since or now)
            self._info = replace(info, state=TrainingState.RUNNING, paused_since=None, paused_s=info.paused_s + paused)
            self._event("training.resumed", pid=info.pid, attempt=info.attempt, paused_s=round(paused, 3))
            info = self._info
        self._flush_events()
        return info

    def stop(self, timeout: float | None = None) -> TrainingInfo:
        """SIGTERM to the group, SIGKILL after ``stop_grace_s``; no restart follows."""
        with self._cond:
            self._stop_requested = True
            state = self._info.state
            if state is TrainingState.STARTING:
                self._info = replace(self._info, state=TrainingState.STOPPED, exit_reason="stopped before it started")
                self._cond.notify_all()
            elif state is TrainingState.RESTARTING:
                self._cond.notify_all()  # the watcher wakes from its back-off and records the stop
            attempt = self._info.attempt
        if state.live:
            self._terminate(attempt)
        with self._cond:
            self._cond.wait_for(lambda: self._info.state.over, timeout if timeout is not None else self.stop_grace_s + 10)
            info = self._info
        self._flush_events()
        return info

    def restart(self) -> TrainingInfo:
        """Stop the current attempt (gracefully) and launch a new one; resets the failure back-off."""
        with self._cond:
            state = self._info.state
            if state is TrainingState.STARTING:
                raise SupervisorError("the training has not started yet")
            self._stop_requested = False
            if state.over:
                self._info = replace(self._info, restarts=self._info.restarts + 1, failure_restarts=0)
                self._event("training.restarted", manual=True, restarts=self._info.restarts)
                self._launch_locked()
                self._start_watcher_locked()
                info = self._info
                attempt = None
            else:
                self._restart_requested = True
                self._cond.notify_all()
                attempt = self._info.attempt
        if attempt is not None:
            if state.live:
                self._terminate(attempt)
            with self._cond:
                self._cond.wait_for(
                    lambda: self._info.attempt > attempt or self._info.state.over, self.stop_grace_s + 10
                )
                info = self._info
        self._flush_events()
        return info

    # ------------------------------------------------------------------------------ internals
    def _event(self, kind: str, **fields: Any) -> None:
        self._pending_events.append((kind, fields))

    def _flush_events(self) -> None:
        """Deliver pending events in order. Never called with ``_cond`` held."""
        with self._flush_lock:
            with self._cond:
                events, self._pending_events = self._pending_events, []
            if self._on_event is None:
                return
            for kind, fields in events:
                try:
                    self._on_event(kind, fields)
                except Exception:  # a broken listener must not take the supervisor down
                    import logging

                    logging.getLogger(__name__).exception("event callback failed for %s", kind)

    def _write_marker(self, text: str) -> None:
        # A line in the training log saying what the supervisor did, so the log reads alone.
        line = f"[cachewatch] {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n".encode()
        pump = self._pump
        if pump is not None and pump.poll() is None:
            # The pump is the log's one writer while it runs (it may be mid-line, or rotating):
            # the line goes in after the training's last output.
            self._deferred_markers.append(line)
            return
        # A full disk must not stop the supervision (append_to_log swallows it); the event
        # log still records what happened.
        append_to_log(self.log_path, line, self.log_max_bytes, self.log_keep)

    def _open_output(self) -> tuple[int, int]:
        """``(read_end, write_end)`` of the training's output: a pty, or a large pipe."""
        if self.tty:
            try:
                return open_pty()
            except OSError as exc:
                raise LaunchError(f"cannot open a pseudo-terminal for the training ({exc.strerror}); set [run] tty = false") from None
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(w, _F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default 64 KiB pipe works too
        return r, w

    def _start_pump(self, read_fd: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", output.__file__, "--fd", str(read_fd), "--log", str(self.log_path),
             "--max-line-bytes", str(self.max_line_bytes), "--log-max-bytes", str(self.log_max_bytes),
             "--log-keep", str(self.log_keep)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            pass_fds=(read_fd,),
            start_new_session=True,
        )

    def _end_pump(self) -> None:
        """Wait for the pump to write the exited attempt's last output, then the held markers.
        Called by the watcher without the lock: ``info()`` and commands answer meanwhile."""
        with self._cond:
            pump = self._pump
        if pump is not None:
            try:
                pump.wait(_PUMP_DRAIN_S)
            except subprocess.TimeoutExpired:
                # Something outside the training's group (it called setsid) still holds the
                # terminal open; the next attempt gets a new pump, this one writes what it has.
                pump.terminate()
                try:
                    pump.wait(2.0)
                except subprocess.TimeoutExpired:
                    pump.kill()
                    pump.wait()
        with self._cond:
            if self._pump is pump:
                self._pump = None
            markers, self._deferred_markers = self._deferred_markers, []
        for line in markers:
            append_to_log(self.log_path, line, self.log_max_bytes, self.log_keep)

    def _launch_locked(self) -> None:
        check_command(self.command, self.cwd, self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        info = self._info
        attempt = info.attempt + 1
        self._write_marker(f"attempt {attempt}: {' '.join(self.command)}")
        if self.progress_path is not None:
            # Each attempt reports from scratch; a reader of the file starts over with it.
            try:
                self.progress_path.write_bytes(b"")
            except OSError as exc:
                raise LaunchError(f"cannot create the progress file {self.progress_path} ({exc.strerror}); check [run] log_dir") from None
        read_fd, write_fd = self._open_output()
        try:
            try:
                proc = subprocess.Popen(
                    self.command,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=write_fd,
                    start_new_session=True,
                    close_fds=True,
                )
            except FileNotFoundError:
                raise LaunchError(f"cannot start training: '{self.command[0]}' not found; check the command or PATH") from None
            except PermissionError:
                raise LaunchError(f"cannot start training: '{self.command[0]}' is not executable; chmod +x it or start it with its interpreter") from None
            except OSError as exc:
                raise LaunchError(f"cannot start training: '{self.command[0]}' ({exc.strerror}); add a #! line or start it with its interpreter") from None
            finally:
                os.close(write_fd)  # the training holds it now; the pump sees the end when it closes
            try:
                self._pump = self._start_pump(read_fd)
            except OSError as exc:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                raise LaunchError(f"cannot start the output pump ({exc.strerror}); check that {sys.executable} still exists") from None
        finally:
            os.close(read_fd)
        self._proc = proc
        now = time.time()
        self._info = replace(
            info,
            state=TrainingState.RUNNING,
            pid=proc.pid,
            attempt=attempt,
            first_started=info.first_started or now,
            started=now,
            ended=None,
            paused_s=0.0,
            paused_since=None,
            next_restart_at=None,
            launch_error=None,
            history=(info.history + (AttemptRecord(attempt=attempt, pid=proc.pid, started=now),))[-_HISTORY:],
        )
        self._event("training.started", pid=proc.pid, attempt=attempt, command=list(self.command))
        self._cond.notify_all()

    def _start_watcher_locked(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # the running watcher picks up the new attempt itself
        self._thread = threading.Thread(target=self._watch, name="training-watcher", daemon=True)
        self._thread.start()

    def _signal_group(self, sig: int) -> bool:
        pid = self._info.pid
        if pid is None:
            return False
        try:
            os.killpg(pid, sig)
            return True
        except ProcessLookupError:
            return False

    def _terminate(self, attempt: int) -> None:
        """SIGTERM the group of ``attempt``; SIGKILL it if the leader outlives the grace period."""
        with self._cond:
            if self._info.attempt != attempt or not self._info.state.live:
                return
            self._signal_group(signal.SIGTERM)
            # A stopped process keeps SIGTERM pending until it runs again.
            self._signal_group(signal.SIGCONT)
            ended = self._cond.wait_for(
                lambda: self._info.attempt != attempt or not self._info.state.live, self.stop_grace_s
            )
            if not ended:
                self._write_marker(f"attempt {attempt}: still running {self.stop_grace_s:g}s after SIGTERM, sending SIGKILL")
                self._signal_group(signal.SIGKILL)

    def _watch(self) -> None:
        while True:
            with self._cond:
                proc = self._proc
            assert proc is not None
            returncode = proc.wait()
            now = time.time()
            # Whatever the leader left behind in its group (DataLoader workers of a killed
            # training) would keep memory and GPU memory; the next attempt needs them gone.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._end_pump()
            if not self._after_exit(proc, returncode, now):
                self._flush_events()
                return
            self._flush_events()

    def _after_exit(self, proc: subprocess.Popen[bytes], returncode: int, now: float) -> bool:
        """Record an exit and decide what follows. True when a new attempt is running."""
        with self._cond:
            info = self._info
            exit_code = returncode if returncode >= 0 else None
            sig = signal_name(-returncode) if returncode < 0 else None
            requested = self._stop_requested or self._restart_requested
            paused_s = info.paused_s + (now - info.paused_since if info.paused_since else 0.0)
            record = AttemptRecord(info.attempt, proc.pid, info.started or now, now, exit_code, sig, requested)
            reason = describe_exit(exit_code, sig, requested)
            self._info = info = replace(
                info,
                pid=None,
                ended=now,
                exit_code=exit_code,
                signal=sig,
                exit_reason=reason,
                paused_s=paused_s,
                paused_since=None,
                history=info.history[:-1] + (record,),
            )
            self._write_marker(f"attempt {info.attempt}: {reason} after {record.duration_s:.1f}s")
            self._event(
                "training.exited",
                pid=proc.pid,
                attempt=info.attempt,
                exit_code=exit_code,
                signal=sig,
                duration_s=round(record.duration_s or 0.0, 3),
                requested=requested,
                reason=reason,
            )
            if self._stop_requested:
                return self._end_locked(TrainingState.STOPPED)
            if self._restart_requested:
                self._restart_requested = False
                self._info = replace(info, restarts=info.restarts + 1, failure_restarts=0)
                self._event("training.restarted", manual=True, restarts=self._info.restarts)
                return self._relaunch_locked()
            if not (record.failed and info.policy.allows(info.failure_restarts)):
                return self._end_locked(TrainingState.EXITED)
            delay = info.policy.delay_s(info.failure_restarts)
            self._info = replace(info, state=TrainingState.RESTARTING, next_restart_at=now + delay)
            self._event(
                "training.restarting",
                attempt=info.attempt,
                delay_s=delay,
                restart=info.failure_restarts + 1,
                max_restarts=info.policy.max_restarts,
            )
            self._cond.notify_all()
        self._flush_events()  # let listeners see "restarting" during the back-off
        with self._cond:
            deadline = time.monotonic() + delay
            self._cond.wait_for(
                lambda: self._stop_requested or self._restart_requested or time.monotonic() >= deadline,
                max(0.0, delay),
            )
            if self._stop_requested:
                return self._end_locked(TrainingState.STOPPED)
            manual = self._restart_requested
            self._restart_requested = False
            info = self._info
            self._info = replace(
                info,
                restarts=info.restarts + 1,
                failure_restarts=0 if manual else info.failure_restarts + 1,
            )
            self._event("training.restarted", manual=manual, restarts=self._info.restarts,
                        failure_restarts=self._info.failure_restarts)
            return self._relaunch_locked()

    def _relaunch_locked(self) -> bool:
        try:
            self._launch_locked()
            return True
        except LaunchError as exc:
            self._info = replace(self._info, launch_error=str(exc))
            self._event("training.failed", error=str(exc))
            return self._end_locked(TrainingState.FAILED)

    def _end_locked(self, state: TrainingState) -> bool:
        self._info = replace(self._info, state=state, next_restart_at=None)
        if state is TrainingState.STOPPED:
            self._event("training.stopped", attempt=self._info.attempt, reason=self._info.exit_reason)
        self._cond.notify_all()
        return False
