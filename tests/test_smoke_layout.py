"""The package layout the users asked for, and the engine's independence from Textual."""

from __future__ import annotations

import json
import subprocess
import sys


def test_engine_never_imports_textual() -> None:
    # A fresh interpreter: import everything public in the engine, then look at sys.modules.
    code = (
        "import sys, importlib, pkgutil, json\n"
        "import cachewatch.engine as e\n"
        "for m in pkgutil.walk_packages(e.__path__, 'cachewatch.engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n == 'textual' or n.startswith(('textual.', 'cachewatch.tui')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_version_command() -> None:
    import cachewatch.engine

    out = subprocess.run([sys.executable, "-m", "cachewatch.tui.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"cachewatch {cachewatch.engine.__version__}"
