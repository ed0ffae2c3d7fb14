"""JSON at the edge for frozen dataclasses: one generic ``to_json`` / ``from_json`` pair.

Snapshots nest a dozen small types; writing a converter per type by hand is where fields
get forgotten. This codec walks the type hints instead: dataclasses, ``Optional``,
``tuple[X, ...]``, ``Mapping[str, X]``, enums and plain JSON values. A type that has its
own ``to_json`` / ``from_json`` (``CacheStats``, ``TrainingInfo``) is trusted to use them.
Unknown keys in the input are ignored so a newer engine can add fields without breaking an
older client of the same major protocol version.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Mapping, TypeVar

__all__ = ["to_json", "from_json", "frozen_map"]

T = TypeVar("T")


def frozen_map(data: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only mapping, so a frozen dataclass holding it is immutable all the way down."""
    return MappingProxyType(dict(data or {}))


def to_json(value: Any) -> Any:
    """A JSON-ready structure (dicts, lists, str, numbers, None) for ``value``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    own = getattr(value, "to_json", None)
    if own is not None and not _uses_generic(type(value)):
        return own()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    return str(value)


def _uses_generic(cls: type) -> bool:
    return bool(getattr(cls, "__json_generic__", False))


def from_json(cls: type[T], data: Any) -> T:
    """Build ``cls`` from what :func:`to_json` produced."""
    out: T = _convert(cls, data)
    return out


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(tp: Any, data: Any) -> Any:
    if tp is Any:
        return data
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, data)
            except (TypeError, ValueError, KeyError):
                continue
        raise ValueError(f"{data!r} matches none of {tp}")
    if origin is tuple:
        args = typing.get_args(tp)
        if data is None:
            return ()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in data)
        return tuple(_convert(a, v) for a, v in zip(args, data))
    if origin in (Mapping, dict, typing.Mapping) or tp in (Mapping, dict):
        args = typing.get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return frozen_map({str(k): _convert(vt, v) for k, v in (data or {}).items()})
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return tp(data)
        own = tp.__dict__.get("from_json")
        if own is not None and not _uses_generic(tp):
            return getattr(tp, "from_json")(data)
        if dataclasses.is_dataclass(tp):
            if not isinstance(data, Mapping):
                raise TypeError(f"{tp.__name__} needs an object, got {type(data).__name__}")
            hints = _hints(tp)
            kwargs = {}
            for f in dataclasses.fields(tp):
                if f.name in data:
                    kwargs[f.name] = _convert(hints[f.name], data[f.name])
            return tp(**kwargs)
        if tp is float:
            if isinstance(data, bool) or not isinstance(data, (int, float)):
                raise TypeError(f"expected a number, got {data!r}")
            return float(data)
        if tp is int:
            if isinstance(data, bool) or not isinstance(data, int):
                raise TypeError(f"expected a whole number, got {data!r}")
            return data
        if tp is str:
            if not isinstance(data, str):
                raise TypeError(f"expected a string, got {data!r}")
            return data
        if tp is bool:
            if not isinstance(data, bool):
                raise TypeError(f"expected true or false, got {data!r}")
            return data
    return data
