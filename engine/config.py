"""``cachewatch.toml``: the single source of truth for paths and limits.

Lookup order for the file: ``--config FILE``, then ``$CACHEWATCH_CONFIG``, then
``./cachewatch.toml``. Any value can be overridden from the environment as
``CACHEWATCH_<SECTION>_<KEY>`` (``CACHEWATCH_CACHE_MAX_SIZE=200GB``). Relative
paths are resolved against the directory of the file that names them (or the
working directory for environment values), so the cache directory is the same
whichever directory the training is started from (seed 004's mismatch).

Every bad value raises :class:`ConfigError` with one line naming the key, the
value and the fix, and where it came from (the file, or the environment variable). Every
value is checked at load, before anything starts: ports are 1-65535, durations finite and
within a bound per key (``[monitor] interval`` at least 50 ms, ``[run] stop_grace`` at most
an hour...), sizes at most 2**63 - 1 bytes, strings and paths without NUL bytes. A
``CACHEWATCH_*`` variable that names no setting is an error whether the typo is in the
section or in the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError
from .sizes import SizeError, parse_duration, parse_size, short_repr

__all__ = [
    "Config",
    "CacheConfig",
    "SourceConfig",
    "RunConfig",
    "MonitorConfig",
    "MetricsConfig",
    "WatchConfig",
    "DashboardConfig",
    "FleetConfig",
    "load_config",
    "find_config_file",
    "CONFIG_FILENAME",
    "ENV_PREFIX",
]

CONFIG_FILENAME = "cachewatch.toml"
ENV_PREFIX = "CACHEWATCH_"
# CACHEWATCH_* variables that are not settings: the config file's path, and what the engine
# hands to the training (a training that loads the config sees them).
ENV_NOT_SETTINGS = frozenset({"CACHEWATCH_CONFIG", "CACHEWATCH_ENGINE", "CACHEWATCH_PROGRESS_FILE", "CACHEWATCH_RUN_ID",
                              "CACHEWATCH_CRASH_AT"})  # the last: the cache's crash-point hook for its kill -9 tests
PORT_MAX = 65535
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # engine names (same rule as daemon.runtime)
_HOUR, _DAY = 3600.0, 86400.0


def _no_nul(raw: str, key: str) -> str:
    # A NUL cannot be in a path, an argument or a name: the OS would reject it at use, far
    # from the config line that holds it.
    if "\x00" in raw:
        raise ConfigError(f"{key} = {short_repr(raw)} contains a NUL character (\\x00); remove it")
    return raw


# --- value readers: each takes (raw, key, base_dir) and returns the typed value ---------------

def _size(raw: Any, key: str, base: Path) -> int:
    try:
        return parse_size(raw, what=key)
    except SizeError as exc:
        raise ConfigError(str(exc)) from None


def _opt_size(raw: Any, key: str, base: Path) -> int | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "off")):
        return None
    return _size(raw, key, base)


def _duration(low_s: float, high_s: float, *, optional: bool = False) -> Callable[[Any, str, Path], Any]:
    """A duration reader bounded to ``[low_s, high_s]`` (``low_s`` 0 allows 0; a tiny ``low_s``
    means "more than 0"). Bounds keep ``1e308`` out: a stop grace of 1e308 s is never reached."""

    def read(raw: Any, key: str, base: Path) -> float | None:
        if optional and (raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "off"))):
            return None
        try:
            value = parse_duration(raw, what=key)
        except SizeError as exc:
            raise ConfigError(str(exc)) from None
        if value < low_s:
            least = "more than 0" if low_s < 0.01 else f"at least {_dur_text(low_s)}"
            off = " (or 'off')" if optional else ""
            raise ConfigError(f"{key} = {short_repr(raw)} is too short; it must be {least}{off}")
        if value > high_s:
            raise ConfigError(f"{key} = {short_repr(raw)} is too long; it must be at most {_dur_text(high_s)}")
        return value

    return read


def _dur_text(seconds: float) -> str:
    for unit, size in (("d", _DAY), ("h", _HOUR), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def _ratio(raw: Any, key: str, base: Path) -> float:
    try:
        value = float(raw.strip().rstrip("%")) / 100 if isinstance(raw, str) and raw.strip().endswith("%") else float(raw)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key} = {short_repr(raw)} is not a ratio; write a number between 0 and 1 (0.9) or a percentage ('90%')") from None
    if isinstance(raw, bool) or not (0.0 < value <= 1.0):
        raise ConfigError(f"{key} = {short_repr(raw)} is out of range; write a number in (0, 1], e.g. 0.9")
    return value


def _path(raw: Any, key: str, base: Path) -> Path:
    if not isinstance(raw, (str, os.PathLike)) or not str(raw).strip():
        raise ConfigError(f"{key} = {short_repr(raw)} is not a path; write a directory path as a string")
    _no_nul(str(raw), key)
    p = Path(os.path.expanduser(str(raw)))
    return p if p.is_absolute() else (base / p)


def _opt_path(raw: Any, key: str, base: Path) -> Path | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _path(raw, key, base)


def _str(raw: Any, key: str, base: Path) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{key} = {short_repr(raw)} must be a string")
    return _no_nul(raw, key)


def _opt_str(raw: Any, key: str, base: Path) -> str | None:
    if raw is None or raw == "":
        return None
    return _str(raw, key, base)


def _int(minimum: int, maximum: int) -> Callable[[Any, str, Path], int]:
    def read(raw: Any, key: str, base: Path) -> int:
        try:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(raw.strip()) if isinstance(raw, str) else int(raw)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{key} = {short_repr(raw)} is not a whole number; write one like {max(minimum, 1)}") from None
        if value < minimum:
            raise ConfigError(f"{key} = {short_repr(raw)} is too small; it must be at least {minimum}")
        if value > maximum:
            raise ConfigError(f"{key} = {short_repr(raw)} is too large; it must be at most {maximum}")
        return value

    return read


def _port(raw: Any, key: str, base: Path) -> int:
    value = _int(0, 2**62)(raw, key, base)
    if value > PORT_MAX:
        raise ConfigError(f"{key} = {short_repr(raw)} is not a port; give a number from 1 to {PORT_MAX}, or 0 for off")
    return value


def check_port(port: Any, what: str = "--metrics-port") -> int:
    """A TCP port given on a command line: 1-65535 (0 lets the system pick a free one)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= PORT_MAX:
        raise ConfigError(f"{what} {short_repr(port)} is not a port; give a number from 1 to {PORT_MAX}")
    return port


