"""Running an engine as a process: in the foreground, or as a detached daemon.

:func:`start_daemon` is what ``cachewatch run --headless`` (and later the dashboard) calls:
it checks everything a person can fix (config, command, name) in the calling process so
errors appear at the terminal, then starts ``python -m cachewatch.engine.daemon`` in a new
session with its stdio going to ``engine.log``, and waits on a pipe for the daemon to say
``ok`` (socket listening) or ``error <one line>``.

:func:`run_engine` is the body of that daemon, and of ``cachewatch run --foreground``: take
the name, start the engine, serve the socket (and metrics), until a stop request or
SIGTERM/SIGINT; then stop the training gracefully, say ``bye`` to clients and release the
name.

Start-up order, so that a failure never leaves a training nobody can reach: take the name;
refuse if a killed engine's training still runs (``orphans.py``); bind the control socket
and the metrics port; publish the registry entry; only then launch the training. Anything
that still fails after the launch (an exception of any kind) stops the training before the
error is reported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

from .._version import __version__
from ..config import Config, check_port, load_config
from ..errors import CachewatchError
from ..training.supervisor import check_command
from . import orphans, runtime
from .engine import Engine
from .errors import EngineError, EngineNameTaken
from .protocol import PROTOCOL_VERSION
from .runtime import EngineEntry
from .server import EngineServer

__all__ = ["start_daemon", "run_engine", "resolve_name", "DAEMON_MODULE"]

log = logging.getLogger("cachewatch.engine")
DAEMON_MODULE = "cachewatch.engine.daemon"


def resolve_name(cfg: Config, command: Sequence[str], name: str | None) -> str:
    return runtime.check_engine_name(name or cfg.run.name or runtime.default_engine_name(cfg.path, command or cfg.run.command))


def start_daemon(
    config_path: str | os.PathLike[str] | None = None,
    *,
    command: Sequence[str] = (),
    name: str | None = None,
    metrics_port: int | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout_s: float = 60.0,
    python: str | None = None,
) -> EngineEntry:
    """Start a detached engine (and its training) that outlives this process and its terminal."""
    cfg = load_config(config_path)
    if metrics_port is not None:
        check_port(metrics_port)
    command = tuple(command) or cfg.run.command
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    if command:
        check_command(command, cfg.run.cwd or cwd)
    name = resolve_name(cfg, command, name)
    rdir = runtime.runtime_dir()
    runtime.socket_path(name, rdir)
    for e in runtime.list_engines(rdir):
        if e.name == name:
            raise EngineNameTaken(
                f"an engine named {name!r} is already running (pid {e.pid}); attach to it, stop it with "
                f"`cachewatch stop {name}`, or pick another --name"
            )
    sdir = runtime.state_dir(name, cfg.run.log_dir)
    _refuse_orphan(name, sdir)  # said here too, so the person sees it before a daemon starts
    engine_log = sdir / "engine.log"
    argv = [python or sys.executable, "-m", DAEMON_MODULE, "--name", name, "--cwd", cwd]
    if cfg.path is not None:
        argv += ["--config", str(cfg.path)]
    if metrics_port is not None:
        argv += ["--metrics-port", str(metrics_port)]
    read_fd, write_fd = os.pipe()
    argv += ["--ready-fd", str(write_fd), "--", *command]
    log_fd = os.open(engine_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,  # no controlling terminal: closing it sends us no SIGHUP
            pass_fds=(write_fd,),
            close_fds=True,
        )
    finally:
        os.close(log_fd)
        os.close(write_fd)
    try:
        status = _read_status(read_fd, timeout_s, proc)
    finally:
        os.close(read_fd)
    if status.startswith("ok"):
        entry = runtime.wait_for_entry(name, rdir, 5.0)
        if entry is None:
            raise EngineError(f"the engine {name!r} started but published no socket; see {engine_log}")
        return entry
    if status.startswith("error "):
        raise EngineError(status[len("error "):])
    if proc.poll() is None:
        raise EngineError(f"the engine {name!r} did not start within {timeout_s:g}s (pid {proc.pid}); see {engine_log}")
    raise EngineError(f"the engine {name!r} exited during start-up (code {proc.returncode}); see {engine_log}")


def _read_status(fd: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> str:
    data = b""
    deadline = time.monotonic() + timeout_s
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # the daemon closed the pipe: it exited or said nothing
            data += chunk
        elif proc.poll() is not None:
            break
    return data.split(b"\n", 1)[0].decode(errors="replace").strip()


def _refuse_orphan(name: str, sdir: Any) -> None:
    orphan = orphans.find_orphan(sdir)
    if orphan is not None:
        raise EngineError(
            f"the training of an earlier engine {name!r} is still running without it ({orphan.describe()}); "
            f"stop it with `cachewatch stop {name}`, or pick another --name"
        )


def bind_socket(path: Any) -> socket.socket:
    """The control socket, bound (mode 0600) and listening, before anything is launched.

    Connections that come before the server runs wait in the backlog.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        # The directory is 0700 already; 0600 on the socket is the second lock on the door.
        os.chmod(path, 0o600)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise EngineError(f"cannot listen on {path} ({exc.strerror or exc}); set XDG_RUNTIME_DIR to a writable directory") from None
    sock.setblocking(False)
    return sock


