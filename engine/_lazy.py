"""The one lazy-export helper of the package ``__init__`` files.

A package lists ``name -> module`` (relative, ``".cache"``) and gets ``__getattr__`` and
``__dir__``: a name loads its module on first use and is then kept in the package, so
``from cachewatch.engine import report`` in a training script does not pay for the cache's
SQLite/xxhash stack, nor the CLI parser for NumPy. A name whose module ends in that very
name (``"report": ".training.report"``) is the module itself.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any, Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, exporting ``names`` on first use."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = import_module(module, package)
        value = loaded if module.endswith(f".{name}") else getattr(loaded, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