def _host(raw: Any, key: str, base: Path) -> str:
    host = _str(raw, key, base).strip()
    if not host or any(c.isspace() for c in host) or len(host) > 253:
        raise ConfigError(f"{key} = {short_repr(raw)} is not a host address; write one like '127.0.0.1' or '::1'")
    return host


def _engine_name(raw: Any, key: str, base: Path) -> str | None:
    name = _opt_str(raw, key, base)
    if name is not None and not _NAME_RE.match(name):
        raise ConfigError(
            f"{key} = {short_repr(raw)} is not usable as an engine name; "
            "use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _bool(raw: Any, key: str, base: Path) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key} = {short_repr(raw)} is not a boolean; write true or false")


def _choice(*choices: str) -> Callable[[Any, str, Path], str]:
    def read(raw: Any, key: str, base: Path) -> str:
        if not isinstance(raw, str) or raw not in choices:
            raise ConfigError(f"{key} = {short_repr(raw)} is not one of {', '.join(repr(c) for c in choices)}")
        return raw

    return read


def _argv(raw: Any, key: str, base: Path) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        import shlex

        _no_nul(raw, key)
        try:
            return tuple(shlex.split(raw))
        except ValueError as exc:
            raise ConfigError(f"{key} = {short_repr(raw)} cannot be split into arguments ({exc}); check the quotes") from None
    if isinstance(raw, list) and all(isinstance(a, str) for a in raw):
        return tuple(_no_nul(a, key) for a in raw)
    raise ConfigError(f"{key} = {short_repr(raw)} must be a command string or a list of strings")


def _globs(raw: Any, key: str, base: Path) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(g, str) and g.strip() for g in items):
        raise ConfigError(f"{key} = {short_repr(raw)} must be a glob or a list of globs, e.g. '*.jpg' or ['*.jpg', '*.png']")
    for g in items:
        _no_nul(g, key)
    from .globs import glob_to_regex

    for g in items:
        try:
            glob_to_regex(g)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    return tuple(items)


