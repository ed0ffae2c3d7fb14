"""The source data a cache is built from, and which cache key each source item gets.

``[source]`` names the items either as ``dir`` + ``glob`` or as a ``listing`` (a text
file, one path per line; relative lines are relative to ``dir`` when it is set, else to
the listing's directory). Each item's key comes from the ``key`` template with the
fields ``{relpath}`` (path relative to the base, with ``/``), ``{name}``, ``{stem}`` and
``{suffix}``; seed 004's cache layout is ``key = "{stem}_windows.npz"``.

Two items that map to one key are an error, never a silent overwrite. A source that
matches nothing is an error too: "0 of 0 items cached" would hide a wrong path, which
is how seed 004's run ended up building its cache during training.

The transform (``module:function`` or ``path/to/file.py:function``) turns one source
path into the bytes to cache; without one the file is cached as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import string
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from ..config import Config
from ..errors import ConfigError

__all__ = ["SourceSpec", "SourceItem", "SourceError", "KEY_FIELDS", "load_transform", "render_key"]

KEY_FIELDS = ("relpath", "name", "stem", "suffix")


class SourceError(ConfigError):
    """The configured source cannot be listed or mapped to keys."""


@dataclass(frozen=True)
class SourceItem:
    path: Path
    relpath: str
    key: str
    size_bytes: int


def _check_template(template: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SourceError(f"[source] key = {template!r} is not a valid template ({exc}); write e.g. '{{relpath}}'") from None
    fields = [f for _, f, _, _ in parsed if f is not None]
    if not fields:
        raise SourceError(
            f"[source] key = {template!r} uses no field, so every item would get the same key; "
            f"use {', '.join('{' + f + '}' for f in KEY_FIELDS)}"
        )
    for f in fields:
        if f not in KEY_FIELDS:
            raise SourceError(
                f"[source] key = {template!r} uses unknown field {{{f}}}; known fields: "
                + ", ".join("{" + k + "}" for k in KEY_FIELDS)
            )


def render_key(template: str, relpath: str) -> str:
    name = relpath.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    stem, suffix = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    return template.format(relpath=relpath, name=name, stem=stem, suffix=suffix)


@dataclass(frozen=True)
class SourceSpec:
    """Where the source items are and how they map to keys (a resolved ``[source]``)."""

    dir: Path | None = None
    glob: str = "**/*"
    listing: Path | None = None
    key: str = "{relpath}"
    transform: str | None = None
    base_dir: Path | None = None  # where a relative transform file or module is looked for (the config's directory)

    @classmethod
    def from_config(cls, cfg: Config, **overrides: Any) -> "SourceSpec":
        s = cfg.source
        spec = cls(dir=s.dir, glob=s.glob, listing=s.listing, key=s.key, transform=s.transform, base_dir=cfg.base_dir)
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "dir" in changes:
            changes["dir"] = Path(changes["dir"]).expanduser().absolute()
        if "listing" in changes:
            changes["listing"] = Path(changes["listing"]).expanduser().absolute()
        return replace(spec, **changes) if changes else spec

    @property
    def configured(self) -> bool:
        return self.dir is not None or self.listing is not None

    def describe(self) -> str:
        if self.listing is not None:
            return f"listing '{self.listing}'"
        return f"'{self.dir}' glob {self.glob!r}"

    def require(self) -> "SourceSpec":
        if not self.configured:
            raise SourceError(
                "no source data configured: set [source] dir (and glob) or listing in cachewatch.toml, or pass --source DIR"
            )
        return self

    def items(self) -> list[SourceItem]:
        """Every source item, sorted by relative path, with its key. Raises :class:`SourceError`."""
        self.require()
        _check_template(self.key)
        if self.listing is not None:
            pairs = self._from_listing()
        else:
            pairs = self._from_glob()
        items: list[SourceItem] = []
        seen: dict[str, str] = {}
        for path, rel in sorted(pairs, key=lambda p: p[1]):
            key = render_key(self.key, rel)
            if key in seen:
                raise SourceError(
                    f"source items '{seen[key]}' and '{rel}' both map to key {key!r} with [source] key = {self.key!r}; "
                    f"include {{relpath}} in the key template so every item gets its own key"
                )
            seen[key] = rel
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise SourceError(f"source item '{path}' cannot be read ({exc.strerror}); fix its permissions or remove it") from None
            items.append(SourceItem(path, rel, key, size))
        if not items:
            raise SourceError(
                f"source {self.describe()} matches no files; check [source] dir and glob (or listing) in cachewatch.toml"
            )
        return items

    def _from_glob(self) -> Iterable[tuple[Path, str]]:
        base = self.dir
        assert base is not None
        if not base.exists():
            raise SourceError(f"[source] dir = '{base}' does not exist; point it at the source data directory")
        if not base.is_dir():
            raise SourceError(f"[source] dir = '{base}' is a file, not a directory; point it at the source data directory")
        if not self.glob or self.glob.startswith("/") or ".." in Path(self.glob).parts:
            raise SourceError(f"[source] glob = {self.glob!r} must be a relative pattern inside dir, like '**/*.edf'")
        for p in base.glob(self.glob):
            if p.is_file():
                yield p, p.relative_to(base).as_posix()

    def _from_listing(self) -> Iterable[tuple[Path, str]]:
        listing = self.listing
        assert listing is not None
        try:
            text = listing.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SourceError(f"[source] listing = '{listing}' does not exist; give a text file with one path per line") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"[source] listing = '{listing}' cannot be read ({exc}); give a UTF-8 text file") from None
        base = self.dir if self.dir is not None else listing.parent
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(os.path.expanduser(line))
            path = p if p.is_absolute() else base / p
            if not path.is_file():
                raise SourceError(
                    f"[source] listing '{listing}' line {lineno}: '{line}' is not a file; fix or remove that line"
                )
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                rel = path.as_posix().lstrip("/")  # outside the base: keep the whole path, still unique
            yield path, rel


def load_transform(spec: str, base_dir: Path | None = None) -> Callable[[Path], Any]:
    """Import ``module:function`` (or ``file.py:function``) and return the function.

    The config's directory and the working directory are searched first, so a
    project's own ``src.pkg.prep:process_file`` imports as it does from the project root.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise SourceError(f"[source] transform = {spec!r} must be 'module:function', e.g. 'mypkg.prep:process_file'")
    module_name, _, func_name = spec.rpartition(":")
    if not module_name or not func_name.isidentifier():
        raise SourceError(f"[source] transform = {spec!r} must be 'module:function', e.g. 'mypkg.prep:process_file'")
    extra = [str(d) for d in (base_dir, Path.cwd()) if d is not None]
    for d in reversed(extra):
        if d not in sys.path:
            sys.path.insert(0, d)
    try:
        if module_name.endswith(".py"):
            file = Path(module_name).expanduser()
            if not file.is_absolute() and base_dir is not None:
                file = base_dir / file
            if not file.is_file():
                raise SourceError(f"[source] transform = {spec!r}: no file '{file}'; check the path")
            mod_spec = importlib.util.spec_from_file_location(f"cachewatch_transform_{file.stem}", file)
            if mod_spec is None or mod_spec.loader is None:
                raise SourceError(f"[source] transform = {spec!r}: '{file}' cannot be imported")
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(
            f"[source] transform = {spec!r}: importing {module_name!r} failed ({type(exc).__name__}: {exc}); "
            f"run from the project directory or install the package"
        ) from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise SourceError(f"[source] transform = {spec!r}: {module_name!r} has no function {func_name!r}")
    return fn
