"""Where engines live on this machine: the private socket directory and the registry of engines.

One directory per user, ``$XDG_RUNTIME_DIR/cachewatch/`` (or ``/tmp/cachewatch-<uid>/`` when
there is no runtime directory), mode 0700. Each running engine owns three files in it:

``<name>.lock``
    an ``flock`` held for the engine's whole life. It is the truth about liveness: a lock
    that can be taken belongs to a dead engine, whatever the other files say.
``<name>.sock``
    the control socket (mode 0600).
``<name>.json``
    a small :class:`EngineEntry` (pid, config, start time, protocol) so ``cachewatch ls``
    can list engines without connecting to each.

State that must outlive the engine (training log, event log) goes to the state directory,
``$XDG_STATE_HOME/cachewatch/<name>/`` or ``[run] log_dir``. The training's output may hold
secrets (an API key it printed), so that directory is private: mode 0700 and its files 0600,
checked at every start (see :func:`ensure_state_dir`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..cache.locks import lock_held
from .errors import EngineError, EngineNameTaken, NoEngine, RuntimeDirError

__all__ = [
    "EngineEntry",
    "EngineLock",
    "runtime_dir",
    "state_dir",
    "socket_path",
    "default_engine_name",
    "check_engine_name",
    "list_engines",
    "find_engine",
    "claim_name",
    "SOCKET_PATH_MAX",
]

# sun_path is 108 bytes on Linux, including the terminating NUL.
SOCKET_PATH_MAX = 107
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class EngineEntry:
    """What ``<name>.json`` says about a running engine."""

    name: str
    pid: int
    socket: str
    started: float
    protocol: str
    version: str
    config: str | None = None
    command: tuple[str, ...] = ()
    state_dir: str = ""
    log_path: str = ""
    metrics_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["command"] = list(self.command)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EngineEntry":
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            socket=str(data["socket"]),
            started=float(data["started"]),
            protocol=str(data["protocol"]),
            version=str(data.get("version", "")),
            config=data.get("config"),
            command=tuple(str(a) for a in data.get("command", ())),
            state_dir=str(data.get("state_dir", "")),
            log_path=str(data.get("log_path", "")),
            metrics_url=data.get("metrics_url"),
        )


# ------------------------------------------------------------------------------- directories
def runtime_dir(env: Mapping[str, str] | None = None, *, create: bool = True) -> Path:
    """The private directory for sockets, created 0700 if missing; refused if foreign or open."""
    env = os.environ if env is None else env
    base = env.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base) and os.path.isdir(base):
        path = Path(base) / "cachewatch"
    else:
        path = Path(f"/tmp/cachewatch-{os.getuid()}")
    if create:
        ensure_private_dir(path)
    return path


def ensure_private_dir(path: Path) -> Path:
    """Make ``path`` a directory only this user can enter, or explain why it cannot be used.

    A directory that exists with the wrong owner or mode is refused rather than fixed: in a
    shared ``/tmp`` it may have been planted by someone else to catch our sockets.
    """
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # the umask may have taken bits away; make the mode exact
    except FileExistsError:
        pass
    except OSError as exc:
        raise RuntimeDirError(
            f"cannot create the engine socket directory '{path}' ({exc.strerror}); set XDG_RUNTIME_DIR to a writable directory"
        ) from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(f"engine socket directory '{path}' is not a directory (a link or a file); remove it")
    if st.st_uid != os.getuid():
        raise RuntimeDirError(
            f"engine socket directory '{path}' belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); "
            "remove it or set XDG_RUNTIME_DIR"
        )
    if st.st_mode & 0o077:
        raise RuntimeDirError(
            f"engine socket directory '{path}' has mode {stat.S_IMODE(st.st_mode):04o}, open to other users; "
            f"run `chmod 700 {path}` or remove it"
        )
    return path


def state_dir_path(name: str, log_dir: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Where the engine called ``name`` keeps its state (nothing is created)."""
    env = os.environ if env is None else env
    if log_dir is not None:
        return Path(log_dir)
    base = env.get("XDG_STATE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "cachewatch" / name


def state_dir(name: str, log_dir: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Where an engine keeps its training log, progress file and event log: created if missing,
    private in any case (see :func:`ensure_state_dir`)."""
    path = state_dir_path(name, log_dir, env)
    if log_dir is None:
        try:  # $XDG_STATE_HOME/cachewatch lists the engines' names: private too
            path.parent.mkdir(parents=True, exist_ok=True)
            _tighten_if_ours(path.parent)
        except OSError as exc:
            raise RuntimeDirError(
                f"cannot create the engine state directory '{path.parent}' ({exc.strerror}); "
                "set XDG_STATE_HOME or [run] log_dir to a writable directory"
            ) from None
    return ensure_state_dir(path)


# Files an engine writes in its state directory; a directory holding only these is ours to tighten.
STATE_FILES = ("training.log", "progress.jsonl", "events.jsonl", "engine.log", "training.json", "eviction-offsets.json")


def _is_state_file(name: str) -> bool:
    return name.startswith(STATE_FILES) or (name.startswith(".") and name.endswith(".tmp"))


def _tighten_if_ours(path: Path) -> None:
    st = os.stat(path)
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700)


def ensure_state_dir(path: Path) -> Path:
    """Make ``path`` a private state directory (0700, files 0600), or say why it cannot be one.

    Created 0700 when missing. An existing directory that other users can enter is tightened
    when it is cachewatch's own (empty, or holding only engine state files) and refused
    otherwise: chmod-ing a directory a person shares on purpose would be a surprise, leaving
    it open would show the training's output (and any secret it prints) to every local user.
    A directory of another user is always refused.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise RuntimeDirError(
            f"cannot create the engine state directory '{path}' ({exc.strerror}); set [run] log_dir to a writable directory"
        ) from None
    try:
        st = os.stat(path)
    except OSError as exc:
        raise RuntimeDirError(f"cannot use the engine state directory '{path}' ({exc.strerror}); set [run] log_dir") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(f"engine state directory '{path}' is not a directory; remove it or set [run] log_dir")
    if st.st_uid != os.getuid():
        raise RuntimeDirError(
            f"engine state directory '{path}' belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); "
            "set [run] log_dir to a directory of yours"
        )
    if st.st_mode & 0o077:
        foreign = sorted(n for n in os.listdir(path) if not _is_state_file(n))
        if foreign:
            raise RuntimeDirError(
                f"engine state directory '{path}' has mode {stat.S_IMODE(st.st_mode):04o}: other users could read the "
                f"training's output; run `chmod 700 {path}` or set [run] log_dir to a directory of its own"
            )
        os.chmod(path, 0o700)
    for entry in os.scandir(path):  # files an older version left 0644
        try:
            est = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(est.st_mode) and est.st_uid == os.getuid() and est.st_mode & 0o077:
                os.chmod(entry.path, stat.S_IMODE(est.st_mode) & 0o700)
        except OSError:
            pass
    return path


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it is missing (before a writer creates it 0644)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError:
        pass  # the writer reports it, with its own fix


# ------------------------------------------------------------------------------------- names
def check_engine_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise EngineError(
            f"engine name {name!r} is not usable; use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def default_engine_name(config_path: str | os.PathLike[str] | None, command: Sequence[str] = ()) -> str:
    """A stable name for an engine: the config's directory, else the training script's name.

    The name is what people type (``cachewatch status proj``), so it comes from something
    they recognise; a short hash of the full path keeps two projects with the same
    directory name apart.
    """
    if config_path is not None:
        p = Path(os.path.abspath(config_path))
        stem = p.parent.name or "root"
        if p.name != "cachewatch.toml":
            stem = p.stem
        return _clean(stem) + "-" + hashlib.sha1(str(p).encode()).hexdigest()[:6]
    for arg in command:
        base = os.path.basename(arg)
        if base.startswith("-") or base in ("python", "python3", "env", "uv", "torchrun") or re.match(r"^python[\d.]*$", base):
            continue
        if base.endswith(".py"):
            base = base[:-3]
        return _clean(base)
    return "engine"


def _clean(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:40]
    return cleaned or "engine"


def socket_path(name: str, rdir: Path | None = None) -> Path:
    rdir = runtime_dir() if rdir is None else rdir
    path = rdir / f"{check_engine_name(name)}.sock"
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise RuntimeDirError(
            f"socket path '{path}' is longer than {SOCKET_PATH_MAX} bytes, the limit of Unix sockets; "
            "set XDG_RUNTIME_DIR to a shorter directory or use a shorter --name"
        )
    return path


# ---------------------------------------------------------------------------------- registry
@dataclass
class EngineLock:
    """The flock that makes a name belong to one live engine. Held until :meth:`release`."""

    name: str
    rdir: Path
    fd: int
    files: list[Path] = field(default_factory=list)

    @property
    def socket_path(self) -> Path:
        return socket_path(self.name, self.rdir)

    @property
    def info_path(self) -> Path:
        return self.rdir / f"{self.name}.json"

    def publish(self, entry: EngineEntry) -> None:
        """Write ``<name>.json`` atomically (after the socket listens, so readers can connect)."""
        tmp = self.rdir / f".{self.name}.json.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(entry.to_json(), fh)
            os.replace(tmp, self.info_path)
        except OSError:
            try:  # a full disk must not leave a half-written entry behind
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def release(self) -> None:
        """Remove the socket and info file, then let go of the name."""
        if self.fd < 0:
            return
        for p in (self.info_path, self.socket_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        try:
            os.unlink(self.rdir / f"{self.name}.lock")
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = -1


def claim_name(name: str, rdir: Path | None = None) -> EngineLock:
    """Take the name for this process, or raise :class:`EngineNameTaken` naming the holder."""
    check_engine_name(name)
    rdir = runtime_dir() if rdir is None else rdir
    socket_path(name, rdir)  # fail now, with the fix, if the path cannot be bound
    lock_path = rdir / f"{name}.lock"
    for _ in range(5):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _read_entry(rdir / f"{name}.json")
            pid = f" (pid {holder.pid})" if holder else ""
            raise EngineNameTaken(
                f"an engine named {name!r} is already running{pid}; attach to it, stop it with "
                f"`cachewatch stop {name}`, or pick another --name"
            ) from None
        # The previous holder may have unlinked the lock file between our open and our flock;
        # then we hold a lock on a file nobody else can see, and must try again.
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:  # pragma: no cover - needs a pathological race five times in a row
        raise EngineNameTaken(f"could not take the engine name {name!r}; try again")
    # Leftovers of a dead engine with this name.
    for stale in (rdir / f"{name}.sock", rdir / f"{name}.json"):
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    return EngineLock(name=name, rdir=rdir, fd=fd)


def _read_entry(path: Path) -> EngineEntry | None:
    try:
        return EngineEntry.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_alive(rdir: Path, name: str) -> bool:
    """True when some process holds ``<name>.lock``."""
    return lock_held(rdir / f"{name}.lock")


def _listening(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(os.fspath(path))
        return True
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)
    finally:
        s.close()


def list_engines(rdir: Path | None = None, *, clean: bool = True) -> list[EngineEntry]:
    """Engines that are alive, by name. With ``clean``, files left by dead engines are removed.

    An engine counts as alive when it holds its lock; a socket nobody listens on and whose
    lock is free is a leftover of a ``kill -9`` and is removed.
    """
    try:
        rdir = runtime_dir(create=False) if rdir is None else rdir
        names = sorted(
            {p.name.rsplit(".", 1)[0] for p in rdir.iterdir() if p.suffix in (".json", ".sock", ".lock") and not p.name.startswith(".")}
        )
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        entry = _read_entry(rdir / f"{name}.json")
        alive = _is_alive(rdir, name)
        if alive and entry is not None:
            out.append(entry)
            continue
        if alive:
            continue  # starting up: the info file comes once the socket listens
        sock = rdir / f"{name}.sock"
        if clean and not (sock.exists() and _listening(sock)):
            for p in (rdir / f"{name}.json", sock, rdir / f"{name}.lock"):
                try:
                    os.unlink(p)
                except (FileNotFoundError, IsADirectoryError):
                    pass
    return out


def find_engine(name: str | None = None, rdir: Path | None = None, *, config_path: str | os.PathLike[str] | None = None) -> EngineEntry:
    """The running engine called ``name``; without a name, the config's engine or the only one."""
    engines = list_engines(rdir)
    if name is not None:
        for e in engines:
            if e.name == name:
                return e
        known = ", ".join(e.name for e in engines) or "none"
        raise NoEngine(f"no engine named {name!r} is running (running: {known}); start one with `cachewatch run --headless -- CMD`")
    if config_path is not None:
        wanted = default_engine_name(config_path)
        for e in engines:
            if e.name == wanted or (e.config and os.path.abspath(e.config) == os.path.abspath(config_path)):
                return e
    if len(engines) == 1:
        return engines[0]
    if not engines:
        raise NoEngine("no engine is running; start one with `cachewatch run --headless -- CMD`")
    raise NoEngine(
        f"{len(engines)} engines are running ({', '.join(e.name for e in engines)}); name the one you mean"
    )


def wait_for_entry(name: str, rdir: Path, timeout_s: float, alive: Any = None) -> EngineEntry | None:
    """Poll for ``<name>.json`` to appear while ``alive()`` stays true (used right after a launch)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entry = _read_entry(rdir / f"{name}.json")
        if entry is not None:
            return entry
        if alive is not None and not alive():
            return None
        time.sleep(0.02)
    return None