def _str_map(raw: Any, key: str, base: Path) -> dict[str, str]:
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ConfigError(f"{key} = {short_repr(raw)} must be a table of strings, e.g. {{ evict = 'E' }}")
    return {_no_nul(k, key): _no_nul(v, key) for k, v in raw.items()}


def _reader(f: dataclasses.Field) -> Callable[[Any, str, Path], Any]:
    return f.metadata["read"]


def _f(read: Callable[[Any, str, Path], Any], default: Any = None, *, doc: str = "", factory: Any = None) -> Any:
    meta = {"read": read, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --- sections -------------------------------------------------------------------------------------

def _cache_index(raw: Any, key: str, base: Path) -> str | None:
    value = _opt_str(raw, key, base)
    if value is None or value == "sqlite":
        return value
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{key} = {short_repr(raw)} is not a cache index; write 'sqlite' or a Redis URL like 'redis://host:6379/0'")
    return value


@dataclass(frozen=True)
class CacheConfig:
    """``[cache]``: the managed cache."""

    root: Path | None = _f(_opt_path, doc="cache directory")
    max_size: int | None = _f(_opt_size, doc="hard limit on bytes on disk plus writes in flight")
    target_ratio: float = _f(_ratio, 0.9, doc="eviction goes down to max_size x target_ratio")
    target_size: int | None = _f(_opt_size, doc="eviction target as a size; overrides target_ratio")
    ttl: float | None = _f(_duration(0.001, 3650 * _DAY, optional=True), doc="entries older than this (since written) are expired")
    remote: str | None = _f(_opt_str, doc="where `cache push`/`cache pull` and preflight = pull go: s3://bucket/prefix or a directory")
    index: str | None = _f(_cache_index, doc="'sqlite' (one machine, the default) or redis://host:6379/0: one bound for every machine sharing root")
    node: str | None = _f(_opt_str, doc="this machine's id as a writer of a Redis-indexed cache (default: the host name)")
    lease: float = _f(_duration(0.05, _HOUR), 10.0, doc="how long a write's reservation in Redis lasts unless renewed")


@dataclass(frozen=True)
class SourceConfig:
    """``[source]``: the data the cache is built from (verify/build/pre-flight)."""

    dir: Path | None = _f(_opt_path, doc="source data directory")
    glob: str = _f(_str, "**/*", doc="which files under dir are source items")
    listing: Path | None = _f(_opt_path, doc="a text file with one source path per line, instead of dir+glob")
    key: str = _f(_str, "{relpath}", doc="cache key template: {relpath} {name} {stem} {suffix}")
    transform: str | None = _f(_opt_str, doc="module:function turning a source path into bytes")


@dataclass(frozen=True)
class RunConfig:
    """``[run]``: the supervised training."""

    command: tuple[str, ...] = _f(_argv, (), doc="training command, if not given after --")
    cwd: Path | None = _f(_opt_path, doc="working directory of the training")
    restart: str = _f(_choice("never", "on-failure"), "never", doc="restart policy")
    max_restarts: int = _f(_int(0, 1_000_000), 3, doc="restarts allowed with on-failure")
    backoff: float = _f(_duration(0, _DAY), 5.0, doc="first delay before a restart; doubles each time (at most 1 day)")
    backoff_max: float = _f(_duration(0, 7 * _DAY), 300.0, doc="longest delay between restarts (at most 7 days)")
    stop_grace: float = _f(_duration(0, _HOUR), 10.0, doc="SIGTERM to SIGKILL delay on stop (at most 1 hour)")
    preflight: str = _f(_choice("off", "warn", "require", "build", "pull"), "off", doc="cache check before launch")
    log_dir: Path | None = _f(_opt_path, doc="where training logs and run state go")
    name: str | None = _f(_engine_name, doc="engine name shown by `cachewatch ls`")
    tty: bool = _f(_bool, True, doc="give the training a pseudo-terminal (progress bars draw as on a terminal); false: pipes")
    log_max_size: int = _f(_size, 100_000_000, doc="training.log is rotated when it would grow past this; 0: never")
    log_keep: int = _f(_int(0, 1000), 3, doc="rotated training logs kept (training.log.1 ...)")
    log_max_line: int = _f(_size, 65536, doc="longer output lines are cut here, with a marker (at least 16 bytes)")


@dataclass(frozen=True)
class MonitorConfig:
    """``[monitor]``: sampling and alerts."""

    interval: float = _f(_duration(0.05, _HOUR), 1.0, doc="sampling period (50ms to 1h)")
    memory_alert: float = _f(_ratio, 0.85, doc="system memory use that raises an alert")
    disk_alert: float = _f(_ratio, 0.95, doc="disk use of the cache filesystem that raises an alert")
    gpu: bool = _f(_bool, True, doc="sample GPUs through NVML")


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: opt-in Prometheus endpoint."""

    port: int = _f(_port, 0, doc="1-65535; 0 = off")
    host: str = _f(_host, "127.0.0.1", doc="bind address (loopback unless told otherwise)")


@dataclass(frozen=True)
class DashboardConfig:
    """``[dashboard]``: the Textual app."""

    refresh: float = _f(_duration(0.05, _HOUR), 1.0, doc="screen refresh period (50ms to 1h)")
    readonly: bool = _f(_bool, False, doc="hide destructive actions")
    keys: dict[str, str] = _f(_str_map, factory=dict, doc="action id -> key, e.g. evict = 'E'")


# --- [fleet]: several machines over Redis (docs/fleet.md) -------------------------------------

def _redis_url(raw: Any, key: str, base: Path) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{key} = {short_repr(raw)} is not a Redis URL; write e.g. 'redis://host:6379/0' (or 'rediss://' for TLS)")
    return _no_nul(raw, key)


def _host_name(raw: Any, key: str, base: Path) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not raw.strip() or any(c in raw for c in "/ \t\n\0"):
        raise ConfigError(f"{key} = {short_repr(raw)} is not a host name; write a name without '/' or spaces, e.g. 'node-7'")
    return raw


@dataclass(frozen=True)
class FleetConfig:
    """``[fleet]``: publish this engine to a Redis server so other machines see it (off unless url is set)."""

    url: str | None = _f(_redis_url, doc="redis://host:6379/0 or rediss:// (TLS); unset: no fleet")
    username: str | None = _f(_opt_str, doc="Redis ACL user (default: the URL's, else 'default')")
    password: str | None = _f(_opt_str, doc="Redis password (default: the URL's)")
    ca_file: Path | None = _f(_opt_path, doc="CA certificate for rediss:// (default: the system's)")
    prefix: str = _f(_str, "cachewatch", doc="first part of every key (an ACL grants ~prefix:*)")
    interval: float = _f(_duration(0.1, _HOUR), 1.0, doc="heartbeat and summary period (100ms to 1h); an engine is lost after 2 missed")
    host: str | None = _f(_host_name, doc="host name shown in the fleet (default: this machine's)")
    accept_commands: bool = _f(_bool, False, doc="carry out commands sent through Redis (evict, pause, stop...)")


@dataclass(frozen=True)
class WatchConfig:
    """``[[watch]]``: a directory written by other code, kept under its limit from outside."""

    root: Path = _f(_path, None, doc="watched directory")
    max_size: int = _f(_size, None, doc="limit on the counted files")
    target_ratio: float = _f(_ratio, 0.9, doc="eviction goes down to max_size x target_ratio")
    target_size: int | None = _f(_opt_size, doc="eviction target as a size; overrides target_ratio")
    include: tuple[str, ...] = _f(_globs, (), doc="glob or list of globs of files that count (default: all)")
    exclude: tuple[str, ...] = _f(_globs, (), doc="glob or list of globs of files that never count nor go")
    min_age: float = _f(_duration(0, 365 * _DAY), 30.0, doc="never delete a file modified more recently than this")
    scan_interval: float = _f(_duration(1.0, 7 * _DAY), 300.0, doc="period of the reconciling full scan (1s to 7d)")
    dry_run: bool = _f(_bool, False, doc="report what would be evicted, delete nothing")
    state_dir: Path | None = _f(_opt_path, doc="where the watch keeps its events (default: $XDG_STATE_HOME/cachewatch/watch/<hash>)")
    allow_dangerous_root: bool = _f(_bool, False, doc="accept a system directory or one holding your home as root (refused otherwise)")


@dataclass(frozen=True)
class Config:
    cache: CacheConfig = field(default_factory=CacheConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    run: RunConfig = field(default_factory=RunConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    watch: tuple[WatchConfig, ...] = ()
    path: Path | None = None  # the file this came from, if any

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


_SECTIONS: dict[str, type] = {
    "cache": CacheConfig,
    "source": SourceConfig,
    "run": RunConfig,
    "monitor": MonitorConfig,
    "metrics": MetricsConfig,
    "dashboard": DashboardConfig,
    "fleet": FleetConfig,
}


def _build_section(cls: type, name: str, table: Mapping[str, Any], base: Path, where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key [{name}] {unknown[0]!r}; known keys are: {', '.join(sorted(fields))}"
        )
    values = {}
    for key, raw in table.items():
        values[key] = _read(fields[key], raw, f"[{name}] {key}", base, where)
    for fname, f in fields.items():
        if f.default is None and f.default_factory is dataclasses.MISSING and fname not in values:  # type: ignore[misc]
            if cls is WatchConfig and fname in ("root", "max_size"):
                raise ConfigError(f"{where}: [[watch]] needs {fname}; add e.g. {fname} = " + ("'/data/cache'" if fname == "root" else "'100GB'"))
    return cls(**values)


def _read(f: dataclasses.Field, raw: Any, key: str, base: Path, where: str | None) -> Any:
    """One value through its reader; errors say where the value came from (file or variable)."""
    try:
        return _reader(f)(raw, key, base)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # a reader's blind spot: still one line
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{key} = {short_repr(raw)} cannot be used ({type(exc).__name__}); fix or remove it") from None


def _env_settings() -> list[str]:
    return sorted(f"{ENV_PREFIX}{sec.upper()}_{f.name.upper()}" for sec, cls in _SECTIONS.items() for f in dataclasses.fields(cls))


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``CACHEWATCH_<SECTION>_<KEY>`` values by section. A variable that names no section is an
    error, like one that names no key: a typo in either must not be silently ignored."""
    out: dict[str, dict[str, str]] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for section in _SECTIONS:
            if rest.startswith(section + "_"):
                out.setdefault(section, {})[rest[len(section) + 1 :]] = value
                break
        else:
            close = difflib.get_close_matches(name, _env_settings(), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(
                f"{name}: no such setting (sections are {', '.join(s.upper() for s in _SECTIONS)}); "
                f"{hint}fix or unset the variable"
            )
    return out


def find_config_file(explicit: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to use, or None when there is none (defaults apply)."""
    env = os.environ if env is None else env
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ConfigError(f"--config {str(explicit)!r}: no such file; give the path of a cachewatch.toml")
        return p.resolve()
    if env.get(ENV_PREFIX + "CONFIG"):
        p = Path(env[ENV_PREFIX + "CONFIG"]).expanduser()
        if not p.is_file():
            raise ConfigError(f"CACHEWATCH_CONFIG={str(p)!r}: no such file; unset it or point it at a cachewatch.toml")
        return p.resolve()
    p = Path.cwd() / CONFIG_FILENAME
    return p.resolve() if p.is_file() else None


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, override and validate the configuration. See the module docstring for the order."""
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    data: dict[str, Any] = {}
    where = str(file) if file else "defaults"
    if file is not None:
        try:
            with open(file, "rb") as fh:
                raw_bytes = fh.read()
        except OSError as exc:
            raise ConfigError(f"{file}: cannot be read ({exc.strerror})") from None
        try:
            text = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw_bytes[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{file}: not UTF-8 text (byte 0x{raw_bytes[exc.start]:02x} on line {line}); save the file as UTF-8") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML ({exc}); fix the syntax at that line") from None
        except RecursionError:
            raise ConfigError(f"{file}: nested too deeply to read; flatten the tables") from None
    base = file.parent if file else Path.cwd()

    known = set(_SECTIONS) | {"watch"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown section [{unknown[0]}]; known sections are: {', '.join(sorted(known))}")

    sections: dict[str, Any] = {}
    overrides = _env_overrides(env)
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: {name} must be a table [{name}], not {type(table).__name__}")
        section = _build_section(cls, name, table, base, where)
        if name in overrides:
            env_table = {k: v for k, v in overrides[name].items()}
            fields = {f.name: f for f in dataclasses.fields(cls)}
            changes = {}
            for key, raw in env_table.items():
                if key not in fields:
                    raise ConfigError(
                        f"{ENV_PREFIX}{name.upper()}_{key.upper()}: no such setting [{name}] {key}; "
                        f"known keys are: {', '.join(sorted(fields))}"
                    )
                changes[key] = _read(fields[key], raw, f"{ENV_PREFIX}{name.upper()}_{key.upper()}", Path.cwd(), None)
            section = dataclasses.replace(section, **changes)
        sections[name] = section

    watches = data.get("watch", [])
    if isinstance(watches, Mapping):
        watches = [watches]
    if not isinstance(watches, list):
        raise ConfigError(f"{where}: watch must be written [[watch]], a list of tables")
    if not all(isinstance(w, Mapping) for w in watches):
        raise ConfigError(f"{where}: each [[watch]] must be a table with root and max_size")
    sections["watch"] = tuple(_build_section(WatchConfig, "watch", w, base, where) for w in watches)

    cfg = Config(**sections, path=file)
    try:
        _validate(cfg, where)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if file is not None and not str(exc).startswith(where) else str(exc)) from None
    except (OSError, ValueError) as exc:  # a blind spot of the checks above: still one line
        raise ConfigError(f"{where}: a path in the config cannot be checked ({type(exc).__name__}); fix it") from None
    return cfg


def _validate(cfg: Config, where: str) -> None:
    c = cfg.cache
    if c.root is not None and _is_file(c.root, "[cache] root"):
        raise ConfigError(f"[cache] root = '{c.root}' is a file, not a directory; point it at a directory")
    if c.max_size is not None and c.max_size == 0:
        raise ConfigError("[cache] max_size = 0 leaves no room for any entry; give a positive size like '100GB'")
    if c.target_size is not None:
        if c.max_size is None:
            raise ConfigError(f"[cache] target_size = {_human(c.target_size)} needs max_size; add max_size = '100GB' to [cache]")
        if c.target_size > c.max_size:
            raise ConfigError(
                f"[cache] target_size = {_human(c.target_size)} is above max_size = {_human(c.max_size)}; "
                "the target must be at most the max"
            )
    if cfg.source.transform is not None and ":" not in cfg.source.transform:
        raise ConfigError(
            f"[source] transform = {_clipped(cfg.source.transform)!r} must be 'module:function', e.g. 'mypkg.prep:process_file'"
        )
    if cfg.run.backoff_max < cfg.run.backoff:
        raise ConfigError(
            f"[run] backoff_max = {cfg.run.backoff_max:g}s is below backoff = {cfg.run.backoff:g}s; raise backoff_max"
        )
    for w in cfg.watch:
        if _is_file(w.root, "[[watch]] root"):
            raise ConfigError(f"[[watch]] root = '{w.root}' is a file, not a directory; point it at a directory")
        if w.target_size is not None and w.target_size > w.max_size:
            raise ConfigError(
                f"[[watch]] target_size = {_human(w.target_size)} is above max_size = {_human(w.max_size)} for '{w.root}'; "
                "the target must be at most the max"
            )
        if w.max_size == 0:
            raise ConfigError(f"[[watch]] max_size = 0 for '{w.root}'; give a positive size like '100GB'")


def _is_file(path: Path, key: str) -> bool:
    """True when ``path`` exists and is not a directory; a path the OS refuses names the key."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (20,):  # ENOTDIR: a parent is a file; the directory cannot be created there
            return True
        raise ConfigError(f"{key} = {short_repr(str(path))} cannot be used ({exc.strerror}); fix the path") from None
    import stat as _stat

    return not _stat.S_ISDIR(st.st_mode)


def _human(n: int) -> str:
    from .sizes import format_size

    return format_size(n, binary=False).replace(" ", "")


def target_bytes(max_bytes: int, target_ratio: float, target_size: int | None = None) -> int:
    """The size eviction brings a cache down to."""
    return target_size if target_size is not None else int(max_bytes * target_ratio)


def _clipped(text: str, limit: int = 80) -> str:
    """A value as shown in a one-line error: long ones cut (the message must stay one short line)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
