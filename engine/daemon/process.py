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
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

from .._version import __version__
from ..config import Config, load_config
from ..errors import CachewatchError
from ..training.supervisor import check_command
from . import runtime
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
        lock = runtime.claim_name(name)
    except CachewatchError as exc:
        if ready:
            ready(f"error {exc}")
        raise
    engine: Engine | None = None
    metrics = None
    fleet = None
    try:
        try:
            engine = Engine(config, name=name, command=command, cwd=cwd, exit_with_training=exit_with_training)
            if echo is not None:
                engine.add_log_listener(lambda _o, data: _echo(echo, data))
            engine.start()
            port = metrics_port if metrics_port is not None else (config.metrics.port or None)
            if port is not None:
                from ..metrics import start_metrics_server

                metrics = start_metrics_server(engine.snapshot, port, config.metrics.host)
                engine.set_endpoints(metrics_url=metrics.url)
            from ..fleet.publisher import start_fleet  # here, not at the top: fleet imports the daemon

            fleet = start_fleet(engine, config.fleet)
        except CachewatchError as exc:
            if ready:
                ready(f"error {exc}")
            if engine is not None:
                engine.close()
            raise
        asyncio.run(_serve(engine, lock, ready, foreground))
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


async def _serve(engine: Engine, lock: runtime.EngineLock, ready: Callable[[str], None] | None, foreground: bool) -> None:
    loop = asyncio.get_running_loop()
    server = EngineServer(engine, lock.socket_path)
    try:
        await server.start()
    except OSError as exc:
        msg = f"cannot listen on {lock.socket_path} ({exc.strerror or exc})"
        if ready:
            ready(f"error {msg}")
        engine.close()
        raise EngineError(msg) from None
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

    try:
        if args.cwd:
            os.chdir(args.cwd)
        cfg = load_config(args.config)
        return run_engine(cfg, name=args.name, command=command, cwd=args.cwd, metrics_port=args.metrics_port, ready=ready)
    except CachewatchError as exc:
        ready(f"error {exc}")
        print(f"cachewatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        ready(f"error the engine crashed during start-up ({type(exc).__name__}: {exc}); see the engine log")
        raise