def run_engine(
    config: Config,
    *,
    name: str,
    command: Sequence[str] = (),
    cwd: str | None = None,
    metrics_port: int | None = None,
    ready: Callable[[str], None] | None = None,
    foreground: bool = False,
    exit_with_training: bool = False,
    echo: Any = None,
) -> int:
    """Serve an engine until it is stopped. Returns the exit code for the process.

    ``ready(line)`` is told ``ok <pid>`` once clients can connect, or ``error <message>``.
    ``echo`` (a binary stream) receives the training output as it comes (foreground mode).
    """
    try:
        if metrics_port is not None:
            check_port(metrics_port)
        lock = runtime.claim_name(name)
    except CachewatchError as exc:
        if ready:
            ready(f"error {exc}")
        raise
    engine: Engine | None = None
    metrics = None
    sock: socket.socket | None = None
    fleet = None
    try:
        try:
            engine = Engine(config, name=name, command=command, cwd=cwd, exit_with_training=exit_with_training)
            _refuse_orphan(name, engine.state_dir)  # under the name lock: no live engine can own it
            sock = bind_socket(lock.socket_path)
            port = metrics_port if metrics_port is not None else (config.metrics.port or None)
            if port is not None:
                from .metrics import start_metrics_server

                metrics = start_metrics_server(engine.snapshot, port, config.metrics.host)
                engine.set_endpoints(metrics_url=metrics.url)
            engine.set_endpoints(socket_path=str(lock.socket_path))
            _publish(lock, engine)
            if echo is not None:
                engine.add_log_listener(lambda _o, data: _echo(echo, data))
            from ..fleet.publisher import start_fleet  # here, not at the top: fleet imports the daemon

            fleet = start_fleet(engine, config.fleet)  # a bad [fleet] setting refuses before any training runs
            engine.start()  # the training is launched only now
        except BaseException as exc:
            if ready:
                ready(f"error {_one_line(exc)}")
            if engine is not None:
                engine.close()  # stops a training that was launched already
            if sock is not None:
                sock.close()
            raise
        try:
            asyncio.run(_serve(engine, lock, ready, foreground, sock))
        except BaseException as exc:
            if ready:
                ready(f"error {_one_line(exc)}")
            engine.close()  # whatever broke, no training is left running unreachable
            raise
    finally:
        if fleet is not None:
            fleet.close()
        if metrics is not None:
            metrics.close()
        lock.release()
    info = engine.supervisor.info() if engine.supervisor is not None else None
    if info is None or not exit_with_training:
        return 0
    if info.signal is not None:
        import signal as _s

        return 128 + int(getattr(_s, info.signal, 0) or 0)
    return int(info.exit_code or 0)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, CachewatchError):
        return str(exc).replace("\n", " ")
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "the engine was interrupted during start-up; the training was stopped"
    return f"the engine crashed during start-up ({type(exc).__name__}: {exc}); the training was stopped; see the engine log"


def _publish(lock: runtime.EngineLock, engine: Engine) -> None:
    try:
        lock.publish(
            EngineEntry(
                name=engine.name,
                pid=os.getpid(),
                socket=str(lock.socket_path),
                started=engine.info.started,
                protocol=PROTOCOL_VERSION,
                version=__version__,
                config=engine.info.config_path,
                command=engine.command,
                state_dir=str(engine.state_dir),
                log_path=str(engine.log_path),
                metrics_url=engine.info.metrics_url,
            )
        )
    except OSError as exc:
        raise EngineError(
            f"cannot write the engine entry in {lock.rdir} ({exc.strerror or exc}); free space there or set XDG_RUNTIME_DIR"
        ) from None


async def _serve(engine: Engine, lock: runtime.EngineLock, ready: Callable[[str], None] | None, foreground: bool,
                 sock: socket.socket | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = EngineServer(engine, lock.socket_path, sock=sock)
    try:
        await server.start()
    except OSError as exc:
        raise EngineError(f"cannot listen on {lock.socket_path} ({exc.strerror or exc})") from None
    stop_signals = (signal.SIGTERM, signal.SIGINT)
    for sig in stop_signals:
        loop.add_signal_handler(sig, engine.request_stop, f"signal {signal.Signals(sig).name}")
    if not foreground:
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # no terminal to lose; stay up
    log.info("engine %s (pid %s) listening on %s", engine.name, os.getpid(), lock.socket_path)
    if ready:
        ready(f"ok {os.getpid()}")
    await asyncio.to_thread(engine.stopped.wait)
    log.info("engine %s stopping: %s", engine.name, engine.stop_reason)
    # The training stops first, so attached clients see its last state before the bye.
    await asyncio.to_thread(engine.close)
    await server.close(engine.stop_reason or "engine stopping")
    for sig in stop_signals:
        loop.remove_signal_handler(sig)


def _echo(stream: Any, data: bytes) -> None:
    try:
        stream.write(data)
        stream.flush()
    except (OSError, ValueError):
        pass


def daemon_main(argv: Sequence[str] | None = None) -> int:
    """``python -m cachewatch.engine.daemon``: the detached engine process."""
    import argparse

    parser = argparse.ArgumentParser(prog="cachewatch-engine")
    parser.add_argument("--name", required=True)
    parser.add_argument("--config")
    parser.add_argument("--cwd")
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = [a for a in args.command]
    if command and command[0] == "--":
        command = command[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    ready_file = os.fdopen(args.ready_fd, "w") if args.ready_fd is not None else None

    def ready(line: str) -> None:
        nonlocal ready_file
        if ready_file is not None:
            try:
                ready_file.write(line.replace("\n", " ") + "\n")
                ready_file.close()
            except OSError:
                pass
            ready_file = None

    # Until the event loop takes SIGTERM over, it must unwind (and stop a launched training)
    # rather than kill the engine on the spot.
    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        if args.cwd:
            os.chdir(args.cwd)
        cfg = load_config(args.config)
        return run_engine(cfg, name=args.name, command=command, cwd=args.cwd, metrics_port=args.metrics_port, ready=ready)
    except CachewatchError as exc:
        ready(f"error {exc}")
        print(f"cachewatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except BaseException as exc:
        ready(f"error {_one_line(exc)}")
        raise
