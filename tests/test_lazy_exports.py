"""The lazy exports of the package __init__ files: every name resolves, and nothing loads early."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["cachewatch.engine", "cachewatch.engine.training", "cachewatch.engine.watch"])
def test_every_lazy_name_resolves_and_is_listed(package: str) -> None:
    mod = importlib.import_module(package)
    for name in mod._LAZY:
        assert getattr(mod, name) is not None, name
        assert name in dir(mod)
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(mod, "no_such_name")


def test_the_reporting_api_loads_neither_the_cache_nor_the_parsers() -> None:
    code = ("import sys; from cachewatch.engine import report; from cachewatch.engine.training import report as r2; "
            "assert report is r2; "
            "print(sorted(m for m in sys.modules if m.startswith(('cachewatch.engine.cache', 'cachewatch.engine.training.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['cachewatch.engine.training.report']"
